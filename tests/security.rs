//! Authentication, confinement to the root, and the published failure
//! classes of peer tools, each shown not to apply to xfer.

mod common;

use common::fake::{self, Proof};
use common::{eventually, raw, tree, xfer, xfer_process, TestServer, TOKEN};
use predicates::prelude::*;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::time::{Duration, Instant};

// ---- authentication ----

#[test]
fn wrong_token_is_refused_with_exit_255() {
    let server = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    xfer(server.addr, work.path())
        .env("XFER_TOKEN", "not-the-token-though-long-enough-for-one")
        .arg("ls")
        .assert()
        .code(255)
        .stderr(predicate::str::starts_with(
            "xfer: error: authentication failed: the server refused this token",
        ));
}

#[test]
fn missing_token_says_where_to_put_one() {
    let server = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    xfer(server.addr, work.path())
        .env_remove("XFER_TOKEN")
        .env("XDG_CONFIG_HOME", work.path())
        .arg("ls")
        .assert()
        .code(255)
        .stderr(predicate::str::starts_with("xfer: error: no token: set XFER_TOKEN, pass --token-file"));
}

#[test]
fn token_file_option_is_used() {
    let server = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    fs::write(work.path().join("tok"), format!("{TOKEN}\n")).unwrap();
    fs::set_permissions(work.path().join("tok"), fs::Permissions::from_mode(0o600)).unwrap();
    xfer(server.addr, work.path())
        .env_remove("XFER_TOKEN")
        .args(["ls", "--token-file", "tok"])
        .assert()
        .success();
    fs::write(work.path().join("bad"), format!("{}\n", "b".repeat(40))).unwrap();
    fs::set_permissions(work.path().join("bad"), fs::Permissions::from_mode(0o600)).unwrap();
    xfer(server.addr, work.path())
        .env_remove("XFER_TOKEN")
        .args(["ls", "--token-file", "bad"])
        .assert()
        .code(255)
        .stderr(predicate::str::contains("refused this token"));
}

