//! Trees as rsync users keep them: `--delete` makes the destination a
//! mirror without touching anything outside it, `--dry-run` says what would
//! happen and changes nothing, and a full disk stops a tree at once. The
//! real binary against a real server.

mod common;

use common::{pattern, tree, xfer, TestServer};
use predicates::prelude::*;
use std::fs;
use std::path::Path;

/// Every path beneath `dir` with its kind, size, mode, mtime and bytes
/// (links by target): what "nothing changed" is checked against.
fn snapshot(dir: &Path) -> Vec<(String, String)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            let what = if m.file_type().is_symlink() {
                format!("link {}", fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                pending.push(p.clone());
                format!("dir {:o} {}", m.mode(), m.mtime())
            } else {
                format!("file {:o} {} {}", m.mode(), m.mtime(), common::md5_hex(&fs::read(&p).unwrap()))
            };
            out.push((p.strip_prefix(dir).unwrap().display().to_string(), what));
        }
    }
    out.sort();
    out
}

/// A source tree and a destination that differs from it in every way a
/// mirror cares about: a file the same, one changed, one new, and, only in
/// the destination, a file, a directory with contents, and a link to a
/// directory outside it (which must survive, contents and all).
fn layout(src: &Path, dst: &Path, outside: &Path) {
    for d in [src, dst] {
        fs::create_dir_all(d.join("sub")).unwrap();
        fs::write(d.join("same.txt"), b"same").unwrap();
    }
    fs::write(src.join("sub/changed.txt"), b"new bytes").unwrap();
    fs::write(dst.join("sub/changed.txt"), b"old bytes").unwrap();
    fs::write(src.join("new.bin"), pattern(2_000_000, 3)).unwrap();
    fs::write(dst.join("stale.txt"), b"stale").unwrap();
    fs::create_dir_all(dst.join("gone/deeper")).unwrap();
    fs::write(dst.join("gone/deeper/x"), b"x").unwrap();
    fs::create_dir_all(outside).unwrap();
    fs::write(outside.join("precious"), b"keep me").unwrap();
    std::os::unix::fs::symlink(outside, dst.join("sub/link-out")).unwrap();
}

fn check_mirror(src: &Path, dst: &Path, outside: &Path) {
    assert_eq!(tree(dst), tree(src));
    assert_eq!(fs::read(dst.join("sub/changed.txt")).unwrap(), b"new bytes");
    assert_eq!(fs::read(outside.join("precious")).unwrap(), b"keep me", "nothing outside is touched");
}

#[test]
fn delete_makes_a_mirror_both_ways_and_touches_nothing_outside() {
    let server = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    let (src, outside) = (work.path().join("src"), work.path().join("outside"));
    layout(&src, &server.path("dst"), &outside);
    fs::write(server.path("beside.txt"), b"not in the tree").unwrap();
    xfer(server.addr, work.path())
        .args(["put", "-r", "-f", "-v", "--delete", "src/", "dst"])
        .assert()
        .success()
        .stderr(
            predicate::str::contains("deleting dst/stale.txt\n")
                .and(predicate::str::contains("deleting dst/gone/deeper/x\n"))
                .and(predicate::str::contains("deleting dst/sub/link-out\n"))
                .and(predicate::str::contains(", 5 deleted,")),
        );
    check_mirror(&src, &server.path("dst"), &outside);
    assert!(server.path("beside.txt").exists(), "only beneath the destination");

    // And back: a local destination mirrors the remote tree.
    let back = work.path().join("back");
    fs::remove_dir_all(&outside).unwrap();
    layout(&server.path("src2"), &back, &outside);
    fs::write(work.path().join("beside.txt"), b"mine").unwrap();
    xfer(server.addr, work.path())
        .args(["get", "-r", "-f", "--delete", "src2/", "back"])
        .assert()
        .success()
        .stderr(predicate::str::contains(", 5 deleted,"));
    check_mirror(&server.path("src2"), &back, &outside);
    assert!(work.path().join("beside.txt").exists());
}

