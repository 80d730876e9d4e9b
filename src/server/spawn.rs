//! Starting a command's process: `clone3` with `CLONE_INTO_CGROUP`, so
//! it is born in its command's cgroup, and `CLONE_PIDFD`, so it is waited
//! for through a descriptor. A child that moves itself in by writing
//! `cgroup.procs` makes the kernel wait out an RCU grace period: 7-15 ms
//! per command when commands come a tenth of a second apart (`exec true`
//! took 22 ms that way, 6.5 ms without a cgroup).
//!
//! Between the clone and `execve` the child shares (or, off x86-64, is a
//! copy of) a multithreaded process's memory, so it makes only raw system
//! calls on what was prepared before, on a stack of its own.

use rustix::pipe::{pipe_with, PipeFlags};
use rustix::process::{pidfd_send_signal, waitid, Signal, WaitId, WaitIdOptions};
use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// The shell commands run in (POSIX puts it here; no `PATH` search).
const SHELL: &str = "/bin/sh";

/// The program and argv that run `command` as every command runs:
/// `sh -c COMMAND`.
pub(crate) fn shell(command: &str) -> (&'static Path, Vec<&OsStr>) {
    (Path::new(SHELL), vec![OsStr::new("sh"), OsStr::new("-c"), OsStr::new(command)])
}

/// `CLONE_INTO_CGROUP` (Linux 5.7), which the libc crate types too narrow.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// How the new process stands towards its terminal and signals.
#[derive(Clone, Copy)]
pub(crate) enum Leader {
    /// Leads a process group of its own (a command on pipes).
    Group,
    /// Leads a session of its own, the terminal on its stdin its
    /// controlling one (a command on a pty).
    Session,
}

/// What to start: program, arguments, environment, directory, its three
/// standard descriptors, and where it lives.
pub(crate) struct Launch<'a> {
    /// The program, by absolute path (no `PATH` search).
    pub program: &'a Path,
    /// Its argv, argv[0] first.
    pub args: Vec<&'a OsStr>,
    /// Variables set over the server's own environment.
    pub env: Vec<(&'a str, &'a str)>,
    /// The directory it starts in.
    pub dir: &'a Path,
    /// What becomes its stdin, stdout and stderr.
    pub stdio: [BorrowedFd<'a>; 3],
    /// Group or session leader.
    pub leader: Leader,
    /// The cgroup directory it is born in, and that cgroup's
    /// `cgroup.procs`, which it writes itself into should the kernel
    /// refuse `CLONE_INTO_CGROUP`.
    pub cgroup: Option<(BorrowedFd<'a>, &'a CString)>,
}

/// A started command's process, killed (and reaped) if dropped before it
/// has been waited for.
pub(crate) struct Process {
    /// Its pid, which is also its process group's (or session's) id.
    pid: u32,
    /// Readable once it has ended; taken by `drop`.
    pidfd: Option<AsyncFd<OwnedFd>>,
    /// How it ended, once reaped.
    status: Option<ExitStatus>,
}

/// Everything the child needs, made before the clone: it may not allocate.
struct Prepared {
    program: CString,
    /// NUL-terminated pointer arrays into `_strings`.
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    dir: CString,
    /// The standard descriptors, copied above 2 so no dup2 overwrites
    /// another's source.
    stdio: [OwnedFd; 3],
    leader: Leader,
    /// `cgroup.procs` to write, when the clone could not place it.
    join: Option<CString>,
    /// Owns what `argv` and `envp` point into.
    _strings: Vec<CString>,
}

