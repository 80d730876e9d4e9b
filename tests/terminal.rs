//! `xfer exec -t` and the remote shell, driven as a user would: the real
//! client on a real pseudo-terminal of the test's own (keys written to its
//! master side, the screen read back), against a real server.

mod common;

use common::{TestServer, TOKEN};
use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
use rustix::termios::{tcgetattr, tcsetwinsize, LocalModes, Winsize};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// The client on a terminal: its master side, and what it has shown.
struct Screen {
    /// The master side (non-blocking).
    master: std::fs::File,
    /// The client.
    child: Child,
    /// Everything read so far.
    seen: Vec<u8>,
}

impl Screen {
    /// Starts `xfer ARGS` against `server` on a new terminal of `rows` x `cols`.
    fn start(server: &TestServer, args: &[&str], (rows, cols): (u16, u16)) -> Screen {
        let master: OwnedFd = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).unwrap();
        grantpt(&master).unwrap();
        unlockpt(&master).unwrap();
        tcsetwinsize(&master, Winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 }).unwrap();
        let name = ptsname(&master, Vec::new()).unwrap();
        let slave = std::fs::OpenOptions::new().read(true).write(true).open(name.to_str().unwrap()).unwrap();
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("xfer"));
        cmd.args(args)
            .env("XFER_SERVER", server.addr.to_string())
            .env("XFER_TOKEN", TOKEN)
            .env("TERM", "xterm-256color")
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave));
        // SAFETY: setsid and ioctl only, in the child before exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                libc::ioctl(0, libc::TIOCSCTTY as _, 0);
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap();
        rustix::io::ioctl_fionbio(&master, true).unwrap();
        Screen { master: master.into(), child, seen: Vec::new() }
    }

    /// Waits (up to 10 s) until the screen shows `text`; false if it never does.
    fn shows(&mut self, text: &str) -> bool {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            if String::from_utf8_lossy(&self.seen).contains(text) {
                return true;
            }
            let mut buf = [0u8; 4096];
            match self.master.read(&mut buf) {
                Ok(n) if n > 0 => self.seen.extend_from_slice(&buf[..n]),
                _ if Instant::now() > until => return false,
                _ => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }

    fn keys(&mut self, keys: &str) {
        self.master.write_all(keys.as_bytes()).unwrap();
    }

    /// The text shown so far, for messages.
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.seen).into_owned()
    }

    /// The client's exit code, once it ends (within 10 s).
    fn exit_code(&mut self) -> Option<i32> {
        let code = common::exit_code_within(&mut self.child, Duration::from_secs(10));
        // Drain what came last.
        let mut rest = Vec::new();
        let _ = self.master.read_to_end(&mut rest);
        self.seen.extend(rest);
        code
    }
}

fn server() -> TestServer {
    TestServer::start_with(|c| c.allow_exec = true)
}

#[test]
fn a_command_gets_a_terminal_of_our_size_and_sees_it_resized() {
    let server = server();
    let mut s = Screen::start(&server, &["exec", "-t", "tty; stty size; echo TERM=$TERM"], (33, 111));
    assert!(s.shows("33 111"), "{}", s.text());
    assert_eq!(s.exit_code(), Some(0));
    assert!(s.text().contains("/dev/pts/"), "{}", s.text());
    assert!(s.text().contains("TERM=xterm-256color"), "{}", s.text());

    // A resize reaches the program (SIGWINCH there), and Ctrl-C ends it.
    let script = "trap 'stty size' WINCH; echo ready; while :; do sleep 0.1; done";
    let mut s = Screen::start(&server, &["exec", "-t", script], (24, 80));
    assert!(s.shows("ready"), "{}", s.text());
    tcsetwinsize(&s.master, Winsize { ws_row: 40, ws_col: 120, ws_xpixel: 0, ws_ypixel: 0 }).unwrap();
    assert!(s.shows("40 120"), "the program saw the new size: {}", s.text());
    s.keys("\x03");
    assert_eq!(s.exit_code(), Some(130), "{}", s.text());
}

#[test]
fn a_remote_shell_keeps_going_after_ctrl_c_and_hides_a_password() {
    let server = server();
    // No command, on a terminal: the server user's login shell.
    let mut s = Screen::start(&server, &["exec"], (24, 80));
    // What the remote shell prints, never the keys echoed as typed.
    s.keys("PS1='$ '; echo shell-$((2+2))-up\r");
    assert!(s.shows("shell-4-up"), "{}", s.text());
    // Raw here: the remote terminal echoes, ours does not too.
    let ours = tcgetattr(&s.master).unwrap();
    assert!(!ours.local_modes.contains(LocalModes::ECHO), "our terminal is raw while the shell runs");
    s.keys("echo sleeping-$((3*3)); sleep 30\r");
    assert!(s.shows("sleeping-9"), "{}", s.text());
    std::thread::sleep(Duration::from_millis(100));
    s.keys("\x03");
    s.keys("echo alive-$((40+2))\r");
    assert!(s.shows("alive-42"), "Ctrl-C stopped the sleep, not the shell: {}", s.text());
    // A prompt that turns echo off shows nothing of what is typed.
    s.keys("stty -echo; echo asking-$((2*5)); read pw; stty echo; echo got-$pw\r");
    assert!(s.shows("asking-10"), "{}", s.text());
    s.keys("hunter2\r");
    assert!(s.shows("got-hunter2"), "{}", s.text());
    assert_eq!(s.text().matches("hunter2").count(), 1, "typed without echo: {}", s.text());
    s.keys("exit 3\r");
    assert_eq!(s.exit_code(), Some(3), "{}", s.text());
    let back = tcgetattr(&s.master).unwrap();
    assert!(back.local_modes.contains(LocalModes::ECHO), "our terminal is put back");
}

#[test]
fn t_and_big_t_choose_as_ssh_does() {
    let server = server();
    let work = tempfile::tempdir().unwrap();
    // -T: no terminal even from one; the line session reads commands.
    let mut s = Screen::start(&server, &["exec", "-T"], (24, 80));
    s.keys("tty || echo not-a-$((6*7))\r");
    assert!(s.shows("not-a-42"), "{}", s.text());
    s.keys("exit\r");
    assert_eq!(s.exit_code(), Some(0));
    // -t without a terminal of ours: the remote one still exists.
    common::xfer(server.addr, work.path())
        .args(["exec", "-t", "tty"])
        .write_stdin("")
        .assert()
        .success()
        .stdout(predicates::str::starts_with("/dev/pts/"));
}

#[test]
fn vi_edits_a_remote_file_through_the_terminal() {
    let server = server();
    let mut s = Screen::start(&server, &["exec", "-t", "vi -u NONE notes.txt"], (24, 80));
    // vi has drawn its screen (its status line names the file).
    assert!(s.shows("notes.txt"), "{}", s.text());
    s.keys("ihello from vi\x1b:wq\r");
    assert_eq!(s.exit_code(), Some(0), "{}", s.text());
    assert_eq!(std::fs::read_to_string(server.path("notes.txt")).unwrap(), "hello from vi\n");
}
