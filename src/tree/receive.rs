//! The receiving side of a tree, whichever side receives it (the server
//! for `put -r`, the client for `get -r`): the manifest applied beneath the
//! destination's directory handle, what each file finds there, where its
//! bytes go, and directory modes and times at the end.
//!
//! Every change goes through a [`Root`] (cap-std), never a path string, so
//! no link of the tree, or one that was there before, can lead a write
//! outside the destination. Links are also refused when made: one whose
//! target leaves the tree by name or climbs back out of a name, one that
//! would stand beneath another link, or (checked once the manifest is in,
//! when every link exists) one that resolves outside.

use crate::connection::FrameReader;
use crate::error::{ConnError, LinkOnTheWay, RequestError};
use crate::local::{Partial, RemotePath, Root};
use crate::protocol::{parts_body, Common, Data, EntryKind, ErrorCode, Md5Hex, OFFER_MOST_PARTS, PART};
use crate::transfer::{drain, receive_file, Commit, Committed, FileFailure, Progress};
use crate::tree::{self, TreeEntry, MAX_RESUMABLE, WHOLE_MAX};
use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::Arc;

/// What a file of the manifest finds at its place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// Nothing: send it.
    Nothing,
    /// A regular file of `size` bytes, with its MD5 when the size is the
    /// one coming (so the two can be compared).
    Existing {
        /// Its size.
        size: u64,
        /// Its MD5, when `size` equals the entry's.
        md5: Option<Md5Hex>,
    },
    /// A partial an interrupted run left, which can be resumed after its
    /// first `offset` bytes (of MD5 `md5`).
    Partial {
        /// Bytes it holds.
        offset: u64,
        /// Their MD5.
        md5: Md5Hex,
    },
}

/// What applying one entry of a manifest did, for each side to tell in its
/// own frames or lines.
#[derive(Debug)]
pub enum Applied {
    /// A file that may be sent, and what is at its place.
    File {
        /// Its path relative to the tree's top.
        rel: String,
        /// What is there already.
        found: Found,
    },
    /// The entry was refused or failed; nothing was made for it.
    Refused {
        /// Its path relative to the tree's top.
        rel: String,
        /// Why, in words that do not repeat the path.
        err: RequestError,
    },
}

impl Applied {
    fn refused(rel: &str, code: ErrorCode, message: impl Into<String>) -> Applied {
        Applied::Refused { rel: rel.to_string(), err: RequestError::new(code, message) }
    }
}

/// The words for an existing file that may not be replaced.
pub fn exists_message() -> String {
    crate::error::exists_words("exists")
}

/// A tree being received beneath a [`Root`].
pub struct Receiver {
    /// Where the tree goes, beneath the root.
    top: RemotePath,
    /// Whether the top's own mode and time may be set (never the served
    /// root's).
    touch_top: bool,
    /// Replace what differs.
    force: bool,
    /// Offer partials of interrupted runs for resuming.
    resume: bool,
    /// Directories (relative to the top, `""` for the top itself) made
    /// just now: files in them cannot exist yet, so looking each up would
    /// only cost time.
    made: HashSet<String>,
    /// The directories, to give their times (and, if made now, modes) at
    /// the end: path, mode, mtime, made now.
    dirs: Vec<(RemotePath, u32, i64, bool)>,
    /// The links made (name, path), to check once every link exists.
    links: Vec<(String, RemotePath)>,
    /// The files expected, by name.
    pub files: Files,
    /// Partials offered for resuming, held locked until their file comes.
    pub resumable: HashMap<String, Partial>,
    /// Part digests the partials may still offer: the tree's offers share
    /// what one offer may carry.
    offer_parts_left: usize,
    /// Look, change nothing (`--dry-run`): directories and links are not
    /// made, partials neither held nor removed.
    dry: bool,
    /// With `--delete`: every name the manifest holds, so what else is
    /// beneath the top can be removed.
    keep: Option<HashSet<String>>,
    /// Names the sender left out (special files, unreadable directories):
    /// never removed, nor anything beneath them.
    noted: Vec<String>,
}

/// The manifest's files, found by name, each entry its own key: a copy of
/// every name as a key would cost a tree of 7,911 files 0.7 MB more.
#[derive(Default)]
pub struct Files(HashSet<ByName>);