/// Starts `launch`, returning once the program has been executed (or with
/// the reason it could not be).
pub(crate) fn start(launch: &Launch<'_>) -> io::Result<Process> {
    let mut prepared = prepare(launch)?;
    // Tells the parent why exec failed; closed by a successful exec.
    let (err_r, err_w) = pipe_with(PipeFlags::CLOEXEC)?;
    let into = launch.cgroup.map(|(dir, _)| dir.as_raw_fd());
    let (pid, pidfd) = match clone(into, &prepared, err_w.as_raw_fd()) {
        Ok(p) => p,
        // Not allowed to place it (an older kernel, a cgroup that may not
        // take processes): it joins by itself, the slow way.
        Err(_) if into.is_some() => {
            prepared.join = launch.cgroup.map(|(_, procs)| procs.clone());
            clone(None, &prepared, err_w.as_raw_fd())?
        }
        Err(e) => return Err(e),
    };
    drop(err_w);
    // SAFETY: the AsyncFd owns the descriptor until it is dropped.
    let pidfd = match unsafe { AsyncFd::register_with_interest(pidfd, Interest::READABLE) } {
        Ok(fd) => fd,
        Err(e) => {
            // Never left running unheld.
            let (fd, e) = e.into_parts();
            let _ = pidfd_send_signal(&fd, Signal::KILL);
            let _ = reap(fd.as_fd(), WaitIdOptions::empty());
            return Err(e);
        }
    };
    let process = Process { pid, pidfd: Some(pidfd), status: None };
    let mut errno = [0u8; 4];
    match rustix::io::read(&err_r, &mut errno) {
        Ok(4) => Err(io::Error::from_raw_os_error(i32::from_ne_bytes(errno))),
        // EOF: the exec happened.
        _ => Ok(process),
    }
}

fn prepare(launch: &Launch<'_>) -> io::Result<Prepared> {
    let c = |s: &OsStr| CString::new(s.as_bytes()).map_err(|_| io::Error::other("a NUL byte in the command"));
    let mut strings = Vec::new();
    let mut argv = Vec::new();
    for a in &launch.args {
        let s = c(a)?;
        argv.push(s.as_ptr());
        strings.push(s);
    }
    argv.push(std::ptr::null());
    let mut envp = Vec::new();
    let overridden = |k: &OsStr| launch.env.iter().any(|(name, _)| OsStr::new(name) == k);
    let inherited = std::env::vars_os().filter(|(k, _)| !overridden(k));
    let set = launch.env.iter().map(|(k, v)| (OsString::from(k), OsString::from(v)));
    for (k, v) in inherited.chain(set) {
        let mut kv = k;
        kv.push("=");
        kv.push(v);
        let s = c(&kv)?;
        envp.push(s.as_ptr());
        strings.push(s);
    }
    envp.push(std::ptr::null());
    let above = |fd: BorrowedFd<'_>| rustix::io::fcntl_dupfd_cloexec(fd, 3).map_err(io::Error::from);
    let [i, o, e] = launch.stdio;
    Ok(Prepared {
        program: c(launch.program.as_os_str())?,
        argv,
        envp,
        dir: c(launch.dir.as_os_str())?,
        stdio: [above(i)?, above(o)?, above(e)?],
        leader: launch.leader,
        join: None,
        _strings: strings,
    })
}

/// Clones the child (into the cgroup `into`, if given), which runs
/// [`child`]; returns its pid and pidfd.
fn clone(into: Option<RawFd>, prepared: &Prepared, err_w: RawFd) -> io::Result<(u32, OwnedFd)> {
    let mut pidfd: libc::c_int = -1;
    // SAFETY: clone_args is plain data; zero is "unused" for every field.
    let mut args: libc::clone_args = unsafe { std::mem::zeroed() };
    args.flags = libc::CLONE_PIDFD as u64;
    args.pidfd = std::ptr::addr_of_mut!(pidfd) as u64;
    args.exit_signal = libc::SIGCHLD as u64;
    if let Some(fd) = into {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = fd as u64;
    }
    let to_child = ChildArgs { prepared, err_w };
    // SAFETY: signals stay blocked across the clone, so none reaches one
    // of the server's handlers in the child before `child` has reset
    // them; the child runs only `child`, which never returns.
    let rc = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut was: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut was);
        let rc = clone_and_run(&mut args, &to_child);
        libc::pthread_sigmask(libc::SIG_SETMASK, &was, std::ptr::null_mut());
        rc
    };
    // SAFETY: CLONE_PIDFD stored a new descriptor we now own.
    rc.map(|pid| (pid, unsafe { OwnedFd::from_raw_fd(pidfd) }))
}

