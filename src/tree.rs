//! Directory trees: walking one into a manifest of entries, and the rules
//! both sides apply to what a tree may contain.
//!
//! A manifest lists directories before what they hold. Regular files,
//! directories and symlinks whose target stays inside the tree are kept;
//! anything else is skipped with a warning naming it.

use crate::connection::FrameWriter;
use crate::digest::{md5_many, Md5};
use crate::error::ConnError;
use crate::fs::{Partial, Staged};
pub use crate::meta::{apply_meta, MODE_MASK};
use crate::protocol::{Common, Entry, EntryKind, Md5Hex};
use crate::transfer::hash_prefix;
use std::path::{Component, Path, PathBuf};
use tokio::io::AsyncWrite;

/// How deep a walk descends, on either side; deeper directories are left
/// out with a warning rather than risking the stack (or a descriptor per
/// level) on a hostile layout.
pub const MAX_DEPTH: usize = 256;

/// Entries per batch of a manifest sent while the walk goes on: about
/// 30 KB of frames, one write each.
pub const BATCH: usize = 256;

/// Files of a tree up to this size are read whole, hashed many at once
/// and written by the tree writer's threads, instead of streamed through
/// a pipeline of threads of their own: /usr/include's 330 files over
/// 64 KiB (38 MB) took 0.32-0.34 s streamed, 1 ms each, a third of the
/// whole tree's time. Above this, a file is worth resuming.
pub const WHOLE_MAX: u64 = 1024 * 1024;

/// Batches a walk may run ahead of the socket.
pub const BATCHES_AHEAD: usize = 8;

/// Entries a manifest may hold, on either side: bounds the memory for one
/// tree (a few hundred bytes each) while allowing trees far larger than
/// /usr/include's 8,000 files.
pub const MAX_ENTRIES: usize = 1_000_000;

/// Bytes a manifest may make the receiving side hold, per connection:
/// names and link targets (a name is held twice, as a key and in its
/// entry) plus a fixed cost per entry (`ENTRY_COST`). 20,000 entries
/// with 4 KB names took a server from 5 to 160 MB before there was a cap.
pub const MANIFEST_BYTES_MAX: usize = 64 << 20;

/// What one entry costs besides its text: the entry and its map slot.
const ENTRY_COST: usize = 128;

/// What a peer that sends more than [`MANIFEST_BYTES_MAX`] is told.
pub const MANIFEST_LIMIT: &str = "a manifest of at most 64 MiB and a million entries";

/// Counts what a manifest being received costs, against the caps.
#[derive(Debug, Default)]
pub struct ManifestBudget {
    /// Bytes counted so far.
    bytes: usize,
    /// Entries counted so far.
    entries: usize,
    /// Notes (items left out, told to be printed) counted so far.
    notes: usize,
}

impl ManifestBudget {
    /// Counts a note of the manifest (an item the sender left out, with
    /// its reason): only printed, not held, but a peer may not send them
    /// forever; false once over the byte cap or a million notes.
    pub fn admit_note(&mut self, message: &str) -> bool {
        self.notes += 1;
        self.bytes += message.len();
        self.bytes <= MANIFEST_BYTES_MAX && self.notes <= MAX_ENTRIES
    }

    /// Counts `e`, which will be held; false once the manifest is over
    /// either cap.
    pub fn admit(&mut self, e: &TreeEntry) -> bool {
        self.entries += 1;
        self.bytes += ENTRY_COST + 2 * e.rel.len() + e.target.as_ref().map_or(0, String::len);
        self.bytes <= MANIFEST_BYTES_MAX && self.entries <= MAX_ENTRIES
    }
}

/// Partials a tree transfer holds open (locked) to resume; beyond this,
/// files start over. Each holds a file descriptor until its file comes.
pub const MAX_RESUMABLE: usize = 64;

/// What a tree transfer did, for its summary line and exit code.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TreeReport {
    /// Files sent and committed.
    pub sent: u64,
    /// Files skipped because the destination already had them, identical.
    pub skipped: u64,
    /// Files that failed (each reported on stderr).
    pub failed: u64,
    /// Body bytes moved.
    pub bytes: u64,
}

