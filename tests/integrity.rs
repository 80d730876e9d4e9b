//! Damaged streams, vanished peers and interrupted transfers: a digest or
//! connection error, and nothing committed.

mod common;

use common::proxy::{Damage, Direction, Proxy};
use common::{eventually, md5_hex, pattern, raw, tree, xfer, TestServer};
use predicates::prelude::*;
use std::fs;
use std::io::Write;
use std::time::Duration;

const SIZE: usize = 2 * 1024 * 1024 + 321;

#[test]
fn flipped_byte_on_put_is_a_digest_error_and_saves_nothing() {
    let server = TestServer::start();
    let proxy = Proxy::start(server.addr, Direction::ToServer, Damage::FlipBodyByte);
    let work = tempfile::tempdir().unwrap();
    fs::write(work.path().join("big.iso"), pattern(SIZE, 1)).unwrap();
    xfer(proxy.addr, work.path())
        .args(["put", "big.iso"])
        .assert()
        .code(1)
        .stderr(predicate::str::is_match("^xfer: error: md5 mismatch for big.iso \\(sent [0-9a-f]{32}, received other bytes in the part at byte [0-9]+\\): nothing was saved\n$").unwrap());
    assert!(tree(server.root.path()).is_empty(), "{:?}", tree(server.root.path()));
}

#[test]
fn flipped_byte_on_put_leaves_an_existing_file_alone_even_with_force() {
    let server = TestServer::start();
    fs::write(server.path("big.iso"), b"old").unwrap();
    let proxy = Proxy::start(server.addr, Direction::ToServer, Damage::FlipBodyByte);
    let work = tempfile::tempdir().unwrap();
    fs::write(work.path().join("big.iso"), pattern(SIZE, 2)).unwrap();
    xfer(proxy.addr, work.path()).args(["put", "-f", "big.iso"]).assert().code(1);
    assert_eq!(fs::read(server.path("big.iso")).unwrap(), b"old");
    assert_eq!(tree(server.root.path()), ["big.iso"]);
}

#[test]
fn flipped_byte_on_get_is_a_digest_error_and_saves_nothing() {
    let server = TestServer::start();
    fs::write(server.path("big.iso"), pattern(SIZE, 3)).unwrap();
    let proxy = Proxy::start(server.addr, Direction::ToClient, Damage::FlipBodyByte);
    let work = tempfile::tempdir().unwrap();
    fs::write(work.path().join("big.iso"), b"old").unwrap();
    xfer(proxy.addr, work.path())
        .args(["get", "-f", "big.iso"])
        .assert()
        .code(1)
        .stderr(predicate::str::starts_with("xfer: error: md5 mismatch for big.iso (sent "));
    assert_eq!(fs::read(work.path().join("big.iso")).unwrap(), b"old");
    assert_eq!(tree(work.path()), ["big.iso"]);
}

#[test]
fn server_vanishing_mid_get_commits_nothing_and_keeps_a_verified_prefix() {
    let server = TestServer::start();
    fs::write(server.path("big.iso"), pattern(SIZE, 4)).unwrap();
    let proxy = Proxy::start(server.addr, Direction::ToClient, Damage::CutAfter(SIZE as u64 / 2));
    let work = tempfile::tempdir().unwrap();
    xfer(proxy.addr, work.path())
        .args(["get", "big.iso"])
        .assert()
        .code(255)
        .stderr(predicate::str::starts_with("xfer: error: connection to server lost"));
    assert_only_partial(work.path(), "big.iso", &pattern(SIZE, 4));
}

/// Nothing is at `name` in `dir`; at most its hidden partial, holding a
/// prefix of `data`.
fn assert_only_partial(dir: &std::path::Path, name: &str, data: &[u8]) {
    let partial = format!(".{name}.xfer-part");
    let entries = tree(dir);
    assert!(entries.is_empty() || entries == [partial.clone()], "{entries:?}");
    if let Ok(held) = fs::read(dir.join(&partial)) {
        assert!(data.starts_with(&held), "the partial is not a prefix of the file");
    }
}

#[test]
fn connection_lost_mid_put_commits_nothing() {
    let server = TestServer::start();
    let proxy = Proxy::start(server.addr, Direction::ToServer, Damage::CutAfter(SIZE as u64 / 2));
    let work = tempfile::tempdir().unwrap();
    fs::write(work.path().join("big.iso"), pattern(SIZE, 5)).unwrap();
    xfer(proxy.addr, work.path())
        .args(["put", "big.iso"])
        .assert()
        .code(255)
        .stderr(predicate::str::starts_with("xfer: error: connection to server lost"));
    // Once the server has noticed, only the hidden partial may remain.
    std::thread::sleep(Duration::from_millis(300));
    assert_only_partial(server.root.path(), "big.iso", &pattern(SIZE, 5));
}