/// What [`child_entry`] gets: what to run, and where to say why not.
struct ChildArgs<'a> {
    prepared: &'a Prepared,
    err_w: RawFd,
}

/// The child's start on its own stack: never returns.
extern "C" fn child_entry(to_child: *const ChildArgs<'_>) -> ! {
    // SAFETY: the parent's ChildArgs, alive while it waits (CLONE_VFORK).
    unsafe { child((*to_child).prepared, (*to_child).err_w) }
}

/// Bytes of stack for the child between clone and exec: it calls a few
/// system call wrappers only (glibc's posix_spawn gives its child 32 KiB
/// and up).
#[cfg(target_arch = "x86_64")]
const CHILD_STACK: usize = 128 * 1024;

/// On x86-64, the way posix_spawn does it: `CLONE_VM | CLONE_VFORK`, the
/// child running on a stack of its own in this address space until it
/// execs, while this thread waits. Nothing is copied: from clone to exec
/// a fork-like clone took 1.2 ms in the server; this takes 0.25-0.3 ms in
/// a test process, where tokio's posix_spawn takes 0.22-0.25 ms. Returns
/// the child's pid.
#[cfg(target_arch = "x86_64")]
unsafe fn clone_and_run(args: &mut libc::clone_args, to_child: &ChildArgs<'_>) -> io::Result<u32> {
    let stack = libc::mmap(
        std::ptr::null_mut(),
        CHILD_STACK,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
        -1,
        0,
    );
    if stack == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    args.flags |= (libc::CLONE_VM | libc::CLONE_VFORK) as u64;
    args.stack = stack as u64;
    args.stack_size = CHILD_STACK as u64;
    let entry: extern "C" fn(*const ChildArgs<'_>) -> ! = child_entry;
    let rc: isize;
    // The kernel starts the child with the stack pointer at the top of
    // `stack` (16-byte aligned, as a call needs) and every register but
    // rax as it was here: r12 and r13 carry its argument and entry.
    std::arch::asm!(
        "syscall",
        "test rax, rax",
        "jnz 2f",
        "xor ebp, ebp",
        "mov rdi, r12",
        "call r13",
        "ud2",
        "2:",
        inlateout("rax") libc::SYS_clone3 as isize => rc,
        in("rdi") args as *mut libc::clone_args,
        in("rsi") size_of::<libc::clone_args>(),
        in("r12") to_child as *const ChildArgs<'_>,
        in("r13") entry,
        lateout("rcx") _,
        lateout("r11") _,
        options(nostack),
    );
    // The child has exec'd or exited: its stack is free again.
    libc::munmap(stack, CHILD_STACK);
    match rc {
        rc if rc < 0 => Err(io::Error::from_raw_os_error(-rc as i32)),
        pid => Ok(pid as u32),
    }
}

/// Elsewhere, a fork-like clone: the child gets a copy of this address
/// space. Returns the child's pid.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn clone_and_run(args: &mut libc::clone_args, to_child: &ChildArgs<'_>) -> io::Result<u32> {
    match libc::syscall(libc::SYS_clone3, args as *mut libc::clone_args, size_of::<libc::clone_args>()) {
        0 => child_entry(to_child),
        rc if rc < 0 => Err(io::Error::last_os_error()),
        pid => Ok(pid as u32),
    }
}

