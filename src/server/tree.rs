//! `put_tree` and `get_tree`: whole directory trees in one pipelined
//! exchange. Every file carries its own header and MD5 and is verified and
//! committed on its own; one failing file is reported and the rest go on.

use super::digests::MOST_PARTS;
use super::request::{checked_path, item_refusal as file_error, refuse, Outcome};
use super::{blocking, Session};
use crate::connection::ServerConnection;
use crate::digest::{file_digests, for_each_part, parts_of, PartsDigest};
use crate::error::{exists_words, ConnError, RequestError};
use crate::local::{Opened, RemotePath, Root, Stamp};
use crate::protocol::{
    ClientMessage, Data, End, EntryKind, ErrorCode, GetTree, Have, Message, PutTree, ServerMessage, Stored,
    Want, PART,
};
use crate::transfer::{
    read_whole, resume_point, CopyError, Digest, FileFailure, NoProgress, Offer, INLINE_MAX,
};
use crate::tree::receive::{Applied, Found, Receiver};
use crate::tree::send::{self, Outgoing};
use crate::tree::writer::{SmallFile, TreeWriter, WriteError, Written};
use crate::tree::{self, TreeEntry, WHOLE_MAX};
use std::collections::HashMap;
use std::sync::Arc;

fn bad_path(e: impl std::fmt::Display) -> RequestError {
    RequestError::new(ErrorCode::BadPath, e.to_string())
}

