//! The one walk of a tree, over a directory handle, for whichever side
//! sends: into a manifest, handed over in batches as it goes.

use super::{link_fault, LinkFault, TreeEntry, BATCHES_AHEAD, MAX_DEPTH, MODE_MASK};
use crate::connection::FrameWriter;
use crate::error::ConnError;
use crate::protocol::{Common, EntryKind};
use std::path::Path;
use tokio::io::AsyncWrite;

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
    root: &crate::local::Root,
    p: &crate::local::RemotePath,
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
        if name.ends_with(crate::local::TEMP_SUFFIX) {
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
            // A name that is no UTF-8 cannot be sent as a target.
            let kept = target.to_str().ok_or(LinkFault::LeadsOut);
            match kept.and_then(|t| link_fault(&rel, t).map_or(Ok(t), Err)) {
                Ok(t) => {
                    entry.kind = EntryKind::Symlink;
                    entry.target = Some(t.to_string());
                    out(entry);
                }
                Err(fault) => left.skipped.push((rel, fault.skipped(target.display()))),
            }
        } else {
            left.skipped.push((rel, "special file, skipped".to_string()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
