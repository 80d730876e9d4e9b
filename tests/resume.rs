//! Interrupted transfers continue where they stopped: only the missing bytes
//! cross the wire, the MD5 still covers the whole file, and a partial that
//! is not a prefix of the source (changed, or longer) starts over.

mod common;

use common::proxy::{Damage, Direction, Proxy};
use common::{
    eventually, exit_code_within, pattern, spawn_server_process, tree, xfer, xfer_process, TestServer,
};
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
    xfer(proxy.addr, work).args(["put", "big.iso"]).assert().code(255);
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
    xfer(proxy.addr, work).args(["get", "big.iso"]).assert().code(255);
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

/// Where the proxy holds a transfer still before a side is killed: three
/// quarters of the stream, so whole chunks are already on disk.
fn stall_point() -> Damage {
    Damage::StallAfter(SIZE as u64 * 3 / 4)
}

/// Waits until the partial at `path` holds data and has stopped growing for
/// 300 ms (the transfer stands at the proxy's stall); returns its length.
fn settled_len(path: &Path) -> u64 {
    let (mut last, mut since) = (0, std::time::Instant::now());
    let settled = eventually(Duration::from_secs(10), || {
        let now = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        if now != last {
            (last, since) = (now, std::time::Instant::now());
        }
        last > 0 && since.elapsed() >= Duration::from_millis(300)
    });
    assert!(settled, "the partial at {} never settled", path.display());
    last
}

fn quiet(cmd: &mut std::process::Command) -> std::process::Child {
    cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap()
}

/// Re-runs `op` of big.iso against `addr` from `work`, checks that it
/// resumed at `held`, and that `dest` then holds `data` and nothing else.
fn resumes(addr: std::net::SocketAddr, work: &Path, op: &str, held: u64, dest: &Path, data: &[u8]) {
    assert!(held > 0 && held < SIZE as u64, "partial of {held} bytes");
    xfer(addr, work)
        .args([op, "big.iso"])
        .assert()
        .success()
        .stderr(predicate::str::contains(format!("resuming big.iso at {}\n", human_bytes(held as f64))));
    assert_eq!(fs::read(dest.join("big.iso")).unwrap(), data);
    assert_eq!(tree(dest), ["big.iso"], "the partial is gone once committed");
}

fn kill(child: &mut std::process::Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Kills the server process; the client must notice and fail.
fn kill_server_under(client: &mut std::process::Child, server: &mut std::process::Child) {
    kill(server);
    let code = exit_code_within(client, Duration::from_secs(10));
    assert_eq!(code, Some(255), "the client saw the server go");
}

/// A put of big.iso (from `seed`) killed mid-body: the server, its
/// client's directory, the data, and the partial's path on the server.
fn killed_put(seed: u64) -> (TestServer, tempfile::TempDir, Vec<u8>, std::path::PathBuf) {
    let server = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    let data = pattern(SIZE, seed);
    fs::write(work.path().join("big.iso"), &data).unwrap();
    let proxy = Proxy::start(server.addr, Direction::ToServer, stall_point());
    let mut client = quiet(xfer_process(proxy.addr, work.path()).args(["put", "big.iso"]));
    let partial = server.root.path().join(".big.iso.xfer-part");
    settled_len(&partial);
    kill(&mut client);
    (server, work, data, partial)
}

#[test]
fn put_resumes_after_the_client_is_killed() {
    let (server, work, data, partial) = killed_put(11);
    // The server sees the connection close, keeps what arrived and lets go.
    let released =
        eventually(Duration::from_secs(5), || fs::File::open(&partial).is_ok_and(|f| f.try_lock().is_ok()));
    assert!(released, "the server still holds the partial");
    assert!(!server.path("big.iso").exists(), "nothing at the final name");
    let held = partial_len(server.root.path(), "big.iso");
    resumes(server.addr, work.path(), "put", held, server.root.path(), &data);
}

/// Run again at once, a re-run finds the partial still held by the old
/// connection for a moment (here: held by the test for 0.3 s): it waits for
/// it and resumes, rather than start over beside an abandoned partial.
#[test]
fn put_run_again_at_once_resumes_and_leaves_no_partial() {
    let (server, work, data, partial) = killed_put(13);
    let held_by_us = eventually(Duration::from_secs(5), || {
        fs::File::open(&partial).is_ok_and(|f| {
            f.try_lock().is_ok() && {
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(300));
                    drop(f);
                });
                true
            }
        })
    });
    assert!(held_by_us);
    let held = partial_len(server.root.path(), "big.iso");
    resumes(server.addr, work.path(), "put", held, server.root.path(), &data);
}

#[test]
fn put_resumes_after_the_server_is_killed() {
    let root = tempfile::tempdir().unwrap();
    let (mut server, addr) = spawn_server_process(root.path(), "1");
    let work = tempfile::tempdir().unwrap();
    let data = pattern(SIZE, 12);
    fs::write(work.path().join("big.iso"), &data).unwrap();
    let proxy = Proxy::start(addr, Direction::ToServer, stall_point());
    let mut client = quiet(xfer_process(proxy.addr, work.path()).args(["put", "big.iso"]));
    let held = settled_len(&root.path().join(".big.iso.xfer-part"));
    kill_server_under(&mut client, &mut server);
    assert_eq!(partial_len(root.path(), "big.iso"), held, "a killed server writes nothing more");
    assert!(!root.path().join("big.iso").exists(), "nothing at the final name");

    let (mut again, addr) = spawn_server_process(root.path(), "1");
    resumes(addr, work.path(), "put", held, root.path(), &data);
    kill(&mut again);
}

