//! Compression (`-z`): what crosses the wire is packed in `zstd` envelopes
//! where that makes it smaller, every digest still covers the bytes as they
//! are, and envelopes a peer may not send are refused before they cost
//! memory.

mod common;

use common::proxy::{Damage, Direction, Proxy};
use common::{eventually, md5_hex, pattern, raw, tree, xfer, TestServer};
use predicates::prelude::*;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

/// Text that compresses as logs do: lines from a few words and numbers.
fn log_like(len: usize) -> Vec<u8> {
    let words = ["GET /api/v1/users", "POST /login", "200", "404", "INFO", "WARN", "served", "bytes"];
    let mut out = Vec::with_capacity(len + 64);
    let mut i = 0u64;
    while out.len() < len {
        let w = words[(i * 7 % words.len() as u64) as usize];
        writeln!(
            out,
            "2026-12-02T10:{:02}:{:02}Z {w} 10.0.{}.{} {}ms",
            i % 60,
            i * 13 % 60,
            i % 251,
            i % 7,
            i % 997
        )
        .unwrap();
        i += 1;
    }
    out.truncate(len);
    out
}

/// Bytes that crossed `proxy` (TLS records, both ways).
fn on_wire(proxy: &Proxy) -> usize {
    proxy.recorded.lock().unwrap().len()
}

#[test]
fn files_round_trip_with_z_packed_only_where_smaller() {
    let server = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    let text = log_like(3 << 20);
    let random = pattern(3 << 20, 1);
    for (name, data) in [("text.log", &text[..]), ("random.bin", &random[..]), ("empty", &[][..])] {
        fs::write(work.path().join(name), data).unwrap();
        let proxy = Proxy::recording(server.addr);
        xfer(proxy.addr, work.path()).args(["-z", "put", name]).assert().success();
        assert_eq!(fs::read(server.path(name)).unwrap(), data, "{name} put");
        let put = on_wire(&proxy);
        let proxy = Proxy::recording(server.addr);
        xfer(proxy.addr, work.path()).args(["get", "-z", name, "back"]).assert().success();
        assert_eq!(fs::read(work.path().join("back")).unwrap(), data, "{name} got");
        let got = on_wire(&proxy);
        fs::remove_file(work.path().join("back")).unwrap();
        match name {
            "text.log" => assert!(put < data.len() / 3 && got < data.len() / 3, "{name}: {put}, {got}"),
            // Sent as it is: parts' headers and TLS records, no more.
            "random.bin" => assert!(put < data.len() * 101 / 100 && got < data.len() * 101 / 100),
            _ => {}
        }
    }
    // Several requests on one connection: each reply's stream ends before
    // the next begins, packed or not.
    fs::create_dir(work.path().join("all")).unwrap();
    let names = ["text.log", "random.bin", "empty", "text.log"];
    xfer(server.addr, work.path()).args(["get", "-z", "--force"]).args(names).arg("all/").assert().success();
    xfer(server.addr, work.path())
        .args(["get", "text.log", "random.bin", "all/", "--force"])
        .assert()
        .success();
    for name in names {
        assert_eq!(
            fs::read(work.path().join("all").join(name)).unwrap(),
            fs::read(work.path().join(name)).unwrap()
        );
    }
    // The same text without -z crosses whole.
    let proxy = Proxy::recording(server.addr);
    xfer(proxy.addr, work.path()).args(["get", "text.log", "plain"]).assert().success();
    assert!(on_wire(&proxy) > text.len());
}