/// The child between clone and exec: raw system calls only. On failure it
/// writes errno to `err_w` and exits with 127, as a shell does for a
/// command it cannot run.
unsafe fn child(p: &Prepared, err_w: RawFd) -> ! {
    let fail = || -> ! {
        let errno = *libc::__errno_location();
        libc::write(err_w, errno.to_ne_bytes().as_ptr().cast(), 4);
        libc::_exit(127)
    };
    for (target, fd) in p.stdio.iter().enumerate() {
        if libc::dup2(fd.as_raw_fd(), target as libc::c_int) < 0 {
            fail();
        }
    }
    if let Some(procs) = &p.join {
        super::contain::join_in_child(procs);
    }
    if libc::chdir(p.dir.as_ptr()) < 0 {
        fail();
    }
    match p.leader {
        Leader::Group => {
            if libc::setpgid(0, 0) < 0 {
                fail();
            }
        }
        Leader::Session => {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                fail();
            }
        }
    }
    // A command starts with default dispositions where the server has
    // handlers (exec would reset them, but a signal may come before it)
    // and for SIGPIPE, which the server ignores; then with nothing blocked.
    let mut action: libc::sigaction = std::mem::zeroed();
    for signal in 1..=libc::SIGRTMAX() {
        let caught = libc::sigaction(signal, std::ptr::null(), &mut action) == 0
            && action.sa_sigaction != libc::SIG_DFL
            && action.sa_sigaction != libc::SIG_IGN;
        if caught || signal == libc::SIGPIPE {
            libc::signal(signal, libc::SIG_DFL);
        }
    }
    let mut none: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut none);
    libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
    libc::execve(p.program.as_ptr(), p.argv.as_ptr(), p.envp.as_ptr());
    fail()
}

impl Process {
    /// Its pid (and process group id).
    pub fn id(&self) -> u32 {
        self.pid
    }

    /// Waits until it has ended; how it ended. Cancel-safe: a wait cut
    /// short (by a time limit) loses nothing.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            if let Some(status) = self.status {
                return Ok(status);
            }
            let fd = self.pidfd.as_ref().expect("taken only by drop");
            let mut ready = fd.readable().await?;
            match reap(fd.get_ref().as_fd(), WaitIdOptions::NOHANG)? {
                Some(status) => self.status = Some(status),
                None => ready.clear_ready(),
            }
        }
    }
}

/// Reaps the process behind `pidfd`, if it has ended (or, without
/// `NOHANG`, once it has).
fn reap(pidfd: BorrowedFd<'_>, how: WaitIdOptions) -> io::Result<Option<ExitStatus>> {
    let Some(status) = waitid(WaitId::PidFd(pidfd), WaitIdOptions::EXITED | how)? else {
        return Ok(None);
    };
    // Back to the wait(2) status word that ExitStatus is made from.
    let raw = match (status.exit_status(), status.terminating_signal()) {
        (Some(code), _) => (code & 0xff) << 8,
        (None, Some(signal)) if status.dumped() => signal | 0x80,
        (None, Some(signal)) => signal,
        (None, None) => 0,
    };
    Ok(Some(ExitStatus::from_raw(raw)))
}