/// A partial of a large file of a tree, kept to be resumed: locked,
/// positioned after the bytes it holds, with their MD5 ready to continue.
pub struct Resumable {
    /// The partial's guard, to commit it.
    pub staged: Staged,
    /// The partial, open for writing after its `held` bytes.
    pub file: std::fs::File,
    /// Bytes it holds.
    pub held: u64,
    /// MD5 of those bytes.
    pub prefix: Md5,
}

impl Resumable {
    /// The partial of a file of `size` bytes, if it can be resumed: it
    /// holds some of the bytes but not all (a longer one is no prefix).
    pub fn check(partial: Partial, size: u64) -> Option<Resumable> {
        let (staged, mut file, held) = partial;
        if held == 0 || held >= size {
            return None;
        }
        let prefix = hash_prefix(&mut file, held).ok()?;
        Some(Resumable { staged, file, held, prefix })
    }

    /// Gives the partial up to start over: emptied, at offset 0.
    pub fn restart(self) -> std::io::Result<(Staged, std::fs::File)> {
        let Resumable { staged, mut file, .. } = self;
        file.set_len(0)?;
        std::io::Seek::rewind(&mut file)?;
        Ok((staged, file))
    }
}

/// Threads that hash the files of a re-run side by side: while one side
/// compares, the other waits for its answer, so both cores are free.
const HASHERS: usize = 2;

/// Fewer items than this are not worth starting threads for: starting and
/// joining two costs about 80 µs here (2,000 rounds), the time to open and
/// hash three /usr/include files of average size (14 KiB).
const PAR_MIN: usize = 16;

/// `f` applied to every item, on two threads taking the next item
/// as each finishes (file sizes vary); the results in the items' order.
pub fn par_map<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    if items.len() < PAR_MIN {
        return items.into_iter().map(f).collect();
    }
    let slots: Vec<Mutex<(Option<T>, Option<R>)>> =
        items.into_iter().map(|t| Mutex::new((Some(t), None))).collect();
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..HASHERS {
            s.spawn(|| {
                while let Some(slot) = slots.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let item = slot.lock().expect("no panics while holding it").0.take();
                    let done = item.map(&f);
                    slot.lock().expect("no panics while holding it").1 = done;
                }
            });
        }
    });
    slots
        .into_iter()
        .map(|m| m.into_inner().expect("no panics while holding it").1.expect("every item is done"))
        .collect()
}

/// Items hashed by one thread at a time in [`par_hash`]: enough bodies for
/// [`md5_many`](crate::digest::md5_many) to keep its lanes busy (see
/// [`HashBatch`](crate::transfer::HashBatch)).
const HASH_CHUNK: usize = 128;

/// Bytes of small bodies a [`par_hash`] thread holds before hashing them.
const HASH_CHUNK_BYTES: usize = 2 << 20;

/// The MD5 of a file for each item, many computed at once. `open` gives an
/// item's file, positioned at its start, and how many bytes of it to hash
/// (fewer there is an error), or `None` when there is nothing to hash; it
/// may note what it found in the item. Files of up to [`WHOLE_MAX`] bytes
/// are read whole and hashed together, larger ones streamed, on two
/// threads taking the next chunk of items as each finishes. Results in
/// the items' order.
pub fn par_hash<T: Send>(
    items: Vec<T>,
    open: impl Fn(&mut T) -> Option<std::io::Result<(std::fs::File, u64)>> + Sync,
) -> Vec<(T, Option<std::io::Result<Md5Hex>>)> {
    let mut chunks = Vec::new();
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        chunks.push(items.by_ref().take(HASH_CHUNK).collect::<Vec<_>>());
    }
    par_map(chunks, |chunk| hash_chunk(chunk, &open)).into_iter().flatten().collect()
}

