//! The partial file: where a file's bytes go until they are verified, beside
//! its destination, then renamed into place. One type for every side and
//! every size of transfer that streams (put, get, a tree's large files).

use super::sync::opened_for_sync;
use super::TEMP_SUFFIX;
use crate::digest::{for_each_part, PartsDigest};
use crate::protocol::Md5Hex;
use crate::protocol::{OFFER_MOST_PARTS, PART};
use cap_std::ambient_authority;
use cap_std::fs::{Dir, File, OpenOptions};
use std::io;
use std::path::Path;
use thiserror::Error;

/// How long a transfer waits for the well-known partial another one holds
/// before it takes a one-off temporary instead. A client killed mid-file and
/// run again at once finds its old connection still holding the partial
/// for a moment (about 0.3 s was seen); waiting lets the re-run resume
/// instead of starting over beside an abandoned partial.
pub(super) const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Longest part of the destination name kept in a temporary's name, so that
/// with the dot, random tag and suffix it stays under NAME_MAX (255).
const TEMP_NAME_KEEP: usize = 200;

/// Bytes of disk a partial reserves at a time, ahead of what is written.
/// Blocks reserved ahead (fallocate) spare ext4 its block-by-block delayed
/// allocation: 1 GiB written in 1 MiB writes took 0.19 CPU-s of system time,
/// 0.11 with 4, 16, 64 or 1024 MiB reserved ahead at a time, and less
/// writeback after (0.26-0.32 CPU-s for the machine against 0.35-0.43).
/// Small, so that a sender reserves at most this beyond what it sent.
const RESERVE_AHEAD: u64 = 8 * 1024 * 1024;

/// Why a partial could not be committed.
#[derive(Debug, Error)]
pub enum CommitError {
    /// The destination appeared (or was there) and replacing was not asked.
    #[error("destination exists")]
    Exists,
    /// The rename or link failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// A hidden partial file beside its destination, open, with what it holds.
///
/// The well-known `.NAME.xfer-part` is locked while open, so a second
/// transfer to the same destination cannot write into it; that one gets a
/// one-off `.NAME.RANDOM.xfer-part` instead (never resumed). Dropped without
/// [`commit`](Self::commit), a well-known partial stays for a later run to
/// resume (unless empty); [`discard`](Self::discard) removes it.
pub struct Partial {
    /// The destination's directory; the partial lives here too, so the
    /// final rename never crosses filesystems.
    dir: Dir,
    /// The partial's name in `dir`.
    temp: String,
    /// The destination's name in `dir`.
    name: String,
    /// Whether the partial is kept when dropped: true for the locked,
    /// well-known partial; false for a one-off temporary, or once its bytes
    /// are known bad.
    keep: bool,
    /// Set once the partial has been renamed away, so drop leaves it alone.
    committed: bool,
    /// A one-off temporary, taken while another transfer held the
    /// well-known partial.
    one_off: bool,
    /// The partial, open for reading and writing. It shares its open file
    /// description (and so its lock) with every handle cloned from it, and
    /// holds the lock until the rename even after a writer closed its own:
    /// no second transfer can take the partial over before the commit.
    file: std::fs::File,
    /// Its length when opened: bytes an interrupted run left.
    found: u64,
    /// Bytes offered for resuming: `found`'s whole parts once hashed (at
    /// most [`OFFER_MOST_PARTS`] of them), else 0.
    held: u64,
    /// The digest of each of the `held` bytes' parts: offered, and the
    /// digest to go on from wherever the sender resumes.
    parts: Vec<[u8; 16]>,
}

impl Partial {
    /// The partial for destination `name` in `dir`, created if missing.
    /// Blocks up to a second while another transfer holds it (a killed
    /// client's connection lets go a moment after).
    pub fn open(dir: Dir, name: &str) -> io::Result<Partial> {
        Partial::open_within(dir, name, LOCK_WAIT)
    }

