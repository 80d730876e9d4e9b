//! Small files written whole, already verified, in one step: an unnamed
//! file linked in under its name, or a hidden temporary renamed into place.

use super::partial::{create_temp, rename_into_place, CommitError};
use super::path::RemotePath;
use cap_std::fs::{Dir, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// The directory last written into, kept open: a tree's files arrive
/// directory by directory, so this saves an open and a close per file.
#[derive(Default)]
pub struct DirCache {
    /// The directory's path relative to the base it was opened from, and its handle.
    last: Option<(PathBuf, Dir)>,
}

impl DirCache {
    /// The directory `parent` beneath `base`, created if missing.
    pub fn open(&mut self, base: &Dir, parent: &Path) -> io::Result<&Dir> {
        if !matches!(&self.last, Some((p, _)) if p == parent) {
            let dir = match base.open_dir(parent) {
                Ok(d) => d,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    base.create_dir_all(parent)?;
                    base.open_dir(parent)?
                }
                Err(e) => return Err(e),
            };
            self.last = Some((parent.to_path_buf(), dir));
        }
        Ok(&self.last.as_ref().expect("set above").1)
    }
}

/// [`write_whole`] at `p` beneath `base`, its directory opened (or created)
/// through `dirs`.
pub fn write_whole_beneath(
    base: &Dir,
    dirs: &mut DirCache,
    p: &RemotePath,
    body: &[u8],
    meta: (u32, i64),
    replace: bool,
) -> Result<(), CommitError> {
    let name = p.file_name().ok_or_else(|| io::Error::from(io::ErrorKind::IsADirectory))?;
    write_whole(dirs.open(base, &p.parent_path())?, name, body, meta, replace)
}

/// Writes `body` (whole, already verified) to `name` in `dir` atomically,
/// with its mode and modification time (`meta`): into an unnamed file
/// linked in under `name` once complete (see `write_unnamed`), or, where
/// that cannot be done and to replace a file, a one-off hidden temporary
/// renamed into place. Without `replace` it fails with
/// [`CommitError::Exists`] rather than overwrite. Nothing is left behind on
/// failure. Five syscalls for a small file of a tree, where staging through
/// a [`Partial`](super::Partial) costs over twenty.
pub fn write_whole(
    dir: &Dir,
    name: &str,
    body: &[u8],
    meta: (u32, i64),
    replace: bool,
) -> Result<(), CommitError> {
    if !replace && write_unnamed(dir, name, body, meta)? {
        return Ok(());
    }
    write_named(dir, name, body, meta, replace)
}

/// [`write_whole`] through a named hidden temporary and a rename: where an
/// unnamed file cannot be made or linked, and to replace a file.
fn write_named(
    dir: &Dir,
    name: &str,
    body: &[u8],
    meta: (u32, i64),
    replace: bool,
) -> Result<(), CommitError> {
    use std::io::Write;
    let (temp, file) = create_temp(dir, name)?;
    let mut file = File::into_std(file);
    let written = file
        .write_all(body)
        .and_then(|()| crate::local::meta::apply_meta(&file, meta.0, meta.1))
        .map_err(CommitError::from)
        .and_then(|()| rename_into_place(dir, &temp, name, replace));
    if written.is_err() {
        let _ = dir.remove_file(&temp);
    }
    written
}

/// Set once linking an unnamed file into place was refused (a kernel
/// older than 6.10 without /proc), so later files go straight to the named
/// temporary.
static UNNAMED_REFUSED: AtomicBool = AtomicBool::new(false);

/// [`write_whole`] without a name until the end: the body goes into an
/// unnamed file (`O_TMPFILE`) in `dir`, which is linked in as `name` once
/// complete. No temporary name is ever visible or left behind, and the
/// link fails rather than overwrite. Measured on 8,000 files of 14 KiB:
/// 50 µs a file against 62-74 µs through a named temporary and a rename.
/// `Ok(false)` where the filesystem or kernel cannot do this.
fn write_unnamed(dir: &Dir, name: &str, body: &[u8], meta: (u32, i64)) -> Result<bool, CommitError> {
    use rustix::fs::{linkat, openat, AtFlags, Mode, OFlags, CWD};
    use rustix::io::Errno;
    use std::io::Write;
    use std::os::fd::AsRawFd;
    if UNNAMED_REFUSED.load(Ordering::Relaxed) {
        return Ok(false);
    }
    let mode = Mode::from_raw_mode(meta.0 & crate::local::meta::MODE_MASK);
    let fd = match openat(dir, ".", OFlags::TMPFILE | OFlags::WRONLY | OFlags::CLOEXEC, mode) {
        Ok(fd) => fd,
        Err(Errno::OPNOTSUPP | Errno::ISDIR | Errno::INVAL) => return Ok(false),
        Err(e) => return Err(io::Error::from(e).into()),
    };
    let mut file = std::fs::File::from(fd);
    file.write_all(body)?;
    crate::local::meta::apply_created_meta(&file, meta.0, meta.1)?;
    match linkat(&file, "", dir, name, AtFlags::EMPTY_PATH) {
        Ok(()) => return Ok(true),
        Err(Errno::EXIST) => return Err(CommitError::Exists),
        // Before Linux 6.10, only privileged processes may do this; the
        // same link through /proc is open to all.
        Err(Errno::NOENT | Errno::PERM | Errno::ACCESS) => {}
        Err(e) => return Err(io::Error::from(e).into()),
    }
    let by_proc = format!("/proc/self/fd/{}", file.as_raw_fd());
    match linkat(CWD, by_proc.as_str(), dir, name, AtFlags::SYMLINK_FOLLOW) {
        Ok(()) => Ok(true),
        Err(Errno::EXIST) => Err(CommitError::Exists),
        Err(_) => {
            UNNAMED_REFUSED.store(true, Ordering::Relaxed);
            Ok(false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cap_std::ambient_authority;

    #[test]
    fn whole_small_files_are_written_atomically_both_ways() {
        use std::os::unix::fs::MetadataExt;
        type Write = fn(&Dir, &str, &[u8], (u32, i64), bool) -> Result<(), CommitError>;
        let ways: [(&str, Write); 2] = [("unnamed", write_whole), ("named", write_named)];
        for (way, write) in ways {
            let tmp = tempfile::tempdir().unwrap();
            let dir = Dir::open_ambient_dir(tmp.path(), ambient_authority()).unwrap();
            write(&dir, "f", b"one", (0o640, 1_000_000), false).unwrap();
            let meta = std::fs::metadata(tmp.path().join("f")).unwrap();
            assert_eq!((meta.mode() & 0o777, meta.mtime()), (0o640, 1_000_000), "{way}");
            assert!(matches!(write(&dir, "f", b"two", (0o644, 0), false), Err(CommitError::Exists)), "{way}");
            assert_eq!(std::fs::read(tmp.path().join("f")).unwrap(), b"one", "{way}");
            write(&dir, "f", b"two", (0o600, 5), true).unwrap();
            assert_eq!(std::fs::read(tmp.path().join("f")).unwrap(), b"two", "{way}");
            let names: Vec<_> =
                std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
            assert_eq!(names, ["f"], "{way}: no temporary may be left behind");
        }
    }
}
