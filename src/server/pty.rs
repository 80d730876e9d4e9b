//! The pseudo-terminal of `exec` with `tty`: a pty pair, the command
//! started on its terminal side as a session leader with it as the
//! controlling terminal, and the master side as an async reader and
//! writer for the exchange.

use super::contain::{Contained, MARK_VAR};
use super::spawn::{self, Launch, Leader, Process};
use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
use rustix::termios::{tcsetwinsize, Winsize};
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The terminal the client asked for.
#[derive(Debug, Clone)]
pub(crate) struct Terminal {
    /// `TERM` for the command.
    pub term: String,
    /// Window rows.
    pub rows: u16,
    /// Window columns.
    pub cols: u16,
}

/// The master side of a command's pty, shared by its reader and writer.
#[derive(Clone)]
pub(crate) struct Master(Arc<AsyncFd<OwnedFd>>);

impl Master {
    /// Tells the terminal (and so the program, by SIGWINCH) its new size.
    pub fn resize(&self, rows: u16, cols: u16) {
        let _ = tcsetwinsize(
            self.0.get_ref(),
            Winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 },
        );
    }
}

/// Starts `program` (`sh -c COMMAND`, or a login shell) on a new pty of
/// `terminal`'s size, in `dir`, held by `contained`. Returns the child and
/// the pty's master side.
pub(crate) fn spawn(
    program: Program<'_>,
    terminal: &Terminal,
    dir: &Path,
    contained: &Contained,
) -> io::Result<(Process, Master)> {
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
    grantpt(&master)?;
    unlockpt(&master)?;
    let name = ptsname(&master, Vec::new())?;
    let ws = Winsize { ws_row: terminal.rows, ws_col: terminal.cols, ws_xpixel: 0, ws_ypixel: 0 };
    tcsetwinsize(&master, ws)?;
    let slave: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(Path::new(std::ffi::OsStr::from_bytes(name.as_bytes())))?
        .into();
    let (shell, login);
    let (program, args) = match program {
        Program::Command(command) => spawn::shell(command),
        Program::LoginShell => {
            shell = login_shell();
            // A leading '-' in argv[0] makes a shell a login shell.
            let base =
                Path::new(&shell).file_name().map_or("sh".into(), |n| n.to_string_lossy().into_owned());
            login = format!("-{base}");
            (Path::new(&shell), vec![OsStr::new(&login)])
        }
    };
    let child = spawn::start(&Launch {
        program,
        args,
        env: vec![("TERM", &terminal.term), (MARK_VAR, contained.mark())],
        dir,
        stdio: [slave.as_fd(), slave.as_fd(), slave.as_fd()],
        leader: Leader::Session,
        cgroup: contained.cgroup(),
    })?;
    rustix::io::ioctl_fionbio(&master, true)?;
    // SAFETY: the AsyncFd owns the descriptor until it is dropped.
    let master = unsafe { AsyncFd::register(master) }?;
    Ok((child, Master(Arc::new(master))))
}

/// What runs on the terminal.
pub(crate) enum Program<'a> {
    /// `sh -c` this.
    Command(&'a str),
    /// The server user's login shell.
    LoginShell,
}

/// The server user's shell, from the password database; `/bin/sh` if it
/// has none.
fn login_shell() -> String {
    // SAFETY: getpwuid_r with a buffer of our own; the strings it points
    // into live in that buffer.
    unsafe {
        let mut pw: libc::passwd = std::mem::zeroed();
        let mut buf = vec![0 as libc::c_char; 4096];
        let mut found = std::ptr::null_mut();
        let rc = libc::getpwuid_r(libc::getuid(), &mut pw, buf.as_mut_ptr(), buf.len(), &mut found);
        if rc == 0 && !found.is_null() && !pw.pw_shell.is_null() {
            let shell = std::ffi::CStr::from_ptr(pw.pw_shell).to_string_lossy().into_owned();
            if !shell.is_empty() {
                return shell;
            }
        }
    }
    "/bin/sh".to_string()
}

impl AsyncRead for Master {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            let mut guard = std::task::ready!(self.0.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|fd| rustix::io::read(fd.get_ref(), &mut *unfilled).map_err(io::Error::from)) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                // EIO: every process closed the terminal side; the end.
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Poll::Ready(Ok(())),
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for Master {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = std::task::ready!(self.0.poll_write_ready(cx))?;
            match guard.try_io(|fd| rustix::io::write(fd.get_ref(), data).map_err(io::Error::from)) {
                Ok(done) => return Poll::Ready(done),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl std::fmt::Debug for Master {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Master({})", self.0.get_ref().as_fd().as_raw_fd())
    }
}
