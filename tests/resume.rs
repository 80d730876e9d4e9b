//! Interrupted transfers continue where they stopped: only the missing bytes
//! cross the wire, the MD5 still covers the whole file, and a partial that
//! is not a prefix of the source (changed, or longer) starts over.

mod common;

use common::proxy::{Damage, Direction, Proxy};
use common::{eventually, pattern, tree, xfer, TestServer};
use predicates::prelude::*;
use std::fs;
use std::path::Path;
use std::time::Duration;
use xfer::ui::human_bytes;

const SIZE: usize = 4 * 1024 * 1024 + 123;

/// Cut points, as fractions of the body.
const CUTS: [f64; 3] = [0.1, 0.5, 0.9];

fn partial_len(dir: &Path, name: &str) -> u64 {
    fs::metadata(dir.join(format!(".{name}.xfer-part"))).map(|m| m.len()).unwrap_or(0)
}

/// Runs a put through a proxy that cuts the upload at `frac` of the body;
/// returns how many bytes the server's partial then holds.
fn interrupted_put(server: &TestServer, work: &Path, frac: f64) -> u64 {
    let proxy = Proxy::start(server.addr, Direction::ToServer, Damage::CutAfter((SIZE as f64 * frac) as u64));
    xfer(proxy.addr, work).args(["put", "big.iso"]).assert().code(1);
    // The server notices the cut a moment later, writes what arrived and
    // lets go of the partial's lock.
    let partial = server.root.path().join(".big.iso.xfer-part");
    let released =
        eventually(Duration::from_secs(5), || fs::File::open(&partial).is_ok_and(|f| f.try_lock().is_ok()));
    assert!(released, "the server still holds the partial");
    let held = partial_len(server.root.path(), "big.iso");
    assert!(!server.path("big.iso").exists(), "nothing at the final name");
    held
}

fn interrupted_get(server: &TestServer, work: &Path, frac: f64) -> u64 {
    let proxy = Proxy::start(server.addr, Direction::ToClient, Damage::CutAfter((SIZE as f64 * frac) as u64));
    xfer(proxy.addr, work).args(["get", "big.iso"]).assert().code(1);
    assert!(!work.join("big.iso").exists(), "nothing at the final name");
    partial_len(work, "big.iso")
}

#[test]
fn put_resumes_after_cuts_at_several_points() {
    for frac in CUTS {
        let server = TestServer::start();
        let work = tempfile::tempdir().unwrap();
        let data = pattern(SIZE, 1);
        fs::write(work.path().join("big.iso"), &data).unwrap();
        let held = interrupted_put(&server, work.path(), frac);
        assert!(held > 0 && held < SIZE as u64, "cut at {frac}: partial of {held} bytes");
        xfer(server.addr, work.path())
            .args(["put", "big.iso"])
            .assert()
            .success()
            .stderr(predicate::str::contains(format!("resuming big.iso at {}\n", human_bytes(held as f64))))
            .stderr(predicate::str::contains(format!(
                "put big.iso  {} in",
                human_bytes((SIZE as u64 - held) as f64)
            )));
        assert_eq!(fs::read(server.path("big.iso")).unwrap(), data, "cut at {frac}");
        assert_eq!(tree(server.root.path()), ["big.iso"], "the partial is gone once committed");
    }
}

#[test]
fn get_resumes_after_cuts_at_several_points() {
    for frac in CUTS {
        let server = TestServer::start();
        let data = pattern(SIZE, 2);
        fs::write(server.path("big.iso"), &data).unwrap();
        let work = tempfile::tempdir().unwrap();
        let held = interrupted_get(&server, work.path(), frac);
        assert!(held > 0 && held < SIZE as u64, "cut at {frac}: partial of {held} bytes");
        xfer(server.addr, work.path())
            .args(["get", "big.iso"])
            .assert()
            .success()
            .stderr(predicate::str::contains(format!("resuming big.iso at {}\n", human_bytes(held as f64))))
            .stderr(predicate::str::contains(format!(
                "get big.iso  {} in",
                human_bytes((SIZE as u64 - held) as f64)
            )));
        assert_eq!(fs::read(work.path().join("big.iso")).unwrap(), data, "cut at {frac}");
        assert_eq!(tree(work.path()), ["big.iso"]);
    }
}

