//! put, get and ls through the real binary against a real server.

mod common;

use common::{fixture, md5_hex, pattern, tree, xfer, TestServer};
use predicates::prelude::*;
use std::fs;

/// Puts `local` (a fixture) and gets it back; both copies must match it.
fn round_trip(server: &TestServer, src: &std::path::Path, remote: &str) {
    let work = tempfile::tempdir().unwrap();
    let data = fs::read(src).unwrap();
    let md5 = common::parts_md5_hex(&data);
    xfer(server.addr, work.path())
        .arg("put")
        .arg(src)
        .arg(remote)
        .assert()
        .success()
        .stderr(predicate::str::contains(format!("md5 {md5} verified")));
    assert_eq!(fs::read(server.path(remote)).unwrap(), data, "server copy of {remote}");
    xfer(server.addr, work.path())
        .args(["get", remote, "back"])
        .assert()
        .success()
        .stderr(predicate::str::contains(format!("md5 {md5} verified")));
    assert_eq!(fs::read(work.path().join("back")).unwrap(), data, "local copy of {remote}");
    assert_eq!(tree(work.path()), ["back"], "no temporaries left in the client's directory");
}

/// `--md5` adds the plain MD5 of the whole file, as md5sum prints it, to
/// the digest over parts, both ways and in `--json`.
#[test]
fn md5_flag_reports_the_whole_file_md5_both_ways() {
    let server = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    let data = pattern(3 << 20, 11);
    fs::write(work.path().join("big.bin"), &data).unwrap();
    let (parts, whole) = (common::parts_md5_hex(&data), md5_hex(&data));
    let shown = format!("md5 {parts} verified, whole-file md5 {whole}\n");
    xfer(server.addr, work.path())
        .args(["put", "--md5", "big.bin"])
        .assert()
        .success()
        .stderr(predicate::str::ends_with(shown.clone()));
    xfer(server.addr, work.path())
        .args(["get", "--md5", "big.bin", "back"])
        .assert()
        .success()
        .stderr(predicate::str::ends_with(shown));
    assert_eq!(fs::read(work.path().join("back")).unwrap(), data);
    // Again, with the server's remembered digests, and as JSON.
    let out = xfer(server.addr, work.path())
        .args(["--json", "get", "--md5", "big.bin", "again"])
        .assert()
        .success();
    let line: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!((line["md5"].as_str(), line["whole_md5"].as_str()), (Some(&*parts), Some(&*whole)));
    // Without it, only the digest over parts.
    xfer(server.addr, work.path())
        .args(["get", "-f", "big.bin", "back"])
        .assert()
        .success()
        .stderr(predicate::str::ends_with(format!("md5 {parts} verified\n")));
}

#[test]
fn empty_one_byte_binary_and_unicode_files_round_trip() {
    let server = TestServer::start();
    round_trip(&server, &fixture("empty"), "empty");
    round_trip(&server, &fixture("one-byte"), "one-byte");
    round_trip(&server, &fixture("all-bytes.bin"), "all-bytes.bin");
    round_trip(&server, &fixture("ünïcødé 名前.txt"), "ünïcødé 名前.txt");
}

#[test]
fn multi_mib_file_of_odd_size_round_trips_into_nested_dirs() {
    let server = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    // 3 MiB + 12,345: a multiple of no buffer size.
    let src = work.path().join("big.bin");
    fs::write(&src, pattern(3 * 1024 * 1024 + 12_345, 7)).unwrap();
    round_trip(&server, &src, "a/b/c/big.bin");
    assert_eq!(tree(server.root.path()), ["a", "a/b", "a/b/c", "a/b/c/big.bin"]);
}

#[test]
fn summary_line_has_name_size_time_rate_and_md5() {
    let server = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    let out = xfer(server.addr, work.path()).arg("put").arg(fixture("hello.txt")).assert().success();
    let stderr = String::from_utf8(out.get_output().stderr.clone()).unwrap();
    let re = is_hello_summary(&stderr);
    assert!(re, "unexpected summary: {stderr:?}");
}