impl Drop for Process {
    fn drop(&mut self) {
        let Some(fd) = self.pidfd.take() else { return };
        if self.status.is_some() {
            return;
        }
        let _ = pidfd_send_signal(fd.get_ref(), Signal::KILL);
        let fd = fd.into_inner();
        if matches!(reap(fd.as_fd(), WaitIdOptions::NOHANG), Ok(Some(_))) {
            return;
        }
        // Killed but not yet gone (exiting takes a moment, longer from
        // some kernel waits): reaped on a thread, never on the runtime's.
        std::thread::spawn(move || {
            let _ = reap(fd.as_fd(), WaitIdOptions::empty());
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;

    fn launch<'a>(script: &'a str, io: &'a File) -> Launch<'a> {
        let (program, args) = shell(script);
        Launch {
            program,
            args,
            env: vec![("XFER_SPAWN_TEST", "set")],
            dir: Path::new("/"),
            stdio: [io.as_fd(), io.as_fd(), io.as_fd()],
            leader: Leader::Group,
            cgroup: None,
        }
    }

    #[tokio::test]
    async fn exit_codes_and_signals_come_back_as_a_shell_reports_them() {
        let null = File::options().read(true).write(true).open("/dev/null").unwrap();
        let mut p = start(&launch("exit 3", &null)).unwrap();
        assert_eq!(p.wait().await.unwrap().code(), Some(3));
        let mut p = start(&launch("kill -9 $$", &null)).unwrap();
        let status = p.wait().await.unwrap();
        assert_eq!((status.code(), status.signal()), (None, Some(9)));
        // A second wait answers the same without waiting.
        assert_eq!(p.wait().await.unwrap().signal(), Some(9));
    }

    #[tokio::test]
    async fn the_child_gets_its_directory_environment_group_and_descriptors() {
        let out = tempfile::NamedTempFile::new().unwrap();
        let file = out.reopen().unwrap();
        let script = "pwd; echo $XFER_SPAWN_TEST; cut -d' ' -f5 /proc/$$/stat; echo $$";
        let mut l = launch(script, &file);
        l.dir = Path::new("/tmp");
        let mut p = start(&l).unwrap();
        assert_eq!(p.wait().await.unwrap().code(), Some(0));
        let text = std::fs::read_to_string(out.path()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(&lines[..2], ["/tmp", "set"], "{text}");
        assert_eq!(lines[2], lines[3], "the shell leads its own group: {text}");
        assert_eq!(lines[3], p.id().to_string());
    }

    #[tokio::test]
    async fn the_child_starts_with_no_signal_blocked_or_ignored() {
        // The test harness, like the server, ignores SIGPIPE; what else it
        // ignores (inherited from whoever started it) stays ignored, as
        // across any exec.
        let mask = |text: &str, name: &str| {
            let hex = text.lines().find_map(|l| l.strip_prefix(name)).unwrap_or("").trim().to_string();
            u64::from_str_radix(&hex, 16).unwrap_or_else(|_| panic!("no {name} in {text}"))
        };
        let ours = std::fs::read_to_string("/proc/self/status").unwrap();
        let sigpipe = 1 << (libc::SIGPIPE - 1);
        assert_ne!(mask(&ours, "SigIgn:") & sigpipe, 0, "the harness ignores SIGPIPE");
        let out = tempfile::NamedTempFile::new().unwrap();
        let file = out.reopen().unwrap();
        let mut l = launch("", &file);
        l.program = Path::new("/bin/cat");
        l.args = vec![OsStr::new("cat"), OsStr::new("/proc/self/status")];
        start(&l).unwrap().wait().await.unwrap();
        let text = std::fs::read_to_string(out.path()).unwrap();
        assert_eq!(mask(&text, "SigBlk:"), 0, "{text}");
        assert_eq!(mask(&text, "SigIgn:"), mask(&ours, "SigIgn:") & !sigpipe, "{text}");
    }

    #[tokio::test]
    async fn a_program_that_cannot_run_is_an_error_not_a_process() {
        let null = File::options().read(true).write(true).open("/dev/null").unwrap();
        let mut l = launch("true", &null);
        l.program = Path::new("/nonexistent/sh");
        assert_eq!(start(&l).err().unwrap().kind(), io::ErrorKind::NotFound);
        let mut l = launch("true", &null);
        l.dir = Path::new("/nonexistent");
        assert_eq!(start(&l).err().unwrap().kind(), io::ErrorKind::NotFound);
    }

    #[tokio::test]
    async fn a_dropped_process_is_killed() {
        let null = File::options().read(true).write(true).open("/dev/null").unwrap();
        let p = start(&launch("sleep 30", &null)).unwrap();
        let pid = p.id();
        drop(p);
        let gone = (0..500).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(2));
            !Path::new(&format!("/proc/{pid}")).exists()
        });
        assert!(gone, "pid {pid} still there");
    }
}