/// [`par_hash`] for one chunk, on one thread.
fn hash_chunk<T>(
    chunk: Vec<T>,
    open: impl Fn(&mut T) -> Option<std::io::Result<(std::fs::File, u64)>>,
) -> Vec<(T, Option<std::io::Result<Md5Hex>>)> {
    use std::io::Read;
    let mut out: Vec<(T, Option<std::io::Result<Md5Hex>>)> = Vec::with_capacity(chunk.len());
    // Small bodies read, by their place in `out`.
    let mut small: Vec<(usize, Vec<u8>)> = Vec::new();
    let mut held = 0;
    let hash = |small: &mut Vec<(usize, Vec<u8>)>, out: &mut Vec<(T, Option<_>)>| {
        let bodies: Vec<&[u8]> = small.iter().map(|(_, body)| body.as_slice()).collect();
        for (md5, (at, _)) in md5_many(&bodies).into_iter().zip(small.iter()) {
            out[*at].1 = Some(Ok(md5));
        }
        small.clear();
    };
    for mut item in chunk {
        let result = match open(&mut item) {
            None => None,
            Some(Err(e)) => Some(Err(e)),
            Some(Ok((mut file, len))) if len <= WHOLE_MAX => {
                let mut body = vec![0; len as usize];
                match file.read_exact(&mut body) {
                    Ok(()) => {
                        held += body.len();
                        small.push((out.len(), body));
                        // Filled in once hashed.
                        None
                    }
                    Err(e) => Some(Err(e)),
                }
            }
            Some(Ok((mut file, len))) => Some(hash_prefix(&mut file, len).map(Md5::finish)),
        };
        out.push((item, result));
        if held >= HASH_CHUNK_BYTES {
            hash(&mut small, &mut out);
            held = 0;
        }
    }
    hash(&mut small, &mut out);
    out
}

/// One item of a tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeEntry {
    /// Path relative to the tree's top, `/`-separated.
    pub rel: String,
    /// What it is: `File`, `Dir` or `Symlink`.
    pub kind: EntryKind,
    /// Size in bytes (files).
    pub size: u64,
    /// Permission bits, masked with [`MODE_MASK`].
    pub mode: u32,
    /// Modification time, seconds since the Unix epoch.
    pub mtime: i64,
    /// Where a symlink points, as stored in it.
    pub target: Option<String>,
}

impl TreeEntry {
    /// The `entry` message describing this item.
    pub fn to_entry(&self) -> Entry {
        Entry {
            size: Some(self.size),
            mode: Some(self.mode),
            mtime: Some(self.mtime),
            target: self.target.clone(),
            ..Entry::new(&self.rel, self.kind)
        }
    }

    /// The item an `entry` message describes; `None` if it is not one.
    pub fn from_entry(h: Entry) -> Option<TreeEntry> {
        let kind = h.kind;
        if !matches!(kind, EntryKind::File | EntryKind::Dir | EntryKind::Symlink) {
            return None;
        }
        Some(TreeEntry {
            rel: h.filename,
            kind,
            size: h.size.unwrap_or(0),
            mode: h.mode.unwrap_or(0o644) & MODE_MASK,
            mtime: h.mtime.unwrap_or(0),
            target: h.target,
        })
    }
}

/// What a local walk left out, and why.
#[derive(Debug, Default)]
pub struct LeftOut {
    /// Left out by the rules (special files, symlinks leading out of the
    /// tree, names that are not UTF-8, too deep): warnings, as (path, why).
    pub skipped: Vec<(String, String)>,
    /// Could not be read (a subdirectory without permission, say): errors,
    /// counted as failed files, as rsync counts them in its exit code 23;
    /// as (path, why).
    pub unreadable: Vec<(String, String)>,
}

/// Walks a local directory. Returns the manifest and what was left out.
/// Only an unreadable `top` is an error: anything below it that cannot be
/// read is left out and reported, and an entry that vanishes during the
/// walk is simply not listed.
pub fn walk_local(top: &Path) -> std::io::Result<(Vec<TreeEntry>, LeftOut)> {
    let mut entries = Vec::new();
    let dir = cap_std::fs::Dir::open_ambient_dir(top, cap_std::ambient_authority())?;
    let left = walk(&dir, &mut |e| entries.push(e))?;
    Ok((entries, left))
}

/// [`walk_local`], handing the manifest over in batches of `batch`
/// entries as the walk goes, so they can be sent while it goes on.
/// Returns what was left out.
pub fn walk_local_in_batches(
    top: &Path,
    batch: usize,
    emit: impl FnMut(Vec<TreeEntry>),
) -> std::io::Result<LeftOut> {
    let dir = cap_std::fs::Dir::open_ambient_dir(top, cap_std::ambient_authority())?;
    in_batches(batch, emit, |out| walk(&dir, out))
}