pub(crate) async fn put_tree(
    conn: &mut ServerConnection,
    shared: &Arc<Session>,
    req: PutTree,
) -> Result<Outcome, ConnError> {
    let mut outcome = Outcome::new(&req.filename);
    let top = match checked_path(&req.filename) {
        Ok(p) => p,
        Err(e) => return refuse(conn, outcome, e).await,
    };
    let dry = req.dry_run;
    let made = {
        let top = top.clone();
        blocking(shared, move |root| {
            let fresh = match dry {
                // Nothing made: a missing top is as good as fresh.
                true => match root.kind_of(&top)? {
                    Some(true) => false,
                    Some(false) => return Err(std::io::ErrorKind::AlreadyExists.into()),
                    None => true,
                },
                false => root.make_dir(&top)?,
            };
            Ok::<_, std::io::Error>((fresh, root.handle()?))
        })
        .await
    };
    let (fresh, base) = match made {
        Ok(made) => made,
        Err(e) => return refuse(conn, outcome, RequestError::from_io(&e, &top.to_string())).await,
    };
    let ready = ServerMessage::Ready { filename: req.filename.clone(), offset: None, md5: None };
    conn.writer.write(&ready).await?;

    // The manifest: make directories and symlinks now, note the files, and
    // tell the client which files we already have (with their MD5 when the
    // size matches, so identical ones need not be sent). Entries are
    // applied in batches, whenever no more are waiting, so the work here
    // overlaps the client's walk of its tree.
    let force = req.force;
    let mut receiver = Receiver::new(top.clone(), fresh, force, true).dry_run(dry).deleting(req.delete);
    let mut replies = Vec::new();
    let (mut batch, mut budget) = (Vec::new(), tree::ManifestBudget::default());
    // The top's own mode and time, from the manifest's `end`.
    let top_meta = loop {
        if !batch.is_empty() && !conn.reader.header_buffered() {
            receiver = apply(shared, receiver, std::mem::take(&mut batch), &mut replies, false).await;
        }
        match conn.reader.expect_control().await? {
            // What the client's walk left out: kept from --delete.
            ClientMessage::Entry(entry) if entry.kind == EntryKind::Other => {
                if !budget.admit_note(&entry.filename) {
                    return Err(ConnError::Unexpected { got: "entry", expected: tree::MANIFEST_LIMIT });
                }
                receiver.note(&entry.filename);
            }
            ClientMessage::Entry(entry) => {
                let Some(entry) = TreeEntry::from_entry(entry) else { continue };
                if !budget.admit(&entry) {
                    return Err(ConnError::Unexpected { got: "entry", expected: tree::MANIFEST_LIMIT });
                }
                batch.push(entry);
            }
            ClientMessage::End(end) => break end.mode.zip(end.mtime),
            other => return Err(ConnError::Unexpected { got: other.op(), expected: "entry or end" }),
        }
    };
    let mut receiver = apply(shared, receiver, batch, &mut replies, true).await;
    // With --delete, what the manifest lacks goes before any file comes,
    // making room for them.
    let (deleted, failed);
    (receiver, (deleted, failed)) = match req.delete {
        true => {
            blocking(shared, move |root| {
                let pruned = receiver.prune(root);
                (receiver, pruned)
            })
            .await
        }
        false => (receiver, (Vec::new(), None)),
    };
    for rel in deleted {
        replies.push(ServerMessage::Deleted { filename: rel });
    }
    if let Some((rel, e)) = failed {
        let err = RequestError::from_io(&e, &top.join(&rel).map_or(rel.clone(), |p| p.to_string()));
        replies
            .push(file_error(&rel, &RequestError::new(err.code, format!("cannot delete: {}", err.message))));
    }
    for r in &replies {
        // An offer to resume carries its parts' digests.
        let body = match r {
            ServerMessage::Partial { filename, .. } => receiver.offered_body(filename),
            _ => Vec::new(),
        };
        conn.writer.queue(r, &body).await?;
    }
    conn.writer.write(&ServerMessage::End(End::default())).await?;
    if dry {
        // A dry run ends with the answers to the manifest.
        return Ok(outcome);
    }

    // The files, one after another: small ones go to the tree writer's
    // thread, larger ones are streamed here. Replies are queued while more
    // frames are already here, and sent before waiting on the client.
    let mut small = match TreeWriter::start(base, force) {
        Ok(w) => w,
        Err(e) => return Err(ConnError::Io(e)),
    };
    // A full disk stops the tree: one `error` for it, not one per file.
    let mut full: Option<RequestError> = None;
    while full.is_none() {
        for w in small.ready() {
            outcome.bytes += if w.result.is_ok() { w.size } else { 0 };
            if let Some(reply) = unless_full(small_reply(w), &mut full) {
                conn.writer.queue(&reply, &[]).await?;
            }
        }
        if !conn.reader.header_buffered() {
            conn.writer.flush().await?;
        }
        let frame = conn.reader.expect().await?;
        let len = frame.total_size;
        let h = match frame.msg {
            ClientMessage::End(_) => {
                conn.reader.skip_body(len).await?;
                break;
            }
            ClientMessage::Data(data) => data,
            other => return Err(ConnError::Unexpected { got: other.op(), expected: "data or end" }),
        };
        if len > WHOLE_MAX || h.offset.is_some() {
            // The threads write what waits while this one streams.
            small.flush().await;
            let reply = receive_one(conn, shared, &mut receiver, (&h, len)).await?;
            if matches!(reply, ServerMessage::Ok(_)) {
                outcome.bytes += len;
            }
            if let Some(reply) = unless_full(reply, &mut full) {
                conn.writer.queue(&reply, &[]).await?;
            }
            continue;
        }
        // Not resumed after all (the file shrank): its partial is stale.
        receiver.forget_partial(&h.filename);
        let body = conn.reader.read_small_body(len, WHOLE_MAX as usize).await?;
        let sent = conn.reader.expect_done().await?;
        let meta = receiver.files.get(&h.filename).map(|e| (e.mode, e.mtime));
        match (meta, receiver.path(&h.filename)) {
            (Some(meta), Ok(path)) => {
                small.write(SmallFile { rel: h.filename, path, body, sent, meta }).await;
            }
            (None, _) => {
                let msg = format!("{} was not in the manifest", h.filename);
                let err = RequestError::new(ErrorCode::BadRequest, msg);
                conn.writer.queue(&file_error(&h.filename, &err), &[]).await?;
            }
            (_, Err(err)) => conn.writer.queue(&file_error(&h.filename, &err), &[]).await?,
        }
    }
    for w in small.finish().await {
        outcome.bytes += if w.result.is_ok() { w.size } else { 0 };
        if let Some(reply) = unless_full(small_reply(w), &mut full) {
            conn.writer.queue(&reply, &[]).await?;
        }
    }
    // Directory modes and times last. Then, if asked, everything to disk
    // before the final `end` says the tree is done.
    let durable = req.fsync || shared.config.fsync;
    let synced = blocking(shared, move |root| {
        receiver.finish_dirs(root, top_meta);
        match durable {
            true => root.handle().and_then(|dir| crate::local::sync_filesystem(&dir)),
            false => Ok(()),
        }
    })
    .await;
    if let Err(e) = synced {
        // Counted by the client as a failure: the tree is not known to be on disk.
        let err = RequestError::from_io(&e, &top.to_string());
        conn.writer.queue(&file_error(&req.filename, &err), &[]).await?;
    }
    if let Some(err) = full {
        // About the tree as a whole: the client stops sending. What it had
        // sent meanwhile is read and dropped until it ends or goes.
        conn.writer.queue(&ServerMessage::error(err.code, &err.message), &[]).await?;
        conn.writer.write(&ServerMessage::End(End::default())).await?;
        outcome.error = Some(err);
        while let Ok(Some(frame)) = conn.reader.read().await {
            if conn.reader.skip_body(frame.total_size).await.is_err()
                || matches!(frame.msg, ClientMessage::End(_))
            {
                break;
            }
        }
        return Ok(outcome);
    }
    conn.writer.write(&ServerMessage::End(End::default())).await?;
    Ok(outcome)
}

