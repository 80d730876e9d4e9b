//! Encryption and channel-bound authentication, against real TLS on real
//! sockets: what an attacker on the path sees and can do, tokens, floods
//! of connections that never authenticate, and peers that are not xfer.

mod common;

use common::proxy::{Damage, Direction, Mitm, Proxy};
use common::{eventually, pattern, raw, tree, xfer, xfer_process, TestServer, TOKEN};
use predicates::prelude::*;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

const SIZE: usize = 1024 * 1024 + 77;

/// Whether `needle` occurs anywhere in `haystack`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_flipped_byte_on_the_wire_ends_the_transfer_and_commits_nothing() {
    // Past the handshake, in the middle of the body, each way.
    for dir in [Direction::ToServer, Direction::ToClient] {
        let server = TestServer::start();
        let work = tempfile::tempdir().unwrap();
        let data = pattern(SIZE, 1);
        let proxy = Proxy::start(server.addr, dir, Damage::FlipByteAt(SIZE as u64 / 2));
        let op = if dir == Direction::ToServer {
            fs::write(work.path().join("f.bin"), &data).unwrap();
            "put"
        } else {
            fs::write(server.path("f.bin"), &data).unwrap();
            "get"
        };
        let dest = if op == "put" { server.path("f.bin") } else { work.path().join("g.bin") };
        xfer(proxy.addr, work.path())
            .args([op, "f.bin"])
            .args((op == "get").then_some("g.bin"))
            .assert()
            .failure()
            .stderr(predicate::str::starts_with("xfer: error: "));
        if op == "put" {
            // The server noticed too: nothing at the final name, at most a
            // partial of bytes that TLS had verified.
            assert!(eventually(Duration::from_secs(5), || !dest.exists()));
            std::thread::sleep(Duration::from_millis(200));
            for name in tree(server.root.path()) {
                assert_eq!(name, ".f.bin.xfer-part", "{dir:?}");
                let kept = fs::read(server.path(&name)).unwrap();
                assert_eq!(kept, data[..kept.len()], "a partial holds only bytes as sent");
            }
        } else {
            assert!(!dest.exists(), "{dir:?}");
        }
    }
}