/// Walks the directory `p` of `root` into a manifest (see [`walk`]),
/// handing the entries to `emit` in batches of `batch` as it goes. Fails
/// before emitting anything if `p` is not a directory that can be read.
/// Returns what was left out, and the permission bits and modification
/// time of `p` itself.
pub fn walk_root_in_batches(
    root: &crate::fs::Root,
    p: &crate::fs::RemotePath,
    batch: usize,
    emit: impl FnMut(Vec<TreeEntry>),
) -> std::io::Result<(LeftOut, (u32, i64))> {
    use cap_std::fs::{MetadataExt, PermissionsExt};
    let dir = root.open_dir(p)?;
    let meta = dir.dir_metadata()?;
    let top = (meta.permissions().mode() & MODE_MASK, meta.mtime());
    let left = in_batches(batch, emit, |out| walk(&dir, out))?;
    Ok((left, top))
}

/// Walks the tree beneath `dir`, the one walk both sides use (the client
/// for put -r, the server for get -r): the same rules, depth and words
/// whichever side sends. Only an unreadable `dir` is an error.
pub fn walk(dir: &cap_std::fs::Dir, out: &mut dyn FnMut(TreeEntry)) -> std::io::Result<LeftOut> {
    let mut left = LeftOut::default();
    walk_dir(dir, "", 0, out, &mut left)?;
    Ok(left)
}

/// Runs `walk` on a blocking thread and sends what it finds as `entry`
/// frames, batch by batch as it goes, so the peer can start on them (make
/// directories) while the walk goes on. `walk` hands its batches to the
/// function it is given. Returns the entries sent and the walk's result.
pub async fn send_walk<W, M, T>(
    writer: &mut FrameWriter<W, M>,
    walk: impl FnOnce(&mut dyn FnMut(Vec<TreeEntry>)) -> std::io::Result<T> + Send + 'static,
) -> Result<(Vec<TreeEntry>, std::io::Result<T>), ConnError>
where
    W: AsyncWrite + Unpin,
    M: Common,
    T: Send + 'static,
{
    let (batches, mut walked) = tokio::sync::mpsc::channel(BATCHES_AHEAD);
    let walker = tokio::task::spawn_blocking(move || {
        walk(&mut |batch| {
            // The receiving side only goes away on a connection error,
            // which it reports.
            let _ = batches.blocking_send(batch);
        })
    });
    let mut entries = Vec::new();
    while let Some(batch) = walked.recv().await {
        for e in &batch {
            writer.queue(&M::from(e.to_entry()), &[]).await?;
        }
        writer.flush().await?;
        entries.extend(batch);
    }
    Ok((entries, walker.await.expect("walking does not panic")))
}

/// Runs `walk`, which reports each entry it finds to the function it is
/// given, and hands the entries to `emit` in batches of `batch`.
pub fn in_batches<T>(
    batch: usize,
    mut emit: impl FnMut(Vec<TreeEntry>),
    walk: impl FnOnce(&mut dyn FnMut(TreeEntry)) -> std::io::Result<T>,
) -> std::io::Result<T> {
    let mut pending = Vec::with_capacity(batch);
    let found = walk(&mut |e| {
        pending.push(e);
        if pending.len() >= batch {
            emit(std::mem::replace(&mut pending, Vec::with_capacity(batch)));
        }
    })?;
    if !pending.is_empty() {
        emit(pending);
    }
    Ok(found)
}