#[test]
fn a_changed_source_starts_over_instead_of_splicing() {
    let server = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    let mut data = pattern(SIZE, 3);
    fs::write(work.path().join("big.iso"), &data).unwrap();
    assert!(interrupted_put(&server, work.path(), 0.5) > 0);
    data[10] ^= 0xff; // same size, different prefix
    fs::write(work.path().join("big.iso"), &data).unwrap();
    xfer(server.addr, work.path())
        .args(["put", "big.iso"])
        .assert()
        .success()
        .stderr(predicate::str::contains("resuming").not());
    assert_eq!(fs::read(server.path("big.iso")).unwrap(), data);

    // The same for get, with the server's file changed between attempts.
    let mut remote = pattern(SIZE, 4);
    fs::write(server.path("other.iso"), &remote).unwrap();
    let proxy = Proxy::start(server.addr, Direction::ToClient, Damage::CutAfter(SIZE as u64 / 2));
    xfer(proxy.addr, work.path()).args(["get", "other.iso"]).assert().code(1);
    assert!(partial_len(work.path(), "other.iso") > 0);
    remote[20] ^= 0xff;
    fs::write(server.path("other.iso"), &remote).unwrap();
    xfer(server.addr, work.path())
        .args(["get", "other.iso"])
        .assert()
        .success()
        .stderr(predicate::str::contains("resuming").not());
    assert_eq!(fs::read(work.path().join("other.iso")).unwrap(), remote);
}

#[test]
fn a_partial_longer_than_the_source_starts_over() {
    let server = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    fs::write(work.path().join("big.iso"), pattern(SIZE, 5)).unwrap();
    let held = interrupted_put(&server, work.path(), 0.9);
    let short = pattern(held as usize / 2, 6);
    fs::write(work.path().join("big.iso"), &short).unwrap();
    xfer(server.addr, work.path())
        .args(["put", "big.iso"])
        .assert()
        .success()
        .stderr(predicate::str::contains("resuming").not());
    assert_eq!(fs::read(server.path("big.iso")).unwrap(), short);
    assert_eq!(tree(server.root.path()), ["big.iso"]);
}

#[test]
fn no_resume_starts_over() {
    let server = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    let data = pattern(SIZE, 7);
    fs::write(work.path().join("big.iso"), &data).unwrap();
    assert!(interrupted_put(&server, work.path(), 0.5) > 0);
    xfer(server.addr, work.path())
        .args(["put", "--no-resume", "big.iso"])
        .assert()
        .success()
        .stderr(predicate::str::contains("resuming").not())
        .stderr(predicate::str::contains(format!("put big.iso  {} in", human_bytes(SIZE as f64))));
    assert_eq!(fs::read(server.path("big.iso")).unwrap(), data);

    fs::write(server.path("g.iso"), &data).unwrap();
    assert!(interrupted_get_named(&server, work.path(), "g.iso") > 0);
    xfer(server.addr, work.path())
        .args(["get", "--no-resume", "g.iso"])
        .assert()
        .success()
        .stderr(predicate::str::contains("resuming").not());
    assert_eq!(fs::read(work.path().join("g.iso")).unwrap(), data);
}

fn interrupted_get_named(server: &TestServer, work: &Path, name: &str) -> u64 {
    let proxy = Proxy::start(server.addr, Direction::ToClient, Damage::CutAfter(SIZE as u64 / 2));
    xfer(proxy.addr, work).args(["get", name]).assert().code(1);
    partial_len(work, name)
}

#[test]
fn a_damaged_resume_is_caught_by_the_whole_file_digest() {
    let server = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    let data = pattern(SIZE, 8);
    fs::write(work.path().join("big.iso"), &data).unwrap();
    assert!(interrupted_put(&server, work.path(), 0.5) > 0);
    // The rest is damaged in transit: the digest of the whole file catches
    // it, nothing is committed, and the bad partial is gone.
    let proxy = Proxy::start(server.addr, Direction::ToServer, Damage::FlipBodyByte);
    xfer(proxy.addr, work.path())
        .args(["put", "big.iso"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("md5 mismatch for big.iso"));
    assert!(eventually(Duration::from_secs(5), || tree(server.root.path()).is_empty()));
}