impl Files {
    /// Adds `entry`, replacing one of the same name.
    fn insert(&mut self, entry: TreeEntry) {
        self.0.replace(ByName(entry));
    }

    /// The file named `rel`.
    pub fn get(&self, rel: &str) -> Option<&TreeEntry> {
        self.0.get(rel).map(|e| &e.0)
    }
}

/// Directories held open for one batch's lookups, at most: each is a file
/// descriptor until the batch is hashed, so a manifest of one file to a
/// directory cannot make a connection hold hundreds. Files of any other
/// directory are looked up through the root. (/usr/include's batches of
/// 256 entries, in `find`'s order, span 18 directories at the median and
/// 59 at most.)
const LOOKUP_DIRS: usize = 32;

/// An entry hashed and compared by its name alone, so a set of them is
/// looked up by a `&str`.
struct ByName(TreeEntry);

impl std::hash::Hash for ByName {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // As `str` hashes, which `Borrow<str>` requires.
        self.0.rel.as_str().hash(state);
    }
}

impl PartialEq for ByName {
    fn eq(&self, other: &Self) -> bool {
        self.0.rel == other.0.rel
    }
}

impl Eq for ByName {}

impl std::borrow::Borrow<str> for ByName {
    fn borrow(&self) -> &str {
        &self.0.rel
    }
}

impl Receiver {
    /// Receives beneath `top`; `fresh` says it was made just now.
    pub fn new(top: RemotePath, fresh: bool, force: bool, resume: bool) -> Receiver {
        let touch_top = !top.is_root();
        let mut made = HashSet::new();
        if fresh {
            made.insert(String::new());
        }
        Receiver {
            top,
            touch_top,
            force,
            resume,
            made,
            dirs: Vec::new(),
            links: Vec::new(),
            files: Files::default(),
            resumable: HashMap::new(),
            offer_parts_left: OFFER_MOST_PARTS,
            dry: false,
            keep: None,
            noted: Vec::new(),
        }
    }

    /// Only looks: makes, holds and removes nothing (`--dry-run`).
    pub fn dry_run(mut self, dry: bool) -> Receiver {
        self.dry = dry;
        self
    }

    /// Remembers every name of the manifest, for [`prune`](Self::prune).
    pub fn deleting(mut self, delete: bool) -> Receiver {
        self.keep = delete.then(HashSet::new);
        self
    }

    /// Notes a name the sender left out: it and what is beneath it are
    /// never pruned.
    pub fn note(&mut self, rel: &str) {
        if self.keep.is_some() {
            self.noted.push(rel.to_string());
        }
    }

    /// Removes (or, dry, only names) what is beneath the top that the
    /// manifest lacks, never a name the sender left out nor a partial; a
    /// directory the manifest has is looked into. Call after the last
    /// batch. Returns each thing removed, relative to the top, and the
    /// first failure (which stops the pruning).
    pub fn prune(&self, root: &Root) -> (Vec<String>, Option<(String, io::Error)>) {
        let Some(keep) = &self.keep else { return (Vec::new(), None) };
        let mut removed = Vec::new();
        let mut pending = vec![String::new()];
        let how = crate::local::Removal { recursive: true, dry: self.dry };
        while let Some(dir) = pending.pop() {
            if self.made.contains(&dir) {
                continue; // made just now: holds only what the manifest has
            }
            // Listings leave partials out.
            let at = match dir.is_empty() {
                true => Ok(self.top.clone()),
                false => self.path(&dir),
            };
            let Some(listing) = at.ok().and_then(|p| root.list(&p).ok()) else { continue };
            for crate::local::ListEntry { name, kind, .. } in listing {
                let is_dir = kind == EntryKind::Dir;
                let rel = if dir.is_empty() { name } else { format!("{dir}/{name}") };
                let noted = self.noted.iter().any(|n| rel == *n || rel.starts_with(&format!("{n}/")));
                if noted {
                    continue;
                }
                if keep.contains(&rel) {
                    if is_dir {
                        pending.push(rel);
                    }
                    continue;
                }
                let Ok(path) = self.path(&rel) else { continue };
                match root.remove(&path, &rel, how, &mut |gone| removed.push(gone.to_string())) {
                    Ok(()) => {}
                    // Gone already, or a name not UTF-8 that listing altered.
                    Err((_, e)) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(failed) => return (removed, Some(failed)),
                }
            }
        }
        (removed, None)
    }

