//! The command shapes scp, cp and rsync users type: several sources and a
//! destination last, into directories, remote patterns, the root, re-runs
//! that find the same bytes, modes and times, closed pipes. The real binary
//! against a real server.

mod common;

use common::{pattern, tree, xfer, TestServer};
use predicates::prelude::*;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

#[test]
fn several_sources_go_into_a_remote_directory_over_one_connection() {
    let server = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    for name in ["a.txt", "b.txt", "c.txt"] {
        fs::write(work.path().join(name), name).unwrap();
    }
    // A trailing / makes the directory.
    xfer(server.addr, work.path()).args(["put", "a.txt", "b.txt", "c.txt", "d/"]).assert().success();
    assert_eq!(tree(&server.path("d")), ["a.txt", "b.txt", "c.txt"]);
    assert_eq!(fs::read(server.path("d/b.txt")).unwrap(), b"b.txt");
    // An existing one needs no slash; a missing one without it is refused.
    fs::create_dir(server.path("e")).unwrap();
    xfer(server.addr, work.path()).args(["put", "a.txt", "b.txt", "e"]).assert().success();
    assert_eq!(tree(&server.path("e")), ["a.txt", "b.txt"]);
    xfer(server.addr, work.path())
        .args(["put", "a.txt", "b.txt", "nodir"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("the remote destination nodir is not a directory"));
    assert!(!server.path("nodir").exists());
    // A remote file is no directory either (the server says what a path
    // is without listing it).
    fs::write(server.path("plain"), b"p").unwrap();
    xfer(server.addr, work.path())
        .args(["put", "a.txt", "b.txt", "plain"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("the remote destination plain is not a directory"));
    assert_eq!(fs::read(server.path("plain")).unwrap(), b"p");
    // And back: several remote files into a local directory.
    xfer(server.addr, work.path()).args(["get", "d/a.txt", "d/c.txt", "back/"]).assert().success();
    assert_eq!(tree(&work.path().join("back")), ["a.txt", "c.txt"]);
}

#[test]
fn a_glob_that_matched_two_local_files_is_not_a_rename() {
    let server = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    fs::write(work.path().join("a.txt"), b"a").unwrap();
    fs::write(work.path().join("b.txt"), b"b").unwrap();
    xfer(server.addr, work.path())
        .args(["put", "a.txt", "b.txt"])
        .assert()
        .code(2)
        .stderr(predicate::str::starts_with("xfer: error: b.txt is a local file too"));
    assert!(tree(server.root.path()).is_empty(), "nothing was sent");
    // Meant: -T says so.
    xfer(server.addr, work.path()).args(["put", "-T", "a.txt", "b.txt"]).assert().success();
    assert_eq!(fs::read(server.path("b.txt")).unwrap(), b"a");
    // The same name on both sides is no accident.
    xfer(server.addr, work.path()).args(["put", "a.txt", "a.txt"]).assert().success();
}

#[test]
fn remote_patterns_match_on_the_server_never_its_partials() {
    let server = TestServer::start();
    fs::create_dir(server.path("logs")).unwrap();
    for name in ["1.gz", "2.gz", "3.txt", ".hidden.gz", ".4.gz.xfer-part"] {
        fs::write(server.path(&format!("logs/{name}")), name).unwrap();
    }
    let work = tempfile::tempdir().unwrap();
    xfer(server.addr, work.path()).args(["get", "logs/*.gz", "."]).assert().success();
    assert_eq!(tree(work.path()), ["1.gz", "2.gz"]);
    let out = xfer(server.addr, work.path()).args(["ls", "logs/[13]*"]).assert().success();
    let listing = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    let names: Vec<_> = listing.lines().map(|l| l.rsplit("  ").next().unwrap()).collect();
    assert_eq!(names, ["logs/1.gz", "logs/3.txt"], "named as the shell names its matches");
    xfer(server.addr, work.path())
        .args(["get", "logs/*.zip", "."])
        .assert()
        .code(1)
        .stderr("xfer: error: no remote file matches logs/*.zip\n");
}

#[test]
fn the_root_is_dot_or_slash() {
    let server = TestServer::start();
    fs::create_dir(server.path("sub")).unwrap();
    fs::write(server.path("sub/f"), b"f").unwrap();
    fs::write(server.path("top"), b"t").unwrap();
    let work = tempfile::tempdir().unwrap();
    let out = xfer(server.addr, work.path()).args(["ls", "/"]).assert().success();
    assert!(String::from_utf8_lossy(&out.get_output().stdout).contains("sub/"));
    xfer(server.addr, work.path()).args(["get", "-r", "/", "all"]).assert().success();
    assert_eq!(tree(&work.path().join("all")), ["sub", "sub/f", "top"]);
    xfer(server.addr, work.path()).args(["get", "/sub/f", "f2"]).assert().success();
    assert_eq!(fs::read(work.path().join("f2")).unwrap(), b"f");
    // put -r . sends the current directory.
    let src = tempfile::tempdir().unwrap();
    fs::write(src.path().join("x"), b"x").unwrap();
    xfer(server.addr, src.path()).args(["put", "-r", ".", "copy"]).assert().success();
    assert_eq!(tree(&server.path("copy")), ["x"]);
    xfer(server.addr, src.path()).args(["put", "x", "/"]).assert().success();
    assert_eq!(fs::read(server.path("x")).unwrap(), b"x");
}

#[test]
fn identical_files_are_skipped_both_ways_and_differing_ones_need_force() {
    let server = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    let data = pattern(300_000, 7);
    fs::write(work.path().join("f.bin"), &data).unwrap();
    xfer(server.addr, work.path()).args(["put", "f.bin"]).assert().success();
    xfer(server.addr, work.path())
        .args(["put", "f.bin"])
        .assert()
        .success()
        .stderr("put f.bin  identical, skipped\n");
    xfer(server.addr, work.path())
        .args(["get", "f.bin"])
        .assert()
        .success()
        .stderr("get f.bin  identical, skipped\n");
    // Same size, other bytes: in the way without -f, both ways.
    let mut other = data.clone();
    other[123] ^= 1;
    fs::write(work.path().join("f.bin"), &other).unwrap();
    xfer(server.addr, work.path())
        .args(["put", "f.bin"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("exists").and(predicate::str::contains("--force")));
    xfer(server.addr, work.path())
        .args(["get", "f.bin"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("exists").and(predicate::str::contains("--force")));
    assert_eq!(fs::read(work.path().join("f.bin")).unwrap(), other, "nothing replaced");
    assert_eq!(fs::read(server.path("f.bin")).unwrap(), data, "nothing replaced");
    xfer(server.addr, work.path()).args(["put", "-f", "f.bin"]).assert().success();
    assert_eq!(fs::read(server.path("f.bin")).unwrap(), other);
}

/// A put onto a file that is there is answered with its size and digest;
/// the client decides. The server's log says so, not "refused": the
/// client may well have skipped it as identical, with exit 0.
#[test]
fn the_log_tells_a_put_onto_an_existing_file_from_a_refusal() {
    let root = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let server = common::xfer_process(addr, root.path())
        .args(["serve", "--listen", &addr.to_string(), "--root", "."])
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        common::eventually(std::time::Duration::from_secs(10), || std::net::TcpStream::connect(addr).is_ok())
    );
    let work = tempfile::tempdir().unwrap();
    fs::write(work.path().join("f.txt"), b"first").unwrap();
    xfer(addr, work.path()).args(["put", "f.txt"]).assert().success();
    xfer(addr, work.path())
        .args(["put", "f.txt"])
        .assert()
        .success()
        .stderr("put f.txt  identical, skipped\n");
    fs::write(work.path().join("f.txt"), b"other").unwrap();
    xfer(addr, work.path()).args(["put", "f.txt"]).assert().code(1);
    xfer(addr, work.path()).args(["put", "f.txt", "a/b/../c"]).assert().code(1);
    unsafe { libc::kill(server.id() as i32, libc::SIGTERM) };
    let log = String::from_utf8_lossy(&server.wait_with_output().unwrap().stderr).into_owned();
    let lines = |word: &str| log.lines().filter(|l| l.contains("op=put") && l.contains(word)).count();
    assert_eq!(lines("exists: sent its size and digest"), 2, "{log}");
    assert_eq!(lines("refused:"), 1, "only the bad path is a refusal: {log}");
    assert!(!log.contains("remote file exists"), "{log}");
}

#[test]
fn single_files_keep_their_mode_and_time_both_ways() {
    let server = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    let script = work.path().join("run.sh");
    fs::write(&script, b"#!/bin/sh\n").unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o4751)).unwrap();
    let when = filetime_of(1_600_000_000);
    fs::File::options().write(true).open(&script).unwrap().set_modified(when).unwrap();
    xfer(server.addr, work.path()).args(["put", "run.sh"]).assert().success();
    let there = fs::metadata(server.path("run.sh")).unwrap();
    assert_eq!((there.mode() & 0o7777, there.mtime()), (0o751, 1_600_000_000), "no setuid, the same time");
    xfer(server.addr, work.path()).args(["get", "run.sh", "back.sh"]).assert().success();
    let back = fs::metadata(work.path().join("back.sh")).unwrap();
    assert_eq!((back.mode() & 0o7777, back.mtime()), (0o751, 1_600_000_000));
}

fn filetime_of(secs: u64) -> std::time::SystemTime {
    std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs)
}

