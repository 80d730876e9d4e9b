//! The directory a server serves (or a client fetches a tree into), opened
//! once as a capability: every access resolves beneath it.

use super::partial::Partial;
use super::path::RemotePath;
use super::stamp::Stamp;
use super::TEMP_SUFFIX;
use cap_std::ambient_authority;
use cap_std::fs::{Dir, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One listing entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    /// The entry's name within the listed directory.
    pub name: String,
    /// What it is (symlinks are not followed).
    pub kind: crate::protocol::EntryKind,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, seconds since the Unix epoch.
    pub mtime: i64,
    /// Permission bits (`& 0o7777`).
    pub mode: u32,
    /// Where a symlink points, as stored in it.
    pub target: Option<String>,
}

/// Where something really stands beneath a root: no link on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// The names of its directory from the root down, none a link.
    pub dirs: Vec<String>,
    /// Its own name in that directory.
    pub name: String,
}

impl Place {
    /// Its path from the root, `/`-separated.
    pub fn rel(&self) -> String {
        let mut rel = self.dirs.join("/");
        if !rel.is_empty() {
            rel.push('/');
        }
        rel + &self.name
    }
}

/// The directory a server serves, opened once as a capability.
pub struct Root {
    /// Handle through which every access resolves, beneath the root only.
    dir: Dir,
    /// Where the root is, for logs.
    path: PathBuf,
}

impl Root {
    /// Opens `path`, creating it if missing.
    pub fn open(path: &Path) -> io::Result<Root> {
        std::fs::create_dir_all(path)?;
        let dir = Dir::open_ambient_dir(path, ambient_authority())?;
        Ok(Root { dir, path: path.to_path_buf() })
    }

    /// The directory `p` beneath this root (made if missing) as a root of
    /// its own: nothing through it reaches outside `p`.
    pub fn sub(&self, p: &RemotePath) -> io::Result<Root> {
        if !p.is_root() {
            self.create_dir_all(p)?;
        }
        self.opened_sub(p)
    }

    /// The directory `p` beneath this root, already there, as a root of its
    /// own (this root again for the root).
    fn opened_sub(&self, p: &RemotePath) -> io::Result<Root> {
        let path = if p.is_root() { self.path.clone() } else { self.path.join(p.to_path()) };
        Ok(Root { dir: self.dir_at(p)?, path })
    }

    /// A handle on the directory `p`: the root's own, cloned, for the root.
    fn dir_at(&self, p: &RemotePath) -> io::Result<Dir> {
        match p.is_root() {
            true => self.dir.try_clone(),
            false => self.open_dir(p),
        }
    }

    /// A second handle on the root, for a thread of its own.
    pub fn handle(&self) -> io::Result<Dir> {
        self.dir.try_clone()
    }

