//! Tokens with rights of their own: a read-only token changes nothing, a
//! token confined to a directory sees nothing outside it (trees, patterns
//! and links included), and the server's log names tokens, never their
//! values. The real binary against real servers.

mod common;

use common::{tree, xfer, TestServer};
use predicates::prelude::*;
use std::fs;
use xfer::access::{Grant, Rights};
use xfer::auth::Token;
use xfer::local::RemotePath;

const VIEWER: &str = "viewer-token-0123456789abcdef0123456789";
const UPLOADER: &str = "uploader-token-0123456789abcdef012345678";

fn grant(name: &str, token: &str, rights: Rights, dir: Option<&str>) -> Grant {
    let dir = dir.map(|d| RemotePath::parse(d).unwrap());
    Grant { name: name.into(), token: Token::new(token).unwrap(), rights, dir }
}

fn server() -> TestServer {
    TestServer::start_with(|c| {
        c.allow_exec = true;
        c.grants = vec![
            grant("viewer", VIEWER, Rights { read: true, ..Rights::default() }, None),
            grant("uploader", UPLOADER, Rights { read: true, write: true, exec: false }, Some("uploads")),
        ];
    })
}

#[test]
fn a_read_only_token_reads_and_changes_nothing() {
    let server = server();
    let work = tempfile::tempdir().unwrap();
    fs::write(server.path("a.txt"), b"a").unwrap();
    fs::create_dir(server.path("d")).unwrap();
    fs::write(work.path().join("new.txt"), b"n").unwrap();
    fs::create_dir(work.path().join("tree")).unwrap();
    fs::write(work.path().join("tree/f"), b"f").unwrap();
    let as_viewer = || {
        let mut cmd = xfer(server.addr, work.path());
        cmd.env("XFER_TOKEN", VIEWER);
        cmd
    };
    let before = tree(server.root.path());
    for args in [
        &["put", "new.txt"][..],
        &["put", "-r", "tree"],
        &["put", "-n", "new.txt"],
        &["rm", "a.txt"],
        &["mv", "a.txt", "b.txt"],
        &["mkdir", "e"],
    ] {
        as_viewer()
            .args(args)
            .assert()
            .code(1)
            .stderr(predicate::eq("xfer: error: this token may not write on the server\n"));
    }
    // As ssh, exec that cannot be run at all exits 255.
    as_viewer()
        .args(["exec", "touch", "x"])
        .assert()
        .code(255)
        .stderr(predicate::str::contains("this token may not exec on the server"));
    assert_eq!(tree(server.root.path()), before, "nothing changed");
    as_viewer().args(["get", "a.txt", "got.txt"]).assert().success();
    as_viewer().args(["ls", "-l"]).assert().success().stdout(predicate::str::contains("a.txt"));
    as_viewer().args(["md5sum", "a.txt"]).assert().success();
    as_viewer().args(["df"]).assert().success();
    // The server's own token still may do everything.
    xfer(server.addr, work.path()).args(["put", "new.txt"]).assert().success();
}