    /// [`open`](Self::open), waiting at most `wait` for the partial.
    pub fn open_within(dir: Dir, name: &str, wait: std::time::Duration) -> io::Result<Partial> {
        let deadline = std::time::Instant::now() + wait;
        loop {
            match lock_partial(&dir, name, true)? {
                Some((temp, file)) => return Partial::well_known(dir, temp, name, file),
                None if std::time::Instant::now() < deadline => std::thread::sleep(LOCK_WAIT / 50),
                None => return Partial::one_off(dir, name),
            }
        }
    }

    /// The partial for destination `name` in `dir` if one is there, not in
    /// use by another transfer, and not empty: what a tree offers to
    /// resume. Never creates one.
    pub fn existing(dir: Dir, name: &str) -> io::Result<Option<Partial>> {
        let Some((temp, file)) = lock_partial(&dir, name, false)? else { return Ok(None) };
        let partial = Partial::well_known(dir, temp, name, file)?;
        Ok((partial.found > 0).then_some(partial))
    }

    /// The partial beside a local path (the client's side, where the user
    /// chose the path and it is not confined).
    pub fn beside(path: &Path) -> io::Result<Partial> {
        let (dir, name) = local_dir_and_name(path)?;
        Partial::open(dir, name)
    }

    /// The partial beside a local path if there is one to resume (see
    /// [`existing`](Self::existing)).
    pub fn existing_beside(path: &Path) -> io::Result<Option<Partial>> {
        let (dir, name) = local_dir_and_name(path)?;
        Partial::existing(dir, name)
    }

    /// The well-known partial `temp`, locked, with its length.
    fn well_known(dir: Dir, temp: String, name: &str, file: std::fs::File) -> io::Result<Partial> {
        let found = file.metadata()?.len();
        Ok(Partial {
            dir,
            temp,
            name: name.to_string(),
            keep: true,
            committed: false,
            one_off: false,
            file,
            found,
            held: 0,
            parts: Vec::new(),
        })
    }

    /// A one-off `.NAME.RANDOM.xfer-part` in `dir`, removed when dropped
    /// uncommitted.
    fn one_off(dir: Dir, name: &str) -> io::Result<Partial> {
        let (temp, file) = create_temp(&dir, name)?;
        let file = File::into_std(file);
        Ok(Partial {
            dir,
            temp,
            name: name.to_string(),
            keep: false,
            committed: false,
            one_off: true,
            file,
            found: 0,
            held: 0,
            parts: Vec::new(),
        })
    }

    /// Bytes an interrupted run left in it.
    pub fn found(&self) -> u64 {
        self.found
    }

    /// Hashes the whole parts an interrupted run left, so a transfer may
    /// resume after them; a partial that cannot be read offers nothing.
    /// (A receiver writes only verified whole parts, but a partial may come
    /// from an older run: what follows its last whole part is dropped.)
    pub fn hash_for_resume(&mut self) {
        self.hash_for_resume_within(OFFER_MOST_PARTS);
    }

    /// [`hash_for_resume`](Self::hash_for_resume), offering at most
    /// `most_parts` parts (a tree shares [`OFFER_MOST_PARTS`] among its
    /// partials).
    pub fn hash_for_resume_within(&mut self, most_parts: usize) {
        let most = most_parts.min(OFFER_MOST_PARTS) as u64 * PART;
        let whole = (self.found - self.found % PART).min(most);
        if whole == 0 {
            return;
        }
        let mut parts = Vec::with_capacity((whole / PART) as usize);
        let hashed = io::Seek::rewind(&mut self.file)
            .and_then(|()| for_each_part(&mut self.file, whole, |part| parts.push(*part)));
        if hashed.is_ok() {
            (self.held, self.parts) = (whole, parts);
        }
    }

    /// Bytes offered for resuming (0: none).
    pub fn held(&self) -> u64 {
        self.held
    }

    /// The digest of each part offered.
    pub fn offered_parts(&self) -> &[[u8; 16]] {
        &self.parts
    }