    /// Lets the top's own mode and time be set although it is the root of
    /// the handle (the client's destination is).
    pub fn touching_top(mut self) -> Receiver {
        self.touch_top = true;
        self
    }

    /// Where `rel` is beneath the root. A tree's names have one spelling:
    /// `a//./b` is refused, not read as `a/b`, for what is judged by the
    /// name alone (how deep a link stands, what --delete keeps, which data
    /// answers which entry) must see the name the disk will.
    pub fn path(&self, rel: &str) -> Result<RemotePath, RequestError> {
        if !rel.is_empty() && rel.split('/').any(|part| part.is_empty() || part == ".") {
            let rule = "empty and '.' parts are not allowed in a tree's names";
            return Err(RequestError::new(ErrorCode::BadPath, format!("unsafe name, skipped ({rule})")));
        }
        self.top.join(rel).map_err(|e| {
            RequestError::new(ErrorCode::BadPath, format!("unsafe name, skipped ({})", e.rule()))
        })
    }

    /// Makes the directories and links of `batch`, looks up (and hashes,
    /// side by side) its files, and says what each entry did.
    pub fn apply(&mut self, root: &Root, batch: Vec<TreeEntry>) -> Vec<Applied> {
        let mut out = Vec::new();
        let mut lookups = Vec::new();
        // Files are looked up in their directory, opened once for all its
        // names: an unchanged /usr/include cost the server two confined
        // walks of the whole path a file (19,183 openat2 for 7,911 files).
        let mut parents: HashMap<RemotePath, Option<Arc<Root>>> = HashMap::new();
        for entry in batch {
            if let Some(keep) = &mut self.keep {
                keep.insert(entry.rel.clone());
            }
            let path = match self.path(&entry.rel) {
                Ok(p) if !p.is_root() && p != self.top => p,
                Ok(_) => {
                    out.push(Applied::refused(&entry.rel, ErrorCode::BadPath, "names the tree's top"));
                    continue;
                }
                Err(err) => {
                    out.push(Applied::Refused { rel: entry.rel, err });
                    continue;
                }
            };
            match entry.kind {
                EntryKind::Dir if self.dry => {
                    let parent = entry.rel.rsplit_once('/').map_or("", |(dir, _)| dir);
                    let there = match self.made.contains(parent) {
                        true => Ok(None),
                        false => root.lstat(&path),
                    };
                    match there {
                        Ok(None) => drop(self.made.insert(entry.rel.clone())),
                        Ok(Some(m)) if m.is_dir() => {}
                        Ok(Some(_)) => out.push(refusal(&entry.rel, &io::ErrorKind::AlreadyExists.into())),
                        Err(e) => out.push(refusal(&entry.rel, &e)),
                    }
                }
                EntryKind::Symlink if self.dry => {}
                EntryKind::Dir => match root.make_dir(&path) {
                    Ok(new) => {
                        if new {
                            self.made.insert(entry.rel.clone());
                        }
                        self.dirs.push((path, entry.mode, entry.mtime, new));
                    }
                    Err(e) => out.push(refusal(&entry.rel, &e)),
                },
                EntryKind::Symlink => {
                    if let Some(refused) = self.make_link(root, &path, &entry) {
                        out.push(refused);
                    }
                }
                EntryKind::File => {
                    let parent = entry.rel.rsplit_once('/').map_or("", |(dir, _)| dir);
                    if self.made.contains(parent) {
                        out.push(Applied::File { rel: entry.rel.clone(), found: Found::Nothing });
                        self.files.insert(entry);
                    } else {
                        let within = path.split_last().and_then(|(dir, name)| {
                            let parent = match parents.get(&dir) {
                                Some(parent) => parent.clone(),
                                None if parents.len() < LOOKUP_DIRS => {
                                    let parent = root.existing_sub(&dir).map(Arc::new);
                                    parents.insert(dir, parent.clone());
                                    parent
                                }
                                None => None,
                            };
                            parent.map(|parent| (parent, name))
                        });
                        lookups.push((path, within, entry, Ok(Found::Nothing)));
                    }
                }
                EntryKind::Other => {}
            }
        }
        let found = tree::par_hash(lookups, |(path, within, entry, found)| match within {
            Some((dir, name)) => look_up(dir, name, entry, found),
            None => look_up(root, path, entry, found),
        });
        for ((path, _, entry, found), ours) in found {
            let found = match (found, ours) {
                (Ok(Found::Existing { size, .. }), Some(md5)) => match md5 {
                    Ok(md5) => Ok(Found::Existing { size, md5: Some(md5) }),
                    Err(e) => Err(refusal(&entry.rel, &e)),
                },
                (Ok(Found::Nothing), _) => Ok(self.partial_of(root, &path, &entry)),
                (other, _) => other,
            };
            match found {
                Ok(found) => {
                    out.push(Applied::File { rel: entry.rel.clone(), found });
                    self.files.insert(entry);
                }
                Err(refused) => out.push(refused),
            }
        }
        out
    }