#[test]
fn a_confined_token_sees_only_its_directory_trees_patterns_and_links_included() {
    let server = server();
    let work = tempfile::tempdir().unwrap();
    fs::write(server.path("secret.txt"), b"outside").unwrap();
    fs::create_dir_all(server.path("uploads/old")).unwrap();
    fs::write(server.path("uploads/old/x.log"), b"x").unwrap();
    std::os::unix::fs::symlink("../secret.txt", server.path("uploads/way-out")).unwrap();
    fs::create_dir(work.path().join("tree")).unwrap();
    fs::write(work.path().join("tree/f"), b"f").unwrap();
    fs::write(work.path().join("a.txt"), b"a").unwrap();
    let up = || {
        let mut cmd = xfer(server.addr, work.path());
        cmd.env("XFER_TOKEN", UPLOADER);
        cmd
    };
    // What it writes lands in uploads/; its root is uploads/.
    up().args(["put", "a.txt"]).assert().success();
    up().args(["put", "-r", "tree"]).assert().success();
    up().args(["mkdir", "-p", "made/here"]).assert().success();
    assert_eq!(
        tree(&server.path("uploads")),
        ["a.txt", "made", "made/here", "old", "old/x.log", "tree", "tree/f", "way-out"]
    );
    // Nothing outside: not by name, not by pattern, not through a link.
    up().args(["get", "../secret.txt", "s1"]).assert().code(1);
    up().args(["get", "/secret.txt", "s2"]).assert().code(1);
    up().args(["get", "way-out", "s3"]).assert().code(1);
    up().args(["cat", "way-out"]).assert().code(1);
    fs::create_dir(work.path().join("pat")).unwrap();
    up().args(["get", "*.txt", "pat/"]).assert().success();
    assert_eq!(tree(&work.path().join("pat")), ["a.txt"], "patterns match inside only");
    let listing = up().args(["ls", "-R"]).assert().success().get_output().stdout.clone();
    assert!(!String::from_utf8(listing).unwrap().contains("secret"));
    up().args(["get", "-r", "/", "all"])
        .assert()
        .success()
        .stderr(predicate::str::contains("way-out: symlink to ../secret.txt leads out of the tree, skipped"));
    assert!(!work.path().join("all/secret.txt").exists());
    assert!(work.path().join("all/old/x.log").exists());
    up().args(["mv", "a.txt", "../escaped.txt"]).assert().code(1);
    up().args(["rm", "-r", "/"]).assert().code(1);
    up().args(["exec", "true"]).assert().code(255).stderr(predicate::str::contains("may not exec"));
    assert_eq!(fs::read(server.path("secret.txt")).unwrap(), b"outside");
    assert!(!server.path("escaped.txt").exists());
}

#[test]
fn tokens_are_made_listed_revoked_and_logged_by_name_only() {
    let home = tempfile::tempdir().unwrap();
    let token_file = home.path().join("token");
    let run = |args: &[&str]| {
        let mut cmd = assert_cmd::Command::cargo_bin("xfer").unwrap();
        cmd.env_remove("XFER_TOKEN").arg("--token-file").arg(&token_file).args(args);
        cmd
    };
    run(&["token", "--new"]).assert().success();
    let out = run(&["token", "--new", "ci", "--rights", "read", "--dir", "builds"]).assert().success();
    let ci = String::from_utf8(out.get_output().stdout.clone()).unwrap().trim().to_string();
    assert_eq!(ci.len(), 64);
    run(&["token", "--new", "ci"]).assert().code(2).stderr(predicate::str::contains("already"));
    run(&["token", "--new", "x", "--rights", "fly"]).assert().code(2);
    run(&["token", "--list"]).assert().success().stdout("ci\tread\tbuilds\n");

    // A server started from these files: the ci token reads builds/ only,
    // and the log says ci, never the value.
    let root = home.path().join("root");
    fs::create_dir_all(root.join("builds")).unwrap();
    fs::write(root.join("builds/out.bin"), b"built").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let server = std::process::Command::new(assert_cmd::cargo::cargo_bin("xfer"))
        .arg("--token-file")
        .arg(&token_file)
        .args(["serve", "--listen", &addr, "--root"])
        .arg(&root)
        .env_remove("XFER_TOKEN")
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(common::eventually(std::time::Duration::from_secs(10), || std::net::TcpStream::connect(&addr)
        .is_ok()));
    let work = tempfile::tempdir().unwrap();
    let client = || {
        let mut cmd = assert_cmd::Command::cargo_bin("xfer").unwrap();
        cmd.current_dir(work.path()).env("XFER_TOKEN", &ci).args(["-s", &addr]);
        cmd
    };
    client().args(["get", "out.bin"]).assert().success();
    client()
        .args(["put", "out.bin", "again.bin"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("may not write"));
    run(&["token", "--revoke", "ci"]).assert().success();
    run(&["token", "--list"]).assert().success().stdout("");
    unsafe { libc::kill(server.id() as i32, libc::SIGTERM) };
    let out = server.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("token=ci") && log.contains("op=get"), "{log}");
    assert!(log.contains("forbidden"), "{log}");
    assert!(!log.contains(&ci), "a token's value never reaches the log");
}
