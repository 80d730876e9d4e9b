//! Flushing to disk: a whole filesystem at once, or one directory.

use cap_std::fs::Dir;
use std::io;

/// Flushes everything written to the filesystem holding `dir` to disk
/// (`syncfs`): how a tree's thousands of files are made durable at once,
/// where one flush per file would cost a disk round trip each.
pub fn sync_filesystem(dir: &Dir) -> io::Result<()> {
    rustix::fs::syncfs(opened_for_sync(dir)?).map_err(io::Error::from)
}

/// `dir` opened again for reading: cap-std's directory handles are
/// `O_PATH`, which `fsync` and `syncfs` refuse (EBADF).
pub(super) fn opened_for_sync(dir: &Dir) -> io::Result<std::os::fd::OwnedFd> {
    use rustix::fs::{openat, Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    openat(dir, ".", flags, Mode::empty()).map_err(io::Error::from)
}