fn walk_dir(
    dir: &cap_std::fs::Dir,
    prefix: &str,
    depth: usize,
    out: &mut dyn FnMut(TreeEntry),
    left: &mut LeftOut,
) -> std::io::Result<()> {
    use crate::error::plain_io;
    use cap_std::fs::{MetadataExt, PermissionsExt};
    let listed = dir.entries().and_then(|d| d.collect::<Result<Vec<_>, _>>());
    let mut names = match listed {
        Ok(names) => names,
        Err(e) if depth == 0 => return Err(e),
        Err(e) => {
            left.unreadable
                .push((prefix.to_string(), format!("cannot read this directory: {}", plain_io(&e))));
            return Ok(());
        }
    };
    names.sort_by_key(|e| e.file_name());
    for e in names {
        let name = e.file_name();
        let Some(name) = name.to_str().map(str::to_string) else {
            let shown = format!("{prefix}/{}", name.to_string_lossy());
            left.skipped.push((shown, "name is not UTF-8, skipped".to_string()));
            continue;
        };
        if name.ends_with(crate::fs::TEMP_SUFFIX) {
            continue;
        }
        let rel = if prefix.is_empty() { name.clone() } else { format!("{prefix}/{name}") };
        // Relative to the open directory (fstatat): no path walk per entry.
        let meta = match e.metadata() {
            Ok(meta) => meta,
            // Deleted since the directory was listed: not part of the tree.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                left.unreadable.push((rel, plain_io(&e)));
                continue;
            }
        };
        let ft = meta.file_type();
        let mut entry = TreeEntry {
            rel: rel.clone(),
            kind: EntryKind::File,
            size: 0,
            mode: meta.permissions().mode() & MODE_MASK,
            mtime: meta.mtime(),
            target: None,
        };
        if ft.is_dir() {
            if depth >= MAX_DEPTH {
                left.skipped.push((rel, format!("deeper than {MAX_DEPTH} levels, skipped")));
                continue;
            }
            entry.kind = EntryKind::Dir;
            out(entry);
            match e.open_dir() {
                Ok(sub) => walk_dir(&sub, &rel, depth + 1, out, left)?,
                Err(err) => {
                    left.unreadable.push((rel, format!("cannot read this directory: {}", plain_io(&err))))
                }
            }
        } else if ft.is_file() {
            entry.size = meta.len();
            out(entry);
        } else if ft.is_symlink() {
            let target = match dir.read_link_contents(&name) {
                Ok(t) => t,
                Err(e) => {
                    left.unreadable.push((rel, plain_io(&e)));
                    continue;
                }
            };
            match target.to_str() {
                Some(t) if link_stays_inside(&rel, t) => {
                    entry.kind = EntryKind::Symlink;
                    entry.target = Some(t.to_string());
                    out(entry);
                }
                _ => {
                    let why = format!("symlink to {} leads out of the tree, skipped", target.display());
                    left.skipped.push((rel, why));
                }
            }
        } else {
            left.skipped.push((rel, "special file, skipped".to_string()));
        }
    }
    Ok(())
}

