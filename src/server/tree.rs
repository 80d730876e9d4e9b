//! `put_tree` and `get_tree`: whole directory trees in one pipelined
//! exchange. Every file carries its own header and MD5 and is verified and
//! committed on its own; one failing file is reported and the rest go on.

use super::handler::{expect_done, refuse, Outcome};
use super::{blocking, Shared};
use crate::connection::Connection;
use crate::digest::Md5;
use crate::error::{ConnError, RequestError};
use crate::fs::{CommitError, Opened, RemotePath, Root, Staged, Stamp};
use crate::protocol::{EntryKind, ErrorCode, Header, Op};
use crate::transfer::{hash_prefix, read_whole, receive_into, send_file, CopyError, Digest, HashBatch};
use crate::tree::{self, Resumable, TreeEntry, MAX_RESUMABLE, WHOLE_MAX};
use crate::tree_writer::{SmallFile, TreeWriter, WriteError, Written};
use indicatif::ProgressBar;
use std::collections::HashMap;
use std::sync::Arc;

fn bad_path(e: impl std::fmt::Display) -> RequestError {
    RequestError::new(ErrorCode::BadPath, e.to_string())
}

/// An `error` frame about one file of a tree.
fn file_error(rel: &str, err: &RequestError) -> Header {
    Header::error(err.code, err.message.clone()).with_filename(rel)
}