#[test]
fn serve_creates_a_private_default_token_that_clients_find() {
    let home = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let mut server = xfer_process(addr.parse().unwrap(), home.path())
        .env_remove("XFER_TOKEN")
        .env("XDG_CONFIG_HOME", home.path().join("cfg"))
        .args(["serve", "--listen", &addr, "--root", "root"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let token_path = home.path().join("cfg/xfer/token");
    assert!(eventually(Duration::from_secs(10), || std::net::TcpStream::connect(&addr).is_ok()));
    let mode = fs::metadata(&token_path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(fs::read_to_string(&token_path).unwrap().trim().len(), 64, "256 bits as hex");
    xfer(addr.parse().unwrap(), home.path())
        .env_remove("XFER_TOKEN")
        .env("XDG_CONFIG_HOME", home.path().join("cfg"))
        .arg("ls")
        .assert()
        .success();
    server.kill().unwrap();
    server.wait().unwrap();
}

#[test]
fn requests_before_authentication_are_refused() {
    let server = TestServer::start();
    let mut s = raw::tls_connect(server.addr);
    raw::recv(&mut s);
    raw::send(&mut s, r#"{"op":"put","filename":"sneaky","md5":null,"total_size":0}"#);
    let reply = raw::recv(&mut s);
    assert!(reply.contains(r#""code":"auth_failed""#), "{reply}");
    assert!(raw::try_recv(&mut s).is_none(), "the connection must close");
    assert!(tree(server.root.path()).is_empty());
}

#[test]
fn repeated_failures_from_one_address_slow_down() {
    let server = TestServer::start();
    let mut last = Duration::ZERO;
    for _ in 0..4 {
        let started = Instant::now();
        let (_, reply) = raw::connect_with(server.addr, "wrong");
        assert!(reply.contains("auth_failed"), "{reply}");
        last = started.elapsed();
    }
    // Delays are 100, 200, 400, 800 ms: the fourth refusal waits at least 800.
    assert!(last >= Duration::from_millis(800), "fourth failure answered after only {last:?}");
    // The right token still gets in at once, and resets the count.
    raw::connect(server.addr);
}

#[test]
fn a_server_that_cannot_prove_the_token_gets_nothing() {
    // A wrong proof, and a right one for another TLS channel (what a relay
    // would have): the client sends nothing to either.
    for proof in [Proof::Forged, Proof::OtherChannel] {
        let (addr, sent) = fake::serve_once(proof, |_| {});
        let work = tempfile::tempdir().unwrap();
        fs::write(work.path().join("a.txt"), b"private").unwrap();
        xfer(addr, work.path())
            .args(["put", "a.txt"])
            .assert()
            .code(255)
            .stderr(predicate::str::starts_with(
                "xfer: error: authentication failed: the server did not prove it holds the token, so nothing was sent",
            ));
        assert!(sent.join().unwrap().is_empty(), "the client sent something to an impostor");
    }
}

// ---- confinement to the root ----

/// rsync CVE-2024-12087/12088: writes outside the destination via symlinks.
#[test]
fn symlinks_leading_out_of_the_root_are_not_followed() {
    let server = TestServer::start();
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("victim"), b"untouched").unwrap();
    symlink(outside.path(), server.path("out")).unwrap();
    symlink(outside.path().join("victim"), server.path("link")).unwrap();
    let work = tempfile::tempdir().unwrap();
    fs::write(work.path().join("evil"), b"evil").unwrap();
    for remote in ["out/victim", "out/new"] {
        xfer(server.addr, work.path()).args(["put", "-f", "evil", remote]).assert().code(1);
    }
    xfer(server.addr, work.path()).args(["get", "out/victim", "got"]).assert().code(1);
    xfer(server.addr, work.path()).args(["get", "link", "got"]).assert().code(1);
    xfer(server.addr, work.path()).args(["ls", "out"]).assert().code(1);
    assert!(!work.path().join("got").exists());
    // Replacing the link itself is allowed, and replaces only the link.
    xfer(server.addr, work.path()).args(["put", "-f", "evil", "link"]).assert().success();
    assert_eq!(fs::read(outside.path().join("victim")).unwrap(), b"untouched");
    assert_eq!(tree(outside.path()), ["victim"]);
    assert_eq!(fs::read(server.path("link")).unwrap(), b"evil");
}

/// croc CVE-2023-43619 and magic-wormhole: `../` names writing anywhere.
#[test]
fn traversal_in_every_form_is_refused() {
    let server = TestServer::start();
    let parent = server.root.path().parent().unwrap().to_path_buf();
    // What the names below would make outside the root (the parent is
    // shared with other tests, so only these are looked for).
    let outside = ["x", "etc"].map(|n| (parent.join(n), parent.join(n).exists()));
    let mut s = raw::connect(server.addr);
    for name in [
        "../x",
        "a/../../x",
        "./../x",
        "..",
        "/tmp/x",
        "..\\x",
        "C:x",
        "a/\u{0}/b",
        "sub/..",
        "x/../../../etc/passwd",
    ] {
        let json = serde_json::json!({"op": "put", "filename": name, "md5": null, "total_size": 0});
        raw::send(&mut s, &json.to_string());
        let reply = raw::recv(&mut s);
        assert!(reply.contains(r#""code":"bad_path""#), "{name:?}: {reply}");
        let json = serde_json::json!({"op": "get", "filename": name, "md5": null, "total_size": 0});
        raw::send(&mut s, &json.to_string());
        let reply = raw::recv(&mut s);
        assert!(reply.contains(r#""code":"bad_path""#) || reply.contains("wrong_type"), "{name:?}: {reply}");
    }
    assert!(tree(server.root.path()).is_empty());
    for (path, was_there) in outside {
        assert_eq!(path.exists(), was_there, "{}", path.display());
    }
}

/// scp CVE-2019-6111: the server picks the name the client writes.
#[test]
fn the_client_writes_only_where_its_user_said() {
    let (addr, _) = fake::serve_once(Proof::Genuine, |s| {
        raw::recv(s); // the get
        let h = r#"{"op":"data","filename":"../../evil","md5":"8d777f385d3dfec8815d20f7496026dc","total_size":4,"offset":0}"#;
        raw::send(s, h);
        std::io::Write::write_all(s, b"data").unwrap();
        raw::send(s, r#"{"op":"done","filename":"other.txt","md5":"8d777f385d3dfec8815d20f7496026dc"}"#);
    });
    let work = tempfile::tempdir().unwrap();
    fs::create_dir(work.path().join("sub")).unwrap();
    xfer(addr, &work.path().join("sub")).args(["get", "wanted.txt"]).assert().success();
    assert_eq!(tree(work.path()), ["sub", "sub/wanted.txt"]);
    assert_eq!(fs::read(work.path().join("sub/wanted.txt")).unwrap(), b"data");
}

/// scp CVE-2019-6109/6110 and croc CVE-2023-43620: escape sequences in
/// names or messages rewriting the user's terminal.
#[test]
fn escape_sequences_from_the_server_never_reach_the_terminal() {
    let (addr, _) = fake::serve_once(Proof::Genuine, |s| {
        raw::recv(s);
        let entry = serde_json::json!({"op": "entry", "filename": "a\u{1b}[2K\rfake\u{9b}31m", "size": 1, "mtime": 0, "kind": "file"});
        raw::send(s, &entry.to_string());
        let err =
            serde_json::json!({"op": "error", "code": "internal", "message": "oops\u{1b}]0;title\u{7}\r\n"});
        raw::send(s, &err.to_string());
    });
    let work = tempfile::tempdir().unwrap();
    let out = xfer(addr, work.path()).arg("ls").assert().code(1);
    let (stdout, stderr) = (&out.get_output().stdout, &out.get_output().stderr);
    for stream in [stdout, stderr] {
        let text = String::from_utf8_lossy(stream);
        assert!(!text.contains('\u{1b}') && !text.contains('\r') && !text.contains('\u{9b}'), "{text:?}");
    }
    assert!(String::from_utf8_lossy(stdout).contains("a\\u{1b}[2K\\rfake"), "names are shown escaped");
}

#[test]
fn control_characters_in_names_on_disk_are_escaped_by_ls() {
    let server = TestServer::start();
    fs::write(server.path("bad\u{1b}[31mname"), b"x").unwrap();
    let work = tempfile::tempdir().unwrap();
    let out = xfer(server.addr, work.path()).arg("ls").assert().success();
    let text = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    assert!(!text.contains('\u{1b}') && text.contains("bad\\u{1b}[31mname"), "{text:?}");
}

/// rsync CVE-2024-12086: a server making the client read other files.
#[test]
fn a_server_cannot_ask_the_client_for_files() {
    let (addr, sent) = fake::serve_once(Proof::Genuine, |s| {
        raw::recv(s); // the put
        raw::send(s, r#"{"op":"get","filename":"secret.txt","md5":null,"total_size":0}"#);
        std::thread::sleep(Duration::from_millis(200));
    });
    let work = tempfile::tempdir().unwrap();
    fs::write(work.path().join("secret.txt"), b"TOPSECRET").unwrap();
    fs::write(work.path().join("a.txt"), b"public").unwrap();
    xfer(addr, work.path()).args(["put", "a.txt"]).assert().code(255).stderr(
        predicate::str::contains("the server broke the protocol").and(predicate::str::contains("`get`")),
    );
    let sent = sent.join().unwrap();
    assert!(!sent.windows(9).any(|w| w == b"TOPSECRET"), "the client leaked a file");
    assert!(!sent.windows(6).any(|w| w == b"public"), "nothing is sent before ready");
}

#[test]
fn exec_runs_in_the_root() {
    let server = TestServer::start_with(|c| c.allow_exec = true);
    let work = tempfile::tempdir().unwrap();
    let root = fs::canonicalize(server.root.path()).unwrap();
    xfer(server.addr, work.path())
        .args(["exec", "pwd -P"])
        .assert()
        .success()
        .stdout(format!("{}\n", root.display()));
}