/// Whether a symlink at `rel` (inside a tree) pointing to `target` resolves
/// inside the same tree, judged on the names alone: relative, and never
/// climbing above the tree's top.
pub fn link_stays_inside(rel: &str, target: &str) -> bool {
    let target = Path::new(target);
    if target.is_absolute() || target.as_os_str().is_empty() {
        return false;
    }
    // Depth of the link's directory below the top.
    let mut depth = rel.split('/').count() as i64 - 1;
    for c in target.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

/// `top` joined with a `/`-separated relative path.
pub fn local_path(top: &Path, rel: &str) -> PathBuf {
    rel.split('/').fold(top.to_path_buf(), |p, part| p.join(part))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_and_entries_of_a_manifest_are_counted_apart() {
        let mut budget = ManifestBudget::default();
        for _ in 0..MAX_ENTRIES {
            assert!(budget.admit_note(""));
        }
        assert!(!budget.admit_note(""), "a million notes at most");
        let e = TreeEntry {
            rel: "f".into(),
            kind: EntryKind::File,
            size: 1,
            mode: 0o644,
            mtime: 0,
            target: None,
        };
        assert!(budget.admit(&e), "notes do not use up the entries' allowance");
    }

    #[test]
    fn par_map_keeps_the_order_and_does_every_item_once() {
        for n in [0, 1, PAR_MIN - 1, PAR_MIN, 1000] {
            let calls = std::sync::atomic::AtomicUsize::new(0);
            let out = par_map((0..n).collect(), |i: usize| {
                calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                i * 2
            });
            assert_eq!(out, (0..n).map(|i| i * 2).collect::<Vec<_>>());
            assert_eq!(calls.into_inner(), n);
        }
    }

    #[test]
    fn par_hash_hashes_each_file_in_order_whatever_its_size() {
        let dir = tempfile::tempdir().unwrap();
        // Sizes around the whole-read limit, empty ones, and enough items
        // for several chunks and a flush on bytes within one.
        let mut sizes: Vec<u64> = (0..300).map(|i| (i * 7919) % 40_000).collect();
        sizes.extend([0, WHOLE_MAX, WHOLE_MAX + 1, 3 << 20]);
        sizes.extend([WHOLE_MAX; 3]);
        let mut items = Vec::new();
        for (i, &size) in sizes.iter().enumerate() {
            let body: Vec<u8> = (0..size).map(|b| (b as usize * 31 + i) as u8).collect();
            let path = dir.path().join(format!("f{i}"));
            std::fs::write(&path, &body).unwrap();
            let mut md5 = Md5::new();
            md5.update(&body);
            items.push((path, size, Some(md5.finish())));
        }
        // Nothing to hash; a file shorter than asked; a missing one.
        items.push((dir.path().join("f0"), u64::MAX, None));
        items.push((dir.path().join("f1"), sizes[1] + 1, None));
        items.push((dir.path().join("missing"), 1, None));
        let n = items.len();
        let out = par_hash(items, |(path, size, _)| {
            (*size != u64::MAX).then(|| std::fs::File::open(&*path).map(|f| (f, *size)))
        });
        assert_eq!(out.len(), n);
        for ((path, _, want), got) in &out[..n - 3] {
            assert_eq!(got.as_ref().map(|r| r.as_ref().ok()), Some(want.as_ref()), "{}", path.display());
        }
        assert!(out[n - 3].1.is_none(), "nothing to hash");
        let short = out[n - 2].1.as_ref().unwrap().as_ref().unwrap_err();
        assert_eq!(short.kind(), std::io::ErrorKind::UnexpectedEof);
        assert!(out[n - 1].1.as_ref().unwrap().is_err(), "missing file");
    }

    #[test]
    fn links_inside_the_tree_are_told_from_links_out_of_it() {
        assert!(link_stays_inside("a", "b"));
        assert!(link_stays_inside("d/a", "../b"));
        assert!(link_stays_inside("d/e/a", "../../b/c"));
        assert!(link_stays_inside("a", "./b"));
        assert!(!link_stays_inside("a", "../b"));
        assert!(!link_stays_inside("d/a", "../../b"));
        assert!(!link_stays_inside("a", "/etc/passwd"));
        assert!(!link_stays_inside("a", "b/../../c"));
        assert!(!link_stays_inside("a", ""));
    }

    #[test]
    fn a_walk_in_batches_is_the_same_walk() {
        let t = tempfile::tempdir().unwrap();
        for d in 0..3 {
            std::fs::create_dir_all(t.path().join(format!("d{d}/sub"))).unwrap();
            for f in 0..4 {
                std::fs::write(t.path().join(format!("d{d}/sub/f{f}")), b"x").unwrap();
            }
        }
        let (whole, _) = walk_local(t.path()).unwrap();
        let mut batches = Vec::new();
        walk_local_in_batches(t.path(), 5, |b| batches.push(b)).unwrap();
        assert!(batches.iter().all(|b| !b.is_empty() && b.len() <= 5), "{:?}", batches.len());
        assert_eq!(batches.concat(), whole);
        assert_eq!(whole.len(), 3 * (2 + 4));
    }

    #[test]
    fn walk_lists_dirs_first_and_skips_what_it_must() {
        let t = tempfile::tempdir().unwrap();
        let top = t.path();
        std::fs::create_dir_all(top.join("d/e")).unwrap();
        std::fs::write(top.join("d/f"), b"abc").unwrap();
        std::os::unix::fs::symlink("f", top.join("d/in")).unwrap();
        std::os::unix::fs::symlink("/etc", top.join("out")).unwrap();
        std::os::unix::fs::symlink("loop", top.join("loop")).unwrap();
        assert!(std::process::Command::new("mkfifo").arg(top.join("fifo")).status().unwrap().success());
        let (entries, left) = walk_local(top).unwrap();
        let warnings = left.skipped;
        let rels: Vec<_> = entries.iter().map(|e| (e.rel.as_str(), e.kind)).collect();
        assert_eq!(
            rels,
            [
                ("d", EntryKind::Dir),
                ("d/e", EntryKind::Dir),
                ("d/f", EntryKind::File),
                ("d/in", EntryKind::Symlink),
                ("loop", EntryKind::Symlink),
            ]
        );
        assert_eq!(entries[2].size, 3);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings.iter().any(|(rel, why)| rel == "fifo" && why == "special file, skipped"));
        assert!(warnings
            .iter()
            .any(|(rel, why)| rel == "out" && why.starts_with("symlink to /etc leads out")));
    }
}