pub(crate) async fn put_tree(
    conn: &mut Connection,
    shared: &Arc<Shared>,
    req: Header,
) -> Result<Outcome, ConnError> {
    let mut outcome = Outcome::new(&req.filename);
    let top = match RemotePath::parse(&req.filename) {
        Ok(p) => p,
        Err(e) => return refuse(conn, outcome, bad_path(e)).await,
    };
    let made = {
        let top = top.clone();
        blocking(shared, move |root| Ok::<_, std::io::Error>((root.make_dir(&top)?, root.handle()?))).await
    };
    let (fresh, base) = match made {
        Ok(made) => made,
        Err(e) => return refuse(conn, outcome, RequestError::from_io(&e, &top.to_string())).await,
    };
    conn.writer.write_header(&Header::new(Op::Ready).with_filename(&req.filename)).await?;

    // The manifest: make directories and symlinks now, note the files, and
    // tell the client which files we already have (with their MD5 when the
    // size matches, so identical ones need not be sent). Entries are
    // applied in batches, whenever no more are waiting, so the work here
    // overlaps the client's walk of its tree.
    let mut manifest = Manifest::new(fresh);
    let (mut batch, mut count) = (Vec::new(), 0usize);
    // The top's own mode and time, from the manifest's `end`.
    let top_meta = loop {
        if !batch.is_empty() && !conn.reader.header_buffered() {
            manifest = apply(shared, manifest, &top, std::mem::take(&mut batch), req.force).await;
        }
        let h = conn.reader.expect_header().await?;
        conn.reader.skip_body(h.total_size).await?;
        match h.op {
            Op::Entry if count < tree::MAX_ENTRIES => {
                count += 1;
                batch.extend(TreeEntry::from_header(&h));
            }
            Op::Entry => {
                return Err(ConnError::Unexpected { got: h.op, expected: "at most a million entries" })
            }
            Op::End => break h.mode.zip(h.mtime),
            other => return Err(ConnError::Unexpected { got: other, expected: "entry or end" }),
        }
    };
    let force = req.force;
    let Manifest { replies, files, dirs, mut resumable, .. } =
        apply(shared, manifest, &top, batch, force).await;
    for r in &replies {
        conn.writer.queue(r, &[]).await?;
    }
    conn.writer.write_header(&Header::new(Op::End)).await?;

    // The files, one after another: small ones go to the tree writer's
    // thread, larger ones are streamed here. Replies are queued while more
    // frames are already here, and sent before waiting on the client.
    let mut small = match TreeWriter::start(base, force) {
        Ok(w) => w,
        Err(e) => return Err(ConnError::Io(e)),
    };
    loop {
        for w in small.ready() {
            outcome.bytes += if w.result.is_ok() { w.size } else { 0 };
            conn.writer.queue(&small_reply(w), &[]).await?;
        }
        if !conn.reader.header_buffered() {
            conn.writer.flush().await?;
        }
        let h = conn.reader.expect_header().await?;
        match h.op {
            Op::End => break,
            Op::Data => {}
            other => return Err(ConnError::Unexpected { got: other, expected: "data or end" }),
        }
        let meta = files.get(&h.filename).cloned();
        if h.total_size > WHOLE_MAX || h.offset.is_some() {
            // The threads write what waits while this one streams.
            small.flush().await;
            let partial = resumable.remove(&h.filename);
            let reply = receive_one(conn, shared, &top, &h, meta, partial, force).await?;
            if reply.op == Op::Ok {
                outcome.bytes += h.total_size;
            }
            conn.writer.queue(&reply, &[]).await?;
            continue;
        }
        let body = conn.reader.read_small_body(h.total_size, WHOLE_MAX as usize).await?;
        let sent = expect_done(conn).await?;
        match (meta, top.join(&h.filename)) {
            (Some(meta), Ok(path)) => {
                let meta = (meta.mode, meta.mtime);
                small.write(SmallFile { rel: h.filename, path, body, sent, meta }).await;
            }
            (None, _) => {
                let msg = format!("{} was not in the manifest", h.filename);
                let err = RequestError::new(ErrorCode::BadRequest, msg);
                conn.writer.queue(&file_error(&h.filename, &err), &[]).await?;
            }
            (_, Err(e)) => conn.writer.queue(&file_error(&h.filename, &bad_path(e)), &[]).await?,
        }
    }
    for w in small.finish().await {
        outcome.bytes += if w.result.is_ok() { w.size } else { 0 };
        conn.writer.queue(&small_reply(w), &[]).await?;
    }
    // Directory modes and times last, deepest first: writing into a
    // directory changes its time. Then, if asked, everything to disk
    // before the final `end` says the tree is done.
    let durable = req.fsync || shared.config.fsync;
    let top_meta = top_meta.filter(|_| !top.is_root()).map(|(mode, mtime)| (top.clone(), mode, mtime));
    let synced = blocking(shared, move |root| {
        for (path, mode, mtime) in dirs.iter().rev().chain(&top_meta) {
            let _ = root.set_dir_meta(path, *mode, *mtime);
        }
        match durable {
            true => root.handle().and_then(|dir| crate::fs::sync_filesystem(&dir)),
            false => Ok(()),
        }
    })
    .await;
    if let Err(e) = synced {
        // Counted by the client as a failure: the tree is not known to be on disk.
        let err = RequestError::from_io(&e, &top.to_string());
        conn.writer.queue(&file_error(&req.filename, &err), &[]).await?;
    }
    conn.writer.write_header(&Header::new(Op::End)).await?;
    Ok(outcome)
}

/// A directory of the tree, with the mode and time to give it at the end.
type DirMeta = (RemotePath, u32, i64);

/// What a tree's manifest has done and told so far.
struct Manifest {
    /// `have` and `error` frames for the client.
    replies: Vec<Header>,
    /// The files expected, by name.
    files: HashMap<String, TreeEntry>,
    /// The directories, to give their modes and times at the end.
    dirs: Vec<DirMeta>,
    /// Directories (relative to the top) made just now: files in them
    /// cannot exist yet, so looking each up would only cost time.
    made: std::collections::HashSet<String>,
    /// Partials offered to the client for resuming (a `partial` frame
    /// each), held locked until their file comes.
    resumable: HashMap<String, Resumable>,
}