/// `reply`, unless it says the disk is full: then the first such becomes
/// the tree's one error (`full`), told once at the end, and none is sent.
fn unless_full(reply: ServerMessage, full: &mut Option<RequestError>) -> Option<ServerMessage> {
    match reply {
        ServerMessage::Error(r) if r.code == ErrorCode::NoSpace => {
            let words = "the tree stopped (free space there and run again to go on)";
            full.get_or_insert_with(|| {
                RequestError::new(ErrorCode::NoSpace, format!("{}; {words}", r.message))
            });
            None
        }
        reply => Some(reply),
    }
}

/// The frame that tells the client what one entry found: `have` for a
/// file there already, `partial` for one to resume, `error` for a
/// refusal; nothing for a file that is simply missing.
fn reply_for(applied: Applied) -> Option<ServerMessage> {
    match applied {
        Applied::File { found: Found::Nothing, .. } => None,
        Applied::File { rel, found: Found::Existing { size, md5 } } => {
            Some(ServerMessage::Have(Have { filename: rel, size, md5 }))
        }
        Applied::File { rel, found: Found::Partial { offset, md5 } } => {
            Some(ServerMessage::Partial { filename: rel, offset, md5 })
        }
        Applied::Refused { rel, err } => Some(file_error(&rel, &err)),
    }
}

/// Applies a batch of entries on the blocking pool, adding the replies;
/// after the `last` batch, also the check of every link.
async fn apply(
    shared: &Arc<Session>,
    receiver: Receiver,
    batch: Vec<TreeEntry>,
    replies: &mut Vec<ServerMessage>,
    last: bool,
) -> Receiver {
    let (receiver, applied) = receiver.apply_off_thread(shared.root.clone(), batch, last).await;
    replies.extend(applied.into_iter().filter_map(reply_for));
    receiver
}

/// The reply for a small file the tree writer is done with.
fn small_reply(w: Written) -> ServerMessage {
    let shown = w.path.to_string();
    let err = match w.result {
        Ok(md5) => return stored(w.rel, md5),
        Err(WriteError::Mismatch { sent, received }) => {
            RequestError::mismatch(&shown, sent.as_ref(), &received.to_string())
        }
        Err(WriteError::Exists) => RequestError::exists(&shown),
        Err(WriteError::Io(e)) => RequestError::from_io(&e, &shown),
    };
    file_error(&w.rel, &err)
}