#[test]
fn a_missing_local_directory_with_a_slash_is_an_error_not_a_file() {
    let server = TestServer::start();
    fs::write(server.path("b.txt"), b"b").unwrap();
    let work = tempfile::tempdir().unwrap();
    xfer(server.addr, work.path())
        .args(["get", "b.txt", "newdir/"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("local directory newdir/ does not exist"));
    assert!(tree(work.path()).is_empty());
    // A failed get -r leaves no empty directory behind.
    xfer(server.addr, work.path()).args(["get", "-r", "nope", "made"]).assert().code(1);
    xfer(server.addr, work.path()).args(["get", "-r", "b.txt", "made"]).assert().code(1);
    assert!(tree(work.path()).is_empty(), "{:?}", tree(work.path()));
}

#[test]
fn a_closed_output_pipe_ends_quietly() {
    let server = TestServer::start();
    fs::write(server.path("big.bin"), pattern(8 << 20, 3)).unwrap();
    let work = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "'{}' get big.bin - | head -c 10 >/dev/null",
            assert_cmd::cargo::cargo_bin("xfer").display()
        ))
        .current_dir(work.path())
        .env("XFER_SERVER", server.addr.to_string())
        .env("XFER_TOKEN", common::TOKEN)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn serve_refuses_client_options_and_a_bare_host_means_port_9909() {
    let work = tempfile::tempdir().unwrap();
    assert_cmd::Command::cargo_bin("xfer")
        .unwrap()
        .current_dir(work.path())
        .env("XFER_TOKEN", common::TOKEN)
        .args(["serve", "-s", "127.0.0.1:9942"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("-s/--server is for clients"));
    assert_eq!(xfer::client::with_default_port("example.org"), "example.org:9909");
    assert_eq!(xfer::client::with_default_port("example.org:22"), "example.org:22");
    assert_eq!(xfer::client::with_default_port("[::1]"), "[::1]:9909");
    assert_eq!(xfer::client::with_default_port("[::1]:7"), "[::1]:7");
}

#[test]
fn standard_input_of_unknown_length_is_put_verified_and_whole() {
    let server = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    // More than one chunk, and not a multiple of one.
    let data = pattern(3 * 1024 * 1024 + 77, 5);
    xfer(server.addr, work.path())
        .args(["put", "-", "backup.tar"])
        .write_stdin(data.clone())
        .assert()
        .success()
        .stderr(predicate::str::contains(format!("md5 {} verified", common::parts_md5_hex(&data))));
    assert_eq!(fs::read(server.path("backup.tar")).unwrap(), data);
    assert_eq!(tree(server.root.path()), ["backup.tar"], "no partial left");
    // Not replaced without -f; empty input is an empty file.
    xfer(server.addr, work.path()).args(["put", "-", "backup.tar"]).write_stdin("x").assert().code(1);
    assert_eq!(fs::read(server.path("backup.tar")).unwrap(), data);
    xfer(server.addr, work.path()).args(["put", "-", "empty"]).write_stdin("").assert().success();
    assert_eq!(fs::read(server.path("empty")).unwrap(), b"");
    xfer(server.addr, work.path()).args(["put", "-"]).assert().code(2);
}

#[test]
fn verbose_trees_name_each_file_copied() {
    let server = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("small"), b"s").unwrap();
    fs::write(src.join("d/large"), pattern(2 << 20, 9)).unwrap();
    for (args, dest) in
        [(["put", "-r", "-v", "src", "copy"], "copy"), (["get", "-r", "-v", "copy", "back"], "back")]
    {
        let out = xfer(server.addr, work.path()).args(args).assert().success();
        let stderr = String::from_utf8(out.get_output().stderr.clone()).unwrap();
        let mut named: Vec<_> = stderr.lines().filter(|l| !l.contains("files copied")).collect();
        named.sort();
        assert_eq!(named, ["d/large", "small"], "{dest}: {stderr}");
    }
    // A re-run into the copy (src/: its contents, as rsync) copies
    // nothing, so names nothing.
    let out = xfer(server.addr, work.path()).args(["put", "-r", "-v", "src/", "copy"]).assert().success();
    assert_eq!(String::from_utf8_lossy(&out.get_output().stderr).lines().count(), 1);
}

