//! `--json`: one object per line on stdout for each result and each error,
//! nothing else anywhere; exit codes as without it. The real binary
//! against a real server.

mod common;

use common::{md5_hex, xfer, TestServer};
use serde_json::Value;
use std::fs;

/// Runs `args` with `--json`; the objects it printed, its exit code.
/// Anything on stderr, or a stdout line that is not an object, fails.
fn json(server: &TestServer, cwd: &std::path::Path, args: &[&str]) -> (Vec<Value>, i32) {
    let out = xfer(server.addr, cwd).arg("--json").args(args).output().unwrap();
    assert!(out.stderr.is_empty(), "{args:?} wrote to stderr: {}", String::from_utf8_lossy(&out.stderr));
    let objects = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{args:?}: {l:?}: {e}")))
        .collect::<Vec<_>>();
    assert!(objects.iter().all(|o| o["type"].is_string()), "{objects:?}");
    (objects, out.status.code().unwrap())
}

#[test]
fn every_command_speaks_json_lines_and_nothing_else() {
    let server = TestServer::start_with(|c| c.allow_exec = true);
    let work = tempfile::tempdir().unwrap();
    fs::write(work.path().join("a.txt"), b"hello\n").unwrap();
    fs::create_dir(work.path().join("t")).unwrap();
    fs::write(work.path().join("t/f"), b"f").unwrap();

    let (o, code) = json(&server, work.path(), &["put", "a.txt"]);
    assert_eq!(code, 0);
    assert_eq!(o.len(), 1);
    assert_eq!((o[0]["type"].as_str(), o[0]["status"].as_str()), (Some("transfer"), Some("ok")));
    assert_eq!(o[0]["md5"], md5_hex(b"hello\n"));
    assert_eq!((o[0]["bytes"].as_u64(), o[0]["name"].as_str()), (Some(6), Some("a.txt")));
    assert!(o[0]["seconds"].as_f64().is_some());

    let (o, code) = json(&server, work.path(), &["put", "a.txt"]);
    assert_eq!((code, o[0]["status"].as_str()), (0, Some("skipped")));

    let (o, code) = json(&server, work.path(), &["put", "-r", "t"]);
    assert_eq!(code, 0);
    assert_eq!(o[0]["type"], "file");
    assert_eq!((o[1]["type"].as_str(), o[1]["copied"].as_u64()), (Some("tree"), Some(1)));

    let (o, code) = json(&server, work.path(), &["ls", "-l"]);
    assert_eq!(code, 0);
    let names: Vec<_> =
        o.iter().map(|e| (e["name"].as_str().unwrap(), e["kind"].as_str().unwrap())).collect();
    assert_eq!(names, [("a.txt", "file"), ("t", "dir")]);

    let (o, code) = json(&server, work.path(), &["get", "missing.txt"]);
    assert_eq!(code, 1);
    assert_eq!((o[0]["type"].as_str(), o[0]["code"].as_str()), (Some("error"), Some("not_found")));
    assert!(o[0]["message"].as_str().unwrap().contains("missing.txt"));

    let (o, code) = json(&server, work.path(), &["md5sum", "a.txt"]);
    assert_eq!((code, o[0]["md5"].as_str()), (0, Some(md5_hex(b"hello\n").as_str())));

    let (o, code) = json(&server, work.path(), &["rm", "-r", "t"]);
    assert_eq!(code, 0);
    assert_eq!(o.iter().filter(|e| e["type"] == "removed").count(), 2);

    // A command's output, text and not, and how it ended.
    let (o, code) = json(&server, work.path(), &["exec", "echo hi; printf '\\377' >&2; exit 3"]);
    assert_eq!(code, 3);
    assert!(o.contains(&serde_json::json!({"type": "stdout", "data": "hi\n"})), "{o:?}");
    assert!(o.contains(&serde_json::json!({"type": "stderr", "base64": "/w=="})), "{o:?}");
    assert_eq!(o.last().unwrap()["exit_code"], 3);

    // A dry run from standard input: its length is not known.
    let (o, code) = json(&server, work.path(), &["put", "-n", "-", "piped.bin"]);
    assert_eq!(code, 0);
    assert_eq!(
        o,
        [serde_json::json!({"type": "plan", "action": "copy", "name": "piped.bin", "bytes": null})]
    );

    // A file's bytes never share stdout with the objects.
    for args in [&["get", "a.txt", "-"][..], &["cat", "a.txt"]] {
        let (o, code) = json(&server, work.path(), args);
        assert_eq!((code, o[0]["code"].as_str()), (2, Some("usage")), "{args:?}");
    }

    // Usage errors too, and a server that is not there.
    let (o, code) = json(&server, work.path(), &["put", "--bogus"]);
    assert_eq!((code, o[0]["code"].as_str()), (2, Some("usage")));
    let out = xfer("127.0.0.1:1".parse().unwrap(), work.path()).args(["--json", "ls"]).output().unwrap();
    let o: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((out.status.code(), o["code"].as_str()), (Some(255), Some("connect")));
}