/// Receives one large file of a tree (see [`Receiver::receive_file`]) and
/// returns the reply for it (`ok` or `error`); only connection failures
/// are errors.
async fn receive_one(
    conn: &mut ServerConnection,
    shared: &Arc<Session>,
    receiver: &mut Receiver,
    data: (&Data, u64),
) -> Result<ServerMessage, ConnError> {
    let rel = data.0.filename.as_str();
    let shown = receiver.path(rel).map_or_else(|_| rel.to_string(), |p| p.to_string());
    let err = match receiver.receive_file(&mut conn.reader, &shared.root, data, &NoProgress).await? {
        Ok(committed) => return Ok(stored(rel.to_string(), committed.md5)),
        Err(FileFailure::Refused(err)) => err,
        Err(FileFailure::Offset { offset, held }) => RequestError::offset(rel, offset, held),
        Err(FileFailure::Write { source: e, .. } | FileFailure::Commit(e)) => {
            RequestError::from_io(&e, &shown)
        }
        Err(FileFailure::Mismatch { sent, received }) => {
            RequestError::mismatch(&shown, sent.as_ref(), &received)
        }
        Err(FileFailure::Exists) => RequestError::exists(&shown),
    };
    Ok(file_error(rel, &err))
}

/// The `ok` for a file of a put_tree stored with digest `md5`.
fn stored(rel: String, md5: crate::protocol::Md5Hex) -> ServerMessage {
    ServerMessage::Ok(Stored { filename: rel, md5: Some(md5), size: None, skipped: false })
}

/// The `ok` for a wanted file the client's copy of which is identical.
fn skipped(rel: &str) -> ServerMessage {
    ServerMessage::Ok(Stored { filename: rel.to_string(), md5: None, size: None, skipped: true })
}