#[test]
fn a_tree_goes_into_an_existing_directory_by_name_as_cp_r_does() {
    let server = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    fs::create_dir_all(work.path().join("src/sub")).unwrap();
    fs::write(work.path().join("src/sub/x"), b"x").unwrap();
    // Missing: the destination becomes the copy. There: the copy goes in it.
    xfer(server.addr, work.path()).args(["put", "-r", "src", "dst"]).assert().success();
    assert_eq!(tree(&server.path("dst")), ["sub", "sub/x"]);
    xfer(server.addr, work.path()).args(["put", "-r", "src", "dst"]).assert().success();
    assert_eq!(tree(&server.path("dst")), ["src", "src/sub", "src/sub/x", "sub", "sub/x"]);
    // With a trailing slash, the contents, wherever: a re-run finds its copy.
    xfer(server.addr, work.path())
        .args(["put", "-r", "src/", "dst"])
        .assert()
        .success()
        .stderr(predicate::str::contains("1 skipped"));
    // The same for get.
    xfer(server.addr, work.path()).args(["get", "-r", "dst/src", "back"]).assert().success();
    assert_eq!(tree(&work.path().join("back")), ["sub", "sub/x"]);
    xfer(server.addr, work.path()).args(["get", "-r", "dst/src", "back"]).assert().success();
    assert_eq!(tree(&work.path().join("back")), ["src", "src/sub", "src/sub/x", "sub", "sub/x"]);
    xfer(server.addr, work.path())
        .args(["get", "-r", "dst/src/", "back"])
        .assert()
        .success()
        .stderr(predicate::str::contains("1 skipped"));
}

