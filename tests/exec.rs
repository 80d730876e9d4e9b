//! `xfer exec` against a real server running real processes.

mod common;

use common::{eventually, md5_hex, pattern, xfer, xfer_process, TestServer};
use predicates::prelude::*;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

fn exec_server() -> TestServer {
    TestServer::start_with(|c| c.allow_exec = true)
}

/// Whether process `pid` still exists (zombies count as gone).
fn alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'),
        Err(_) => false,
    }
}

fn read_pid(path: &Path) -> Option<i32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[test]
fn exit_codes_are_the_commands_own() {
    let server = exec_server();
    let work = tempfile::tempdir().unwrap();
    for (cmd, code) in [("true", 0), ("false", 1), ("exit 3", 3), ("kill -9 $$", 137)] {
        xfer(server.addr, work.path()).args(["exec", cmd]).assert().code(code);
    }
}

#[test]
fn stdout_and_stderr_stay_apart() {
    let server = exec_server();
    let work = tempfile::tempdir().unwrap();
    xfer(server.addr, work.path())
        .args(["exec", "echo", "to-out;", "echo", "to-err", ">&2"])
        .assert()
        .success()
        .stdout("to-out\n")
        .stderr("to-err\n");
}

#[test]
fn binary_and_non_utf8_output_arrive_unchanged() {
    let server = exec_server();
    let work = tempfile::tempdir().unwrap();
    let data = pattern(3 * 1024 * 1024 + 5, 11);
    fs::write(server.path("blob"), &data).unwrap();
    let out = xfer(server.addr, work.path()).args(["exec", "cat blob"]).assert().success();
    assert_eq!(md5_hex(&out.get_output().stdout), md5_hex(&data));
    // "你好" in GBK, and bytes that are not UTF-8 in any reading.
    xfer(server.addr, work.path())
        .args(["exec", r"printf '\304\343\272\303\377\000\376'; printf '\377' >&2"])
        .assert()
        .success()
        .stdout(&b"\xc4\xe3\xba\xc3\xff\x00\xfe"[..])
        .stderr(&b"\xff"[..]);
}

/// Our stdout a file and our stderr `/dev/null`: written straight, not
/// through a thread, and every byte still lands.
#[test]
fn output_to_a_file_and_to_dev_null_arrives_whole() {
    let server = exec_server();
    let work = tempfile::tempdir().unwrap();
    let data = pattern(9 * 1024 * 1024 + 3, 12);
    fs::write(server.path("blob"), &data).unwrap();
    let out = work.path().join("out");
    let status = xfer_process(server.addr, work.path())
        .args(["exec", "-n", "cat blob; cat blob >&2; echo end"])
        .stdout(fs::File::create(&out).unwrap())
        .stderr(fs::File::options().write(true).open("/dev/null").unwrap())
        .status()
        .unwrap();
    assert!(status.success());
    let mut expected = data.clone();
    expected.extend_from_slice(b"end\n");
    assert_eq!(md5_hex(&fs::read(&out).unwrap()), md5_hex(&expected));
}

#[test]
fn megabytes_on_stderr_before_stdout_do_not_deadlock() {
    let server = exec_server();
    let work = tempfile::tempdir().unwrap();
    let out = xfer(server.addr, work.path())
        .args(["exec", "head -c 5000000 /dev/zero >&2; echo done"])
        .timeout(Duration::from_secs(60))
        .assert()
        .success()
        .stdout("done\n");
    assert_eq!(out.get_output().stderr.len(), 5_000_000);
}

#[test]
fn first_line_arrives_while_the_command_still_runs() {
    let server = exec_server();
    let work = tempfile::tempdir().unwrap();
    let mut child = xfer_process(server.addr, work.path())
        .args(["exec", "echo first; sleep 3; echo second"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "first\n");
    assert!(child.try_wait().unwrap().is_none(), "the first line came only after the command ended");
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "second\n");
    assert!(child.wait().unwrap().success());
}

#[test]
fn stdin_is_forwarded_and_its_eof_closes_the_commands_stdin() {
    let server = exec_server();
    let work = tempfile::tempdir().unwrap();
    let data = pattern(1_000_000, 5);
    let out =
        xfer(server.addr, work.path()).args(["exec", "cat"]).write_stdin(data.clone()).assert().success();
    assert_eq!(md5_hex(&out.get_output().stdout), md5_hex(&data));
    xfer(server.addr, work.path())
        .args(["exec", "wc -c"])
        .write_stdin("12345")
        .assert()
        .success()
        .stdout("5\n");
}