pub(crate) async fn get_tree(
    conn: &mut ServerConnection,
    shared: &Arc<Session>,
    req: GetTree,
) -> Result<Outcome, ConnError> {
    let mut outcome = Outcome::new(&req.filename);
    let top = match checked_path(&req.filename) {
        Ok(p) => p,
        Err(e) => return refuse(conn, outcome, e).await,
    };
    // The manifest goes out batch by batch as the walk finds it, so the
    // client makes directories while we are still walking.
    let walker = {
        let (shared, top) = (shared.clone(), top.clone());
        move |emit: &mut dyn FnMut(Vec<TreeEntry>)| {
            tree::walk_root_in_batches(&shared.root, &top, tree::BATCH, emit)
        }
    };
    let (entries, walked) = tree::send_walk(&mut conn.writer, walker).await?;
    let mut end = End::default();
    match walked {
        Ok((left, (mode, mtime))) => {
            // What the walk left out, for the client to report as our own
            // walk's are reported in put -r: warnings, and failures.
            for (rel, why) in left.skipped {
                let note = crate::protocol::Entry {
                    message: Some(why),
                    ..crate::protocol::Entry::new(rel, EntryKind::Other)
                };
                conn.writer.queue(&note.into(), &[]).await?;
            }
            for (rel, why) in left.unreadable {
                let err = RequestError::new(ErrorCode::PermissionDenied, why);
                conn.writer.queue(&file_error(&rel, &err), &[]).await?;
            }
            // The top's own mode and time, for the client to give its copy
            // last (the root's are not the client's business).
            if !top.is_root() {
                (end.mode, end.mtime) = (Some(mode), Some(mtime));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && entries.is_empty() => {
            let err = RequestError::new(ErrorCode::NotFound, format!("remote directory not found: {top}"));
            return refuse(conn, outcome, err).await;
        }
        Err(e) => return refuse(conn, outcome, RequestError::from_io(&e, &top.to_string())).await,
    }
    conn.writer.write(&end.into()).await?;

    // The client says which files it wants (with its MD5 where it has a
    // copy of the same size); then they stream back to back.
    let mut wants = Vec::new();
    // Each offer's part digests, by file.
    let mut offers: HashMap<String, Vec<[u8; 16]>> = HashMap::new();
    let mut offered_parts = tree::OfferedParts::default();
    loop {
        let is_offer = |m: &ClientMessage| matches!(m, ClientMessage::Want(Want { offset: Some(_), .. }));
        match conn.reader.expect_with_parts(is_offer).await? {
            // One want per item of the tree at most: more can only be a
            // client trying to make us send the same file over and over.
            (ClientMessage::Want(want), parts) if wants.len() < entries.len() => {
                offered_parts.count(parts.len())?;
                if !parts.is_empty() {
                    offers.insert(want.filename.clone(), parts);
                }
                wants.push(want)
            }
            (ClientMessage::Want(_), _) => {
                return Err(ConnError::Unexpected {
                    got: "want",
                    expected: "at most one want per item of the tree",
                })
            }
            (ClientMessage::End(_), _) => break,
            (other, _) => return Err(ConnError::Unexpected { got: other.op(), expected: "want or end" }),
        }
    }
    // The tree's files by name, borrowed: a copy of every name would cost
    // a tree of 7,911 files 0.7 MB more of the server's peak. A want for
    // anything else is answered "not a file of the tree", never hashed.
    let meta: HashMap<&str, &TreeEntry> =
        entries.iter().filter(|e| e.kind == EntryKind::File).map(|e| (e.rel.as_str(), e)).collect();
    let of_tree = |w: &&Want| meta.contains_key(w.filename.as_str());
    let identical = identical_to_theirs(shared, &top, wants.iter().filter(of_tree)).await;
    if req.dry_run {
        // What each want would bring, and no file.
        for want in wants {
            let rel = want.filename;
            let reply = match meta.get(rel.as_str()) {
                None => {
                    let err =
                        RequestError::new(ErrorCode::NotFound, format!("{rel} is not a file of the tree"));
                    file_error(&rel, &err)
                }
                Some(_) if identical.contains(&rel) => skipped(&rel),
                Some(_) if want.offset.is_none() && want.md5.is_some() && !req.force => {
                    let msg = exists_words(&format!("{rel} exists and differs"));
                    file_error(&rel, &RequestError::new(ErrorCode::Exists, msg))
                }
                Some(e) => {
                    let size = Some(e.size - want.offset.unwrap_or(0).min(e.size));
                    ServerMessage::Ok(Stored { filename: rel, md5: None, size, skipped: false })
                }
            };
            conn.writer.queue(&reply, &[]).await?;
        }
        conn.writer.write(&ServerMessage::End(End::default())).await?;
        return Ok(outcome);
    }
    // Small files wanted whole are read (and hashed, unless their digest is
    // remembered) on a thread of their own, a batch at a time, and go first.
    let (plain, wants): (Vec<_>, Vec<_>) = wants.into_iter().partition(|w| {
        let small = meta.get(w.filename.as_str()).is_some_and(|e| e.size <= WHOLE_MAX);
        small && w.md5.is_none() && w.offset.is_none()
    });
    let plain: Vec<_> = plain
        .into_iter()
        .map(|w| {
            let mode = meta[w.filename.as_str()].mode;
            (w.filename, mode)
        })
        .collect();
    let mut ready = send::read_small_files(plain, {
        let (shared, top) = (shared.clone(), top.clone());
        move |(rel, mode)| read_small(&shared, &top, rel, mode)
    });
    while let Some(batch) = ready.recv().await {
        for file in batch {
            match file {
                Ok((file, md5)) => {
                    shared.digests.remember(file.stamp, &md5);
                    outcome.bytes +=
                        send::queue_small(&mut conn.writer, file.data, &file.body, &md5, &NoProgress).await?;
                }
                Err((rel, why)) => {
                    let err = RequestError::new(ErrorCode::Internal, why);
                    conn.writer.queue(&file_error(&rel, &err), &[]).await?;
                }
            }
        }
    }
    for want in wants {
        let rel = want.filename.clone();
        let Some(entry) = meta.get(rel.as_str()).map(|e| (*e).clone()) else {
            let err = RequestError::new(ErrorCode::NotFound, format!("{rel} is not a file of the tree"));
            conn.writer.queue(&file_error(&rel, &err), &[]).await?;
            continue;
        };
        if identical.contains(&rel) {
            conn.writer.queue(&skipped(&rel), &[]).await?;
            continue;
        }
        let parts = offers.remove(&rel).unwrap_or_default();
        outcome.bytes += send_one(conn, shared, &top, (&rel, &entry, &want, parts), req.force).await?;
    }
    conn.writer.write(&ServerMessage::End(End::default())).await?;
    Ok(outcome)
}

/// A small file of the tree at `rel`, read whole for sending, with its
/// remembered digest if there is one; or why it cannot be sent.
fn read_small(
    shared: &Session,
    top: &RemotePath,
    rel: String,
    mode: u32,
) -> Result<(Outgoing, Option<crate::protocol::Md5Hex>), (String, String)> {
    let read = top.join(&rel).map_err(|e| e.to_string()).and_then(|path| {
        let o =
            shared.root.open_read(&path).map_err(|e| RequestError::from_io(&e, &path.to_string()).message)?;
        let known = shared.digests.get(o.stamp.as_ref());
        match read_whole(o.file, o.size, WHOLE_MAX) {
            Ok(Some(body)) => Ok((body, known, o.stamp, o.mtime)),
            // It grew past the inline size since the walk.
            Ok(None) => Err(format!("{rel} grew while being sent; run again to fetch it")),
            Err(e) => Err(RequestError::from_io(&e, &path.to_string()).message),
        }
    });
    match read {
        Ok((body, known, stamp, mtime)) => {
            let data = Data { filename: rel, mode: Some(mode), mtime: Some(mtime), ..Data::default() };
            // A digest already remembered is not remembered again (a lock
            // and a table update per file: 1% of a get -r's server CPU).
            let stamp = stamp.filter(|_| known.is_none());
            Ok((Outgoing { data, body, stamp }, known))
        }
        Err(why) => Err((rel, why)),
    }
}

/// The wanted files the client already has a copy of with the same MD5
/// as ours: all compared before any is sent, side by side, since the
/// client only waits meanwhile.
async fn identical_to_theirs(
    shared: &Arc<Session>,
    top: &RemotePath,
    wants: impl Iterator<Item = &Want>,
) -> std::collections::HashSet<String> {
    let checks: Vec<_> = wants
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

/// Sends one file of a tree (`rel`, what the walk found of it, and the
/// client's `want`), or says it is identical to the client's copy, or why
/// it cannot be sent; resumes it when `want` offers a partial that is a
/// prefix of it. Returns the body bytes sent. (Small files wanted whole go
/// through [`send::read_small_files`] instead.)
async fn send_one(
    conn: &mut ServerConnection,
    shared: &Arc<Session>,
    top: &RemotePath,
    (rel, entry, want, parts): (&str, &TreeEntry, &Want, Vec<[u8; 16]>),
    force: bool,
) -> Result<u64, ConnError> {
    // With an offset, the client's MD5 is of its partial, not of a copy.
    let (theirs, offer) = match want.offset {
        Some(offset) => (None, Offer { offset, md5: want.md5.clone(), parts }),
        None => (want.md5.clone(), Offer::default()),
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
        // Small (and compared with the client's copy, or offered a partial
        // that cannot be one): read whole and queued, its digest the
        // remembered one or computed here. Read and hashed here when no
        // larger than a pipe's worth, on the blocking pool when larger.
        let read = {
            let (digests, path) = (shared.clone(), path.clone());
            move |root: &Root| {
                let o = root.open_read(&path)?;
                let Some(body) = read_whole(o.file, o.size, WHOLE_MAX)? else { return Ok(None) };
                let md5 = digests.digests.get(o.stamp.as_ref()).unwrap_or_else(|| {
                    let md5 = file_digests(&[&body]).remove(0);
                    digests.digests.remember(o.stamp, &md5);
                    md5
                });
                Ok::<_, std::io::Error>(Some((body, md5, o.mtime)))
            }
        };
        let read = match entry.size <= INLINE_MAX {
            true => read(&shared.root),
            false => blocking(shared, read).await,
        };
        match read {
            Ok(Some((body, md5, mtime))) => {
                let reply = match &theirs {
                    Some(theirs) if *theirs == md5 => skipped(rel),
                    Some(_) if !force => {
                        let msg = exists_words(&format!("{rel} exists and differs"));
                        file_error(rel, &RequestError::new(ErrorCode::Exists, msg))
                    }
                    _ => {
                        let data = Data {
                            filename: rel.to_string(),
                            mode: Some(entry.mode),
                            mtime: Some(mtime),
                            ..Data::default()
                        };
                        return send::queue_small(&mut conn.writer, data, &body, &md5, &NoProgress).await;
                    }
                };
                conn.writer.queue(&reply, &[]).await?;
                return Ok(0);
            }
            // It grew past the inline size since the walk: streamed below.
            Ok(None) => {}
            Err(e) => {
                conn.writer.queue(&file_error(rel, &RequestError::from_io(&e, &shown)), &[]).await?;
                return Ok(0);
            }
        }
    }
    let digests = shared.clone();
    let opened = blocking(shared, move |root| {
        let Opened { mut file, size, mtime, stamp, .. } = root.open_read(&path)?;
        // Compare with the client's copy first, if it has one (the parts
        // hashed for that are the ones a differing file is sent with, not
        // hashed twice); or with its partial, to go on after it if its
        // parts are this file's.
        let mut hashed: Option<std::sync::Arc<[[u8; 16]]>> = None;
        let same = match &theirs {
            Some(theirs) if size.div_ceil(PART) > MOST_PARTS as u64 => {
                let md5 = parts_of(&mut file, size)?.finish();
                digests.digests.remember(stamp, &md5);
                Some(md5 == *theirs)
            }
            Some(theirs) => {
                std::io::Seek::rewind(&mut file)?;
                let mut parts = Vec::new();
                for_each_part(&mut file, size, |part| parts.push(*part))?;
                let same = PartsDigest::of(&parts).finish() == *theirs;
                digests.digests.remember_parts(stamp, parts.clone());
                hashed = Some(parts.into());
                Some(same)
            }
            None => None,
        };
        // Not the whole file: at least its last byte is sent.
        let offer = Offer { offset: offer.offset.min(size - 1), ..offer };
        let (file, offset, prefix) = resume_point(file, size, &offer)?;
        // From the start, the parts' digests may be known already.
        let known = hashed.or_else(|| digests.digests.parts(stamp.as_ref())).filter(|_| offset == 0);
        let digest = known.map_or(Digest::Compute, Digest::Known);
        Ok::<_, std::io::Error>(ToSend { file, size, mtime, same, offset, prefix, digest, stamp })
    })
    .await;
    let ToSend { file, size, mtime, same, offset, prefix, digest, stamp } = match opened {
        Ok(o) => o,
        Err(e) => {
            conn.writer.write(&file_error(rel, &RequestError::from_io(&e, &shown))).await?;
            return Ok(0);
        }
    };
    match same {
        Some(true) => {
            conn.writer.write(&skipped(rel)).await?;
            return Ok(0);
        }
        Some(false) if !force => {
            let msg = exists_words(&format!("{rel} exists and differs"));
            conn.writer.write(&file_error(rel, &RequestError::new(ErrorCode::Exists, msg))).await?;
            return Ok(0);
        }
        _ => {}
    }
    let data = Data {
        filename: rel.to_string(),
        offset: Some(offset),
        mode: Some(entry.mode),
        mtime: Some(mtime),
        ..Data::default()
    };
    // A file that shrank or became unreadable after its size was announced
    // cannot complete its body: the connection ends, the client commits
    // nothing of it.
    let sending = (file, size - offset);
    let keep = (prefix, digest);
    let sent = match send::send_large(&mut conn.writer, data, sending, keep, MOST_PARTS, &NoProgress).await? {
        Ok(sent) => sent,
        Err(CopyError::Read { source, .. } | CopyError::Write { source, .. }) => {
            return Err(ConnError::Io(source))
        }
        Err(CopyError::Short { .. }) => return Err(ConnError::Truncated("file read (it shrank)")),
    };
    // Digests computed over the whole file are worth remembering.
    if let Some(parts) = sent.parts {
        shared.digests.remember_parts(stamp, parts);
    }
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
    /// The digest of the parts before `offset`.
    prefix: PartsDigest,
    /// Where the parts' digests come from.
    digest: Digest,
    /// Its version, to remember a digest computed on the way.
    stamp: Option<Stamp>,
}