    /// What it offers to resume: its whole parts' length, their digest
    /// over the parts, and each part's digest.
    pub fn offer(&self) -> Option<(u64, Md5Hex, &[[u8; 16]])> {
        (self.held > 0).then(|| (self.held, PartsDigest::of(&self.parts).finish(), self.parts.as_slice()))
    }

    /// A handle for a body that starts at `offset` of the file, positioned
    /// there, with the digest of the parts before it: emptied for 0, cut
    /// after the parts before it for any whole number of the parts offered
    /// (the sender's own parts differ from there). `None` for any other
    /// offset.
    pub fn start_at(&mut self, offset: u64) -> io::Result<Option<(Appender, PartsDigest)>> {
        if offset > self.held || !offset.is_multiple_of(PART) {
            return Ok(None);
        }
        let mut file = self.file.try_clone()?;
        // Cut only what is there to cut: on ext4, truncating a file to 0
        // (even an empty one) makes its last close write back all it was
        // given since (auto_da_alloc): a fresh 1 GiB get waited 0.37 s in
        // close (get 1.31 -> 0.95 s, put to a new name 1.81 -> 1.30 s).
        if file.metadata()?.len() != offset {
            file.set_len(offset)?;
        }
        io::Seek::seek(&mut file, io::SeekFrom::Start(offset))?;
        let appender = Appender { file, at: offset, reserved: offset, reserving: true };
        Ok(Some((appender, PartsDigest::of(&self.parts[..(offset / PART) as usize]))))
    }

    /// The open partial, to set its mode and time before the commit.
    pub fn file(&self) -> &std::fs::File {
        &self.file
    }

    /// Removes the partial: its bytes are bad or useless.
    pub fn discard(mut self) {
        self.keep = false;
    }

    /// Moves the partial to its destination. Without `replace` this fails
    /// with [`CommitError::Exists`] if the destination exists, atomically (a
    /// no-replace rename, or a hard link, cannot overwrite); with it, a
    /// rename swaps the file in one step, so readers see the old file or the
    /// new one. The partial is removed on failure.
    pub fn commit(mut self, replace: bool) -> Result<(), CommitError> {
        self.keep = false;
        let replaced = replace.then(|| hold(&self.dir, &self.name)).flatten();
        rename_into_place(&self.dir, &self.temp, &self.name, replace)?;
        self.committed = true;
        if let Some(old) = replaced {
            // A failure to start the thread lets go of it here, as before.
            let _ = std::thread::Builder::new().name("xfer-release".into()).spawn(move || drop(old));
        }
        // The well-known partial, left by a transfer that has let go of it
        // since, is of no use beside the committed file.
        if self.one_off {
            if let Ok(Some((stale, _lock))) = lock_partial(&self.dir, &self.name, false) {
                let _ = self.dir.remove_file(stale);
            }
        }
        Ok(())
    }