impl Manifest {
    /// `fresh`: the top was made just now, so it holds nothing.
    fn new(fresh: bool) -> Manifest {
        let mut made = std::collections::HashSet::new();
        if fresh {
            made.insert(String::new());
        }
        Manifest {
            replies: Vec::new(),
            files: HashMap::new(),
            dirs: Vec::new(),
            made,
            resumable: HashMap::new(),
        }
    }

    /// Creates the directories and symlinks of `batch`, notes its files,
    /// and adds a `have` frame for each that exists, a `partial` frame for
    /// each that an interrupted run left part of, or an `error` frame.
    fn apply(&mut self, root: &Root, top: &RemotePath, batch: Vec<TreeEntry>, force: bool) {
        let Manifest { replies, files, dirs, made, resumable } = self;
        // Files that may exist already, looked up (and hashed) together.
        let mut lookups = Vec::new();
        for entry in batch {
            let path = match top.join(&entry.rel) {
                Ok(p) => p,
                Err(e) => {
                    replies.push(file_error(&entry.rel, &bad_path(e)));
                    continue;
                }
            };
            let (shown, rel) = (path.to_string(), entry.rel.clone());
            let result = match entry.kind {
                EntryKind::Dir => root.make_dir(&path).map(|new| {
                    if new {
                        made.insert(entry.rel.clone());
                    }
                    dirs.push((path, entry.mode, entry.mtime));
                }),
                EntryKind::Symlink => match entry.target.as_deref() {
                    Some(t) if tree::link_stays_inside(&entry.rel, t) => root.symlink(&path, t, force),
                    _ => {
                        let msg = format!("{shown}: symlink leads out of the tree");
                        replies.push(file_error(&entry.rel, &RequestError::new(ErrorCode::BadPath, msg)));
                        continue;
                    }
                },
                EntryKind::File => {
                    let parent = entry.rel.rsplit_once('/').map_or("", |(dir, _)| dir);
                    if made.contains(parent) {
                        files.insert(entry.rel.clone(), entry);
                        continue;
                    }
                    lookups.push((path, entry));
                    continue;
                }
                EntryKind::Other => continue,
            };
            if let Err(e) = result {
                let err = if e.kind() == std::io::ErrorKind::AlreadyExists {
                    RequestError::new(
                        ErrorCode::Exists,
                        format!("remote file exists: {shown} (use --force to replace it)"),
                    )
                } else {
                    RequestError::from_io(&e, &shown)
                };
                replies.push(file_error(&rel, &err));
            }
        }
        let lookups = lookups.into_iter().map(|(path, entry)| (path, entry, None)).collect();
        let found = tree::par_hash(lookups, |(path, entry, have)| existing(root, path, entry, have));
        for ((path, entry, have), ours) in found {
            if let Some(mut have) = have {
                have.md5 = ours.and_then(Result::ok);
                replies.push(have);
            } else if let Some(r) = resumable_partial(root, &path, &entry, resumable.len()) {
                let mut offer = Header::new(Op::Partial).with_filename(&entry.rel);
                offer.offset = Some(r.held);
                offer.md5 = Some(r.prefix.clone().finish());
                replies.push(offer);
                resumable.insert(entry.rel.clone(), r);
            }
            files.insert(entry.rel.clone(), entry);
        }
    }
}

/// Applies a batch of entries on the blocking pool.
async fn apply(
    shared: &Arc<Shared>,
    mut manifest: Manifest,
    top: &RemotePath,
    batch: Vec<TreeEntry>,
    force: bool,
) -> Manifest {
    let top = top.clone();
    blocking(shared, move |root| {
        manifest.apply(root, &top, batch, force);
        manifest
    })
    .await
}

/// Sets `have` to a `have` frame if a regular file is already at `path`,
/// with its size; returns it to hash when the size is the one coming (its
/// MD5 goes in the frame).
fn existing(
    root: &Root,
    path: &RemotePath,
    entry: &TreeEntry,
    have: &mut Option<Header>,
) -> Option<std::io::Result<(std::fs::File, u64)>> {
    let Opened { file, size, .. } = root.open_read(path).ok()?;
    let mut frame = Header::new(Op::Have).with_filename(&entry.rel);
    frame.size = Some(size);
    *have = Some(frame);
    (size == entry.size).then_some(Ok((file, size)))
}