#[test]
fn get_resumes_after_the_client_is_killed() {
    let server = TestServer::start();
    let data = pattern(SIZE, 13);
    fs::write(server.path("big.iso"), &data).unwrap();
    let work = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(server.addr, Direction::ToClient, stall_point());
    let mut client = quiet(xfer_process(proxy.addr, work.path()).args(["get", "big.iso"]));
    let held = settled_len(&work.path().join(".big.iso.xfer-part"));
    kill(&mut client);
    assert_eq!(partial_len(work.path(), "big.iso"), held);
    assert!(!work.path().join("big.iso").exists(), "nothing at the final name");
    resumes(server.addr, work.path(), "get", held, work.path(), &data);
}

#[test]
fn get_resumes_after_the_server_is_killed() {
    let root = tempfile::tempdir().unwrap();
    let data = pattern(SIZE, 14);
    fs::write(root.path().join("big.iso"), &data).unwrap();
    let (mut server, addr) = spawn_server_process(root.path(), "1");
    let work = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(addr, Direction::ToClient, stall_point());
    let mut client = quiet(xfer_process(proxy.addr, work.path()).args(["get", "big.iso"]));
    settled_len(&work.path().join(".big.iso.xfer-part"));
    kill_server_under(&mut client, &mut server);
    assert!(!work.path().join("big.iso").exists(), "nothing at the final name");

    let (mut again, addr) = spawn_server_process(root.path(), "1");
    resumes(addr, work.path(), "get", partial_len(work.path(), "big.iso"), work.path(), &data);
    kill(&mut again);
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
    xfer(proxy.addr, work.path()).args(["get", "other.iso"]).assert().code(255);
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

/// Bytes in a part of a file body (PROTOCOL.md, Parts).
const PART: usize = 128 * 1024;

#[test]
fn a_source_changed_after_some_parts_resumes_before_the_part_that_changed() {
    let server = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    let mut data = pattern(SIZE, 9);
    fs::write(work.path().join("big.iso"), &data).unwrap();
    let held = interrupted_put(&server, work.path(), 0.9);
    assert!(held as usize > 4 * PART, "partial of {held} bytes");
    data[3 * PART + 5] ^= 0xff; // in the fourth part: three are still ours
    fs::write(work.path().join("big.iso"), &data).unwrap();
    xfer(server.addr, work.path())
        .args(["put", "big.iso"])
        .assert()
        .success()
        .stderr(predicate::str::contains(format!("resuming big.iso at {}\n", human_bytes(3.0 * PART as f64))))
        .stderr(predicate::str::contains(format!(
            "put big.iso  {} in",
            human_bytes((SIZE - 3 * PART) as f64)
        )));
    assert_eq!(fs::read(server.path("big.iso")).unwrap(), data);
    assert_eq!(tree(server.root.path()), ["big.iso"]);

    // The same for get, with the server's file changed between attempts.
    let mut remote = pattern(SIZE, 10);
    fs::write(server.path("other.iso"), &remote).unwrap();
    let proxy = Proxy::start(server.addr, Direction::ToClient, Damage::CutAfter(SIZE as u64 * 9 / 10));
    xfer(proxy.addr, work.path()).args(["get", "other.iso"]).assert().code(255);
    assert!(partial_len(work.path(), "other.iso") as usize > 6 * PART);
    remote[5 * PART] ^= 0xff; // the first byte of the sixth part
    fs::write(server.path("other.iso"), &remote).unwrap();
    xfer(server.addr, work.path()).args(["get", "other.iso"]).assert().success().stderr(
        predicate::str::contains(format!("resuming other.iso at {}\n", human_bytes(5.0 * PART as f64))),
    );
    assert_eq!(fs::read(work.path().join("other.iso")).unwrap(), remote);
    assert!(!work.path().join(".other.iso.xfer-part").exists());
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
    xfer(proxy.addr, work).args(["get", name]).assert().code(255);
    partial_len(work, name)
}

#[test]
fn a_damaged_resume_is_caught_by_its_part_digests() {
    let server = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    let data = pattern(SIZE, 8);
    fs::write(work.path().join("big.iso"), &data).unwrap();
    assert!(interrupted_put(&server, work.path(), 0.5) > 0);
    // The rest is damaged in transit: the damaged part's digest catches
    // it, nothing is committed, and the bad partial is gone.
    let proxy = Proxy::start(server.addr, Direction::ToServer, Damage::FlipBodyByte);
    xfer(proxy.addr, work.path())
        .args(["put", "big.iso"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("md5 mismatch for big.iso"));
    assert!(eventually(Duration::from_secs(5), || tree(server.root.path()).is_empty()));
}