    /// Makes a link of the tree, unless its target is one the tree does
    /// not keep ([`tree::link_fault`]) or a directory on the way to it is
    /// a link: made through one (`l/x` with `l -> .`) it would stand
    /// elsewhere than its name says, and its target would be judged from
    /// the wrong depth (found by the tree fuzz target: `outside -> .` in
    /// one request, a link at `outside/.../outside/n2` eight levels deep by
    /// name, at the top in fact, in the next). A walk never sends anything
    /// beneath a link it sends.
    fn make_link(&mut self, root: &Root, path: &RemotePath, entry: &TreeEntry) -> Option<Applied> {
        let rel = entry.rel.as_str();
        let Some(target) = entry.target.as_deref() else {
            return Some(Applied::refused(rel, ErrorCode::BadRequest, "symlink without a target"));
        };
        if let Some(fault) = tree::link_fault(rel, target) {
            let msg = fault.skipped(crate::local::escape(target));
            return Some(Applied::refused(rel, ErrorCode::BadPath, msg));
        }
        match root.symlink(&self.top, rel, target, self.force) {
            Ok(()) => {
                self.links.push((rel.to_string(), path.clone()));
                None
            }
            Err(e) if LinkOnTheWay::is(&e) => {
                Some(Applied::refused(rel, ErrorCode::BadPath, "symlink beneath another link, skipped"))
            }
            Err(e) => Some(refusal(rel, &e)),
        }
    }

    /// After the last entry, when every link of the tree exists: removes
    /// the links that resolve outside it, and says which. Links the tree
    /// makes cannot (see [`tree::link_fault`]); one that was there before
    /// can lead anywhere, and a link of the tree through it with it.
    pub fn check_links(&mut self, root: &Root) -> Vec<Applied> {
        let mut out = Vec::new();
        if self.dry {
            return out;
        }
        for (rel, path) in std::mem::take(&mut self.links) {
            if !root.resolves_inside(&path) {
                let _ = root.remove_link(&path);
                out.push(Applied::refused(
                    &rel,
                    ErrorCode::BadPath,
                    "symlink resolves outside the tree, skipped",
                ));
            }
        }
        out
    }

    /// The partial an interrupted run left for a large file of the tree, if
    /// it can be resumed and fewer than [`MAX_RESUMABLE`] are held already.
    /// One left for a file now sent whole (it shrank) is removed: nothing
    /// would ever resume or replace it.
    fn partial_of(&mut self, root: &Root, path: &RemotePath, entry: &TreeEntry) -> Found {
        if self.dry || !self.resume || (entry.size > WHOLE_MAX && self.resumable.len() >= MAX_RESUMABLE) {
            return Found::Nothing;
        }
        let Some(mut partial) = root.existing_partial(path).ok().flatten() else { return Found::Nothing };
        if entry.size <= WHOLE_MAX {
            partial.discard();
            return Found::Nothing;
        }
        // A partial is a prefix only if it holds some of the bytes, not all.
        if partial.found() >= entry.size {
            return Found::Nothing;
        }
        partial.hash_for_resume_within(self.offer_parts_left);
        let Some((offset, md5, parts)) = partial.offer() else { return Found::Nothing };
        self.offer_parts_left -= parts.len();
        self.resumable.insert(entry.rel.clone(), partial);
        Found::Partial { offset, md5 }
    }