/// `put hello.txt  12 B in 0.00 s (… B/s)  md5 <32 hex> verified`
fn is_hello_summary(line: &str) -> bool {
    let line = line.trim_end();
    let Some(rest) = line.strip_prefix("put hello.txt  12 B in ") else { return false };
    let Some((_, tail)) = rest.split_once(" s (") else { return false };
    let Some((_, md5)) = tail.split_once("/s)  md5 ") else { return false };
    md5 == format!("{} verified", md5_hex(b"hello, xfer\n"))
}

#[test]
fn default_names_and_trailing_slash() {
    let server = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    xfer(server.addr, work.path()).arg("put").arg(fixture("hello.txt")).assert().success();
    assert!(server.path("hello.txt").is_file());
    xfer(server.addr, work.path()).arg("put").arg(fixture("hello.txt")).arg("docs/").assert().success();
    assert!(server.path("docs/hello.txt").is_file());
    xfer(server.addr, work.path()).args(["get", "docs/hello.txt"]).assert().success();
    assert_eq!(fs::read(work.path().join("hello.txt")).unwrap(), b"hello, xfer\n");
    fs::create_dir(work.path().join("into")).unwrap();
    xfer(server.addr, work.path()).args(["get", "hello.txt", "into"]).assert().success();
    assert!(work.path().join("into/hello.txt").is_file());
}

#[test]
fn put_refuses_to_replace_without_force_and_replaces_with_it() {
    let server = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    fs::write(work.path().join("f.txt"), b"first").unwrap();
    xfer(server.addr, work.path()).args(["put", "f.txt", "docs/f.txt"]).assert().success();
    fs::write(work.path().join("f.txt"), b"second").unwrap();
    xfer(server.addr, work.path())
        .args(["put", "f.txt", "docs/f.txt"])
        .assert()
        .code(1)
        .stderr("xfer: error: remote file exists: docs/f.txt (use --force to replace it)\n");
    assert_eq!(fs::read(server.path("docs/f.txt")).unwrap(), b"first");
    xfer(server.addr, work.path()).args(["put", "--force", "f.txt", "docs/f.txt"]).assert().success();
    assert_eq!(fs::read(server.path("docs/f.txt")).unwrap(), b"second");
    assert_eq!(tree(server.root.path()), ["docs", "docs/f.txt"]);
}

#[test]
fn get_refuses_to_replace_without_force_and_replaces_with_it() {
    let server = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    fs::write(server.path("f.txt"), b"remote").unwrap();
    fs::write(work.path().join("f.txt"), b"local").unwrap();
    xfer(server.addr, work.path())
        .args(["get", "f.txt"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("f.txt already exists (use --force to replace it)"));
    assert_eq!(fs::read(work.path().join("f.txt")).unwrap(), b"local");
    xfer(server.addr, work.path()).args(["get", "-f", "f.txt"]).assert().success();
    assert_eq!(fs::read(work.path().join("f.txt")).unwrap(), b"remote");
    assert_eq!(tree(work.path()), ["f.txt"]);
}

#[test]
fn get_dash_writes_the_body_to_stdout_only() {
    let server = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    let data = pattern(200_000, 3);
    fs::write(server.path("blob"), &data).unwrap();
    let out = xfer(server.addr, work.path()).args(["get", "blob", "-"]).assert().success();
    assert_eq!(out.get_output().stdout, data);
    assert!(tree(work.path()).is_empty());
}

#[test]
fn missing_remote_file_is_a_plain_error() {
    let server = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    xfer(server.addr, work.path())
        .args(["get", "docs/a.txt"])
        .assert()
        .code(1)
        .stderr("xfer: error: remote file not found: docs/a.txt\n");
    assert!(tree(work.path()).is_empty(), "nothing is created for a missing file");
}

#[test]
fn missing_local_file_is_a_plain_error() {
    let server = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    xfer(server.addr, work.path())
        .args(["put", "nope.txt"])
        .assert()
        .code(1)
        .stderr("xfer: error: local nope.txt: no such file or directory\n");
}

#[test]
fn directories_are_not_files() {
    let server = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    fs::create_dir(server.path("d")).unwrap();
    xfer(server.addr, work.path())
        .args(["get", "d", "x"])
        .assert()
        .code(1)
        .stderr("xfer: error: remote path is a directory: d\n");
    // A file put to a remote directory goes inside it, as cp and scp do.
    xfer(server.addr, work.path()).arg("put").arg(fixture("hello.txt")).arg("d").assert().success();
    assert_eq!(fs::read(server.path("d/hello.txt")).unwrap(), fs::read(fixture("hello.txt")).unwrap());
}

#[test]
fn ls_lists_names_sizes_times_and_marks_directories() {
    let server = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    fs::create_dir_all(server.path("docs/sub")).unwrap();
    fs::write(server.path("docs/a.txt"), b"12345").unwrap();
    fs::write(server.path("top.bin"), b"").unwrap();
    let out = xfer(server.addr, work.path()).arg("ls").assert().success();
    let text = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    let lines: Vec<_> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].trim_start().starts_with("- ") && lines[0].ends_with("  docs/"), "{text}");
    assert!(lines[1].trim_start().starts_with("0 ") && lines[1].ends_with("  top.bin"), "{text}");
    let out = xfer(server.addr, work.path()).args(["ls", "docs"]).assert().success();
    let text = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    assert!(
        text.contains("           5  ") && text.contains("  a.txt\n") && text.contains("  sub/\n"),
        "{text}"
    );
    xfer(server.addr, work.path())
        .args(["ls", "nope"])
        .assert()
        .code(1)
        .stderr("xfer: error: remote directory not found: nope\n");
}