#[test]
fn a_tar_pipe_copies_a_tree() {
    let server = exec_server();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir_all(src.join("a/b")).unwrap();
    fs::write(src.join("a/b/f.bin"), pattern(300_000, 9)).unwrap();
    fs::write(src.join("top.txt"), b"top\n").unwrap();
    let tar = std::process::Command::new("tar").args(["c", "-C"]).arg(&src).arg(".").output().unwrap();
    assert!(tar.status.success());
    xfer(server.addr, work.path())
        .args(["exec", "mkdir -p dest && tar x -C dest"])
        .write_stdin(tar.stdout)
        .assert()
        .success();
    assert_eq!(fs::read(server.path("dest/a/b/f.bin")).unwrap(), pattern(300_000, 9));
    assert_eq!(fs::read(server.path("dest/top.txt")).unwrap(), b"top\n");
}

#[test]
fn dash_n_sends_no_stdin() {
    let server = exec_server();
    let work = tempfile::tempdir().unwrap();
    xfer(server.addr, work.path())
        .args(["exec", "-n", "cat; echo end"])
        .write_stdin("this must not arrive")
        .assert()
        .success()
        .stdout("end\n");
}

#[test]
fn a_stdin_of_dev_null_is_not_forwarded_and_an_empty_pipe_is() {
    let server = exec_server();
    let work = tempfile::tempdir().unwrap();
    let fd0 = |stdin: Stdio| {
        let out = xfer_process(server.addr, work.path())
            .args(["exec", "readlink /proc/self/fd/0"])
            .stdin(stdin)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    // From /dev/null the command reads the server's /dev/null, as with -n.
    assert_eq!(fd0(Stdio::null()), "/dev/null\n");
    // Anything else is forwarded, even when it holds nothing.
    assert!(fd0(Stdio::piped()).starts_with("pipe:"));
}

#[test]
fn timeout_kills_the_whole_process_group() {
    let server = exec_server();
    let work = tempfile::tempdir().unwrap();
    xfer(server.addr, work.path())
        .args(["exec", "--timeout", "1", "sleep 30 & echo $! > bg.pid; sleep 30"])
        .assert()
        .code(124)
        .stderr("xfer: error: command timed out after 1 s\n");
    let pid = read_pid(&server.path("bg.pid")).expect("the command wrote its child's pid");
    assert!(
        eventually(Duration::from_secs(2), || !alive(pid)),
        "background child {pid} survived the timeout"
    );
}

#[test]
fn killed_client_takes_the_command_down() {
    let server = exec_server();
    let work = tempfile::tempdir().unwrap();
    let mut client = xfer_process(server.addr, work.path())
        .args(["exec", "sleep 30 & echo $! > bg.pid; echo $$ > sh.pid; wait"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    assert!(eventually(Duration::from_secs(10), || read_pid(&server.path("sh.pid")).is_some()));
    let (bg, sh) = (read_pid(&server.path("bg.pid")).unwrap(), read_pid(&server.path("sh.pid")).unwrap());
    assert!(alive(bg) && alive(sh));
    client.kill().unwrap();
    client.wait().unwrap();
    assert!(eventually(Duration::from_secs(2), || !alive(bg) && !alive(sh)), "orphans left: {bg} {sh}");
}

#[test]
fn session_runs_each_line_and_survives_failures() {
    let server = exec_server();
    let work = tempfile::tempdir().unwrap();
    xfer(server.addr, work.path())
        .arg("exec")
        .write_stdin("echo one\n\nfalse\nsh -c 'echo two >&2; exit 4'\necho three\nexit\necho never\n")
        .assert()
        .success()
        .stdout("one\nthree\n")
        .stderr("two\n");
    // At EOF the session ends with the last command's code; no prompt off a terminal.
    xfer(server.addr, work.path()).arg("exec").write_stdin("echo a\nexit 5\n").assert().code(5).stdout("a\n");
}

#[test]
fn exec_is_refused_without_allow_exec() {
    let server = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    xfer(server.addr, work.path())
        .args(["exec", "touch", "pwned"])
        .assert()
        .code(255)
        .stderr("xfer: error: exec is disabled on this server (start it with --allow-exec)\n");
    assert!(!server.path("pwned").exists());
}

#[test]
fn unreachable_server_is_255_for_exec() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    xfer(addr, std::env::temp_dir().as_path())
        .args(["exec", "true"])
        .assert()
        .code(255)
        .stderr(predicate::str::contains("cannot connect"));
}

#[test]
fn twenty_execs_at_once_stay_isolated() {
    let server = exec_server();
    let work = tempfile::tempdir().unwrap();
    let handles: Vec<_> = (0..20)
        .map(|i| {
            let addr = server.addr;
            let dir = work.path().to_path_buf();
            std::thread::spawn(move || {
                xfer(addr, &dir)
                    .args(["exec", &format!("sleep 0.2; echo out-{i}; echo err-{i} >&2; exit {i}")])
                    .assert()
                    .code(i)
                    .stdout(format!("out-{i}\n"))
                    .stderr(format!("err-{i}\n"));
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn a_command_is_born_in_a_cgroup_of_its_own_where_the_server_can_make_one() {
    // Only where cgroup v2 lets this user make groups (root here and in CI).
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let Some(own) = own.lines().find_map(|l| l.strip_prefix("0::")) else { return };
    let ours = |mount: &str| std::path::Path::new(mount).join(own.trim_start_matches('/'));
    let usable = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"].map(ours).iter().any(|dir| {
        dir.join("cgroup.procs").exists() && rustix::fs::access(dir, rustix::fs::Access::WRITE_OK).is_ok()
    });
    if !usable {
        return;
    }
    let server = exec_server();
    let work = tempfile::tempdir().unwrap();
    // Two commands, two groups, each beneath the server's own.
    let cgroup_of_command = || {
        let out =
            xfer(server.addr, work.path()).args(["exec", "-n", "cat /proc/self/cgroup"]).output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        text.lines().find_map(|l| l.strip_prefix("0::")).map(str::to_string).unwrap_or_default()
    };
    let (first, second) = (cgroup_of_command(), cgroup_of_command());
    let leaf = |g: &str| g.rsplit('/').next().unwrap_or("").to_string();
    assert!(leaf(&first).starts_with("xfer-"), "{first}");
    assert!(leaf(&second).starts_with("xfer-"), "{second}");
    assert_ne!(first, second);
}

#[test]
fn what_leaves_the_group_or_session_ends_with_the_command() {
    let server = exec_server();
    let work = tempfile::tempdir().unwrap();
    // setsid, with a time limit: the client is back at the deadline.
    let started = std::time::Instant::now();
    xfer(server.addr, work.path())
        .args(["exec", "-n", "--timeout", "2", "setsid sh -c 'echo $$ > escaped.pid; exec sleep 20'"])
        .assert()
        .code(124);
    assert!(started.elapsed() < Duration::from_secs(6), "took {:?}", started.elapsed());
    let escaped = read_pid(&server.path("escaped.pid")).expect("it ran");
    assert!(eventually(Duration::from_secs(1), || !alive(escaped)), "setsid child {escaped} survived");
    // A daemon that double-forks and leaves: gone when the command ends.
    xfer(server.addr, work.path())
        .args([
            "exec",
            "-n",
            "(setsid sh -c 'echo $$ > daemon.pid; exec sleep 30' &) ; sleep 0.2; echo started",
        ])
        .assert()
        .success()
        .stdout("started\n");
    let daemon = read_pid(&server.path("daemon.pid")).expect("it ran");
    assert!(eventually(Duration::from_secs(1), || !alive(daemon)), "daemon {daemon} survived");
    // A client killed with kill -9: nothing of its command within a second.
    let mut client = xfer_process(server.addr, work.path())
        .args(["exec", "-n", "setsid sh -c 'echo $$ > nohup.pid; exec sleep 43' & wait"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    assert!(eventually(Duration::from_secs(10), || read_pid(&server.path("nohup.pid")).is_some()));
    let orphan = read_pid(&server.path("nohup.pid")).unwrap();
    client.kill().unwrap();
    client.wait().unwrap();
    assert!(eventually(Duration::from_secs(1), || !alive(orphan)), "{orphan} outlived its client");
}

#[test]
fn an_idle_session_stays_and_a_dead_server_is_told_at_once() {
    // Idle connections are closed after 8 s here; keepalives hold a session.
    let server = TestServer::start_with(|c| {
        c.allow_exec = true;
        c.idle_timeout = Some(Duration::from_secs(8));
    });
    let work = tempfile::tempdir().unwrap();
    let mut session = xfer_process(server.addr, work.path())
        .arg("exec")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = session.stdin.take().unwrap();
    let mut out = BufReader::new(session.stdout.take().unwrap());
    use std::io::Write;
    writeln!(stdin, "echo one").unwrap();
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "one\n");
    std::thread::sleep(Duration::from_secs(11));
    writeln!(stdin, "echo two").unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "two\n", "still connected after longer than the idle timeout");
    // The server goes; the session says so without waiting for a line.
    let stopped = std::time::Instant::now();
    server.stop();
    let code = common::exit_code_within(&mut session, Duration::from_secs(10));
    assert_eq!(code, Some(255), "after {:?}", stopped.elapsed());
    let mut err = String::new();
    std::io::Read::read_to_string(&mut session.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("xfer: error:"), "{err}");
}

#[test]
fn without_a_cgroup_the_mark_finds_what_escaped() {
    // The real server, told not to use cgroups: what leaves the group is
    // found by the XFER_COMMAND mark its environment carries.
    let root = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut server = xfer_process(addr, root.path())
        .env("XFER_NO_CGROUP", "1")
        .args(["serve", "--listen", &addr.to_string(), "--root", ".", "--allow-exec"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(eventually(Duration::from_secs(10), || std::net::TcpStream::connect(addr).is_ok()));
    let work = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    xfer(addr, work.path())
        .args(["exec", "-n", "--timeout", "2", "setsid sh -c 'echo $$ > escaped.pid; exec sleep 20'"])
        .assert()
        .code(124);
    assert!(started.elapsed() < Duration::from_secs(6), "took {:?}", started.elapsed());
    let escaped = read_pid(&root.path().join("escaped.pid")).expect("it ran");
    let gone = eventually(Duration::from_secs(1), || !alive(escaped));
    xfer(addr, work.path())
        .args(["exec", "-n", "(setsid sh -c 'echo $$ > daemon.pid; exec sleep 30' &) ; sleep 0.2"])
        .assert()
        .success();
    let daemon = read_pid(&root.path().join("daemon.pid")).expect("it ran");
    let daemon_gone = eventually(Duration::from_secs(1), || !alive(daemon));
    server.kill().unwrap();
    server.wait().unwrap();
    assert!(gone, "setsid child {escaped} survived");
    assert!(daemon_gone, "daemon {daemon} survived");
}

/// Output is written while the next chunk is read, not waited for chunk by
/// chunk; yet with stdout and stderr on one pipe (`2>&1 | …`), chunks come
/// out in the order the server sent them, runs of one stream and all.
#[test]
fn chunks_of_both_streams_keep_the_servers_order_on_one_pipe() {
    use common::fake::{self, Proof};
    use common::raw;
    use md5::{Digest, Md5};
    // Runs of 1 to 4 chunks of one stream, then the other.
    let streams = ["stdout", "stderr"].iter().cycle();
    let runs = streams.zip([1, 2, 3, 4].iter().cycle()).take(40);
    let names = runs.flat_map(|(name, &len)| std::iter::repeat_n(*name, len));
    let chunks: Vec<(&str, String)> =
        names.enumerate().map(|(i, name)| (name, format!("{i:03}\n"))).collect();
    let expected: String = chunks.iter().map(|(_, text)| text.as_str()).collect();
    let script_chunks = chunks.clone();
    let (addr, _) = fake::serve_once(Proof::Genuine, move |s| {
        raw::recv(s); // the exec
        raw::send(s, r#"{"op":"started","filename":"","md5":null,"total_size":0}"#);
        let mut summaries = serde_json::Map::new();
        for name in ["stdout", "stderr"] {
            let mine: Vec<&String> =
                script_chunks.iter().filter(|(n, _)| *n == name).map(|(_, t)| t).collect();
            let digests: Vec<u8> = mine.iter().flat_map(|t| Md5::digest(t.as_bytes()).to_vec()).collect();
            let size: usize = mine.iter().map(|t| t.len()).sum();
            let md5 = format!("{}-{}", md5_hex(&digests), mine.len());
            summaries.insert(name.into(), serde_json::json!({"total_size": size, "md5": md5}));
        }
        for (name, text) in &script_chunks {
            let md5 = md5_hex(text.as_bytes());
            raw::send(
                s,
                &format!(r#"{{"op":"{name}","filename":"","md5":"{md5}","total_size":{}}}"#, text.len()),
            );
            std::io::Write::write_all(s, text.as_bytes()).unwrap();
        }
        let mut exit =
            serde_json::json!({"op": "exit", "filename": "", "md5": null, "total_size": 0, "exit_code": 0});
        exit.as_object_mut().unwrap().extend(summaries);
        raw::send(s, &exit.to_string());
    });
    let work = tempfile::tempdir().unwrap();
    let bin = assert_cmd::cargo::cargo_bin("xfer");
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("'{}' -q -s {addr} exec -n x 2>&1 | cat", bin.display()))
        .env("XFER_TOKEN", common::TOKEN)
        .current_dir(work.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8(out.stdout).unwrap(), expected);
}