#[test]
fn a_relay_with_its_own_certificate_gets_through_to_neither_side() {
    let server = TestServer::start();
    let mitm = Mitm::start(server.addr);
    let work = tempfile::tempdir().unwrap();
    fs::write(work.path().join("a.txt"), b"private").unwrap();
    // The relay passes the real server's greeting on; the client's proof,
    // bound to the relay's certificate, fails at the server.
    xfer(mitm.addr, work.path())
        .args(["put", "a.txt"])
        .assert()
        .code(255)
        .stderr(predicate::str::starts_with("xfer: error: authentication failed"));
    assert!(tree(server.root.path()).is_empty());
    let relayed = mitm.to_server.lock().unwrap().clone();
    let text = String::from_utf8_lossy(&relayed);
    assert!(text.contains(r#""op":"auth""#), "the proof was relayed: {text}");
    assert!(
        !text.contains(r#""op":"put""#) && !contains(&relayed, b"private"),
        "a request got through: {text}"
    );
    // A relay that fakes the server's side instead cannot prove the token
    // for its own channel: the fake-server tests in security.rs show the
    // client then sends nothing.
}

#[test]
fn nothing_readable_crosses_the_wire() {
    let server = TestServer::start_with(|c| c.allow_exec = true);
    let proxy = Proxy::recording(server.addr);
    let work = tempfile::tempdir().unwrap();
    let data = pattern(SIZE, 9);
    fs::write(work.path().join("known-name.bin"), &data).unwrap();
    xfer(proxy.addr, work.path()).args(["put", "known-name.bin"]).assert().success();
    xfer(proxy.addr, work.path()).args(["get", "known-name.bin", "back.bin"]).assert().success();
    assert_eq!(fs::read(work.path().join("back.bin")).unwrap(), data);
    let out = xfer(proxy.addr, work.path())
        .args(["exec", "echo output-marker-$((6*7))-end"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    assert_eq!(out, b"output-marker-42-end\n");
    let recorded = proxy.recorded.lock().unwrap().clone();
    assert!(recorded.len() > 2 * SIZE, "both bodies crossed the proxy: {} bytes", recorded.len());
    for at in [0, 4096, SIZE / 2, SIZE - 64] {
        assert!(!contains(&recorded, &data[at..at + 32]), "file bytes at {at} are readable on the wire");
    }
    for secret in
        [&b"output-marker-42-end"[..], b"known-name.bin", b"echo output", TOKEN.as_bytes(), b"\"op\""]
    {
        assert!(
            !contains(&recorded, secret),
            "{:?} is readable on the wire",
            String::from_utf8_lossy(secret)
        );
    }
}

#[test]
fn short_and_loose_tokens_are_refused_with_the_fix() {
    let server = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    xfer(server.addr, work.path()).env("XFER_TOKEN", "abc123").arg("ls").assert().code(255).stderr(
        predicate::str::contains("the token in XFER_TOKEN is 6 characters long; xfer needs at least 32"),
    );
    let file = work.path().join("token");
    // Each of these is refused by a client and by a server (before it
    // listens), with the fix in the message.
    let cases = [
        (
            format!("{TOKEN}\n"),
            0o644,
            format!("is readable by others (mode 0644): run chmod 600 {}", file.display()),
        ),
        ("x".repeat(31), 0o600, "is 31 characters long; xfer needs at least 32".to_string()),
    ];
    for (text, mode, expected) in cases {
        fs::write(&file, text).unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(mode)).unwrap();
        for command in [&["ls"][..], &["serve", "--listen", "127.0.0.1:0", "--root", "r"]] {
            xfer(server.addr, work.path())
                .env_remove("XFER_TOKEN")
                .args(command)
                .arg("--token-file")
                .arg(&file)
                .assert()
                .code(255)
                .stderr(predicate::str::contains(expected.as_str()));
        }
    }
    assert!(!work.path().join("r").exists(), "a refused server made nothing");
}

/// Starts the real binary serving with its default token and key under
/// `home`, and returns it with its address and what it logged at start.
fn serve_at_home(home: &std::path::Path) -> (std::process::Child, SocketAddr, String) {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let log = home.join("serve.log");
    let mut child = xfer_process(addr, home)
        .env_remove("XFER_TOKEN")
        .env("XDG_CONFIG_HOME", home.join("cfg"))
        .args(["serve", "--listen", &addr.to_string(), "--root", "root"])
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let ready = eventually(Duration::from_secs(10), || fs::read_to_string(&log).unwrap().contains("serving"));
    if !ready {
        let _ = child.kill();
        panic!("server did not start: {}", fs::read_to_string(&log).unwrap());
    }
    (child, addr, fs::read_to_string(&log).unwrap())
}

#[test]
fn the_server_keeps_its_key_beside_the_token_and_logs_its_fingerprint() {
    use rustls::pki_types::pem::PemObject;
    let home = tempfile::tempdir().unwrap();
    let (mut child, addr, log) = serve_at_home(home.path());
    let key = home.path().join("cfg/xfer/server-key.pem");
    assert_eq!(fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    let cert = rustls::pki_types::CertificateDer::pem_file_iter(&key).unwrap().next().unwrap().unwrap();
    let fingerprint =
        xfer::tls::binding_of(&cert).iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":");
    assert!(log.contains(&format!("fingerprint {fingerprint}")), "{log}");
    // What a client is shown is that certificate.
    let s = raw::tls_connect(addr);
    assert_eq!(raw::binding(&s), xfer::tls::binding_of(&cert));
    child.kill().unwrap();
    child.wait().unwrap();
    // A restart reuses the key.
    let (mut child, _, log) = serve_at_home(home.path());
    assert!(log.contains(&format!("fingerprint {fingerprint}")), "{log}");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn xfer_token_prints_the_token_and_new_replaces_it() {
    let home = tempfile::tempdir().unwrap();
    let cfg = home.path().join("cfg");
    let token = |args: &[&str]| {
        let out = xfer("127.0.0.1:9".parse().unwrap(), home.path())
            .env_remove("XFER_TOKEN")
            .env("XDG_CONFIG_HOME", &cfg)
            .arg("token")
            .args(args)
            .assert()
            .success()
            .get_output()
            .clone();
        (String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
    };
    let (first, _) = token(&[]);
    assert_eq!(first.trim().len(), 64);
    assert_eq!(fs::read_to_string(cfg.join("xfer/token")).unwrap(), first, "it made the server's token file");
    assert_eq!(token(&[]).0, first, "and prints the same token again");
    let (second, said) = token(&["--new"]);
    assert_ne!(second, first);
    assert_eq!(fs::read_to_string(cfg.join("xfer/token")).unwrap(), second);
    assert!(said.contains("restart xfer serve"), "{said}");
    assert_eq!(fs::metadata(cfg.join("xfer/token")).unwrap().permissions().mode() & 0o777, 0o600);
}

#[test]
fn silent_connections_cannot_keep_an_authenticated_client_out() {
    let server = TestServer::start();
    let addr = server.addr;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    // 700 connections from another address that never say a word.
    let flood: Vec<tokio::net::TcpStream> = rt.block_on(async {
        let mut flood = Vec::new();
        for _ in 0..700 {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
            flood.push(socket.connect(addr).await.unwrap());
        }
        flood
    });
    let work = tempfile::tempdir().unwrap();
    fs::write(work.path().join("a.txt"), b"served").unwrap();
    let started = Instant::now();
    xfer(addr, work.path()).args(["put", "a.txt"]).assert().success();
    xfer(addr, work.path()).arg("ls").assert().success().stdout(predicate::str::contains("a.txt"));
    let took = started.elapsed();
    // Served while the flood still holds its connections: the server gives
    // a connection 10 s to authenticate, so the flood has not timed out.
    assert!(took < Duration::from_secs(8), "{took:?}");
    let open = rt.block_on(async {
        let mut open = 0;
        for s in &flood {
            let mut byte = [0u8; 1];
            if let Err(e) = s.try_read(&mut byte) {
                open += usize::from(e.kind() == std::io::ErrorKind::WouldBlock);
            }
        }
        open
    });
    assert!(open >= 32, "the flood was cut short rather than outlasted: {open} still open");
    assert!(open < 700, "connections past the queue are closed at once");
}

#[test]
fn a_connection_that_never_authenticates_is_closed_at_its_deadline() {
    let server = TestServer::start_with(|c| {
        c.handshake_timeout = Duration::from_secs(1);
        c.idle_timeout = None;
    });
    // Silent before TLS, and silent after the server's greeting.
    let mut bare = std::net::TcpStream::connect(server.addr).unwrap();
    let mut greeted = raw::tls_connect(server.addr);
    raw::recv(&mut greeted);
    bare.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = Instant::now();
    assert_eq!(bare.read(&mut [0u8; 16]).unwrap_or(0), 0, "closed without a word");
    greeted.sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert!(raw::try_recv(&mut greeted).is_none());
    assert!(started.elapsed() < Duration::from_secs(9), "closed by the deadline, not the read timeout");
}

/// A listener that answers every connection with `reply` (or nothing),
/// then holds it open until the test ends.
fn not_xfer(reply: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for mut s in listener.incoming().flatten() {
            let _ = s.write_all(reply);
            held.push(s);
        }
    });
    addr
}

#[test]
fn a_port_that_is_not_an_xfer_server_fails_fast_with_255() {
    let work = tempfile::tempdir().unwrap();
    let cases: [(&[u8], &str); 3] = [
        (b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", "it does not speak TLS"),
        // A version 1 server greets in plaintext.
        (b"\0\0\0\x20{\"op\":\"hello\",\"version\":1}", "it does not speak TLS"),
        (b"", "no TLS handshake within 4 s"),
    ];
    for (reply, why) in cases {
        let addr = not_xfer(reply);
        let started = Instant::now();
        xfer(addr, work.path())
            .arg("ls")
            .timeout(Duration::from_secs(30))
            .assert()
            .code(255)
            .stderr(predicate::str::starts_with(format!("xfer: error: {addr} is not an xfer server (")))
            .stderr(predicate::str::contains(why));
        assert!(started.elapsed() < Duration::from_secs(5), "{why}: {:?}", started.elapsed());
    }
}

#[test]
fn a_request_body_is_skipped_never_run_as_a_frame() {
    let server = TestServer::start();
    fs::write(server.path("a.txt"), b"x").unwrap();
    let mut s = raw::connect(server.addr);
    // An ls whose body is another ls: one listing, then the next request.
    let inner = r#"{"op":"ls","filename":"","md5":null,"total_size":0}"#;
    let mut body = (inner.len() as u32).to_be_bytes().to_vec();
    body.extend_from_slice(inner.as_bytes());
    raw::send(&mut s, &format!(r#"{{"op":"ls","filename":"","md5":null,"total_size":{}}}"#, body.len()));
    s.write_all(&body).unwrap();
    raw::send(&mut s, r#"{"op":"get","filename":"nope","md5":null,"total_size":0}"#);
    assert!(raw::recv(&mut s).contains(r#""op":"entry""#));
    assert!(raw::recv(&mut s).contains(r#""op":"end""#));
    let next = raw::recv(&mut s);
    assert!(next.contains(r#""code":"not_found""#), "the body was run as a request: {next}");
}

/// A client written from PROTOCOL.md alone, in Python with its standard
/// library (`tests/peers/client.py`): the binding is one a language's own
/// TLS can compute.
#[test]
fn a_client_written_from_the_protocol_document_works() {
    let server = TestServer::start();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/client.py");
    let run = |token: &str| {
        let out = std::process::Command::new("python3")
            .arg(&script)
            .args([
                "127.0.0.1",
                &server.addr.port().to_string(),
                token,
                "from-python.txt",
                "hello from python",
            ])
            .output()
            .expect("python3 runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, said) = run(TOKEN);
    assert!(ok, "{said}");
    assert!(said.contains("file from-python.txt 17"), "{said}");
    assert_eq!(fs::read(server.path("from-python.txt")).unwrap(), b"hello from python");
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(fs::read(server.path("from-python.txt.big")).unwrap(), big);
    let digest = common::parts_md5_hex(&big);
    assert!(
        said.contains(&format!("stored from-python.txt.big {digest}")) && digest.ends_with("-3"),
        "{said}"
    );
    let (ok, said) = run("a-wrong-token-that-is-long-enough-0000");
    assert!(!ok && said.contains("refused: auth_failed"), "{said}");
}