#[test]
fn delete_keeps_what_the_sender_left_out_and_needs_r() {
    let server = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), b"a").unwrap();
    // A FIFO is left out of the walk, with a warning: its name there stays,
    // both ways.
    assert!(std::process::Command::new("mkfifo").arg(src.join("pipe")).status().unwrap().success());
    fs::create_dir_all(server.path("dst")).unwrap();
    fs::write(server.path("dst/pipe"), b"a file where the source has a FIFO").unwrap();
    fs::write(server.path("dst/extra"), b"x").unwrap();
    xfer(server.addr, work.path())
        .args(["put", "-r", "--delete", "src/", "dst"])
        .assert()
        .success()
        .stderr(predicate::str::contains("pipe: special file, skipped"));
    assert!(server.path("dst/pipe").exists(), "a name the walk left out is never deleted");
    assert!(!server.path("dst/extra").exists());
    assert!(std::process::Command::new("mkfifo").arg(server.path("dst/fifo2")).status().unwrap().success());
    fs::write(src.join("fifo2"), b"here a file").unwrap();
    fs::remove_file(src.join("pipe")).unwrap();
    xfer(server.addr, work.path()).args(["get", "-r", "--delete", "dst/", "src"]).assert().success();
    assert_eq!(fs::read(src.join("fifo2")).unwrap(), b"here a file", "left out by the server's walk: kept");
    xfer(server.addr, work.path())
        .args(["put", "--delete", "src/a", "x"])
        .assert()
        .code(2)
        .stderr(predicate::str::starts_with("xfer: error:").and(predicate::str::contains("--recursive")));
}

#[test]
fn dry_run_says_what_would_happen_and_changes_nothing() {
    let server = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    let (src, outside) = (work.path().join("src"), work.path().join("outside"));
    layout(&src, &server.path("dst"), &outside);
    let before = snapshot(server.root.path());
    let out = xfer(server.addr, work.path())
        .args(["put", "-r", "-f", "-n", "--delete", "src/", "dst"])
        .assert()
        .success()
        .stderr(predicate::str::contains(
            "dry run: put -r dst  1 to copy (1.9 MiB), 1 to replace, 1 identical, 5 to delete, 0 failed; nothing was changed",
        ))
        .get_output()
        .stdout
        .clone();
    let mut lines: Vec<_> = String::from_utf8(out).unwrap().lines().map(str::to_string).collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "copy dst/new.bin (1.9 MiB)",
            "delete dst/gone",
            "delete dst/gone/deeper",
            "delete dst/gone/deeper/x",
            "delete dst/stale.txt",
            "delete dst/sub/link-out",
            "replace dst/sub/changed.txt (9 B)",
            "skip dst/same.txt (identical)",
        ]
    );
    assert_eq!(snapshot(server.root.path()), before, "the server's side is as it was");
    // Without -f the changed file would fail, and says so.
    xfer(server.addr, work.path())
        .args(["put", "-r", "-n", "src/", "dst"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("sub/changed.txt").and(predicate::str::contains("exists")));
    assert_eq!(snapshot(server.root.path()), before);

    // get -r: into a directory not there, and over one that is.
    let here = snapshot(work.path());
    xfer(server.addr, work.path())
        .args(["get", "-r", "-n", "dst", "new/place"])
        .assert()
        .success()
        .stdout(predicate::str::contains("copy new/place/sub/changed.txt (9 B)\n"));
    xfer(server.addr, work.path())
        .args(["get", "-r", "-n", "-f", "--delete", "dst/", "src"])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("replace src/sub/changed.txt (9 B)\n")
                .and(predicate::str::contains("delete src/new.bin\n"))
                .and(predicate::str::contains("skip src/same.txt (identical)\n")),
        );
    assert_eq!(snapshot(work.path()), here, "the client's side is as it was");
    assert_eq!(snapshot(server.root.path()), before);

    // Single files, both ways.
    xfer(server.addr, src.as_path())
        .args(["put", "-n", "same.txt", "dst/same.txt"])
        .assert()
        .success()
        .stdout("skip dst/same.txt (identical)\n");
    xfer(server.addr, src.as_path())
        .args(["put", "-n", "new.bin", "dst/new.bin"])
        .assert()
        .success()
        .stdout("copy dst/new.bin (1.9 MiB)\n");
    xfer(server.addr, src.as_path())
        .args(["get", "-n", "-f", "dst/sub/changed.txt", "sub/changed.txt"])
        .assert()
        .success()
        .stdout("replace sub/changed.txt (9 B)\n");
    xfer(server.addr, src.as_path()).args(["get", "-n", "dst/nothing"]).assert().code(1);
    assert_eq!(snapshot(work.path()), here);
    assert_eq!(snapshot(server.root.path()), before);
}

