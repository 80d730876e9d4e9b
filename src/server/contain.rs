//! Holding every process a command starts, so that all of them end with
//! it: its process group, and, where the server can make one, a cgroup
//! (v2) of its own, which also holds what leaves the group or the session
//! (`setsid`, a double fork, `nohup … &`). Killing the cgroup
//! (`cgroup.kill`) ends everything in it at once.
//!
//! The cgroup is made beneath the server's own (found from
//! `/proc/self/cgroup` and the cgroup2 mount in `/proc/self/mountinfo`);
//! under systemd that needs `Delegate=yes`. Where none can be made (or
//! `XFER_NO_CGROUP=1` says not to), every process of a command carries
//! `XFER_COMMAND=SERVERPID.N` in its environment, and when the command
//! ends the server kills every process of its user that does, wherever it
//! went. That misses only a process that starts with its environment
//! cleared (`env -i`, some daemons) or runs as another user.

use rustix::process::{kill_process_group, Pid, Signal};
use std::ffi::CString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long to wait for a killed cgroup to empty before removing it: the
/// kernel ends its processes at once, their exit takes microseconds.
const EMPTY_WAIT: Duration = Duration::from_secs(1);

/// Everything one command started.
pub(crate) struct Contained {
    /// Its process group (the command's pid), until killed.
    group: Option<Pid>,
    /// Its cgroup, where one could be made.
    cgroup: Option<Cgroup>,
    /// What its processes carry in [`MARK_VAR`].
    mark: String,
    /// Whether everything was killed already: once is enough, and the
    /// mark's scan of /proc is not free.
    killed: bool,
}

impl Contained {
    /// A cgroup for a command about to start, if one can be made; the
    /// command is born in it (see [`spawn`](super::spawn)), and carries
    /// [`MARK_VAR`] with [`mark`](Self::mark) either way.
    pub fn prepare() -> Contained {
        static SERIAL: AtomicU64 = AtomicU64::new(0);
        let n = SERIAL.fetch_add(1, Ordering::Relaxed);
        let mark = format!("{}.{n}", std::process::id());
        Contained { group: None, cgroup: Cgroup::new(n), mark, killed: false }
    }

    /// The cgroup's directory, which the command is cloned into, and its
    /// `cgroup.procs`, which it writes itself into where it cannot be.
    pub fn cgroup(&self) -> Option<(BorrowedFd<'_>, &CString)> {
        self.cgroup.as_ref().map(|c| (c.handle.as_fd(), &c.procs))
    }

    /// The value of [`MARK_VAR`] every process of this command inherits.
    pub fn mark(&self) -> &str {
        &self.mark
    }

    /// Notes the started command's process group.
    pub fn started(&mut self, pid: u32) {
        self.group = Pid::from_raw(pid as i32);
    }

    /// Kills the command's process group only: what did not leave it.
    pub fn kill_group(&mut self) {
        if let Some(pgid) = self.group {
            let _ = kill_process_group(pgid, Signal::KILL);
        }
    }

    /// Kills everything the command started: its cgroup, its group, and
    /// (without a cgroup) every process that carries its mark. The first
    /// call does it; the command is over then, so later ones (the end of
    /// the request after a timeout, the drop) have nothing left to do.
    pub fn kill(&mut self) {
        if std::mem::replace(&mut self.killed, true) {
            return;
        }
        if let Some(c) = &self.cgroup {
            c.kill();
        }
        if let Some(pgid) = self.group.take() {
            // ESRCH (already gone) is fine.
            let _ = kill_process_group(pgid, Signal::KILL);
        }
        if self.cgroup.is_none() {
            kill_marked(&format!("{MARK_VAR}={}", self.mark));
        }
    }
}