    /// Where the root is on disk.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens a regular file for reading, with what its metadata says.
    /// Anything else is refused at once: opened non-blocking, so a FIFO
    /// with no writer cannot hold the thread (66 `get fifo` requests once
    /// pinned every blocking thread of the server).
    pub fn open_read(&self, p: &RemotePath) -> io::Result<Opened> {
        use cap_std::fs::OpenOptionsExt;
        let mut opts = OpenOptions::new();
        opts.read(true).custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32);
        let file = self.dir.open_with(p.to_path(), &opts)?.into_std();
        let meta = file.metadata()?;
        if meta.is_dir() {
            return Err(io::Error::from(io::ErrorKind::IsADirectory));
        }
        if !meta.is_file() {
            return Err(io::Error::other(crate::error::NotRegular));
        }
        let mtime = meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok());
        let stamp = Stamp::of(&meta, SystemTime::now());
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & super::meta::MODE_MASK;
        Ok(Opened { file, size: meta.len(), mode, mtime: mtime.map_or(0, |d| d.as_secs() as i64), stamp })
    }

    /// Whether `p` exists, and is a directory (symlinks are not followed).
    pub fn kind_of(&self, p: &RemotePath) -> io::Result<Option<bool>> {
        Ok(self.lstat(p)?.map(|m| m.is_dir()))
    }

    /// Creates missing parent directories of `p` and opens the partial file
    /// beside it (see [`Partial::open`]).
    /// Blocks up to a second while another transfer holds that partial.
    pub fn stage(&self, p: &RemotePath) -> io::Result<Partial> {
        self.stage_within(p, super::partial::LOCK_WAIT)
    }

    /// [`stage`](Self::stage) without waiting: a partial another transfer
    /// holds means a one-off temporary at once (for a caller on an async
    /// thread).
    pub fn stage_at_once(&self, p: &RemotePath) -> io::Result<Partial> {
        self.stage_within(p, std::time::Duration::ZERO)
    }

    fn stage_within(&self, p: &RemotePath, wait: Duration) -> io::Result<Partial> {
        let name = p.file_name().ok_or_else(|| io::Error::from(io::ErrorKind::IsADirectory))?;
        let parent = p.parent_path();
        self.dir.create_dir_all(&parent)?;
        Partial::open_within(self.dir.open_dir(&parent)?, name, wait)
    }

    /// The partial beside `p` if there is one to resume (see
    /// [`Partial::existing`]); a missing parent means none.
    pub fn existing_partial(&self, p: &RemotePath) -> io::Result<Option<Partial>> {
        let name = p.file_name().ok_or_else(|| io::Error::from(io::ErrorKind::IsADirectory))?;
        match self.dir.open_dir(p.parent_path()) {
            Ok(dir) => Partial::existing(dir, name),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The entries of a directory, sorted by name, temporaries hidden.
    pub fn list(&self, p: &RemotePath) -> io::Result<Vec<ListEntry>> {
        let dir = self.dir.open_dir(p.to_path())?;
        let mut out = Vec::new();
        for entry in dir.entries()? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(TEMP_SUFFIX) {
                continue;
            }
            let meta = entry.metadata()?;
            out.push(list_entry(&dir, &entry.file_name(), name, &meta));
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// What [`list`](Self::list) says of `p` itself (not followed if a
    /// link), named by its last part.
    pub fn entry(&self, p: &RemotePath) -> io::Result<ListEntry> {
        let meta = self.lstat(p)?.ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        let name = p.file_name().unwrap_or(".").to_string();
        let parent = self.dir.open_dir(p.parent_path())?;
        Ok(list_entry(&parent, std::ffi::OsStr::new(&name), name.clone(), &meta))
    }

    /// Creates `p` and its missing parents as directories.
    pub fn create_dir_all(&self, p: &RemotePath) -> io::Result<()> {
        self.dir.create_dir_all(p.to_path())
    }

    /// Like [`create_dir_all`](Self::create_dir_all), but says whether `p`
    /// itself was made just now (so it was empty, and nothing in it needs
    /// looking up).
    pub fn make_dir(&self, p: &RemotePath) -> io::Result<bool> {
        match self.dir.create_dir(p.to_path()) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => match self.kind_of(p)? {
                Some(true) => Ok(false),
                _ => Err(e),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => self.create_dir_all(p).map(|()| false),
            Err(e) => Err(e),
        }
    }

    /// Sets a directory's modification time, and its permission bits when
    /// `mode` is given. A directory that has that time already, and no mode
    /// to set, is left alone: a tree sent again unchanged touches none of
    /// its directories (/usr/include: 820 opens, `utimensat` calls and
    /// closes fewer, and no inode written back for nothing).
    pub fn set_dir_meta(&self, p: &RemotePath, mode: Option<u32>, mtime: i64) -> io::Result<()> {
        // Never through a link (a tree cannot turn one of its directories
        // into a link, so this check does not race the transfer).
        let Some(meta) = self.lstat(p)?.filter(|m| m.is_dir()) else {
            return Err(io::Error::from(io::ErrorKind::NotADirectory));
        };
        let has_time = meta.modified().is_ok_and(|t| t.into_std() == crate::local::meta::mtime_of(mtime));
        if mode.is_none() && has_time {
            return Ok(());
        }
        // Opened for reading (not as a path-only handle), so that fchmod
        // and futimens work on it.
        let mut opts = OpenOptions::new();
        opts.read(true);
        let file = self.dir.open_with(p.to_path(), &opts)?.into_std();
        match mode {
            Some(mode) => crate::local::meta::apply_meta(&file, mode, mtime),
            None => crate::local::meta::set_mtime(&file, mtime),
        }
    }

    /// What is at `p` (a link is not followed), or `None` for nothing.
    pub fn lstat(&self, p: &RemotePath) -> io::Result<Option<cap_std::fs::Metadata>> {
        match self.dir.symlink_metadata(p.to_path()) {
            Ok(m) => Ok(Some(m)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The target of the link at `p`, as it is written.
    pub fn read_link(&self, p: &RemotePath) -> io::Result<std::path::PathBuf> {
        self.dir.read_link_contents(p.to_path())
    }

    /// Whether `p` is a symlink.
    pub fn is_symlink(&self, p: &RemotePath) -> bool {
        matches!(self.lstat(p), Ok(Some(m)) if m.file_type().is_symlink())
    }

    /// Whether following `p` (links and all) stays beneath the root. Only
    /// an escape says no: a link to nothing yet, a loop, or a directory
    /// that cannot be read on the way are not escapes.
    pub fn resolves_inside(&self, p: &RemotePath) -> bool {
        match self.dir.canonicalize(p.to_path()) {
            Ok(_) => true,
            // cap-std's escape error carries no OS error code; a real
            // EACCES does.
            Err(e) => !(e.kind() == io::ErrorKind::PermissionDenied && e.raw_os_error().is_none()),
        }
    }

    /// Removes the link at `p` (never what it points to).
    pub fn remove_link(&self, p: &RemotePath) -> io::Result<()> {
        if !self.is_symlink(p) {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        self.dir.remove_file(p.to_path())
    }

    /// Makes `rel` beneath `top` a symlink to `target` (checked by the
    /// caller: a relative target climbing only from where the link
    /// stands). The directories from `top` down to it are opened without
    /// following a link ([`open_dir_plainly`](Self::open_dir_plainly)), so
    /// it stands as deep below `top` as its name says. An existing symlink
    /// there is replaced only with `replace`.
    pub fn symlink(&self, top: &RemotePath, rel: &str, target: &str, replace: bool) -> io::Result<()> {
        let (dirs, name) = rel.rsplit_once('/').map_or((None, rel), |(d, n)| (Some(d), n));
        let dir = self.open_dir_plainly(top, dirs.into_iter().flat_map(|d| d.split('/')))?;
        match dir.symlink_metadata(name) {
            Ok(m) if m.file_type().is_symlink() && replace => dir.remove_file(name)?,
            Ok(m) if m.file_type().is_symlink() => {
                if dir.read_link_contents(name)?.as_os_str() == target {
                    return Ok(());
                }
                return Err(io::Error::from(io::ErrorKind::AlreadyExists));
            }
            Ok(_) => return Err(io::Error::from(io::ErrorKind::AlreadyExists)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        dir.symlink_contents(target, name)
    }

    /// The directory `parts` beneath `from` (found as every path is, links
    /// beneath the root followed), each part opened without following a
    /// link: what is made in it stands where its name says, never where a
    /// link on the way leads (`l/x` with `l -> .` is `x`). A link on the
    /// way is [`LinkOnTheWay`](crate::error::LinkOnTheWay). Each part is one name of a checked path.
    pub fn open_dir_plainly<'a>(
        &self,
        from: &RemotePath,
        parts: impl IntoIterator<Item = &'a str>,
    ) -> io::Result<Dir> {
        use rustix::fs::{openat, Mode, OFlags};
        let mut dir = self.dir_at(from)?;
        for part in parts {
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            dir = match openat(&dir, part, flags, Mode::empty()) {
                Ok(fd) => Dir::from_std_file(std::fs::File::from(fd)),
                // A link, as a file, is "not a directory" to O_NOFOLLOW.
                Err(e)
                    if e == rustix::io::Errno::NOTDIR
                        && dir.symlink_metadata(part).is_ok_and(|m| m.file_type().is_symlink()) =>
                {
                    return Err(io::Error::other(crate::error::LinkOnTheWay))
                }
                Err(e) => return Err(e.into()),
            };
        }
        Ok(dir)
    }

    /// The first link beneath the directory `p` (at any depth, never
    /// following one) for which `bad(name, target)` holds, `name` relative
    /// to `p`. Directories are visited from a list of paths, as the sweep
    /// does, so a deep tree costs neither stack nor descriptors; each is
    /// opened plainly, so none is reached through a link.
    pub fn find_link_beneath(
        &self,
        p: &RemotePath,
        mut bad: impl FnMut(&str, &Path) -> bool,
    ) -> io::Result<Option<(String, PathBuf)>> {
        let mut pending = vec![String::new()];
        while let Some(rel) = pending.pop() {
            let dir = self.open_dir_plainly(p, rel.split('/').filter(|part| !part.is_empty()))?;
            for entry in dir.entries()? {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let inner = if rel.is_empty() { name } else { format!("{rel}/{name}") };
                let ft = entry.file_type()?;
                if ft.is_dir() {
                    pending.push(inner);
                } else if ft.is_symlink() {
                    let target = dir.read_link_contents(entry.file_name())?;
                    if bad(&inner, &target) {
                        return Ok(Some((inner, target)));
                    }
                }
            }
        }
        Ok(None)
    }

    /// The directory `p` beneath this root, already there, as a root of its
    /// own: many lookups of the names in it then resolve one name each, not
    /// the whole path twice. `None` if it cannot be opened (missing, not a
    /// directory, not readable): look up through this root instead, which
    /// tells why.
    pub fn existing_sub(&self, p: &RemotePath) -> Option<Root> {
        self.opened_sub(p).ok()
    }

    /// Opens the directory `p` as a handle of its own, beneath the root.
    pub fn open_dir(&self, p: &RemotePath) -> io::Result<Dir> {
        self.dir.open_dir(p.to_path())
    }

    /// Removes `p`: a file or link, or with `how.recursive` a directory and
    /// everything in it, contents first, never following a link. Each
    /// thing removed is told to `removed`, named as `shown` (for `p`) and
    /// `shown/...` beneath it; with `how.dry` only told, nothing removed.
    /// Partials beneath a removed directory go with it. Stops at the first
    /// failure, with the name of what could not be removed.
    pub fn remove(
        &self,
        p: &RemotePath,
        shown: &str,
        how: Removal,
        removed: &mut dyn FnMut(&str),
    ) -> Result<(), (String, io::Error)> {
        let fail = |e| (shown.to_string(), e);
        let meta = self.lstat(p).map_err(fail)?.ok_or_else(|| fail(io::ErrorKind::NotFound.into()))?;
        if meta.is_dir() {
            if !how.recursive {
                return Err(fail(io::ErrorKind::IsADirectory.into()));
            }
            remove_beneath(&self.dir, &p.to_path(), shown, 0, how.dry, removed)?;
            if !how.dry {
                self.dir.remove_dir(p.to_path()).map_err(fail)?;
            }
        } else if !how.dry {
            self.dir.remove_file(p.to_path()).map_err(fail)?;
        }
        removed(shown);
        Ok(())
    }

    /// Where `p` really stands beneath the root: its directory's names
    /// from the root down, links followed, and its own name. `None` for the
    /// root.
    pub fn place(&self, p: &RemotePath) -> io::Result<Option<Place>> {
        let Some((parent, name)) = p.split_last() else { return Ok(None) };
        let real = self.dir.canonicalize(parent.to_path())?;
        let dirs = real.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
        Ok(name.file_name().map(|name| Place { dirs, name: name.to_string() }))
    }

    /// Renames what is at `from` to `to`, atomically (a link is renamed,
    /// never followed); what is at `to` is replaced only with `replace`
    /// (else `AlreadyExists`). Both directories are opened plainly
    /// ([`open_dir_plainly`](Self::open_dir_plainly)), so nothing lands
    /// elsewhere than where its place was judged, should a link appear on
    /// the way meanwhile.
    pub fn rename(&self, from: &Place, to: &Place, replace: bool) -> io::Result<()> {
        let top = RemotePath::root();
        let old_dir = self.open_dir_plainly(&top, from.dirs.iter().map(String::as_str))?;
        let new_dir = self.open_dir_plainly(&top, to.dirs.iter().map(String::as_str))?;
        let flags = match replace {
            true => rustix::fs::RenameFlags::empty(),
            false => rustix::fs::RenameFlags::NOREPLACE,
        };
        rustix::fs::renameat_with(&old_dir, &from.name, &new_dir, &to.name, flags).map_err(io::Error::from)
    }

    /// Makes the directory `p`; with `parents`, its missing parents too,
    /// and `p` may be there already.
    pub fn make_dir_at(&self, p: &RemotePath, parents: bool) -> io::Result<()> {
        match parents {
            true => self.create_dir_all(p),
            false => self.dir.create_dir(p.to_path()),
        }
    }

    /// Total and free bytes of the filesystem the root is on (free for an
    /// unprivileged user, as `df` shows it).
    pub fn space(&self) -> io::Result<(u64, u64)> {
        let st = rustix::fs::fstatvfs(&self.dir)?;
        Ok((st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize))
    }

    /// Removes partial files not written to for `max_age`: transfers that
    /// were interrupted and never resumed. Returns how many were removed.
    pub fn remove_stale_temps(&self, max_age: Duration) -> usize {
        remove_temps_in(&self.dir, max_age)
    }
}

/// How [`Root::remove`] removes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Removal {
    /// Directories too, with everything in them.
    pub recursive: bool,
    /// Only tell what would be removed.
    pub dry: bool,
}

/// Removes what the directory `rel` of `root` holds (see [`Root::remove`]).
/// Each directory's names are listed and its handle closed before going
/// down, so a deep tree holds one descriptor, not one per level; the
/// recursion stops at [`MAX_DEPTH`](super::MAX_DEPTH) levels.
fn remove_beneath(
    root: &Dir,
    rel: &Path,
    shown: &str,
    depth: usize,
    dry: bool,
    removed: &mut dyn FnMut(&str),
) -> Result<(), (String, io::Error)> {
    let fail = |e| (shown.to_string(), e);
    if depth >= super::MAX_DEPTH {
        return Err(fail(io::Error::other(format!("deeper than {} levels", super::MAX_DEPTH))));
    }
    let mut names = Vec::new();
    let dir = root.open_dir(rel).map_err(fail)?;
    for e in dir.entries().map_err(fail)? {
        let e = e.map_err(fail)?;
        names.push((e.file_name(), e.file_type().map_err(fail)?));
    }
    drop(dir);
    for (name, ft) in names {
        let (path, child) = (rel.join(&name), format!("{shown}/{}", name.to_string_lossy()));
        let failed = |e| (child.clone(), e);
        if ft.is_dir() {
            remove_beneath(root, &path, &child, depth + 1, dry, removed)?;
            if !dry {
                root.remove_dir(&path).map_err(failed)?;
            }
        } else if !dry {
            root.remove_file(&path).map_err(failed)?;
        }
        removed(&child);
    }
    Ok(())
}

/// Removes partials under `root` not written to for `max_age`, at any
/// depth: directories are visited from a list of paths, not by recursion
/// (no stack to overflow) and not through a chain of open handles (no
/// descriptors to run out of). A directory whose path is too long to open
/// is passed over; xfer makes no partial there.
fn remove_temps_in(root: &Dir, max_age: Duration) -> usize {
    let mut removed = 0;
    let mut pending = vec![PathBuf::new()];
    while let Some(rel) = pending.pop() {
        let dir = if rel.as_os_str().is_empty() { root.try_clone() } else { root.open_dir(&rel) };
        let Ok(dir) = dir else { continue };
        let Ok(entries) = dir.entries() else { continue };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Ok(ft) = entry.file_type() else { continue };
            if ft.is_dir() {
                pending.push(rel.join(&name));
            } else if ft.is_file() && name.to_string_lossy().ends_with(TEMP_SUFFIX) {
                let age = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .map(|t| t.into_std().elapsed().unwrap_or_default())
                    .unwrap_or(Duration::MAX);
                if age >= max_age && dir.remove_file(&name).is_ok() {
                    removed += 1;
                }
            }
        }
    }
    removed
}

/// A listing's entry for `name` in `dir`, of metadata `meta` (a link's own).
fn list_entry(dir: &Dir, raw: &std::ffi::OsStr, name: String, meta: &cap_std::fs::Metadata) -> ListEntry {
    use crate::protocol::EntryKind;
    use cap_std::fs::PermissionsExt;
    let ft = meta.file_type();
    let kind = if ft.is_dir() {
        EntryKind::Dir
    } else if ft.is_file() {
        EntryKind::File
    } else if ft.is_symlink() {
        EntryKind::Symlink
    } else {
        EntryKind::Other
    };
    let target = match kind {
        EntryKind::Symlink => dir.read_link_contents(raw).ok().map(|t| t.to_string_lossy().into_owned()),
        _ => None,
    };
    let mode = meta.permissions().mode() & 0o7777;
    ListEntry { name, kind, size: meta.len(), mtime: mtime_secs(meta), mode, target }
}

fn mtime_secs(meta: &cap_std::fs::Metadata) -> i64 {
    meta.modified()
        .ok()
        .and_then(|t| t.into_std().duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs() as i64)
}

/// A file of the root opened for reading.
#[derive(Debug)]
pub struct Opened {
    /// The file, at its start.
    pub file: std::fs::File,
    /// Its size when opened.
    pub size: u64,
    /// Its permission bits, passed on to copies.
    pub mode: u32,
    /// Its modification time (seconds since the epoch), passed on to copies.
    pub mtime: i64,
    /// This version of the file, to find a digest remembered from an
    /// earlier read; `None` if it changed too recently to be told apart
    /// from a next change (see [`Stamp::of`]).
    pub stamp: Option<Stamp>,
}

#[cfg(test)]
mod tests {
    use super::super::{write_whole_beneath, DirCache};
    use super::*;

    #[test]
    fn symlinks_out_of_the_root_are_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink(outside.path(), tmp.path().join("out")).unwrap();
        let root = Root::open(tmp.path()).unwrap();
        let p = RemotePath::parse("out/secret").unwrap();
        assert!(root.open_read(&p).is_err());
        assert!(root.stage(&RemotePath::parse("out/new").unwrap()).is_err());
        assert!(!outside.path().join("new").exists());
    }

    /// Links beneath a directory are found at any depth, named from it,
    /// and a link to a directory is never walked into.
    #[test]
    fn links_beneath_are_found_without_following_one() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("d/e/f")).unwrap();
        std::fs::create_dir_all(tmp.path().join("other")).unwrap();
        std::os::unix::fs::symlink("../../other", tmp.path().join("d/e/into")).unwrap();
        std::os::unix::fs::symlink("../x", tmp.path().join("d/e/f/deep")).unwrap();
        std::os::unix::fs::symlink("../../../x", tmp.path().join("other/far")).unwrap();
        let root = Root::open(tmp.path()).unwrap();
        let d = RemotePath::parse("d").unwrap();
        let mut seen = Vec::new();
        let none = root.find_link_beneath(&d, |rel, _| {
            seen.push(rel.to_string());
            false
        });
        seen.sort();
        assert_eq!(none.unwrap(), None);
        assert_eq!(seen, ["e/f/deep", "e/into"], "`other/far` is only reached through a link");
        let found = root.find_link_beneath(&d, |_, target| target == Path::new("../x")).unwrap();
        assert_eq!(found, Some(("e/f/deep".to_string(), PathBuf::from("../x"))));
    }

    /// A place is where a name really stands, through the links on its
    /// way, and a link there is refused when a directory must be plain.
    #[test]
    fn a_place_is_found_through_links_and_plain_directories_refuse_them() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("a/b")).unwrap();
        std::os::unix::fs::symlink("a/b", tmp.path().join("l")).unwrap();
        let root = Root::open(tmp.path()).unwrap();
        let place = root.place(&RemotePath::parse("l/x").unwrap()).unwrap().unwrap();
        assert_eq!(
            (place.dirs.clone(), place.rel()),
            (vec!["a".to_string(), "b".to_string()], "a/b/x".into())
        );
        assert_eq!(root.place(&RemotePath::root()).unwrap(), None);
        assert!(root.open_dir_plainly(&RemotePath::root(), ["a", "b"]).is_ok());
        let err = root.open_dir_plainly(&RemotePath::root(), ["l"]).unwrap_err();
        assert!(crate::error::LinkOnTheWay::is(&err), "{err}");
        // Where links are followed, as for every path: `l` is `a/b`.
        assert!(root.open_dir_plainly(&RemotePath::parse("l").unwrap(), []).is_ok());
    }

    /// A directory opened for the lookups of its names stays beneath the
    /// root: one there is had, anything else (missing, a file, a link out)
    /// is not, and its names are found as through the whole path.
    #[test]
    fn an_existing_sub_is_a_directory_beneath_the_root_or_none() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("a/b")).unwrap();
        std::fs::write(tmp.path().join("a/b/f"), b"12345").unwrap();
        std::fs::write(outside.path().join("f"), b"secret").unwrap();
        std::os::unix::fs::symlink(outside.path(), tmp.path().join("out")).unwrap();
        let root = Root::open(tmp.path()).unwrap();
        let p = |s: &str| RemotePath::parse(s).unwrap();
        assert_eq!(p("a/b/f").split_last(), Some((p("a/b"), p("f"))));
        assert!(p("f").split_last().is_some_and(|(dir, _)| dir.is_root()));
        assert!(p("").split_last().is_none());
        let sub = root.existing_sub(&p("a/b")).expect("a directory that is there");
        assert_eq!(sub.lstat(&p("f")).unwrap().map(|m| m.len()), Some(5));
        assert_eq!(sub.open_read(&p("f")).unwrap().size, 5);
        assert!(sub.lstat(&p("g")).unwrap().is_none());
        assert!(root.existing_sub(&p("a/missing")).is_none());
        assert!(root.existing_sub(&p("a/b/f")).is_none(), "a file is no directory");
        assert!(root.existing_sub(&p("out")).is_none(), "a link out of the root is not followed");
        assert!(root.existing_sub(&p("")).is_some(), "the root's own names");
    }

    #[test]
    fn stale_temps_are_swept_and_hidden_from_listings() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("d")).unwrap();
        std::fs::write(tmp.path().join("d/.f.0123.xfer-part"), b"x").unwrap();
        std::fs::write(tmp.path().join("keep"), b"x").unwrap();
        let root = Root::open(tmp.path()).unwrap();
        let listed = root.list(&RemotePath::parse("d").unwrap()).unwrap();
        assert!(listed.is_empty());
        assert_eq!(root.remove_stale_temps(Duration::from_secs(3600)), 0, "too young to be stale");
        assert_eq!(root.remove_stale_temps(Duration::ZERO), 1);
        assert!(tmp.path().join("keep").exists());
    }

    #[test]
    fn the_sweep_reaches_partials_at_any_depth() {
        let tmp = tempfile::tempdir().unwrap();
        // Deeper than the 64 levels the sweep once stopped at, and as deep
        // as xfer can make a partial (a path of at most 4,096 bytes).
        let deep = vec!["d"; 1500].join("/");
        let root = Root::open(tmp.path()).unwrap();
        root.create_dir_all(&RemotePath::parse(&deep).unwrap()).unwrap();
        let dir = root.dir.open_dir(&deep).unwrap();
        dir.write(".f.xfer-part", b"x").unwrap();
        dir.write("keep", b"x").unwrap();
        assert_eq!(root.remove_stale_temps(Duration::ZERO), 1);
        assert!(dir.exists("keep"));
        assert!(!dir.exists(".f.xfer-part"));
    }

    #[test]
    fn a_directory_with_its_time_already_is_left_alone() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let tmp = tempfile::tempdir().unwrap();
        let root = Root::open(tmp.path()).unwrap();
        std::fs::create_dir(tmp.path().join("d")).unwrap();
        let d = RemotePath::parse("d").unwrap();
        let changed = || {
            let m = std::fs::metadata(tmp.path().join("d")).unwrap();
            (m.ctime(), m.ctime_nsec(), m.mtime(), m.permissions().mode() & 0o777)
        };
        root.set_dir_meta(&d, None, 1_000_000).unwrap();
        let set = changed();
        assert_eq!(set.2, 1_000_000);
        // The status-change time would move with any write to the inode;
        // the pause lets the kernel's coarse clock tick.
        std::thread::sleep(Duration::from_millis(20));
        root.set_dir_meta(&d, None, 1_000_000).unwrap();
        assert_eq!(changed(), set, "the same time again: untouched");
        root.set_dir_meta(&d, None, 2_000_000).unwrap();
        assert_eq!(changed().2, 2_000_000, "another time is set");
        root.set_dir_meta(&d, Some(0o750), 2_000_000).unwrap();
        let now = changed();
        assert_eq!((now.2, now.3), (2_000_000, 0o750), "a mode to set is set, the time kept");
        let f = RemotePath::parse("f").unwrap();
        std::fs::write(tmp.path().join("f"), b"x").unwrap();
        assert!(root.set_dir_meta(&f, None, 0).is_err(), "not a directory");
    }

    #[test]
    fn a_dir_cache_creates_missing_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let root = Root::open(tmp.path()).unwrap();
        let (base, mut dirs) = (root.handle().unwrap(), DirCache::default());
        for name in ["a/b/one", "a/b/two", "c/three", "top"] {
            let p = RemotePath::parse(name).unwrap();
            write_whole_beneath(&base, &mut dirs, &p, name.as_bytes(), (0o644, 0), false).unwrap();
            assert_eq!(std::fs::read(tmp.path().join(name)).unwrap(), name.as_bytes());
        }
        assert!(root.make_dir(&RemotePath::parse("new").unwrap()).unwrap(), "made just now");
        assert!(!root.make_dir(&RemotePath::parse("a").unwrap()).unwrap(), "already there");
        assert!(root.make_dir(&RemotePath::parse("top").unwrap()).is_err(), "a file is in the way");
    }
}