#[test]
fn client_vanishing_mid_body_commits_nothing_and_server_keeps_serving() {
    let server = TestServer::start();
    fs::write(server.path("keep.txt"), b"old").unwrap();
    let mut s = raw::connect(server.addr);
    raw::send(&mut s, r#"{"op":"put","filename":"keep.txt","md5":null,"total_size":0,"force":true}"#);
    assert!(raw::recv(&mut s).contains(r#""op":"ready""#));
    // Three whole parts, and the start of a fourth.
    for i in 0..3 {
        raw::send_part(&mut s, "keep.txt", i * PART as u64, &[7u8; PART]);
    }
    raw::send(
        &mut s,
        r#"{"op":"data","filename":"keep.txt","md5":"00000000000000000000000000000000","total_size":131072,"offset":393216}"#,
    );
    s.write_all(&[7u8; 10_000]).unwrap();
    // The partial exists while the body is in flight...
    assert!(eventually(Duration::from_secs(5), || tree(server.root.path()).len() == 2));
    drop(s);
    // ...and keeps the whole parts that arrived, for a resume, once the
    // client is gone; the destination is untouched.
    let partial = server.path(".keep.txt.xfer-part");
    assert!(eventually(Duration::from_secs(5), || fs::read(&partial).is_ok_and(|b| b.len() == 3 * PART)));
    assert!(fs::read(&partial).unwrap().iter().all(|&b| b == 7));
    assert_eq!(fs::read(server.path("keep.txt")).unwrap(), b"old");

    let work = tempfile::tempdir().unwrap();
    xfer(server.addr, work.path()).args(["get", "keep.txt"]).assert().success();
}

/// Bytes in a part of a file body (PROTOCOL.md).
const PART: usize = 128 * 1024;

/// A put of `f` whose bytes come as two parts, a whole part of `a` at 0
/// and `def` at `second`; the `done` is left to the caller.
fn put_in_two_bodies(server: &TestServer, second: u64) -> raw::Tls {
    let mut s = raw::connect(server.addr);
    raw::send(&mut s, r#"{"op":"put","filename":"f","md5":null,"total_size":0}"#);
    assert!(raw::recv(&mut s).contains(r#""op":"ready""#));
    raw::send_part(&mut s, "f", 0, &[b'a'; PART]);
    raw::send_part(&mut s, "f", second, b"def");
    s
}

/// A body comes as parts, each where the last ended; one that skips ahead
/// is a broken protocol: the connection ends, nothing is committed and the
/// partial's bytes are thrown away.
#[test]
fn a_body_continued_anywhere_but_where_it_ended_commits_nothing() {
    let server = TestServer::start();
    let mut s = put_in_two_bodies(&server, PART as u64 + 2);
    assert!(raw::try_recv(&mut s).is_none_or(|reply| !reply.contains(r#""op":"ok""#)));
    assert!(
        eventually(Duration::from_secs(5), || tree(server.root.path()).is_empty()),
        "{:?}",
        tree(server.root.path())
    );
    // Where it ended, it goes on: the file is both parts.
    let mut s = put_in_two_bodies(&server, PART as u64);
    let mut want = vec![b'a'; PART];
    want.extend_from_slice(b"def");
    let digest = common::parts_md5_hex(&want);
    raw::send(&mut s, &format!(r#"{{"op":"done","filename":"f","md5":"{digest}","total_size":0}}"#));
    let reply = raw::recv(&mut s);
    assert!(reply.contains(r#""op":"ok""#) && reply.contains(&digest), "{reply}");
    assert!(digest.ends_with("-2"), "{digest}");
    assert_eq!(fs::read(server.path("f")).unwrap(), want);
}

#[test]
fn a_damaged_part_is_refused_and_nothing_is_committed() {
    let server = TestServer::start();
    let mut s = raw::connect(server.addr);
    raw::send(&mut s, r#"{"op":"put","filename":"f","md5":null,"total_size":0}"#);
    raw::recv(&mut s);
    raw::send_part(&mut s, "f", 0, &[b'a'; PART]);
    // The second part's header claims other bytes than follow it.
    let claimed = md5_hex(b"xyz");
    raw::send(
        &mut s,
        &format!(r#"{{"op":"data","filename":"f","md5":"{claimed}","total_size":3,"offset":{PART}}}"#),
    );
    s.write_all(b"abc").unwrap();
    raw::send(
        &mut s,
        r#"{"op":"done","filename":"f","md5":"00000000000000000000000000000000","total_size":0}"#,
    );
    let reply = raw::recv(&mut s);
    assert!(reply.contains(r#""code":"md5_mismatch""#) && reply.contains("byte 131072"), "{reply}");
    assert!(tree(server.root.path()).is_empty(), "{:?}", tree(server.root.path()));
    // The connection stays usable.
    raw::send(&mut s, r#"{"op":"df"}"#);
    assert!(raw::recv(&mut s).contains(r#""op":"space""#));
}

#[test]
fn wrong_md5_in_done_frame_is_refused() {
    let server = TestServer::start();
    let mut s = raw::connect(server.addr);
    raw::send(&mut s, r#"{"op":"put","filename":"f","md5":null,"total_size":0}"#);
    raw::recv(&mut s);
    raw::send_part(&mut s, "f", 0, b"abc");
    raw::send(
        &mut s,
        r#"{"op":"done","filename":"f","md5":"00000000000000000000000000000000","total_size":0}"#,
    );
    let reply = raw::recv(&mut s);
    assert!(reply.contains(r#""code":"md5_mismatch""#), "{reply}");
    assert!(reply.contains("received 900150983cd24fb0d6963f7d28e17f72"), "{reply}");
    // The connection stays usable: a correct put follows.
    raw::send(&mut s, r#"{"op":"put","filename":"f","md5":null,"total_size":0}"#);
    raw::recv(&mut s);
    raw::send_part(&mut s, "f", 0, b"abc");
    raw::send(
        &mut s,
        r#"{"op":"done","filename":"f","md5":"900150983cd24fb0d6963f7d28e17f72","total_size":0}"#,
    );
    let reply = raw::recv(&mut s);
    assert!(reply.contains(r#""op":"ok""#), "{reply}");
    assert_eq!(fs::read(server.path("f")).unwrap(), b"abc");
}

#[test]
fn stale_temporaries_are_removed_when_the_server_starts() {
    let root = tempfile::tempdir().unwrap();
    fs::create_dir(root.path().join("d")).unwrap();
    fs::write(root.path().join("d/.big.iso.00aa11bb22cc33dd.xfer-part"), b"partial").unwrap();
    fs::write(root.path().join("d/big.iso"), b"kept").unwrap();
    let server = TestServer::start_in(root, |c| c.partial_max_age = Duration::ZERO);
    // A request proves the server finished starting.
    xfer(server.addr, tempfile::tempdir().unwrap().path()).arg("ls").assert().success();
    assert_eq!(tree(server.root.path()), ["d", "d/big.iso"]);
}

#[test]
fn many_clients_at_once_all_verify() {
    let server = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    let handles: Vec<_> = (0..16)
        .map(|i| {
            let dir = work.path().join(format!("c{i}"));
            fs::create_dir(&dir).unwrap();
            fs::write(dir.join("f.bin"), pattern(300_000 + i, i as u64)).unwrap();
            let addr = server.addr;
            std::thread::spawn(move || {
                xfer(addr, &dir).args(["put", "f.bin", &format!("c{i}/f.bin")]).assert().success();
                xfer(addr, &dir).args(["get", &format!("c{i}/f.bin"), "back.bin"]).assert().success();
                assert_eq!(fs::read(dir.join("back.bin")).unwrap(), fs::read(dir.join("f.bin")).unwrap());
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

/// Rewrites `path` in place at the same size (one byte changed) and sets
/// its modification time back: only its change time tells.
fn rewrite_in_place(path: &std::path::Path) {
    let mtime = fs::metadata(path).unwrap().modified().unwrap();
    let mut bytes = fs::read(path).unwrap();
    bytes[7] ^= 0xff;
    let mut f = fs::File::options().write(true).open(path).unwrap();
    f.write_all(&bytes).unwrap();
    f.set_modified(mtime).unwrap();
}

/// The server remembers the digests of files it sent whole, so that it
/// need not hash them again; a file rewritten since (same size, same
/// mtime) must go out with its new digest, by get and by get -r, large
/// files and small.
#[test]
fn remembered_digests_are_not_used_for_rewritten_files() {
    let server = TestServer::start();
    fs::create_dir(server.path("d")).unwrap();
    fs::write(server.path("d/large"), pattern(SIZE, 3)).unwrap();
    fs::write(server.path("d/small"), pattern(1000, 4)).unwrap();
    let work = tempfile::tempdir().unwrap();
    let fetch_all = |round: &str| {
        xfer(server.addr, work.path()).args(["get", "d/large", &format!("large{round}")]).assert().success();
        xfer(server.addr, work.path()).args(["get", "-r", "d", &format!("tree{round}")]).assert().success();
        for (copy, source) in [
            (format!("large{round}"), "d/large"),
            (format!("tree{round}/large"), "d/large"),
            (format!("tree{round}/small"), "d/small"),
        ] {
            let same = fs::read(work.path().join(&copy)).unwrap() == fs::read(server.path(source)).unwrap();
            assert!(same, "round {round}: {copy} differs from {source}");
        }
    };
    // Only files unchanged for a second have their digests remembered.
    std::thread::sleep(Duration::from_millis(1100));
    fetch_all("1");
    // Sent again with the remembered digests: the client checks them.
    fetch_all("2");
    rewrite_in_place(&server.path("d/large"));
    rewrite_in_place(&server.path("d/small"));
    // Same device, inode, size and mtime as remembered; a second later,
    // the change time is old enough to be trusted, and differs.
    std::thread::sleep(Duration::from_millis(1100));
    fetch_all("3");
    fetch_all("4");
}
