//! Remote file management, as sftp users expect it: rm, mv, mkdir, ls
//! (long, recursive, of a file), cat, md5sum, df. The real binary against
//! a real server; every path confined to the root.

mod common;

use common::{md5_hex, pattern, tree, xfer, TestServer};
use predicates::prelude::*;
use std::fs;

#[test]
fn rm_removes_files_and_with_r_trees_never_the_root_nor_through_a_link() {
    let server = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    fs::create_dir_all(server.path("d/e")).unwrap();
    fs::write(server.path("d/e/f"), b"f").unwrap();
    fs::write(server.path("a.log"), b"a").unwrap();
    fs::write(server.path("b.log"), b"b").unwrap();
    fs::create_dir_all(server.path("kept")).unwrap();
    fs::write(server.path("kept/precious"), b"p").unwrap();
    std::os::unix::fs::symlink("kept", server.path("link")).unwrap();
    xfer(server.addr, work.path()).args(["rm", "*.log"]).assert().success().stdout("");
    assert!(!server.path("a.log").exists() && !server.path("b.log").exists());
    xfer(server.addr, work.path())
        .args(["rm", "d"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("xfer: error: remote path is a directory: d (use -r"));
    xfer(server.addr, work.path())
        .args(["rm", "-r", "-v", "d", "link"])
        .assert()
        .success()
        .stdout("removed d/e/f\nremoved d/e\nremoved d\nremoved link\n");
    assert_eq!(tree(server.root.path()), ["kept", "kept/precious"], "the link went, not what it led to");
    for root in ["/", ".", ""] {
        xfer(server.addr, work.path())
            .args(["rm", "-r", root])
            .assert()
            .code(1)
            .stderr(predicate::str::contains("rm refuses the root"));
    }
    xfer(server.addr, work.path()).args(["rm", "../etc/passwd"]).assert().code(1);
    xfer(server.addr, work.path())
        .args(["rm", "nothing"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("not found: nothing"));
    assert!(server.path("kept/precious").exists());
}

#[test]
fn mv_renames_atomically_into_directories_and_never_clobbers_without_f() {
    let server = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    fs::write(server.path("a.txt"), b"a").unwrap();
    fs::write(server.path("b.txt"), b"b").unwrap();
    fs::create_dir(server.path("dir")).unwrap();
    xfer(server.addr, work.path())
        .args(["mv", "a.txt", "b.txt"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("exists").and(predicate::str::contains("--force")));
    assert_eq!(fs::read(server.path("b.txt")).unwrap(), b"b", "not clobbered");
    xfer(server.addr, work.path()).args(["mv", "-f", "a.txt", "b.txt"]).assert().success();
    assert_eq!(fs::read(server.path("b.txt")).unwrap(), b"a");
    xfer(server.addr, work.path())
        .args(["mv", "-v", "b.txt", "dir"])
        .assert()
        .success()
        .stdout("renamed b.txt -> dir/b.txt\n");
    assert_eq!(fs::read(server.path("dir/b.txt")).unwrap(), b"a");
    xfer(server.addr, work.path())
        .args(["mv", "dir", "dir/inside"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("into itself"));
    for (src, dst) in [("dir", "../out"), ("../x", "y"), ("/", "y")] {
        xfer(server.addr, work.path()).args(["mv", src, dst]).assert().code(1);
    }
    assert_eq!(tree(server.root.path()), ["dir", "dir/b.txt"]);
    // A relative link moved must still lead inside the root from where it
    // lands; deeper is fine, and an absolute one means the same anywhere.
    fs::create_dir_all(server.path("a/b/c")).unwrap();
    std::os::unix::fs::symlink("../../dir", server.path("a/b/l")).unwrap();
    std::os::unix::fs::symlink("/tmp", server.path("a/b/abs")).unwrap();
    let refused = |src: &str, dst: &str, says: &str| {
        xfer(server.addr, work.path())
            .args(["mv", src, dst])
            .assert()
            .code(1)
            .stderr(predicate::str::contains(says));
    };
    for dst in ["l", "a/l"] {
        refused("a/b/l", dst, "its target ../../dir would lead out of the root from there");
    }
    xfer(server.addr, work.path()).args(["mv", "a/b/l", "a/b/c/l"]).assert().success();
    xfer(server.addr, work.path()).args(["mv", "a/b/abs", "abs"]).assert().success();
    assert_eq!(fs::read_link(server.path("a/b/c/l")).unwrap().to_str(), Some("../../dir"));
    // Judged where it really lands: through `up -> .`, `up/up/l` is `l`.
    std::os::unix::fs::symlink(".", server.path("up")).unwrap();
    refused("a/b/c/l", "up/up/l", "would lead out of the root from there");
    // A directory's links climb from where they stand: `a/b/c` at the top
    // (however its name reads) would take `l` out; at `a/c` (named
    // `up/a/c`), `l` still climbs only to the top.
    for dst in ["c", "up/c", "up/up/c"] {
        refused("a/b/c", dst, "its link a/b/c/l (../../dir) would lead out of the root");
    }
    xfer(server.addr, work.path()).args(["mv", "a/b/c", "up/a/c"]).assert().success();
    xfer(server.addr, work.path()).args(["mv", "a/c", "a/b/c"]).assert().success();
    assert_eq!(fs::read_link(server.path("a/b/c/l")).unwrap().to_str(), Some("../../dir"));
}

#[test]
fn mkdir_makes_directories_and_with_p_their_parents() {
    let server = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    xfer(server.addr, work.path())
        .args(["mkdir", "a/b"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("parent is missing on the server (use -p)"));
    xfer(server.addr, work.path()).args(["mkdir", "-p", "a/b", "c"]).assert().success();
    xfer(server.addr, work.path()).args(["mkdir", "-p", "a/b"]).assert().success();
    xfer(server.addr, work.path())
        .args(["mkdir", "c"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("exists"));
    xfer(server.addr, work.path()).args(["mkdir", "x.xfer-part"]).assert().code(1);
    assert_eq!(tree(server.root.path()), ["a", "a/b", "c"]);
}

#[test]
fn ls_lists_files_long_recursive_and_escaped() {
    let server = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    fs::create_dir_all(server.path("d/e")).unwrap();
    fs::write(server.path("d/e/deep.bin"), pattern(3 << 20, 1)).unwrap();
    fs::write(server.path("d/b.txt"), b"hello").unwrap();
    std::os::unix::fs::symlink("b.txt", server.path("d/l")).unwrap();
    fs::write(server.path("invoice\u{202e}fdp.exe"), b"x").unwrap();
    xfer(server.addr, work.path())
        .args(["ls", "d/b.txt"])
        .assert()
        .success()
        .stdout(predicate::str::is_match(r"^ +5  \d{4}-\d\d-\d\dT[\d:]+Z  b\.txt\n$").unwrap());
    let out = xfer(server.addr, work.path()).args(["ls", "-l", "-R", "-h"]).assert().success();
    let stdout = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    let names: Vec<_> = stdout.lines().map(|l| l.split("Z  ").nth(1).unwrap()).collect();
    assert_eq!(names, ["d/", "invoice\\u{202e}fdp.exe", "d/b.txt", "d/e/", "d/l -> b.txt", "d/e/deep.bin"]);
    assert!(stdout.lines().any(|l| l.starts_with("-rw-r--r--") && l.contains(" 3.0M ")), "{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with("lrwxrwxrwx")), "{stdout}");
    assert!(!stdout.contains('\u{202e}'), "never raw");
    xfer(server.addr, work.path()).args(["ls", "nothing"]).assert().code(1);
}

#[test]
fn cat_md5sum_and_df_answer_without_a_download() {
    let server = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    let big = pattern(5 << 20, 4);
    fs::write(server.path("big.bin"), &big).unwrap();
    fs::write(server.path("small.txt"), b"small\n").unwrap();
    xfer(server.addr, work.path())
        .args(["md5sum", "big.bin", "small.txt"])
        .assert()
        .success()
        .stdout(format!("{}  big.bin\n{}  small.txt\n", md5_hex(&big), md5_hex(b"small\n")));
    // --parts: the digest over parts that transfers show, here and for
    // the same file on this side.
    let parts = common::parts_md5_hex(&big);
    assert!(parts.ends_with("-40"), "{parts}");
    xfer(server.addr, work.path())
        .args(["md5sum", "--parts", "big.bin", "small.txt"])
        .assert()
        .success()
        .stdout(format!("{parts}  big.bin\n{}  small.txt\n", md5_hex(b"small\n")));
    // --local reaches no server, so it needs no token either.
    let no_config = tempfile::tempdir().unwrap();
    xfer(server.addr, server.root.path())
        .env_remove("XFER_TOKEN")
        .env("HOME", no_config.path())
        .env("XDG_CONFIG_HOME", no_config.path())
        .args(["md5sum", "--parts", "--local", "big.bin"])
        .assert()
        .success()
        .stdout(format!("{parts}  big.bin\n"));
    // As md5sum itself prints it.
    let local =
        std::process::Command::new("md5sum").arg("big.bin").current_dir(server.root.path()).output().unwrap();
    let again = xfer(server.addr, server.root.path()).args(["md5sum", "big.bin"]).assert().success();
    assert_eq!(again.get_output().stdout, local.stdout);
    let out = xfer(server.addr, work.path()).args(["cat", "small.txt", "big.bin"]).assert().success();
    let mut both = b"small\n".to_vec();
    both.extend_from_slice(&big);
    assert!(out.get_output().stdout == both, "cat writes the bytes, in order");
    assert!(out.get_output().stderr.is_empty(), "and nothing else");
    // A directory, or a file not there: said, the others still done.
    fs::create_dir(server.path("dir")).unwrap();
    xfer(server.addr, work.path())
        .args(["md5sum", "dir", "small.txt"])
        .assert()
        .code(1)
        .stdout(format!("{}  small.txt\n", md5_hex(b"small\n")))
        .stderr(predicate::str::contains("is a directory: dir"));
    let out = xfer(server.addr, work.path()).args(["df"]).assert().success();
    let stdout = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    let nums: Vec<u64> =
        stdout.lines().nth(1).unwrap().split_whitespace().take(3).map(|n| n.parse().unwrap()).collect();
    assert!(nums[0] > 0 && nums[0] == nums[1] + nums[2], "size = used + free: {stdout}");
    xfer(server.addr, work.path())
        .args(["df", "-h"])
        .assert()
        .success()
        .stdout(predicate::str::contains("iB"));
}