#[test]
fn trees_exec_output_and_resumes_work_with_z() {
    let server = TestServer::start_with(|c| c.allow_exec = true);
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir_all(src.join("d")).unwrap();
    for i in 0..40 {
        fs::write(src.join(format!("d/f{i}.txt")), log_like(3000 + i * 500)).unwrap();
    }
    fs::write(src.join("big.log"), log_like(3 << 20)).unwrap();
    fs::write(src.join("rand.bin"), pattern(200_000, 2)).unwrap();
    xfer(server.addr, work.path()).args(["-z", "put", "-r", "src"]).assert().success();
    assert_eq!(tree(&server.path("src")), tree(&src));
    xfer(server.addr, work.path()).args(["-z", "get", "-r", "src/", "back"]).assert().success();
    assert_eq!(tree(&work.path().join("back")), tree(&src));
    for rel in ["d/f7.txt", "big.log", "rand.bin"] {
        let want = fs::read(src.join(rel)).unwrap();
        assert_eq!(md5_hex(&fs::read(server.path(&format!("src/{rel}"))).unwrap()), md5_hex(&want));
        assert_eq!(md5_hex(&fs::read(work.path().join("back").join(rel)).unwrap()), md5_hex(&want));
    }

    // Exec output, each stream apart, packed on the way.
    let out = xfer(server.addr, work.path())
        .args(["-z", "exec", "-n", "cat src/big.log; echo oops >&2; exit 3"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(md5_hex(&out.stdout), md5_hex(&fs::read(src.join("big.log")).unwrap()));
    assert_eq!(out.stderr, b"oops\n");

    // An interrupted -z put resumes (after what its partial holds).
    let big = log_like(6 << 20);
    fs::write(work.path().join("again.log"), &big).unwrap();
    let proxy = Proxy::start(server.addr, Direction::ToServer, Damage::CutAfter(400_000));
    xfer(proxy.addr, work.path()).args(["-z", "put", "again.log"]).assert().code(255);
    let partial = server.path(".again.log.xfer-part");
    let released =
        eventually(Duration::from_secs(5), || fs::File::open(&partial).is_ok_and(|f| f.try_lock().is_ok()));
    assert!(released && fs::metadata(&partial).unwrap().len() > 0, "a partial to resume");
    xfer(server.addr, work.path())
        .args(["-z", "put", "again.log"])
        .assert()
        .success()
        .stderr(predicate::str::contains("resuming again.log at"));
    assert_eq!(md5_hex(&fs::read(server.path("again.log")).unwrap()), md5_hex(&big));
}

/// A frame of `json` (no body) as bytes.
fn frame(json: &str) -> Vec<u8> {
    let mut out = (json.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(json.as_bytes());
    out
}

/// An envelope holding `inner` as a client sends it.
fn envelope(inner: &[u8]) -> Vec<u8> {
    let packed = zstd::bulk::compress(inner, 3).unwrap();
    let json = format!(
        r#"{{"op":"zstd","filename":"","md5":null,"total_size":{},"size":{}}}"#,
        packed.len(),
        inner.len()
    );
    let mut out = frame(&json);
    out.extend_from_slice(&packed);
    out
}

/// A part of `body` behind its header, claiming `md5`.
fn part(name: &str, body: &[u8], md5: &str) -> Vec<u8> {
    let json = format!(
        r#"{{"op":"data","filename":"{name}","md5":"{md5}","total_size":{},"offset":0}}"#,
        body.len()
    );
    let mut out = frame(&json);
    out.extend_from_slice(body);
    out
}

/// Starts a put of `name` on a raw connection, up to the server's `ready`.
fn raw_put(server: &TestServer, name: &str) -> raw::Tls {
    let mut s = raw::connect(server.addr);
    raw::send(&mut s, &format!(r#"{{"op":"put","filename":"{name}","md5":null,"total_size":0}}"#));
    assert!(raw::recv(&mut s).contains(r#""op":"ready""#));
    s
}

/// The replies until the server closed the connection.
fn replies_until_closed(s: &mut raw::Tls) -> String {
    std::iter::from_fn(|| raw::try_recv(s)).collect::<Vec<_>>().join("\n")
}

/// Whether the server refused an envelope with `why` and closed.
fn refused(s: &mut raw::Tls, why: &str) -> bool {
    let replies = replies_until_closed(s);
    replies.contains(r#""code":"bad_request""#) && replies.contains(why) || panic!("{replies}")
}

fn nothing_in(root: &Path) -> bool {
    eventually(Duration::from_secs(5), || tree(root).is_empty())
}

#[test]
fn a_packed_part_that_is_not_what_its_md5_says_commits_nothing() {
    let server = TestServer::start();
    let body = log_like(100_000);
    let mut s = raw_put(&server, "f.log");
    let mut inner = part("f.log", &body, &md5_hex(b"something else"));
    inner.extend(frame(&format!(
        r#"{{"op":"done","filename":"f.log","md5":"{}"}}"#,
        md5_hex(b"something else")
    )));
    s.write_all(&envelope(&inner)).unwrap();
    s.flush().unwrap();
    let reply = raw::recv(&mut s);
    assert!(reply.contains(r#""code":"md5_mismatch""#), "{reply}");
    assert!(nothing_in(server.root.path()));
    // The same part, honest, packed: stored.
    let mut inner = part("g.log", &body, &md5_hex(&body));
    inner.extend(frame(&format!(r#"{{"op":"done","filename":"g.log","md5":"{}"}}"#, md5_hex(&body))));
    let mut s = raw_put(&server, "g.log");
    s.write_all(&envelope(&inner)).unwrap();
    s.flush().unwrap();
    assert!(raw::recv(&mut s).contains(r#""op":"ok""#));
    assert_eq!(fs::read(server.path("g.log")).unwrap(), body);
}

#[test]
fn envelopes_a_peer_may_not_send_end_its_connection_only() {
    let server = TestServer::start();
    // A bomb: 8 MiB of zeros in a few hundred bytes, announced as such.
    let zeros = vec![0u8; 8 << 20];
    let mut s = raw_put(&server, "f");
    let packed = zstd::bulk::compress(&zeros, 19).unwrap();
    let json = format!(
        r#"{{"op":"zstd","filename":"","md5":null,"total_size":{},"size":{}}}"#,
        packed.len(),
        zeros.len()
    );
    s.write_all(&frame(&json)).unwrap();
    s.write_all(&packed).unwrap();
    s.flush().unwrap();
    assert!(refused(&mut s, "at most 2097152 each"), "a bomb is refused");
    // One that unpacks to more than it announced (the announced size is
    // all that is allocated).
    let mut s = raw_put(&server, "f");
    let body = zstd::bulk::compress(&zeros[..1 << 20], 3).unwrap();
    let json = format!(r#"{{"op":"zstd","filename":"","md5":null,"total_size":{},"size":100}}"#, body.len());
    s.write_all(&frame(&json)).unwrap();
    s.write_all(&body).unwrap();
    s.flush().unwrap();
    assert!(refused(&mut s, "does not unpack to the 100 bytes"), "a lying size is refused");
    // An envelope inside another.
    let mut s = raw_put(&server, "f");
    s.write_all(&envelope(&envelope(&part("f", b"abc", &md5_hex(b"abc"))))).unwrap();
    s.flush().unwrap();
    assert!(refused(&mut s, "inside another"), "a nested envelope is refused");
    // Bytes that are not zstd.
    let mut s = raw_put(&server, "f");
    s.write_all(&frame(r#"{"op":"zstd","filename":"","md5":null,"total_size":5,"size":5}"#)).unwrap();
    s.write_all(b"hello").unwrap();
    s.flush().unwrap();
    assert!(refused(&mut s, "does not unpack to the 5 bytes"), "a corrupt envelope is refused");
    // Before authentication: never unpacked.
    let mut s = raw::tls_connect(server.addr);
    raw::recv(&mut s);
    s.write_all(&envelope(&frame(r#"{"op":"auth","nonce":"","mac":""}"#))).unwrap();
    s.flush().unwrap();
    assert_eq!(replies_until_closed(&mut s), "", "an envelope before authentication is not read");
    assert!(nothing_in(server.root.path()));
    // And the server goes on serving.
    xfer(server.addr, server.root.path()).args(["-z", "ls"]).assert().success();
}