    /// Where a large file's bytes go: its partial (emptied when the body
    /// starts at 0), or, when the sender resumes at `offset`, the one
    /// offered. Returns it with the file's mode and time.
    fn start_file(
        &mut self,
        root: &Root,
        rel: &str,
        offset: Option<u64>,
    ) -> Result<(Partial, (u32, i64)), RequestError> {
        let Some(entry) = self.files.get(rel) else {
            return Err(RequestError::new(ErrorCode::BadRequest, format!("{rel} was not in the manifest")));
        };
        let (size, meta) = (entry.size, (entry.mode, entry.mtime));
        let path = self.path(rel)?;
        let partial = self.resumable.remove(rel);
        if let Some(offset) = offset.filter(|&o| o > 0) {
            // After any whole number of the parts offered: the sender's
            // own parts differ from there.
            return match partial {
                Some(p) if offset <= p.held() && offset.is_multiple_of(PART) && offset <= size => {
                    Ok((p, meta))
                }
                other => Err(RequestError::offset(rel, offset, other.map_or(0, |p| p.held()))),
            };
        }
        match partial {
            Some(p) => Ok((p, meta)),
            // On the connection's thread: never waits for a partial held by
            // another transfer.
            None => Ok((root.stage_at_once(&path).map_err(|e| RequestError::from_io(&e, rel))?, meta)),
        }
    }

    /// [`apply`](Self::apply) on the blocking pool (it makes directories
    /// and links, and hashes files already there): the receiver goes there
    /// and back. After the `last` batch, also the check of every link.
    pub async fn apply_off_thread(
        mut self,
        root: Arc<Root>,
        batch: Vec<TreeEntry>,
        last: bool,
    ) -> (Receiver, Vec<Applied>) {
        tokio::task::spawn_blocking(move || {
            let mut applied = self.apply(&root, batch);
            if last {
                applied.extend(self.check_links(&root));
            }
            (self, applied)
        })
        .await
        .expect("applying a manifest does not panic")
    }

    /// Receives one large file of the tree: its `data` body of `len` bytes
    /// and `done` frame, through [`crate::transfer::receive_file`]
    /// into its partial (after the bytes offered, if the sender resumes
    /// it), committed with its mode and time. The same for both sides,
    /// which differ only in how they report; the connection is in step
    /// after any failure of the file. The outer error is a broken
    /// connection.
    pub async fn receive_file<R, M>(
        &mut self,
        reader: &mut FrameReader<R, M>,
        root: &Root,
        (data, len): (&Data, u64),
        bar: &dyn Progress,
    ) -> Result<Result<Committed, FileFailure>, ConnError>
    where
        R: tokio::io::AsyncRead + Unpin,
        M: Common,
    {
        let (partial, (mode, mtime)) = match self.start_file(root, &data.filename, data.offset) {
            Ok(started) => started,
            Err(err) => {
                drain(reader, len).await?;
                return Ok(Err(FileFailure::Refused(err)));
            }
        };
        let meta = Some((data.mode.unwrap_or(mode), data.mtime.unwrap_or(mtime)));
        let how = Commit { replace: self.force, durable: false, meta };
        let received = receive_file(reader, partial, (data, len), how, bar).await?;
        if let Err(FileFailure::Write { pending: true, .. }) = &received {
            drain(reader, 0).await?;
        }
        Ok(received)
    }

    /// The body of the offer of `rel`'s partial: its parts' digests.
    pub fn offered_body(&self, rel: &str) -> Vec<u8> {
        self.resumable.get(rel).map_or(Vec::new(), |p| parts_body(p.offered_parts()))
    }

    /// Drops the partial held for `rel`, if any: its file is coming whole.
    pub fn forget_partial(&mut self, rel: &str) {
        if let Some(p) = self.resumable.remove(rel) {
            p.discard();
        }
    }