/// The partial an interrupted run left for a large file of the tree, if it
/// can be resumed and fewer than [`MAX_RESUMABLE`] are held already. One
/// left for a file now sent whole (it shrank) is removed: nothing would
/// ever resume or replace it.
fn resumable_partial(root: &Root, path: &RemotePath, entry: &TreeEntry, held: usize) -> Option<Resumable> {
    if entry.size > WHOLE_MAX && held >= MAX_RESUMABLE {
        return None;
    }
    let partial = root.existing_partial(path).ok()??;
    if entry.size <= WHOLE_MAX {
        partial.0.discard();
        return None;
    }
    Resumable::check(partial, entry.size)
}

/// The reply for a small file the tree writer is done with.
fn small_reply(w: Written) -> Header {
    let shown = w.path.to_string();
    let err = match w.result {
        Ok(md5) => return Header::new(Op::Ok).with_filename(&w.rel).with_md5(md5),
        Err(WriteError::Mismatch { sent, received }) => {
            let sent = sent.map_or_else(|| "nothing".to_string(), |m| m.to_string());
            let msg =
                format!("md5 mismatch for {shown} (sent {sent}, received {received}): nothing was saved");
            RequestError::new(ErrorCode::Md5Mismatch, msg)
        }
        Err(WriteError::Exists) => RequestError::new(
            ErrorCode::Exists,
            format!("remote file exists: {shown} (use --force to replace it)"),
        ),
        Err(WriteError::Io(e)) => RequestError::from_io(&e, &shown),
    };
    file_error(&w.rel, &err)
}

/// Receives one file of a tree: its `data` body and `done` frame, from
/// `data.offset` on in `partial` if the client resumes it. Returns the
/// reply for it (`ok` or `error`); only connection failures are errors.
async fn receive_one(
    conn: &mut Connection,
    shared: &Arc<Shared>,
    top: &RemotePath,
    data: &Header,
    meta: Option<TreeEntry>,
    partial: Option<Resumable>,
    force: bool,
) -> Result<Header, ConnError> {
    let rel = data.filename.clone();
    let len = data.total_size;
    let offset = data.offset.unwrap_or(0);
    let staged = match (meta, top.join(&rel)) {
        (Some(meta), Ok(path)) => {
            let shown = path.to_string();
            let size = meta.size;
            let started =
                blocking(shared, move |root| start_file(root, &path, partial, offset, len, size)).await;
            started.map(|(staged, file, md5)| (staged, file, md5, meta, shown))
        }
        (None, _) => Err(RequestError::new(ErrorCode::BadRequest, format!("{rel} was not in the manifest"))),
        (_, Err(e)) => Err(bad_path(e)),
    };
    let (staged, file, md5, meta, shown) = match staged {
        Ok(s) => s,
        Err(err) => {
            conn.reader.skip_body(len).await?;
            expect_done(conn).await?;
            return Ok(file_error(&rel, &err));
        }
    };
    // Keep a handle to set the mode and time once the bytes are in.
    let handle = file.try_clone();
    let copied = receive_into(&mut conn.reader.body(len), len, file, md5, &ProgressBar::hidden()).await;
    let received = match copied {
        Ok(md5) => md5,
        Err(CopyError::Read { .. } | CopyError::Short { .. }) => return Err(ConnError::Truncated("body")),
        Err(CopyError::Write { done, source }) => {
            staged.discard();
            conn.reader.skip_body(len - done).await?;
            expect_done(conn).await?;
            return Ok(file_error(&rel, &RequestError::from_io(&source, &shown)));
        }
    };
    let sent = expect_done(conn).await?;
    if sent.as_ref() != Some(&received) {
        staged.discard();
        let sent = sent.map_or_else(|| "nothing".to_string(), |m| m.to_string());
        let msg = format!("md5 mismatch for {shown} (sent {sent}, received {received}): nothing was saved");
        return Ok(file_error(&rel, &RequestError::new(ErrorCode::Md5Mismatch, msg)));
    }
    let committed = blocking(shared, move |_| {
        if let Ok(h) = handle {
            tree::apply_meta(&h, meta.mode, meta.mtime)?;
        }
        staged.commit(force).map_err(|e| match e {
            CommitError::Exists => std::io::Error::from(std::io::ErrorKind::AlreadyExists),
            CommitError::Io(e) => e,
        })
    })
    .await;
    match committed {
        Ok(()) => Ok(Header::new(Op::Ok).with_filename(&rel).with_md5(received)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let msg = format!("remote file exists: {shown} (use --force to replace it)");
            Ok(file_error(&rel, &RequestError::new(ErrorCode::Exists, msg)))
        }
        Err(e) => Ok(file_error(&rel, &RequestError::from_io(&e, &shown))),
    }
}

