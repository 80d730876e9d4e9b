//! `put -r` and `get -r`: whole trees, byte for byte, with modes, times,
//! inside symlinks and empty directories; hostile trees; identical files
//! skipped on a re-run; one bad file never spoils the others.

mod common;

use common::fake::{self, Proof};
use common::proxy::{Damage, Direction, Proxy};
use common::{eventually, fixture, md5_hex, pattern, raw, tree, xfer, TestServer};
use predicates::prelude::*;
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;
use xfer::ui::human_bytes;

/// Builds the fixture tree: nested and empty directories, several modes
/// (one with setuid, never carried), inside and outside symlinks, a link
/// loop, unicode names, and files of assorted sizes.
fn make_tree(top: &Path) {
    fs::create_dir_all(top.join("a/b/c")).unwrap();
    fs::create_dir_all(top.join("empty/nested-empty")).unwrap();
    fs::copy(fixture("hello.txt"), top.join("hello.txt")).unwrap();
    fs::copy(fixture("ünïcødé 名前.txt"), top.join("a/ünïcødé 名前.txt")).unwrap();
    fs::copy(fixture("all-bytes.bin"), top.join("a/b/all-bytes.bin")).unwrap();
    fs::copy(fixture("empty"), top.join("a/b/c/empty")).unwrap();
    fs::write(top.join("a/b/c/big.bin"), pattern(2 * 1024 * 1024 + 7, 1)).unwrap();
    fs::write(top.join("script.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(top.join("script.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(top.join("secret"), b"s").unwrap();
    fs::set_permissions(top.join("secret"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(top.join("suid"), b"x").unwrap();
    fs::set_permissions(top.join("suid"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::set_permissions(top.join("a/b"), fs::Permissions::from_mode(0o750)).unwrap();
    symlink("hello.txt", top.join("link-in")).unwrap();
    symlink("../../hello.txt", top.join("a/b/link-up")).unwrap();
    symlink("loop", top.join("loop")).unwrap();
    symlink("/etc", top.join("link-out")).unwrap();
    symlink("../outside", top.join("link-climb")).unwrap();
    let old = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_500_000_000);
    let f = fs::File::options().write(true).open(top.join("hello.txt")).unwrap();
    f.set_times(fs::FileTimes::new().set_modified(old)).unwrap();
    // Directories last (adding to one moves its time), the top too.
    for (dir, secs) in [("a/b", 1_400_000_000), ("empty", 1_300_000_000), ("", 1_200_000_000)] {
        let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
        fs::File::open(top.join(dir)).unwrap().set_times(fs::FileTimes::new().set_modified(time)).unwrap();
    }
    fs::set_permissions(top, fs::Permissions::from_mode(0o750)).unwrap();
}

/// Asserts `copy` mirrors `orig`: same entries (minus the links that lead
/// out), same bytes, modes without setuid/setgid, times of files and
/// directories (the top's too), link targets.
fn assert_mirrors(orig: &Path, copy: &Path) {
    let expected: Vec<_> = tree(orig).into_iter().filter(|p| p != "link-out" && p != "link-climb").collect();
    assert_eq!(tree(copy), expected);
    for rel in std::iter::once(String::new()).chain(expected) {
        let (a, b) = (orig.join(&rel), copy.join(&rel));
        let (ma, mb) = (fs::symlink_metadata(&a).unwrap(), fs::symlink_metadata(&b).unwrap());
        assert_eq!(ma.file_type(), mb.file_type(), "{rel}");
        if ma.file_type().is_symlink() {
            assert_eq!(fs::read_link(&a).unwrap(), fs::read_link(&b).unwrap(), "{rel}");
            continue;
        }
        assert_eq!(ma.mode() & 0o777, mb.mode() & 0o7777, "mode of {rel:?}");
        assert_eq!(ma.mtime(), mb.mtime(), "mtime of {rel:?}");
        if ma.is_file() {
            assert_eq!(fs::read(&a).unwrap(), fs::read(&b).unwrap(), "{rel}");
        }
    }
}

#[test]
fn trees_round_trip_with_modes_times_links_and_empty_dirs() {
    let server = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    make_tree(&work.path().join("src"));
    xfer(server.addr, work.path())
        .args(["put", "-r", "src"])
        .assert()
        .success()
        .stderr(predicate::str::contains("link-out: symlink to /etc leads out of the tree, skipped"))
        .stderr(predicate::str::contains("link-climb: symlink to ../outside leads out of the tree, skipped"))
        .stderr(predicate::str::contains("put -r src  8 files copied, 0 skipped, 0 failed"));
    assert_mirrors(&work.path().join("src"), &server.path("src"));
    xfer(server.addr, work.path())
        .args(["get", "-r", "src/", "back"])
        .assert()
        .success()
        .stderr(predicate::str::contains("get -r src/  8 files copied, 0 skipped, 0 failed"));
    assert_mirrors(&work.path().join("src"), &work.path().join("back"));
    assert!(!tree(work.path()).iter().any(|p| p.ends_with(".xfer-part")), "no partials left");
}

#[test]
fn a_rerun_skips_identical_files_and_force_replaces_changed_ones() {
    let server = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    make_tree(&work.path().join("src"));
    xfer(server.addr, work.path()).args(["put", "-r", "src/", "dst"]).assert().success();
    xfer(server.addr, work.path())
        .args(["put", "-r", "src/", "dst"])
        .assert()
        .success()
        .stderr(predicate::str::contains("0 files copied, 8 skipped, 0 failed"));
    // Same sizes, other bytes: a small file (compared by the digest we
    // take while the server compares) and a large one (hashed after).
    fs::write(work.path().join("src/secret"), b"t").unwrap();
    fs::write(work.path().join("src/a/b/c/big.bin"), pattern(2 * 1024 * 1024 + 7, 2)).unwrap();
    xfer(server.addr, work.path())
        .args(["put", "-r", "src/", "dst"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("xfer: error: secret: remote file exists and differs"))
        .stderr(predicate::str::contains("xfer: error: a/b/c/big.bin: remote file exists and differs"))
        .stderr(predicate::str::contains("0 files copied, 6 skipped, 2 failed"));
    assert_eq!(fs::read(server.path("dst/secret")).unwrap(), b"s");
    fs::write(work.path().join("src/a/b/c/big.bin"), pattern(2 * 1024 * 1024 + 7, 1)).unwrap();
    fs::write(work.path().join("src/secret"), b"changed").unwrap();
    xfer(server.addr, work.path())
        .args(["put", "-r", "src/", "dst"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("xfer: error: secret: remote file exists and differs (use --force"))
        .stderr(predicate::str::contains("0 files copied, 7 skipped, 1 failed"));
    assert_eq!(fs::read(server.path("dst/secret")).unwrap(), b"s");
    xfer(server.addr, work.path())
        .args(["put", "-r", "-f", "src/", "dst"])
        .assert()
        .success()
        .stderr(predicate::str::contains("1 files copied, 7 skipped, 0 failed"));
    assert_eq!(fs::read(server.path("dst/secret")).unwrap(), b"changed");

    // The same on the way back.
    xfer(server.addr, work.path()).args(["get", "-r", "dst/", "back"]).assert().success();
    xfer(server.addr, work.path())
        .args(["get", "-r", "dst/", "back"])
        .assert()
        .success()
        .stderr(predicate::str::contains("0 files copied, 8 skipped, 0 failed"));
    fs::write(work.path().join("back/hello.txt"), b"local edit").unwrap();
    xfer(server.addr, work.path()).args(["get", "-r", "dst/", "back"]).assert().code(1);
    assert_eq!(fs::read(work.path().join("back/hello.txt")).unwrap(), b"local edit");
    xfer(server.addr, work.path()).args(["get", "-r", "-f", "dst/", "back"]).assert().success();
    assert_eq!(fs::read(work.path().join("back/hello.txt")).unwrap(), b"hello, xfer\n");
}

#[test]
fn one_bad_name_fails_alone() {
    let server = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("good.txt"), b"good").unwrap();
    fs::write(src.join("bad\nname"), b"bad").unwrap();
    xfer(server.addr, work.path())
        .args(["put", "-r", "src"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("control characters are not allowed"))
        .stderr(predicate::str::contains("1 files copied, 0 skipped, 1 failed"));
    assert_eq!(tree(&server.path("src")), ["good.txt"]);
}

#[test]
fn damaged_files_are_each_refused_and_nothing_is_committed() {
    let server = TestServer::start();
    let proxy = Proxy::start(server.addr, Direction::ToServer, Damage::FlipBodyByte);
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir(&src).unwrap();
    for i in 0..3 {
        fs::write(src.join(format!("f{i}")), pattern(1000 + i, i as u64)).unwrap();
    }
    xfer(proxy.addr, work.path())
        .args(["put", "-r", "src"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("md5 mismatch for src/f0"))
        .stderr(predicate::str::contains("0 files copied, 0 skipped, 3 failed"));
    assert!(tree(&server.path("src")).is_empty(), "{:?}", tree(&server.path("src")));
}

#[test]
fn damaged_downloads_are_each_refused_and_nothing_is_committed() {
    let server = TestServer::start();
    let src = server.path("src");
    fs::create_dir_all(src.join("d")).unwrap();
    // Small files (written whole by the tree writer) and one streamed.
    fs::write(src.join("small0"), pattern(1000, 1)).unwrap();
    fs::write(src.join("d/small1"), pattern(2000, 2)).unwrap();
    fs::write(src.join("d/large"), pattern(300_000, 3)).unwrap();
    let proxy = Proxy::start(server.addr, Direction::ToClient, Damage::FlipBodyByte);
    let work = tempfile::tempdir().unwrap();
    xfer(proxy.addr, work.path())
        .args(["get", "-r", "src/", "back"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("small0: md5 mismatch"))
        .stderr(predicate::str::contains("d/large: md5 mismatch"))
        .stderr(predicate::str::contains("0 files copied, 0 skipped, 3 failed"));
    assert_eq!(tree(&work.path().join("back")), ["d"], "only the directory, no file or temporary");
}

/// After a cut part way through a tree, every file at its name is whole
/// and no temporary is left; a re-run completes the rest.
fn assert_cut_leaves_only_whole_files(src: &Path, dst: &Path) {
    for rel in tree(dst) {
        assert!(!rel.contains(".xfer-part"), "temporary left behind: {rel}");
        let path = dst.join(&rel);
        if path.is_file() {
            assert_eq!(fs::read(&path).unwrap(), fs::read(src.join(&rel)).unwrap(), "{rel} is not whole");
        }
    }
}

#[test]
fn a_cut_tree_leaves_only_whole_files_and_a_rerun_completes_it() {
    let server = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    for i in 0..200 {
        let dir = src.join(format!("d{}", i % 7));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(format!("f{i}")), pattern(1000 + i, i as u64)).unwrap();
    }
    // Up: the connection to the server is cut after about half the bytes.
    let proxy = Proxy::start(server.addr, Direction::ToServer, Damage::CutAfter(120_000));
    xfer(proxy.addr, work.path()).args(["put", "-r", "src"]).assert().failure();
    assert_cut_leaves_only_whole_files(&src, &server.path("src"));
    let files = |dir: &Path| tree(dir).iter().filter(|r| dir.join(r).is_file()).count();
    assert!(files(&server.path("src")) < 200, "the cut came after the last file");
    xfer(server.addr, work.path()).args(["put", "-r", "src"]).assert().success();
    assert_eq!(tree(&server.path("src")), tree(&src));
    assert_cut_leaves_only_whole_files(&src, &server.path("src"));

    // Down: the same, cut on the way to the client.
    let proxy = Proxy::start(server.addr, Direction::ToClient, Damage::CutAfter(120_000));
    xfer(proxy.addr, work.path()).args(["get", "-r", "src/", "back"]).assert().failure();
    assert_cut_leaves_only_whole_files(&src, &work.path().join("back"));
    assert!(files(&work.path().join("back")) < 200, "the cut came after the last file");
    xfer(server.addr, work.path()).args(["get", "-r", "src/", "back"]).assert().success();
    assert_eq!(tree(&work.path().join("back")), tree(&src));
}

#[test]
fn an_unreadable_subdirectory_fails_alone_and_the_rest_goes() {
    let server = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir_all(src.join("locked")).unwrap();
    fs::create_dir_all(src.join("open")).unwrap();
    fs::write(src.join("locked/secret"), b"s").unwrap();
    fs::write(src.join("open/a"), b"a").unwrap();
    fs::write(src.join("top"), b"t").unwrap();
    fs::set_permissions(src.join("locked"), fs::Permissions::from_mode(0o000)).unwrap();
    // Root reads any directory: run the client as nobody, on a tree nobody owns.
    let paths = [&src, &src.join("locked"), &src.join("open"), &src.join("open/a"), &src.join("top")];
    let mut cmd = as_nobody(work.path(), &paths);
    let out = cmd
        .args(["put", "-r", "src"])
        .current_dir(work.path())
        .env("XFER_SERVER", server.addr.to_string())
        .env("XFER_TOKEN", common::TOKEN)
        .output()
        .unwrap();
    fs::set_permissions(src.join("locked"), fs::Permissions::from_mode(0o755)).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("locked: cannot read this directory: permission denied"), "{stderr}");
    assert!(stderr.contains("2 files copied, 0 skipped, 1 failed"), "{stderr}");
    assert_eq!(tree(&server.path("src")), ["locked", "open", "open/a", "top"]);
}

#[test]
fn a_hostile_server_cannot_place_files_outside_the_target() {
    let (addr, _) = fake::serve_once(Proof::Genuine, |s| {
        raw::recv(s); // get_tree
        for name in ["../evil", "/tmp/evil-abs", "ok/../../evil2", "fine"] {
            let e = serde_json::json!({"op": "entry", "filename": name, "kind": "file", "size": 4, "mode": 420, "mtime": 0});
            raw::send(s, &e.to_string());
        }
        let link = serde_json::json!({"op": "entry", "filename": "esc", "kind": "symlink", "target": "../../etc/passwd"});
        raw::send(s, &link.to_string());
        raw::send(s, r#"{"op":"end"}"#);
        // Whatever the client asks for, push a file with a hostile name.
        while let Some(h) = raw::try_recv(s) {
            if h.contains(r#""op":"end""#) {
                break;
            }
        }
        raw::send(s, r#"{"op":"data","filename":"../evil","total_size":4}"#);
        std::io::Write::write_all(s, b"evil").unwrap();
        raw::send(s, r#"{"op":"done","filename":"../evil","md5":"3c3c2a3fdd1c6ad7c8ba8d83b3a8df75"}"#);
        raw::send(s, r#"{"op":"end"}"#);
    });
    let work = tempfile::tempdir().unwrap();
    let out = xfer(addr, work.path()).args(["get", "-r", "t"]).assert().code(255);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(stderr.contains("../evil: unsafe name, skipped"), "{stderr}");
    let entries = tree(work.path());
    assert!(entries.iter().all(|p| p == "t" || p.starts_with("t/")), "{entries:?}");
    assert!(!work.path().join("t/esc").exists(), "a link out of the tree was made");
}

#[test]
fn a_hostile_server_cannot_answer_more_files_than_were_sent() {
    let (addr, _) = fake::serve_once(Proof::Genuine, |s| {
        raw::recv(s); // put_tree
        raw::send(s, r#"{"op":"ready"}"#);
        while let Some(h) = raw::try_recv(s) {
            if h.contains(r#""op":"end""#) {
                break;
            }
        }
        // Until the client hangs up.
        for i in 0..10_000 {
            let json = format!(r#"{{"op":"have","filename":"f{i}","size":1}}"#);
            let frame = [&(json.len() as u32).to_be_bytes()[..], json.as_bytes()].concat();
            if std::io::Write::write_all(s, &frame).is_err() {
                break;
            }
        }
    });
    let work = tempfile::tempdir().unwrap();
    fs::create_dir(work.path().join("src")).unwrap();
    fs::write(work.path().join("src/one"), b"1").unwrap();
    xfer(addr, work.path())
        .args(["put", "-r", "src"])
        .assert()
        .code(255)
        .stderr(predicate::str::contains("at most one answer per item sent"));
}

#[test]
fn missing_or_wrong_tree_arguments_are_plain_errors() {
    let server = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    xfer(server.addr, work.path())
        .args(["put", "-r", "nope"])
        .assert()
        .code(1)
        .stderr("xfer: error: nope is not a directory\n");
    xfer(server.addr, work.path())
        .args(["get", "-r", "nope"])
        .assert()
        .code(1)
        .stderr("xfer: error: remote directory not found: nope\n");
}

/// A tree cut inside a large file, whose source then shrinks to a size
/// sent whole: the re-run must give exactly the new file, not the new
/// bytes over the old partial, and leave no partial, both ways.
#[test]
fn a_rerun_after_a_cut_large_file_shrank_commits_only_the_new_bytes() {
    let server = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("big.bin"), pattern(3 << 20, 1)).unwrap();
    let proxy = Proxy::start(server.addr, Direction::ToServer, Damage::CutAfter(2 << 20));
    xfer(proxy.addr, work.path()).args(["put", "-r", "src"]).assert().failure();
    assert!(!server.path("src/big.bin").exists());
    // The server keeps writing what reached it until it sees the cut.
    assert!(released_partial_len(&server.path("src"), "big.bin") > 0);

    let new = pattern(200_000, 2);
    fs::write(src.join("big.bin"), &new).unwrap();
    xfer(server.addr, work.path()).args(["put", "-r", "src"]).assert().success();
    let got = fs::read(server.path("src/big.bin")).unwrap();
    assert_eq!((got.len(), md5_hex(&got)), (new.len(), md5_hex(&new)), "stale bytes of the partial kept");
    assert_eq!(tree(&server.path("src")), ["big.bin"], "no partial left");

    fs::write(server.path("src/big.bin"), pattern(3 << 20, 3)).unwrap();
    let proxy = Proxy::start(server.addr, Direction::ToClient, Damage::CutAfter(2 << 20));
    xfer(proxy.addr, work.path()).args(["get", "-r", "src/", "back"]).assert().failure();
    assert!(released_partial_len(&work.path().join("back"), "big.bin") > 0);
    fs::write(server.path("src/big.bin"), &new).unwrap();
    xfer(server.addr, work.path()).args(["get", "-r", "src/", "back"]).assert().success();
    assert_same_file(&work.path().join("back/big.bin"), &new);
    assert_eq!(tree(&work.path().join("back")), ["big.bin"], "no partial left");
}

/// Length of the partial an interrupted run left for `name` in `dir`, once
/// no transfer holds it any more (the server lets go a moment after a cut).
fn released_partial_len(dir: &Path, name: &str) -> u64 {
    let partial = dir.join(format!(".{name}.xfer-part"));
    // Non-empty too: the server creates the partial a moment before it
    // locks it, and a busy machine can show that moment.
    let released = eventually(std::time::Duration::from_secs(5), || {
        fs::File::open(&partial)
            .is_ok_and(|f| f.metadata().is_ok_and(|m| m.len() > 0) && f.try_lock().is_ok())
    });
    assert!(released, "no partial left at {}, or still held", partial.display());
    fs::metadata(&partial).unwrap().len()
}

/// A tree with a 3 MiB file in a subdirectory and a small one after it.
fn tree_with_a_large_file(src: &Path, seed: u64) -> Vec<u8> {
    fs::create_dir_all(src.join("d")).unwrap();
    let big = pattern(3 << 20, seed);
    fs::write(src.join("d/big.bin"), &big).unwrap();
    fs::write(src.join("small.txt"), b"small").unwrap();
    big
}

fn assert_same_file(got: &Path, want: &[u8]) {
    let got = fs::read(got).unwrap();
    assert_eq!((got.len(), md5_hex(&got)), (want.len(), md5_hex(want)));
}

#[test]
fn a_tree_cut_inside_a_large_file_resumes_it_both_ways() {
    let server = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    let big = tree_with_a_large_file(&src, 3);
    // What the re-run moves: the rest of the large file, and the small one
    // unless it was committed before the cut (both sides send small files
    // first).
    let rest = |held: u64| {
        format!("1 files copied, 1 skipped, 0 failed, {} in", human_bytes((big.len() as u64 - held) as f64))
    };

    let proxy = Proxy::start(server.addr, Direction::ToServer, Damage::CutAfter(2 << 20));
    xfer(proxy.addr, work.path()).args(["put", "-r", "src"]).assert().failure();
    let held = released_partial_len(&server.path("src/d"), "big.bin");
    assert!(held > 0 && held < big.len() as u64, "partial of {held} bytes");
    xfer(server.addr, work.path())
        .args(["put", "-r", "src"])
        .assert()
        .success()
        .stderr(predicate::str::contains(format!("resuming d/big.bin at {}\n", human_bytes(held as f64))))
        .stderr(predicate::str::contains(rest(held)));
    assert_same_file(&server.path("src/d/big.bin"), &big);
    assert_eq!(tree(&server.path("src")), tree(&src), "no partial left");

    let proxy = Proxy::start(server.addr, Direction::ToClient, Damage::CutAfter(2 << 20));
    xfer(proxy.addr, work.path()).args(["get", "-r", "src/", "back"]).assert().failure();
    let held = released_partial_len(&work.path().join("back/d"), "big.bin");
    assert!(held > 0 && held < big.len() as u64, "partial of {held} bytes");
    xfer(server.addr, work.path())
        .args(["get", "-r", "src/", "back"])
        .assert()
        .success()
        .stderr(predicate::str::contains(format!("resuming d/big.bin at {}\n", human_bytes(held as f64))))
        .stderr(predicate::str::contains(rest(held)));
    assert_same_file(&work.path().join("back/d/big.bin"), &big);
    assert_eq!(tree(&work.path().join("back")), tree(&src), "no partial left");
}

/// A large file that changed after its first parts resumes after those
/// parts of the partial that are still its own, both ways.
#[test]
fn a_large_file_changed_after_some_parts_resumes_before_the_change_both_ways() {
    const PART: usize = 128 * 1024;
    let server = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    let mut big = tree_with_a_large_file(&src, 5);
    let resuming = |parts: usize| format!("resuming d/big.bin at {}\n", human_bytes((parts * PART) as f64));

    let proxy = Proxy::start(server.addr, Direction::ToServer, Damage::CutAfter(2 << 20));
    xfer(proxy.addr, work.path()).args(["put", "-r", "src"]).assert().failure();
    assert!(released_partial_len(&server.path("src/d"), "big.bin") as usize > 4 * PART);
    big[2 * PART + 7] ^= 0xff;
    fs::write(src.join("d/big.bin"), &big).unwrap();
    xfer(server.addr, work.path())
        .args(["put", "-r", "src"])
        .assert()
        .success()
        .stderr(predicate::str::contains(resuming(2)));
    assert_same_file(&server.path("src/d/big.bin"), &big);
    assert_eq!(tree(&server.path("src")), tree(&src));

    let proxy = Proxy::start(server.addr, Direction::ToClient, Damage::CutAfter(2 << 20));
    xfer(proxy.addr, work.path()).args(["get", "-r", "src/", "back"]).assert().failure();
    assert!(released_partial_len(&work.path().join("back/d"), "big.bin") as usize > 4 * PART);
    big[4 * PART - 1] ^= 0xff; // the last byte of the fourth part
    fs::write(server.path("src/d/big.bin"), &big).unwrap();
    xfer(server.addr, work.path())
        .args(["get", "-r", "src/", "back"])
        .assert()
        .success()
        .stderr(predicate::str::contains(resuming(3)));
    assert_same_file(&work.path().join("back/d/big.bin"), &big);
    assert_eq!(tree(&work.path().join("back")), tree(&src));
}

/// A large file that changed between runs is not spliced onto the old
/// partial: the re-run starts it over, both ways, and says nothing of
/// resuming; so does --no-resume with an unchanged one.
#[test]
fn a_changed_large_file_in_a_tree_starts_over() {
    let server = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    let mut big = tree_with_a_large_file(&src, 4);

    let proxy = Proxy::start(server.addr, Direction::ToServer, Damage::CutAfter(2 << 20));
    xfer(proxy.addr, work.path()).args(["put", "-r", "src"]).assert().failure();
    assert!(released_partial_len(&server.path("src/d"), "big.bin") > 0);
    big[10] ^= 0xff;
    fs::write(src.join("d/big.bin"), &big).unwrap();
    xfer(server.addr, work.path())
        .args(["put", "-r", "src"])
        .assert()
        .success()
        .stderr(predicate::str::contains("resuming").not());
    assert_same_file(&server.path("src/d/big.bin"), &big);
    assert_eq!(tree(&server.path("src")), tree(&src));

    let proxy = Proxy::start(server.addr, Direction::ToClient, Damage::CutAfter(2 << 20));
    xfer(proxy.addr, work.path()).args(["get", "-r", "src/", "back"]).assert().failure();
    assert!(released_partial_len(&work.path().join("back/d"), "big.bin") > 0);
    big[20] ^= 0xff;
    fs::write(server.path("src/d/big.bin"), &big).unwrap();
    xfer(server.addr, work.path())
        .args(["get", "-r", "src/", "back"])
        .assert()
        .success()
        .stderr(predicate::str::contains("resuming").not());
    assert_same_file(&work.path().join("back/d/big.bin"), &big);
    assert_eq!(tree(&work.path().join("back")), tree(&src));

    // Unchanged, but --no-resume: whole again.
    let proxy = Proxy::start(server.addr, Direction::ToClient, Damage::CutAfter(2 << 20));
    fs::remove_dir_all(work.path().join("back")).unwrap();
    xfer(proxy.addr, work.path()).args(["get", "-r", "src/", "back"]).assert().failure();
    assert!(released_partial_len(&work.path().join("back/d"), "big.bin") > 0);
    xfer(server.addr, work.path())
        .args(["get", "-r", "--no-resume", "src/", "back"])
        .assert()
        .success()
        .stderr(predicate::str::contains("resuming").not());
    assert_same_file(&work.path().join("back/d/big.bin"), &big);
    assert_eq!(tree(&work.path().join("back")), tree(&src));
}

/// Enough files that a re-run compares them on several threads: each is
/// still judged on its own, both ways.
#[test]
fn a_rerun_of_many_files_judges_each_one() {
    let server = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    let name = |i: usize| format!("d{}/f{i}", i % 3);
    for i in 0..40 {
        fs::create_dir_all(src.join(format!("d{}", i % 3))).unwrap();
        fs::write(src.join(name(i)), pattern(100 + i * 997, i as u64)).unwrap();
    }
    xfer(server.addr, work.path()).args(["put", "-r", "src"]).assert().success();
    let summary = |copied, skipped| format!("{copied} files copied, {skipped} skipped, 0 failed");
    for (args, dir) in [
        (["put", "-r", "-f", "src/", "src"], server.path("src")),
        (["get", "-r", "-f", "src/", "back"], work.path().join("back")),
    ] {
        if args[0] == "get" {
            xfer(server.addr, work.path()).args(["get", "-r", "src/", "back"]).assert().success();
        }
        xfer(server.addr, work.path())
            .args(args)
            .assert()
            .success()
            .stderr(predicate::str::contains(summary(0, 40)));
        // Three files change, keeping their sizes, on the side that sends.
        let from = if args[0] == "put" { src.clone() } else { server.path("src") };
        for i in [5, 17, 38] {
            let mut data = fs::read(from.join(name(i))).unwrap();
            data[0] ^= 0xff;
            fs::write(from.join(name(i)), &data).unwrap();
        }
        xfer(server.addr, work.path())
            .args(args)
            .assert()
            .success()
            .stderr(predicate::str::contains(summary(3, 37)));
        for i in 0..40 {
            assert_eq!(
                fs::read(dir.join(name(i))).unwrap(),
                fs::read(from.join(name(i))).unwrap(),
                "{}",
                name(i)
            );
        }
    }
}

#[test]
fn get_r_reports_what_the_servers_walk_left_out_and_copies_the_rest() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let src = root.join("src");
    fs::create_dir_all(src.join("locked")).unwrap();
    fs::create_dir_all(src.join("open")).unwrap();
    fs::write(src.join("locked/secret"), b"s").unwrap();
    fs::write(src.join("open/a"), b"a").unwrap();
    fs::write(src.join("top"), b"t").unwrap();
    std::os::unix::fs::symlink("/etc", src.join("out")).unwrap();
    assert!(std::process::Command::new("mkfifo").arg(src.join("fifo")).status().unwrap().success());
    fs::set_permissions(src.join("locked"), fs::Permissions::from_mode(0o000)).unwrap();
    let keys = work.path().join("keys");
    fs::create_dir(&keys).unwrap();
    // Root reads any directory: run the server as nobody, on a root nobody owns.
    let paths =
        [&root, &src, &src.join("locked"), &src.join("open"), &src.join("open/a"), &src.join("top"), &keys];
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut cmd = as_nobody(work.path(), &paths);
    let mut server = cmd
        .env("XFER_TOKEN", common::TOKEN)
        .args(["serve", "--listen", &addr.to_string(), "--root"])
        .arg(&root)
        .arg("--key-file")
        .arg(keys.join("server-key.pem"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        common::eventually(std::time::Duration::from_secs(10), || std::net::TcpStream::connect(addr).is_ok())
    );
    let out = xfer(addr, work.path()).args(["get", "-r", "src/", "back"]).output().unwrap();
    server.kill().unwrap();
    server.wait().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("xfer: error: locked: cannot read this directory: permission denied"),
        "{stderr}"
    );
    assert!(stderr.contains("xfer: warning: fifo: special file, skipped"), "{stderr}");
    assert!(
        stderr.contains("xfer: warning: out: symlink to /etc leads out of the tree, skipped"),
        "{stderr}"
    );
    assert!(stderr.contains("2 files copied, 0 skipped, 1 failed"), "{stderr}");
    assert_eq!(tree(&work.path().join("back")), ["locked", "open", "open/a", "top"]);
}

#[test]
fn a_fifo_in_the_root_is_refused_at_once_and_never_holds_a_thread() {
    let server = TestServer::start();
    assert!(std::process::Command::new("mkfifo").arg(server.path("fifo")).status().unwrap().success());
    let work = tempfile::tempdir().unwrap();
    // More requests than the server has blocking threads (64).
    for _ in 0..70 {
        xfer(server.addr, work.path())
            .args(["get", "fifo", "-"])
            .timeout(std::time::Duration::from_secs(10))
            .assert()
            .code(1)
            .stderr(predicate::str::contains("not a regular file"));
    }
    fs::write(work.path().join("after.txt"), b"still served").unwrap();
    xfer(server.addr, work.path()).args(["put", "after.txt"]).assert().success();
}

/// The real binary, to run as nobody when the tests run as root (who reads
/// any directory), with `paths` given to nobody and `work` opened to all;
/// as it is otherwise.
fn as_nobody(work: &Path, paths: &[&std::path::PathBuf]) -> std::process::Command {
    if fs::metadata("/proc/self").unwrap().uid() != 0 {
        return std::process::Command::new(assert_cmd::cargo::cargo_bin("xfer"));
    }
    fs::set_permissions(work, fs::Permissions::from_mode(0o755)).unwrap();
    for p in paths {
        std::os::unix::fs::lchown(p, Some(65534), Some(65534)).unwrap();
    }
    let mut c = std::process::Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups"]).arg(assert_cmd::cargo::cargo_bin("xfer"));
    c
}