impl Drop for Contained {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The environment variable that marks every process of one command
/// (`SERVERPID.N`), by which leftovers are found where there is no cgroup.
pub(crate) const MARK_VAR: &str = "XFER_COMMAND";

/// Kills every process whose environment (as it was at its exec) holds
/// `entry` (`XFER_COMMAND=…`), again while any is left: a process can fork
/// while the first round runs. Processes of other users are not readable,
/// and were not ours to start.
fn kill_marked(entry: &str) {
    let me = std::process::id() as i32;
    for _ in 0..16 {
        let Ok(dir) = std::fs::read_dir("/proc") else { return };
        let marked: Vec<i32> = dir
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|&pid| pid != me)
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/environ"))
                    .is_ok_and(|env| env.split(|b| *b == 0).any(|var| var == entry.as_bytes()))
            })
            .collect();
        if marked.is_empty() {
            return;
        }
        for pid in marked {
            if let Some(pid) = Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(pid, Signal::KILL);
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// In the child between clone and exec: moves the child into the cgroup
/// whose `cgroup.procs` is `procs`. Only async-signal-safe calls. A failure
/// leaves it in the server's cgroup, held by its process group alone.
pub(crate) fn join_in_child(procs: &CString) {
    // SAFETY: open, write and close on a path prepared before the fork.
    unsafe {
        let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd >= 0 {
            let _ = libc::write(fd, b"0".as_ptr().cast(), 1);
            libc::close(fd);
        }
    }
}

/// One command's cgroup, removed when dropped (after it is killed).
struct Cgroup {
    /// Its directory.
    dir: PathBuf,
    /// Its `cgroup.procs`, ready for the child.
    procs: CString,
    /// The directory, opened: what `CLONE_INTO_CGROUP` takes.
    handle: OwnedFd,
}

impl Cgroup {
    /// The cgroup of the server's `n`th command.
    fn new(n: u64) -> Option<Cgroup> {
        let base = base()?;
        let dir = base.join(format!("xfer-{}-{n}", std::process::id()));
        std::fs::create_dir(&dir).ok()?;
        let handle = match std::fs::File::open(&dir) {
            Ok(f) => OwnedFd::from(f),
            Err(_) => {
                let _ = std::fs::remove_dir(&dir);
                return None;
            }
        };
        let procs = CString::new(dir.join("cgroup.procs").into_os_string().into_encoded_bytes()).ok()?;
        Some(Cgroup { dir, procs, handle })
    }

    fn kill(&self) {
        let _ = std::fs::write(self.dir.join("cgroup.kill"), b"1");
    }
}

/// Dropped only inside a [`Contained`], whose drop has killed it first.
impl Drop for Cgroup {
    fn drop(&mut self) {
        if std::fs::remove_dir(&self.dir).is_ok() {
            return;
        }
        // Not empty yet (its processes are still exiting): waited for on a
        // thread of its own, never on the connection's.
        let dir = std::mem::take(&mut self.dir);
        std::thread::spawn(move || {
            let until = Instant::now() + EMPTY_WAIT;
            while std::fs::remove_dir(&dir).is_err() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(2));
            }
        });
    }
}

/// Where this server's commands' cgroups go: the server's own cgroup in
/// the cgroup2 hierarchy, if it is mounted and we may make groups in it.
fn base() -> Option<PathBuf> {
    static BASE: OnceLock<Option<PathBuf>> = OnceLock::new();
    BASE.get_or_init(|| {
        if std::env::var_os("XFER_NO_CGROUP").is_some_and(|v| v == "1") {
            return None;
        }
        let mount = cgroup2_mount()?;
        let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        let own = own.lines().find_map(|l| l.strip_prefix("0::"))?;
        let base = mount.join(own.trim_start_matches('/'));
        // Made and removed once: the test that we may.
        let probe = base.join(format!("xfer-{}-probe", std::process::id()));
        std::fs::create_dir(&probe).ok()?;
        let killable = probe.join("cgroup.kill").exists();
        let _ = std::fs::remove_dir(&probe);
        if killable {
            remove_stale(&base);
        }
        killable.then_some(base)
    })
    .clone()
}

/// Removes the empty cgroups of servers that are gone (killed before
/// they could remove their own): `xfer-PID-N` whose PID no longer runs.
fn remove_stale(base: &Path) {
    let Ok(dir) = std::fs::read_dir(base) else { return };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("xfer-")?.split('-').next()) else {
            continue;
        };
        let gone = pid.parse::<u32>().is_ok_and(|pid| !Path::new(&format!("/proc/{pid}")).exists());
        if gone {
            // Only an empty one goes: rmdir refuses the rest.
            let _ = std::fs::remove_dir(entry.path());
        }
    }
}

/// The cgroup2 mount point, from `/proc/self/mountinfo`.
fn cgroup2_mount() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|line| {
        // "... mount-point options - fstype source ..."
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        Some(Path::new(left.split_whitespace().nth(4)?).into())
    })
}

/// What holds commands here, for the server's log at start.
pub(crate) fn describe() -> String {
    match base() {
        Some(b) => format!("a cgroup per command beneath {}", b.display()),
        None => format!(
            "process groups and the {MARK_VAR} mark: no cgroup v2 to make groups in \
             (a process that clears its environment escapes)"
        ),
    }
}