    /// Gives the directories their times, deepest first (writing into a
    /// directory changes its time), and their modes where this transfer
    /// made them: the source's bits, always with owner rwx, so the copy
    /// stays readable and repairable. A directory that was there keeps its
    /// mode. `top` is the top's own, from the manifest's `end`.
    pub fn finish_dirs(&self, root: &Root, top: Option<(u32, i64)>) {
        let top = top
            .filter(|_| self.touch_top)
            .map(|(mode, mtime)| (self.top.clone(), mode, mtime, self.made.contains("")));
        for (path, mode, mtime, made) in self.dirs.iter().rev().cloned().chain(top) {
            let mode = made.then_some(mode | 0o700);
            let _ = root.set_dir_meta(&path, mode, mtime);
        }
    }
}

/// Sets `found` to what is at `path` for a file of the manifest, or to a
/// refusal; returns the file to hash when its size is the one coming.
fn look_up(
    root: &Root,
    path: &RemotePath,
    entry: &TreeEntry,
    found: &mut Result<Found, Applied>,
) -> Option<io::Result<(std::fs::File, u64)>> {
    match root.lstat(path) {
        Ok(None) => None,
        Err(e) => {
            *found = Err(refusal(&entry.rel, &e));
            None
        }
        Ok(Some(meta)) if !meta.is_file() => {
            let msg = "exists and is not a regular file";
            *found = Err(Applied::refused(&entry.rel, ErrorCode::WrongType, msg));
            None
        }
        Ok(Some(meta)) => {
            *found = Ok(Found::Existing { size: meta.len(), md5: None });
            (meta.len() == entry.size).then(|| root.open_read(path).map(|o| (o.file, o.size)))
        }
    }
}