    /// [`commit`](Self::commit), on disk when it returns: the partial's
    /// bytes and metadata are flushed before the rename, and the directory
    /// after it, so a power loss cannot leave the name short or missing.
    pub fn commit_durably(self, replace: bool) -> Result<(), CommitError> {
        self.file.sync_all()?;
        let dir = opened_for_sync(&self.dir)?;
        self.commit(replace)?;
        Ok(rustix::fs::fsync(&dir).map_err(io::Error::from)?)
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        let empty = self.file.metadata().map(|m| m.len() == 0).unwrap_or(true);
        if !self.keep || empty {
            let _ = self.dir.remove_file(&self.temp);
        }
    }
}

/// Writes a body into its partial from where it starts, reserving disk
/// ahead of it ([`RESERVE_AHEAD`] at a time, kept out of the file's length,
/// so the partial still holds just what was written). What is reserved past
/// the last byte written is given back when it is dropped.
pub struct Appender {
    /// The partial, positioned at `at`.
    file: std::fs::File,
    /// The offset the next byte goes to: the partial's length.
    at: u64,
    /// Where the disk reserved ends, from `at` up.
    reserved: u64,
    /// False once reserving failed (a filesystem without fallocate, or less
    /// room than a whole step): writing goes on without, and may still fit.
    reserving: bool,
}

impl Appender {
    /// The partial being written.
    #[cfg(test)]
    pub fn file(&self) -> &std::fs::File {
        &self.file
    }
}

impl io::Write for Appender {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let end = self.at + buf.len() as u64;
        if self.reserving && end > self.reserved {
            let step = RESERVE_AHEAD.max(end - self.reserved);
            let keep_size = rustix::fs::FallocateFlags::KEEP_SIZE;
            match rustix::fs::fallocate(&self.file, keep_size, self.reserved, step) {
                Ok(()) => self.reserved += step,
                Err(_) => self.reserving = false,
            }
        }
        let n = self.file.write(buf)?;
        self.at += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Drop for Appender {
    fn drop(&mut self) {
        // Cutting a file to its own length frees its blocks past the end.
        if self.reserved > self.at {
            let _ = self.file.set_len(self.at);
        }
    }
}

/// The file at `name` in `dir`, if there is one, held (not opened for
/// reading: `O_PATH`, the name alone, a link not followed) so that a rename
/// over it does not free its pages and blocks on the caller's path. The last
/// holder pays for that instead: replacing a synced 1 GiB file took the
/// rename 0.23 s on this machine's ext4 (mounted with `discard`), and 3 ms
/// while the file was held; the close after took the 0.22 s.
fn hold(dir: &Dir, name: &str) -> Option<std::os::fd::OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    rustix::fs::openat(dir, name, OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty()).ok()
}

/// Opens and locks `.NAME.xfer-part`; `None` if another transfer holds it,
/// or if it is missing and `create` is false.
fn lock_partial(dir: &Dir, name: &str, create: bool) -> io::Result<Option<(String, std::fs::File)>> {
    let temp = format!(".{}{TEMP_SUFFIX}", temp_base(name));
    let mut opts = OpenOptions::new();
    opts.read(true).write(true).create(create);
    let file = match dir.open_with(&temp, &opts) {
        Ok(f) => File::into_std(f),
        Err(e) if !create && e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    match file.try_lock() {
        Ok(()) => Ok(Some((temp, file))),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

/// Creates a hidden temporary `.NAME.RANDOM.xfer-part` in `dir` that no one
/// else has, open for reading and writing.
pub(super) fn create_temp(dir: &Dir, name: &str) -> io::Result<(String, File)> {
    let base = temp_base(name);
    let mut opts = OpenOptions::new();
    opts.read(true).write(true).create_new(true);
    loop {
        let temp = format!(".{base}.{:016x}{TEMP_SUFFIX}", rand::random::<u64>());
        match dir.open_with(&temp, &opts) {
            Ok(file) => return Ok((temp, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The directory holding a local path, opened, and the path's file name.
fn local_dir_and_name(path: &Path) -> io::Result<(Dir, &str)> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file name"))?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    Ok((Dir::open_ambient_dir(parent, ambient_authority())?, name))
}

/// Renames `temp` to `name` within `dir`. Without `replace`, an existing
/// `name` is never overwritten: `renameat2(RENAME_NOREPLACE)` where the
/// filesystem has it (one syscall), else a hard link and an unlink.
pub(super) fn rename_into_place(dir: &Dir, temp: &str, name: &str, replace: bool) -> Result<(), CommitError> {
    if replace {
        return Ok(dir.rename(temp, dir, name)?);
    }
    match rustix::fs::renameat_with(dir, temp, dir, name, rustix::fs::RenameFlags::NOREPLACE) {
        Ok(()) => return Ok(()),
        Err(rustix::io::Errno::EXIST) => return Err(CommitError::Exists),
        Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS | rustix::io::Errno::NOTSUP) => {}
        Err(e) => return Err(io::Error::from(e).into()),
    }
    match dir.hard_link(temp, dir, name) {
        Ok(()) => {
            // The data is safely at its name; a failure to remove the
            // temporary is tidied by the stale sweep.
            let _ = dir.remove_file(temp);
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(CommitError::Exists),
        Err(e) => Err(e.into()),
    }
}

/// The destination name as kept in a partial's name, cut so that with the
/// dot, random tag and suffix it stays under NAME_MAX (255).
pub(super) fn temp_base(name: &str) -> &str {
    let mut keep = name.len().min(TEMP_NAME_KEEP);
    while !name.is_char_boundary(keep) {
        keep -= 1;
    }
    &name[..keep]
}

#[cfg(test)]
mod tests {
    use super::super::{sync_filesystem, RemotePath, Root};
    use super::*;

    fn md5_of(bytes: &[u8]) -> String {
        let mut md5 = crate::digest::Md5::new();
        md5.update(bytes);
        md5.finish().to_string()
    }

    #[test]
    fn staged_file_commits_or_vanishes() {
        let tmp = tempfile::tempdir().unwrap();
        let root = Root::open(tmp.path()).unwrap();
        let p = RemotePath::parse("sub/dir/f.txt").unwrap();

        let staged = root.stage(&p).unwrap();
        io::Write::write_all(&mut staged.file(), b"one").unwrap();
        staged.discard();
        let names: Vec<_> = std::fs::read_dir(tmp.path().join("sub/dir")).unwrap().collect();
        assert!(names.is_empty(), "a discarded partial must be removed");

        let staged = root.stage(&p).unwrap();
        assert_eq!(staged.found(), 0);
        io::Write::write_all(&mut staged.file(), b"one").unwrap();
        staged.commit(false).unwrap();
        assert_eq!(std::fs::read(tmp.path().join("sub/dir/f.txt")).unwrap(), b"one");

        let staged = root.stage(&p).unwrap();
        io::Write::write_all(&mut staged.file(), b"two").unwrap();
        assert!(matches!(staged.commit(false), Err(CommitError::Exists)));
        assert_eq!(std::fs::read(tmp.path().join("sub/dir/f.txt")).unwrap(), b"one");

        let staged = root.stage(&p).unwrap();
        io::Write::write_all(&mut staged.file(), b"two").unwrap();
        staged.commit(true).unwrap();
        assert_eq!(std::fs::read(tmp.path().join("sub/dir/f.txt")).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(tmp.path().join("sub/dir")).unwrap().count(), 1);
    }

    #[test]
    fn a_replaced_file_is_held_by_its_name_alone_and_let_go_of() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"outside").unwrap();
        std::fs::write(tmp.path().join("f"), b"old").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), tmp.path().join("link")).unwrap();
        let dir = Dir::open_ambient_dir(tmp.path(), ambient_authority()).unwrap();

        let held = hold(&dir, "f").expect("a file there is held");
        let kind = |fd: &std::os::fd::OwnedFd| {
            rustix::fs::FileType::from_raw_mode(rustix::fs::fstat(fd).unwrap().st_mode)
        };
        assert_eq!(kind(&held), rustix::fs::FileType::RegularFile);
        let link = hold(&dir, "link").expect("a link is held as itself");
        assert_eq!(kind(&link), rustix::fs::FileType::Symlink, "never followed out of the directory");
        assert!(hold(&dir, "missing").is_none());
        drop((held, link));

        // Replacing through a commit: the old bytes are gone from the name,
        // the link's target is untouched, and nothing is left beside.
        let p = RemotePath::parse("f").unwrap();
        let root = Root::open(tmp.path()).unwrap();
        let staged = root.stage(&p).unwrap();
        io::Write::write_all(&mut staged.file(), b"new").unwrap();
        staged.commit(true).unwrap();
        assert_eq!(std::fs::read(tmp.path().join("f")).unwrap(), b"new");
        let staged = root.stage(&RemotePath::parse("link").unwrap()).unwrap();
        io::Write::write_all(&mut staged.file(), b"new").unwrap();
        staged.commit(true).unwrap();
        assert_eq!(std::fs::read(outside.path().join("secret")).unwrap(), b"outside");
        assert!(!tmp.path().join("link").is_symlink(), "the link itself was replaced");
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 2);
    }

    #[test]
    fn durable_commits_flush_and_keep_the_same_rules() {
        let tmp = tempfile::tempdir().unwrap();
        let root = Root::open(tmp.path()).unwrap();
        let p = RemotePath::parse("d/f.txt").unwrap();
        let staged = root.stage(&p).unwrap();
        io::Write::write_all(&mut staged.file(), b"one").unwrap();
        staged.commit_durably(false).unwrap();
        let staged = root.stage(&p).unwrap();
        io::Write::write_all(&mut staged.file(), b"two").unwrap();
        assert!(matches!(staged.commit_durably(false), Err(CommitError::Exists)));
        assert_eq!(std::fs::read(tmp.path().join("d/f.txt")).unwrap(), b"one");
        let staged = root.stage(&p).unwrap();
        io::Write::write_all(&mut staged.file(), b"three").unwrap();
        staged.commit_durably(true).unwrap();
        assert_eq!(std::fs::read(tmp.path().join("d/f.txt")).unwrap(), b"three");
        assert_eq!(std::fs::read_dir(tmp.path().join("d")).unwrap().count(), 1, "no partial left");
        sync_filesystem(&root.handle().unwrap()).unwrap();
    }

    #[test]
    fn interrupted_partials_stay_locked_and_resumable() {
        let tmp = tempfile::tempdir().unwrap();
        let root = Root::open(tmp.path()).unwrap();
        let p = RemotePath::parse("f.bin").unwrap();
        let staged = root.stage(&p).unwrap();
        assert_eq!(staged.found(), 0);
        io::Write::write_all(&mut staged.file(), b"prefix").unwrap();
        // A second writer meanwhile gets a one-off temporary, not the partial.
        let other = root.stage_at_once(&p).unwrap();
        assert_eq!(other.found(), 0);
        drop(other);
        // One that commits after the holder let go takes the stale partial
        // with it: a committed file leaves no partial of itself behind.
        let g = RemotePath::parse("g.bin").unwrap();
        let stale = root.stage(&g).unwrap();
        io::Write::write_all(&mut stale.file(), b"old bytes").unwrap();
        let late = root.stage_at_once(&g).unwrap();
        drop(stale);
        assert!(tmp.path().join(".g.bin.xfer-part").exists(), "an interrupted partial stays");
        late.commit(false).unwrap();
        assert!(!tmp.path().join(".g.bin.xfer-part").exists(), "the stale partial went with the commit");
        drop(staged);
        assert_eq!(std::fs::read(tmp.path().join(".f.bin.xfer-part")).unwrap(), b"prefix");
        let mut again = root.stage(&p).unwrap();
        assert_eq!((again.found(), again.held()), (6, 0), "the next run finds the partial");
        again.hash_for_resume();
        assert_eq!(again.offer(), None, "less than a part is not offered");
        // A whole part and a few bytes: the part is offered, the rest dropped.
        let part: Vec<u8> = (0..PART).map(|i| i as u8).collect();
        io::Seek::seek(&mut again.file(), io::SeekFrom::End(0)).unwrap();
        io::Write::write_all(&mut again.file(), &part).unwrap();
        drop(again);
        let mut again = root.stage(&p).unwrap();
        again.hash_for_resume();
        let mut first = b"prefix".to_vec();
        first.extend_from_slice(&part[..PART as usize - 6]);
        let offered = again.offer().map(|(n, md5, parts)| (n, md5.to_string(), parts.len()));
        assert_eq!(offered, Some((PART, md5_of(&first), 1)), "the part, with its own digest");
        assert!(again.start_at(3).unwrap().is_none(), "whole parts of what it offered only");
        assert!(again.start_at(2 * PART).unwrap().is_none(), "no more than it offered");
        let (_, md5) = again.start_at(PART).unwrap().unwrap();
        assert_eq!(md5.finish().to_string(), md5_of(&first));
        assert_eq!(again.file().metadata().unwrap().len(), PART, "what follows the part is dropped");
        again.start_at(0).unwrap().unwrap();
        assert_eq!(again.file().metadata().unwrap().len(), 0, "starting over empties it");
    }

    /// A body's partial reserves disk ahead of what is written, where the
    /// filesystem can, without the reservation counting in its length, and
    /// gives back what is left over once written.
    #[test]
    fn an_appender_reserves_ahead_and_gives_back_the_rest() {
        use std::io::Write;
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir().unwrap();
        let probe = std::fs::File::create(tmp.path().join("probe")).unwrap();
        let can_reserve =
            rustix::fs::fallocate(&probe, rustix::fs::FallocateFlags::KEEP_SIZE, 0, 4096).is_ok();
        let root = Root::open(tmp.path()).unwrap();
        let mut staged = root.stage(&RemotePath::parse("f").unwrap()).unwrap();
        let (mut appender, _) = staged.start_at(0).unwrap().unwrap();
        let written = 3 * PART as usize + 5;
        appender.write_all(&vec![7u8; written]).unwrap();
        let held = appender.file().metadata().unwrap();
        assert_eq!(held.len(), written as u64, "the reservation is not in the length");
        if can_reserve {
            assert!(held.blocks() * 512 >= RESERVE_AHEAD, "{} bytes on disk", held.blocks() * 512);
        }
        drop(appender);
        let after = staged.file().metadata().unwrap();
        assert_eq!(after.len(), written as u64);
        assert!(
            after.blocks() * 512 < written as u64 + 64 * 1024,
            "{} bytes left on disk",
            after.blocks() * 512
        );
    }

    /// A fresh partial started at 0 is not truncated: on ext4 a truncate
    /// to 0 makes the file's last close write back all of it (a 1 GiB get
    /// waited 0.37 s in close). Seen here as its change time staying put.
    #[test]
    fn a_fresh_partial_started_at_zero_is_left_as_it_is() {
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir().unwrap();
        let root = Root::open(tmp.path()).unwrap();
        let mut staged = root.stage(&RemotePath::parse("f").unwrap()).unwrap();
        let before = staged.file().metadata().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(30));
        let (file, prefix) = staged.start_at(0).unwrap().expect("0 is always a start");
        let after = file.file().metadata().unwrap();
        assert_eq!(
            (after.len(), after.ctime(), after.ctime_nsec()),
            (0, before.ctime(), before.ctime_nsec())
        );
        assert_eq!(prefix.finish(), PartsDigest::new().finish());
    }

    /// PROTOCOL.md's offer test vector: a partial of the vector's first
    /// 270,000 bytes is offered as the document says, body and all.
    #[test]
    fn protocol_md_offer_test_vector() {
        let doc = include_str!("../../PROTOCOL.md");
        let at = doc.find("a partial of the first 270,000").expect("the offer's vector");
        let block = doc[at..].split("```").nth(1).expect("its block");
        let field = |name: &str| {
            // A value goes on over the lines that start blank.
            let mut lines = block.lines().skip_while(|l| !l.starts_with(name));
            let first = lines.next().expect(name)[name.len()..].to_string();
            let rest = lines.take_while(|l| l.starts_with(' ')).collect::<String>();
            (first + &rest).replace(' ', "")
        };
        let tmp = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(tmp.path().join(".v.bin.xfer-part"), &data[..270_000]).unwrap();
        let root = Root::open(tmp.path()).unwrap();
        let mut partial = root.stage(&RemotePath::parse("v.bin").unwrap()).unwrap();
        partial.hash_for_resume();
        let (offset, md5, parts) = partial.offer().expect("a whole part to offer");
        assert_eq!(offset.to_string(), field("offset"));
        assert_eq!(md5.as_str(), field("md5"));
        let body = crate::protocol::parts_body(parts);
        assert_eq!(body.len().to_string(), field("total_size"));
        assert_eq!(crate::protocol::hex(&body), field("body"));
    }

    #[test]
    fn empty_partials_are_not_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let root = Root::open(tmp.path()).unwrap();
        drop(root.stage(&RemotePath::parse("f").unwrap()).unwrap());
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    }
}