pub(crate) async fn get_tree(
    conn: &mut Connection,
    shared: &Arc<Shared>,
    req: Header,
) -> Result<Outcome, ConnError> {
    let mut outcome = Outcome::new(&req.filename);
    let top = match RemotePath::parse(&req.filename) {
        Ok(p) => p,
        Err(e) => return refuse(conn, outcome, bad_path(e)).await,
    };
    // The manifest goes out batch by batch as the walk finds it, so the
    // client makes directories while we are still walking.
    let walker = {
        let (shared, top) = (shared.clone(), top.clone());
        move |emit: &mut dyn FnMut(Vec<TreeEntry>)| shared.root.walk_in_batches(&top, tree::BATCH, emit)
    };
    let (entries, walked) = tree::send_walk(&mut conn.writer, walker).await?;
    let mut end = Header::new(Op::End);
    match walked {
        // The top's own mode and time, for the client to give its copy
        // last (the root's are not the client's business).
        Ok((_warnings, (mode, mtime))) if !top.is_root() => (end.mode, end.mtime) = (Some(mode), Some(mtime)),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && entries.is_empty() => {
            let err = RequestError::new(ErrorCode::NotFound, format!("remote directory not found: {top}"));
            return refuse(conn, outcome, err).await;
        }
        Err(e) => return refuse(conn, outcome, RequestError::from_io(&e, &top.to_string())).await,
    }
    conn.writer.write_header(&end).await?;

    // The client says which files it wants (with its MD5 where it has a
    // copy of the same size); then they stream back to back.
    let mut wants = Vec::new();
    loop {
        let h = conn.reader.expect_header().await?;
        conn.reader.skip_body(h.total_size).await?;
        match h.op {
            // One want per item of the tree at most: more can only be a
            // client trying to make us send the same file over and over.
            Op::Want if wants.len() < entries.len() => wants.push(h),
            Op::Want => {
                return Err(ConnError::Unexpected {
                    got: h.op,
                    expected: "at most one want per item of the tree",
                })
            }
            Op::End => break,
            other => return Err(ConnError::Unexpected { got: other, expected: "want or end" }),
        }
    }
    let meta: HashMap<_, _> = entries.into_iter().map(|e| (e.rel.clone(), e)).collect();
    let identical = identical_to_theirs(shared, &top, &wants).await;
    // Small files read and waiting to be hashed together; sent once they are.
    let mut unhashed = HashBatch::new();
    for want in wants {
        let rel = want.filename.clone();
        let Some(entry) = meta.get(&rel).filter(|e| e.kind == EntryKind::File).cloned() else {
            let err = RequestError::new(ErrorCode::NotFound, format!("{rel} is not a file of the tree"));
            conn.writer.queue(&file_error(&rel, &err), &[]).await?;
            continue;
        };
        if identical.contains(&rel) {
            let mut ok = Header::new(Op::Ok).with_filename(&rel);
            ok.skipped = true;
            conn.writer.queue(&ok, &[]).await?;
            continue;
        }
        outcome.bytes +=
            send_one(conn, shared, &top, (&rel, &entry, &want), req.force, &mut unhashed).await?;
    }
    send_hashed(conn, shared, &mut unhashed).await?;
    conn.writer.write_header(&Header::new(Op::End)).await?;
    Ok(outcome)
}