/// A refusal for what the filesystem said about `rel`.
fn refusal(rel: &str, e: &io::Error) -> Applied {
    if e.kind() == io::ErrorKind::AlreadyExists {
        return Applied::refused(rel, ErrorCode::Exists, exists_message());
    }
    let code = RequestError::from_io(e, rel).code;
    Applied::Refused { rel: rel.to_string(), err: RequestError::new(code, crate::error::plain_io(e)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(rel: &str, kind: EntryKind) -> TreeEntry {
        TreeEntry { rel: rel.into(), kind, size: 1, mode: 0o755, mtime: 0, target: None }
    }

    fn link(rel: &str, target: &str) -> TreeEntry {
        TreeEntry { target: Some(target.into()), ..entry(rel, EntryKind::Symlink) }
    }

    /// A receiver at the root's top, as a put -r without options makes.
    fn receiver() -> Receiver {
        Receiver::new(RemotePath::root(), false, false, false)
    }

    /// A temporary directory holding `root/real`, and `root` opened.
    fn root_with_a_dir() -> (tempfile::TempDir, Root) {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("root/real")).unwrap();
        let root = Root::open(&t.path().join("root")).unwrap();
        (t, root)
    }

    #[test]
    fn files_are_found_by_name_and_a_later_entry_replaces_an_earlier() {
        let mut files = Files::default();
        files.insert(entry("a/b", EntryKind::File));
        files.insert(TreeEntry { size: 7, ..entry("c", EntryKind::File) });
        files.insert(TreeEntry { size: 9, ..entry("c", EntryKind::File) });
        assert_eq!(files.get("a/b").map(|e| e.rel.as_str()), Some("a/b"));
        assert_eq!(files.get("c").map(|e| e.size), Some(9));
        assert!(files.get("a").is_none() && files.get("").is_none());
    }

    #[test]
    fn pruning_removes_only_what_the_manifest_lacks_never_what_was_noted() {
        let t = tempfile::tempdir().unwrap();
        for d in ["keep", "noted/deep", "extra/deeper"] {
            std::fs::create_dir_all(t.path().join(d)).unwrap();
        }
        for f in ["keep/f", "keep/old", "noted/deep/x", "extra/deeper/y", "top.txt"] {
            std::fs::write(t.path().join(f), b"x").unwrap();
        }
        let partial = t.path().join(format!("keep/.f{}", crate::local::TEMP_SUFFIX));
        std::fs::write(&partial, b"x").unwrap();
        let root = Root::open(t.path()).unwrap();
        let manifest = vec![entry("keep", EntryKind::Dir), entry("keep/f", EntryKind::File)];
        let top = || RemotePath::root();

        // Dry: named, nothing removed.
        let mut dry = Receiver::new(top(), false, false, false).touching_top().deleting(true).dry_run(true);
        dry.apply(&root, manifest.clone());
        dry.note("noted");
        let before = std::fs::read_dir(t.path()).unwrap().count();
        let (mut named, failed) = dry.prune(&root);
        named.sort();
        assert!(failed.is_none());
        assert_eq!(named, ["extra", "extra/deeper", "extra/deeper/y", "keep/old", "top.txt"]);
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), before);
        assert!(t.path().join("extra/deeper/y").exists());

        let mut receiver = Receiver::new(top(), false, false, false).touching_top().deleting(true);
        receiver.apply(&root, manifest);
        receiver.note("noted");
        let (mut gone, failed) = receiver.prune(&root);
        gone.sort();
        assert!(failed.is_none());
        assert_eq!(gone, named, "what a dry run names is what goes");
        assert!(!t.path().join("extra").exists() && !t.path().join("top.txt").exists());
        assert!(t.path().join("noted/deep/x").exists(), "noted: kept, with what is beneath");
        assert!(t.path().join("keep/f").exists() && partial.exists(), "partials are the sweep's");
        // Without --delete, nothing is pruned.
        std::fs::write(t.path().join("again"), b"x").unwrap();
        let mut plain = Receiver::new(top(), false, false, false).touching_top();
        plain.apply(&root, vec![]);
        assert_eq!(plain.prune(&root).0, Vec::<String>::new());
    }

    /// A name spelled with empty or `.` parts is refused whatever it is:
    /// judged by its raw parts, a link at `l//.` stood two levels deep
    /// and its target could climb out of the root (found by the tree
    /// fuzz target).
    #[test]
    fn names_with_empty_or_dot_parts_are_refused_not_read_another_way() {
        let (t, root) = root_with_a_dir();
        let manifest = vec![
            link("l//.", "n/../../x"),
            link("./m", "a"),
            entry("d/./e", EntryKind::Dir),
            entry("f//g", EntryKind::File),
            link("ok", "d"),
        ];
        let mut receiver = receiver();
        let mut applied = receiver.apply(&root, manifest);
        applied.extend(receiver.check_links(&root));
        for rel in ["l//.", "./m", "d/./e", "f//g"] {
            let refused = applied.iter().any(|a| {
                matches!(a, Applied::Refused { rel: r, err } if r == rel && err.code == ErrorCode::BadPath)
            });
            assert!(refused, "{rel}: {applied:?}");
        }
        let mut made: Vec<_> =
            std::fs::read_dir(t.path().join("root")).unwrap().map(|e| e.unwrap().file_name()).collect();
        made.sort();
        assert_eq!(made, ["ok", "real"], "only the well-spelled link is made");
    }

    /// A link is not made beneath another: judged by its name it stands
    /// deeper than it does, and its target could climb above the top.
    #[test]
    fn a_link_is_not_made_beneath_another_link() {
        let (t, root) = root_with_a_dir();
        let mut first = receiver();
        assert!(first.apply(&root, vec![link("l", ".")]).is_empty());
        assert!(first.check_links(&root).is_empty());
        let mut second = receiver();
        let applied = second.apply(&root, vec![link("l/l/n", "../../x"), link("real/n", "../real")]);
        assert!(
            matches!(&applied[..], [Applied::Refused { rel, err }] if rel == "l/l/n" && err.code == ErrorCode::BadPath),
            "{applied:?}"
        );
        assert!(std::fs::symlink_metadata(t.path().join("root/n")).is_err(), "nothing made through the link");
        assert!(std::fs::symlink_metadata(t.path().join("root/real/n")).is_ok(), "beneath a directory: made");
    }

    /// A target that climbs back out of a name is refused, whatever is
    /// there now: a later request could make that name a link to `.`, and
    /// `d/..` would then lead above the top. Targets that climb first and
    /// then only name stay inside, whatever links are made after them.
    #[test]
    fn a_link_climbing_back_out_of_a_name_is_refused_and_the_rest_stay_inside() {
        let (t, root) = root_with_a_dir();
        let mut first = receiver();
        let manifest = vec![
            link("f", "d/.."),
            link("g", "real/../real"),
            link("h", "../x"),
            link("real/k", "../d/d/real"),
        ];
        let mut applied = first.apply(&root, manifest);
        applied.extend(first.check_links(&root));
        let mut second = receiver();
        applied.extend(second.apply(&root, vec![link("d", "."), link("real/l", "../d")]));
        applied.extend(second.check_links(&root));
        let refused: Vec<_> = applied
            .iter()
            .filter_map(|a| match a {
                Applied::Refused { rel, err } => Some((rel.as_str(), err.message.as_str())),
                _ => None,
            })
            .collect();
        let back = "climbs back out of a name ('..' after a name), skipped";
        assert_eq!(
            refused,
            [
                ("f", format!("symlink to d/.. {back}").as_str()),
                ("g", format!("symlink to real/../real {back}").as_str()),
                ("h", "symlink to ../x leads out of the tree, skipped"),
            ],
            "{applied:?}"
        );
        let real_root = std::fs::canonicalize(t.path().join("root")).unwrap();
        for name in ["d", "real/k", "real/l"] {
            let path = t.path().join("root").join(name);
            assert!(std::fs::symlink_metadata(&path).is_ok(), "{name} was made");
            let real = std::fs::canonicalize(&path).unwrap();
            assert!(real.starts_with(&real_root), "{path:?} leads to {real:?}");
        }
    }

    /// Files are found the same through their directory's handle and,
    /// past [`LOOKUP_DIRS`] directories in a batch, through the root: each
    /// with its size and, when the size is the one coming, its MD5; a
    /// link is no file, and a missing directory holds nothing.
    #[test]
    fn files_are_found_the_same_in_every_directory_of_a_batch() {
        let t = tempfile::tempdir().unwrap();
        let dirs = LOOKUP_DIRS + 8;
        let mut manifest = Vec::new();
        for d in 0..dirs {
            std::fs::create_dir(t.path().join(format!("d{d}"))).unwrap();
            std::fs::write(t.path().join(format!("d{d}/same")), format!("file {d}")).unwrap();
            std::fs::write(t.path().join(format!("d{d}/other")), b"x").unwrap();
            let len = format!("file {d}").len() as u64;
            manifest.push(TreeEntry { size: len, ..entry(&format!("d{d}/same"), EntryKind::File) });
            manifest.push(TreeEntry { size: 9, ..entry(&format!("d{d}/other"), EntryKind::File) });
            manifest.push(entry(&format!("d{d}/new"), EntryKind::File));
        }
        std::os::unix::fs::symlink("d0/same", t.path().join("d1/link")).unwrap();
        manifest.push(entry("d1/link", EntryKind::File));
        manifest.push(entry("missing/f", EntryKind::File));
        let root = Root::open(t.path()).unwrap();
        let mut receiver = Receiver::new(RemotePath::root(), false, false, false);
        let applied = receiver.apply(&root, manifest);
        let found = |rel: &str| {
            applied.iter().find_map(|a| match a {
                Applied::File { rel: r, found } if r == rel => Some(Ok(found)),
                Applied::Refused { rel: r, err } if r == rel => Some(Err(err.code)),
                _ => None,
            })
        };
        for d in 0..dirs {
            let body = format!("file {d}");
            let md5 = crate::digest::md5_many(&[body.as_bytes()]).remove(0);
            assert!(
                matches!(found(&format!("d{d}/same")), Some(Ok(Found::Existing { size, md5: Some(m) })) if *size == body.len() as u64 && *m == md5),
                "d{d}/same"
            );
            assert!(
                matches!(found(&format!("d{d}/other")), Some(Ok(Found::Existing { size: 1, md5: None }))),
                "d{d}/other"
            );
            assert!(matches!(found(&format!("d{d}/new")), Some(Ok(Found::Nothing))), "d{d}/new");
        }
        assert_eq!(found("d1/link").map(|f| f.err()), Some(Some(ErrorCode::WrongType)));
        assert!(matches!(found("missing/f"), Some(Ok(Found::Nothing))));
    }
}