/// A tmpfs of `size` mounted at a fresh directory, unmounted when dropped.
struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(mounted.success(), "mounting a small tmpfs needs root (as on the CI machine)");
        SmallDisk(dir)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

/// 40 files of 300 KB and 6 of 2 MB: about 24 MB, onto 8 MB.
fn too_big(src: &Path) {
    fs::create_dir_all(src).unwrap();
    for i in 0..40 {
        fs::write(src.join(format!("small{i:02}")), pattern(300_000, i)).unwrap();
    }
    for i in 0..6 {
        fs::write(src.join(format!("large{i}")), pattern(2_000_000, 100 + i)).unwrap();
    }
}

/// Runs `cmd`, which must fail (exit 1) with exactly one error line, and
/// that line holding `words`; returns its stderr.
fn one_error(cmd: &mut assert_cmd::Command, words: &str) -> String {
    let out = cmd.assert().code(1).get_output().clone();
    let stderr = String::from_utf8(out.stderr).unwrap();
    let errors: Vec<_> = stderr.lines().filter(|l| l.starts_with("xfer: error:")).collect();
    assert_eq!(errors.len(), 1, "one message: {stderr}");
    assert!(errors[0].contains(words), "{stderr}");
    stderr
}

/// The `N files copied` of a tree summary in `stderr`.
fn copied(stderr: &str) -> usize {
    let at = stderr.find(" files copied").expect("a summary");
    stderr[..at].rsplit(' ').next().unwrap().parse().unwrap()
}

#[test]
fn a_full_disk_stops_a_tree_at_once_both_ways() {
    let disk = SmallDisk::mount("8m");
    let root = disk.0.path().join("root");
    let server = TestServer::start_with(|c| c.root = root.clone());
    let work = tempfile::tempdir().unwrap();
    too_big(&work.path().join("src"));
    let stderr = one_error(xfer(server.addr, work.path()).args(["put", "-r", "src", "dst"]), "no space left");
    assert!(stderr.contains("the tree stopped"), "{stderr}");
    // The summary counts what was committed, no more.
    let landed = tree(&root.join("dst")).len();
    assert_eq!(copied(&stderr), landed, "{stderr}");
    assert!(landed < 46);
    // The server goes on serving.
    fs::write(work.path().join("tiny"), b"t").unwrap();
    fs::remove_dir_all(root.join("dst")).unwrap();
    xfer(server.addr, work.path()).args(["put", "tiny"]).assert().success();

    // get -r onto a full local disk: the same.
    let server2 = TestServer::start();
    too_big(&server2.path("src"));
    let local = disk.0.path().join("local");
    let mut get = xfer(server2.addr, work.path());
    let stderr = one_error(
        get.arg("get").arg("-r").arg("src").arg(&local),
        "the local disk is full; the tree stopped",
    );
    assert_eq!(copied(&stderr), tree(&local).len(), "{stderr}");
    drop(server);
}