/// The partial a tree's large file is written into, positioned where the
/// body starts, with the MD5 of what comes before it: the offered
/// `partial` when the client resumes it (`offset` is what it holds, and
/// the body the rest of a file of `size` bytes), else an emptied one.
fn start_file(
    root: &Root,
    path: &RemotePath,
    partial: Option<Resumable>,
    offset: u64,
    len: u64,
    size: u64,
) -> Result<(Staged, std::fs::File, Md5), RequestError> {
    if offset > 0 {
        return match partial {
            Some(r) if r.held == offset && offset.checked_add(len) == Some(size) => {
                Ok((r.staged, r.file, r.prefix))
            }
            other => {
                let held = other.map_or(0, |r| r.held);
                let msg = format!("data for {path} starts at {offset}, but the server offered {held} bytes");
                Err(RequestError::new(ErrorCode::BadRequest, msg))
            }
        };
    }
    let emptied = match partial {
        Some(r) => r.restart(),
        // A partial left by an interrupted run may be longer than this
        // file: its bytes must not outlive the write.
        None => root.stage(path).and_then(|(staged, file, _)| {
            file.set_len(0)?;
            Ok((staged, file))
        }),
    };
    let (staged, file) = emptied.map_err(|e| RequestError::from_io(&e, &path.to_string()))?;
    Ok((staged, file, Md5::new()))
}

/// The wanted files the client already has a copy of with the same MD5
/// as ours: all compared before any is sent, side by side, since the
/// client only waits meanwhile.
async fn identical_to_theirs(
    shared: &Arc<Shared>,
    top: &RemotePath,
    wants: &[Header],
) -> std::collections::HashSet<String> {
    let checks: Vec<_> = wants
        .iter()
        .filter(|w| w.offset.is_none())
        .filter_map(|w| Some((w.filename.clone(), top.join(&w.filename).ok()?, w.md5.clone()?, None)))
        .collect();
    if checks.is_empty() {
        return Default::default();
    }
    let digests = shared.clone();
    blocking(shared, move |root| {
        // Each file's stamp is noted as it is opened, to remember its digest by.
        let hashed = tree::par_hash(checks, |(_, path, _, stamp)| {
            Some(root.open_read(path).map(|o| {
                *stamp = o.stamp;
                (o.file, o.size)
            }))
        });
        let mut same = std::collections::HashSet::new();
        for ((rel, _, theirs, stamp), ours) in hashed {
            if let Some(Ok(ours)) = ours {
                digests.digests.remember(stamp, &ours);
                if ours == theirs {
                    same.insert(rel);
                }
            }
        }
        same
    })
    .await
}

/// A small file of a tree read for sending, its digest neither remembered
/// nor computed yet: hashed with others (see [`HashBatch`]), then sent.
struct Unhashed {
    /// Its name in the tree.
    rel: String,
    /// Permission bits, for its `data` frame.
    mode: u32,
    /// Modification time when it was read.
    mtime: i64,
    /// The version read, to remember its digest by.
    stamp: Option<Stamp>,
    /// The whole body.
    body: Vec<u8>,
}

impl AsRef<[u8]> for Unhashed {
    fn as_ref(&self) -> &[u8] {
        &self.body
    }
}