#[test]
fn trees_among_several_sources_go_in_by_name_or_as_contents() {
    let server = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    fs::create_dir_all(work.path().join("src/sub")).unwrap();
    fs::write(work.path().join("src/sub/x"), b"x").unwrap();
    fs::write(work.path().join("f.txt"), b"f").unwrap();
    xfer(server.addr, work.path()).args(["put", "-r", "src", "f.txt", "by-name/"]).assert().success();
    assert_eq!(tree(&server.path("by-name")), ["f.txt", "src", "src/sub", "src/sub/x"]);
    // A trailing / on a tree means its contents, as rsync.
    xfer(server.addr, work.path()).args(["put", "-r", "src/", "f.txt", "contents/"]).assert().success();
    assert_eq!(tree(&server.path("contents")), ["f.txt", "sub", "sub/x"]);
    // Without -r a directory among the sources fails alone.
    xfer(server.addr, work.path())
        .args(["put", "src", "f.txt", "plain/"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("src is a directory (use -r to send it)"));
    assert_eq!(tree(&server.path("plain")), ["f.txt"]);
}

#[test]
fn a_name_with_control_characters_is_refused_once_and_shown_escaped() {
    let server = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    fs::create_dir(work.path().join("t")).unwrap();
    fs::write(work.path().join("t/a\u{1}b"), b"x").unwrap();
    fs::write(work.path().join("t/ok"), b"x").unwrap();
    let out = xfer(server.addr, work.path()).args(["put", "-r", "t"]).assert().code(1);
    let stderr = String::from_utf8(out.get_output().stderr.clone()).unwrap();
    assert_eq!(stderr.matches("a\\u{1}b").count(), 1, "named once: {stderr}");
    assert!(!stderr.contains('\u{1}'), "never raw: {stderr}");
    assert!(stderr.contains("control characters are not allowed"), "{stderr}");
    assert!(server.path("t/ok").exists(), "the rest went on");
    let out = xfer(server.addr, work.path()).args(["put", "t/a\u{1}b"]).assert().code(1);
    let stderr = String::from_utf8(out.get_output().stderr.clone()).unwrap();
    assert_eq!(stderr.matches("a\\u{1}b").count(), 1, "named once: {stderr}");
}