#[test]
fn quiet_prints_nothing_on_success() {
    let server = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    xfer(server.addr, work.path())
        .arg("-q")
        .arg("put")
        .arg(fixture("hello.txt"))
        .assert()
        .success()
        .stderr("");
    xfer(server.addr, work.path()).args(["get", "-q", "hello.txt"]).assert().success().stderr("").stdout("");
}

#[test]
fn bad_remote_paths_are_refused_with_the_reason() {
    let server = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    for (remote, reason) in [
        ("../escape.txt", "'..' is not allowed in paths"),
        ("/a/../../x", "'..' is not allowed in paths"),
        ("a\\b", "backslashes are not allowed"),
    ] {
        xfer(server.addr, work.path())
            .arg("put")
            .arg(fixture("hello.txt"))
            .arg(remote)
            .assert()
            .code(1)
            .stderr(predicate::str::contains(reason));
    }
    assert!(tree(server.root.path()).is_empty());
}

/// `--fsync` on every command, and a server that flushes every commit
/// (`serve --fsync`): files and trees arrive whole. The flushes run on
/// every path; one refused (as `fsync` on a path-only handle is) fails
/// the transfer.
#[test]
fn flushed_transfers_arrive_whole() {
    for (server, flag) in
        [(TestServer::start(), Some("--fsync")), (TestServer::start_with(|c| c.fsync = true), None)]
    {
        let work = tempfile::tempdir().unwrap();
        let data = pattern(300_000, 7);
        fs::write(work.path().join("f.bin"), &data).unwrap();
        fs::create_dir_all(work.path().join("t/d")).unwrap();
        fs::write(work.path().join("t/d/small"), b"small").unwrap();
        fs::write(work.path().join("t/big"), &data).unwrap();
        let run = |args: &[&str]| {
            let mut cmd = xfer(server.addr, work.path());
            cmd.args(args).args(flag).assert().success();
        };
        run(&["put", "f.bin"]);
        run(&["put", "-r", "t"]);
        assert_eq!(fs::read(server.path("f.bin")).unwrap(), data);
        assert_eq!(tree(&server.path("t")), ["big", "d", "d/small"]);
        let run = |args: &[&str]| xfer(server.addr, work.path()).args(args).arg("--fsync").assert().success();
        run(&["get", "f.bin", "back.bin"]);
        run(&["get", "-r", "t", "back"]);
        assert_eq!(fs::read(work.path().join("back.bin")).unwrap(), data);
        assert_eq!(fs::read(work.path().join("back/big")).unwrap(), data);
        assert_eq!(fs::read(work.path().join("back/d/small")).unwrap(), b"small");
    }
}