/// Hashes the small files waiting, remembers their digests and queues each
/// with its `done` frame.
async fn send_hashed(
    conn: &mut Connection,
    shared: &Shared,
    batch: &mut HashBatch<Unhashed>,
) -> Result<(), ConnError> {
    for (Unhashed { rel, mode, mtime, stamp, body }, md5) in batch.hash() {
        shared.digests.remember(stamp, &md5);
        let mut data = Header::new(Op::Data).with_filename(&rel).with_body(body.len() as u64);
        (data.mode, data.mtime) = (Some(mode), Some(mtime));
        conn.writer.queue(&data, &body).await?;
        conn.writer.queue(&Header::new(Op::Done).with_filename(&rel).with_md5(md5), &[]).await?;
    }
    Ok(())
}

/// Sends one file of a tree (`rel`, what the walk found of it, and the
/// client's `want`), or says it is identical to the client's copy, or why
/// it cannot be sent; resumes it when `want` offers a partial that is a
/// prefix of it. A small file whose digest is not remembered may wait in
/// `unhashed`. Returns the body bytes sent.
async fn send_one(
    conn: &mut Connection,
    shared: &Arc<Shared>,
    top: &RemotePath,
    (rel, entry, want): (&str, &TreeEntry, &Header),
    force: bool,
    unhashed: &mut HashBatch<Unhashed>,
) -> Result<u64, ConnError> {
    // With an offset, the client's MD5 is of its partial, not of a copy.
    let (theirs, partial) = match want.offset {
        Some(offset) => (None, want.md5.clone().map(|md5| (offset, md5))),
        None => (want.md5.clone(), None),
    };
    let path = match top.join(rel) {
        Ok(p) => p,
        Err(e) => {
            conn.writer.queue(&file_error(rel, &bad_path(e)), &[]).await?;
            return Ok(0);
        }
    };
    let shown = path.to_string();
    if entry.size <= WHOLE_MAX {
        // Small: read whole, then queued, so many files go out in one
        // write. Its digest is the remembered one, or computed with other
        // files' (see `Unhashed`), or here if it is compared with the
        // client's copy.
        let read = shared.root.open_read(&path).and_then(|o| {
            let known = if theirs.is_none() { shared.digests.get(o.stamp.as_ref()) } else { None };
            Ok((read_whole(o.file, o.size, WHOLE_MAX)?, known, o.stamp, o.mtime))
        });
        match read {
            Ok((Some(body), None, stamp, mtime)) if theirs.is_none() => {
                let size = body.len() as u64;
                if unhashed.push(Unhashed { rel: rel.to_string(), mode: entry.mode, mtime, stamp, body }) {
                    send_hashed(conn, shared, unhashed).await?;
                }
                return Ok(size);
            }
            Ok((Some(body), known, stamp, mtime)) => {
                let md5 = known.unwrap_or_else(|| {
                    let mut md5 = Md5::new();
                    md5.update(&body);
                    let md5 = md5.finish();
                    shared.digests.remember(stamp, &md5);
                    md5
                });
                let reply = match &theirs {
                    Some(theirs) if *theirs == md5 => {
                        let mut ok = Header::new(Op::Ok).with_filename(rel);
                        ok.skipped = true;
                        ok
                    }
                    Some(_) if !force => {
                        let msg = format!("{rel} exists and differs (use --force to replace it)");
                        file_error(rel, &RequestError::new(ErrorCode::Exists, msg))
                    }
                    _ => {
                        let mut data = Header::new(Op::Data).with_filename(rel).with_body(body.len() as u64);
                        data.mode = Some(entry.mode);
                        data.mtime = Some(mtime);
                        conn.writer.queue(&data, &body).await?;
                        let done = Header::new(Op::Done).with_filename(rel).with_md5(md5);
                        conn.writer.queue(&done, &[]).await?;
                        return Ok(body.len() as u64);
                    }
                };
                conn.writer.queue(&reply, &[]).await?;
                return Ok(0);
            }
            // It grew past the inline size since the walk: streamed below.
            Ok((None, ..)) => {}
            Err(e) => {
                conn.writer.queue(&file_error(rel, &RequestError::from_io(&e, &shown)), &[]).await?;
                return Ok(0);
            }
        }
    }
    // What waits goes out before a long stream.
    send_hashed(conn, shared, unhashed).await?;
    let digests = shared.clone();
    let opened = blocking(shared, move |root| {
        let Opened { mut file, size, mtime, stamp } = root.open_read(&path)?;
        // Compare with the client's copy first, if it has one; or with its
        // partial, to go on after it if it is a prefix of this file.
        let ours = match &theirs {
            Some(_) => {
                let md5 = hash_prefix(&mut file, size)?.finish();
                digests.digests.remember(stamp, &md5);
                Some(md5)
            }
            None => None,
        };
        let same = theirs.map(|theirs| ours.as_ref() == Some(&theirs));
        let mut send =
            ToSend { file, size, mtime, same, offset: 0, digest: Digest::Compute(Md5::new()), stamp };
        if let Some((offset, md5)) = partial.filter(|(offset, _)| *offset > 0 && *offset < size) {
            let prefix = hash_prefix(&mut send.file, offset)?;
            if prefix.clone().finish() == md5 {
                send.offset = offset;
                send.digest = Digest::Compute(prefix);
                return Ok(send);
            }
        }
        std::io::Seek::rewind(&mut send.file)?;
        // The whole file goes: its digest may be known already.
        if let Some(md5) = ours.or_else(|| digests.digests.get(stamp.as_ref())) {
            send.digest = Digest::Known(md5);
        }
        Ok::<_, std::io::Error>(send)
    })
    .await;
    let ToSend { file, size, mtime, same, offset, digest, stamp } = match opened {
        Ok(o) => o,
        Err(e) => {
            conn.writer.write_header(&file_error(rel, &RequestError::from_io(&e, &shown))).await?;
            return Ok(0);
        }
    };
    match same {
        Some(true) => {
            let mut ok = Header::new(Op::Ok).with_filename(rel);
            ok.skipped = true;
            conn.writer.write_header(&ok).await?;
            return Ok(0);
        }
        Some(false) if !force => {
            let msg = format!("{rel} exists and differs (use --force to replace it)");
            conn.writer.write_header(&file_error(rel, &RequestError::new(ErrorCode::Exists, msg))).await?;
            return Ok(0);
        }
        _ => {}
    }
    let mut data = Header::new(Op::Data).with_filename(rel).with_body(size - offset);
    data.mode = Some(entry.mode);
    data.mtime = Some(mtime);
    data.offset = (offset > 0).then_some(offset);
    conn.writer.write_header(&data).await?;
    let whole = offset == 0 && matches!(digest, Digest::Compute(_));
    let sent =
        send_file(file, size - offset, digest, conn.writer.body_writer(), &ProgressBar::hidden()).await;
    let md5 = match sent {
        Ok(md5) => md5,
        Err(CopyError::Write { source, .. } | CopyError::Read { source, .. }) => {
            return Err(ConnError::Io(source))
        }
        Err(CopyError::Short { .. }) => return Err(ConnError::Truncated("file read (it shrank)")),
    };
    if whole {
        shared.digests.remember(stamp, &md5);
    }
    conn.writer.write_header(&Header::new(Op::Done).with_filename(rel).with_md5(md5)).await?;
    Ok(size - offset)
}

/// A large file of a tree about to be sent.
struct ToSend {
    /// The file, positioned where the body starts.
    file: std::fs::File,
    /// Its size when opened.
    size: u64,
    /// Its modification time, for the client's copy.
    mtime: i64,
    /// Whether it is identical to the client's copy, if the client has one.
    same: Option<bool>,
    /// Where the body starts: the end of the client's partial, or 0.
    offset: u64,
    /// The MD5 the file is announced with.
    digest: Digest,
    /// Its version, to remember a digest computed on the way.
    stamp: Option<Stamp>,
}
