//! `xfer put -r` and `xfer get -r`: whole trees in one pipelined exchange.
//!
//! The manifest goes first; the other side answers with what it already
//! has, so identical files (same size and MD5) are skipped. Then the files
//! stream back to back, no round trip per file, while results come back on
//! the same connection. Each file is verified and committed on its own.

use super::{reason, unexpected_reply, Client, Flags, Options};
use crate::connection::{ClientConnection, Writer};
use crate::digest::PartsDigest;
use crate::error::{exists_words, mismatch_words, ConnError, Error, RequestError};
use crate::local::{escape, RemotePath, Root};
use crate::protocol::{
    ClientMessage, Data, End, Entry, EntryKind, GetTree, Have, Md5Hex, Message, PutTree, Refusal,
    ServerMessage, Stored, Want,
};
use crate::transfer::{resume_point, Digest, FileFailure, Offer};
use crate::tree::receive::{Applied, Found, Receiver};
use crate::tree::send;
use crate::tree::writer::{SmallFile, TreeWriter, WriteError, Written};
use crate::tree::{self, TreeEntry, TreeReport, WHOLE_MAX};
use crate::ui::{Planned, Ui};
use indicatif::ProgressBar;
use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

fn warn(opts: &Options, msg: &str) {
    opts.ui.warning(msg);
}

fn file_failed(ui: &Ui, report: &mut TreeReport, rel: &str, msg: &str) {
    report.failed += 1;
    ui.item_error(rel, msg);
}

/// Makes the remote directory `remote` a copy of the local tree `local`.
pub async fn put_tree(
    client: &mut Client,
    opts: &Options,
    local: &Path,
    remote: &str,
    flags: Flags,
) -> Result<TreeReport, Error> {
    let remote = remote.trim_end_matches('/').to_string();
    if !local.is_dir() {
        return Err(Error::LocalUnusable(format!("{} is not a directory", local.display())));
    }
    let started = Instant::now();
    let conn = &mut client.conn;
    let req = PutTree {
        filename: remote.clone(),
        force: flags.force,
        fsync: flags.fsync,
        delete: flags.delete,
        dry_run: flags.dry_run,
    };
    conn.writer.write(&ClientMessage::PutTree(req)).await?;
    match conn.reader.expect_control().await? {
        ServerMessage::Ready { .. } => {}
        reply => return Err(unexpected_reply(reply, "ready")),
    }

    // The manifest goes out batch by batch as the walk finds it, so the
    // server makes directories while we are still walking.
    let owned = local.to_path_buf();
    let (entries, walked) =
        tree::send_walk(&mut conn.writer, move |emit| tree::walk_local_in_batches(&owned, tree::BATCH, emit))
            .await?;
    let left = walked.map_err(|e| Error::local(local, e))?;
    for (rel, why) in &left.skipped {
        warn(opts, &format!("{rel}: {why}"));
    }
    // What the walk left out, so the server never deletes it (--delete).
    for (rel, why) in left.skipped.iter().chain(&left.unreadable) {
        let note = Entry { message: Some(why.clone()), ..Entry::new(rel, EntryKind::Other) };
        conn.writer.queue(&note.into(), &[]).await?;
    }
    // The top's own mode and time, for the server to give its copy last.
    let mut end = End::default();
    if let Ok(meta) = std::fs::metadata(local) {
        use std::os::unix::fs::MetadataExt;
        (end.mode, end.mtime) = (Some(meta.mode() & tree::MODE_MASK), Some(meta.mtime()));
    }
    conn.writer.write(&end.into()).await?;
    // Our small files hashed while the server compares its copies.
    let sent = entries.len();
    let top = local.to_path_buf();
    let ahead = tree::HashAhead::start(entries, move |e: &TreeEntry| {
        let file = e.kind == EntryKind::File;
        file.then(|| open_ours(&top, e))
    });

    // What the server has already, and what it refused in the manifest.
    let mut report = TreeReport::default();
    for (rel, why) in &left.unreadable {
        file_failed(&opts.ui, &mut report, rel, why);
    }
    let mut have: HashMap<String, (u64, Option<Md5Hex>)> = HashMap::new();
    let mut offered: HashMap<String, Offer> = HashMap::new();
    let mut offered_parts = tree::OfferedParts::default();
    let mut refused = std::collections::HashSet::new();
    let shown = |rel: &str| format!("{remote}/{rel}");
    let mut answered = 0;
    loop {
        let (h, parts) =
            conn.reader.expect_with_parts(|m| matches!(m, ServerMessage::Partial { .. })).await?;
        if let ServerMessage::Deleted { filename } = &h {
            report.deleted += 1;
            match flags.dry_run {
                true => opts.ui.planned(Planned::Delete, &shown(filename)),
                false => opts.ui.deleting(&ProgressBar::hidden(), &shown(filename)),
            }
            continue;
        }
        answered += 1;
        if answered > sent + 1 && !matches!(h, ServerMessage::End(_)) {
            // At most one answer per item we sent: a server sending more
            // could only be trying to fill our memory.
            return Err(
                ConnError::Unexpected { got: h.op(), expected: "at most one answer per item sent" }.into()
            );
        }
        match h {
            ServerMessage::Have(Have { filename, size, md5 }) => {
                have.insert(filename, (size, md5));
            }
            ServerMessage::Partial { filename, offset, md5 } => {
                offered_parts.count(parts.len())?;
                offered.insert(filename, Offer { offset, md5: Some(md5), parts });
            }
            ServerMessage::Error(Refusal { filename, message, .. }) => {
                file_failed(&opts.ui, &mut report, &filename, &reason(&message));
                refused.insert(filename);
            }
            ServerMessage::End(_) => break,
            reply => return Err(unexpected_reply(reply, "have or end")),
        }
    }

    // Decide per file: send it, skip it (identical), resume it, or refuse
    // (exists). Files the server has at the same size, or part of, are
    // compared by the digests hashed ahead, or hashed here in one go (a hop
    // to a blocking thread per file would cost more than the hashing).
    let (entries, ours_ahead) = ahead.finish().await;
    let mut to_send = Vec::new();
    let mut compare = Vec::new();
    let mut prefixes = Vec::new();
    // Files that replace a differing one there (--force).
    let mut replacing = std::collections::HashSet::new();
    let files = entries.into_iter().zip(ours_ahead);
    for (e, ours) in files.filter(|(e, _)| e.kind == EntryKind::File && !refused.contains(&e.rel)) {
        match have.remove(&e.rel) {
            None => match offered.remove(&e.rel) {
                Some(offer) if offer.offset > 0 && offer.offset < e.size && flags.resume => {
                    prefixes.push((e, offer))
                }
                _ => to_send.push(e),
            },
            Some((size, Some(theirs))) if size == e.size => compare.push((e, theirs, ours)),
            Some(_) if flags.force => {
                replacing.insert(e.rel.clone());
                to_send.push(e)
            }
            Some(_) => {
                file_failed(&opts.ui, &mut report, &e.rel, &exists_words("remote file exists and differs"))
            }
        }
    }
    let top = local.to_path_buf();
    let (compared, prefixes) = tokio::task::spawn_blocking(move || {
        let open = |(e, _, ahead): &mut (TreeEntry, Md5Hex, Option<Md5Hex>)| {
            let unknown = ahead.is_none();
            unknown.then(|| open_ours(&top, e))
        };
        let compared: Vec<_> = tree::par_hash(compare, open)
            .into_iter()
            .map(|((e, theirs, ahead), hashed)| {
                let same = match ahead {
                    Some(ours) => ours == theirs,
                    None => matches!(hashed, Some(Ok(ours)) if ours == theirs),
                };
                (e, same)
            })
            .collect();
        // A partial is resumed after those of its parts that are our
        // file's now: the file stays open there, with their digest to go on
        // from.
        let prefixes = prefixes
            .into_iter()
            .map(|(e, offer)| {
                let resume = std::fs::File::open(tree::local_path(&top, &e.rel))
                    .and_then(|f| resume_point(f, e.size, &offer))
                    .ok()
                    .filter(|(_, at, _)| *at > 0);
                (e, resume)
            })
            .collect::<Vec<_>>();
        (compared, prefixes)
    })
    .await
    .expect("hashing does not panic");
    let mut resumes = HashMap::new();
    for (e, resume) in prefixes {
        if let Some((file, offset, md5)) = resume {
            opts.ui.resuming(&e.rel, offset);
            resumes.insert(e.rel.clone(), (file, offset, md5));
        }
        to_send.push(e);
    }
    for (e, same) in compared {
        match same {
            true if flags.dry_run => {
                opts.ui.planned(Planned::Skip, &shown(&e.rel));
                report.skipped += 1
            }
            true => report.skipped += 1,
            false if flags.force => {
                replacing.insert(e.rel.clone());
                to_send.push(e)
            }
            false => {
                file_failed(&opts.ui, &mut report, &e.rel, &exists_words("remote file exists and differs"))
            }
        }
    }
    // Bytes each file sends: what a resumed one lacks, or all of it.
    let sends: HashMap<String, u64> =
        to_send.iter().map(|e| (e.rel.clone(), e.size - resumes.get(&e.rel).map_or(0, |r| r.1))).collect();
    if flags.dry_run {
        for e in &to_send {
            let (n, name) = (sends[&e.rel], shown(&e.rel));
            match replacing.contains(&e.rel) {
                true => opts.ui.planned(Planned::Replace(Some(n)), &name),
                false => opts.ui.planned(Planned::Copy(Some(n)), &name),
            }
        }
        report.sent = to_send.len() as u64;
        report.replaced = replacing.len() as u64;
        report.bytes = sends.values().sum();
        opts.ui.plan_summary("put -r", &remote, &report);
        return Ok(report);
    }

    // Send every file back to back while reading the results.
    let total: u64 = sends.values().sum();
    let bar = opts.ui.tree_bar(total, to_send.len() as u64);
    let count = to_send.len();
    let (reader, writer) = (&mut conn.reader, &mut conn.writer);
    // Small files are read and hashed on a thread of their own and go out
    // first, the large ones streamed after them.
    let (small, large): (Vec<_>, Vec<_>) =
        to_send.iter().partition(|e| e.size <= WHOLE_MAX && !resumes.contains_key(&e.rel));
    let small = small.into_iter().map(|e| (file_data(e), tree::local_path(local, &e.rel), e.size)).collect();
    let mut ready = send::read_small_files(small, send::read_local);
    let sending = async {
        let mut sent_bytes = 0u64;
        while let Some(batch) = ready.recv().await {
            for file in batch {
                match file {
                    Ok((file, md5)) => {
                        sent_bytes += send::queue_small(writer, file.data, &file.body, &md5, &bar).await?
                    }
                    // A file that vanished or changed since the walk: say
                    // so, and go on with the others.
                    Err((rel, why)) => opts.ui.item_error(&rel, &why),
                }
            }
        }
        for e in large {
            let path = tree::local_path(local, &e.rel);
            if let Some((file, offset, md5)) = resumes.remove(&e.rel) {
                let data = Data { offset: Some(offset), ..file_data(e) };
                send_large(writer, data, (file, e.size - offset), md5, &bar, &path).await?;
                sent_bytes += e.size - offset;
                continue;
            }
            let file = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(err) => {
                    opts.ui.item_error(&e.rel, &crate::error::plain_io(&err));
                    continue;
                }
            };
            send_large(writer, file_data(e), (file, e.size), PartsDigest::new(), &bar, &path).await?;
            sent_bytes += e.size;
        }
        writer.write(&End::default().into()).await?;
        Ok::<u64, Error>(sent_bytes)
    };
    // The results; an `error` about the tree as a whole (its disk is
    // full) stops it.
    let receiving = async {
        let mut results = TreeReport::default();
        loop {
            match reader.expect_control().await? {
                ServerMessage::Ok(stored) => {
                    opts.ui.copied(&bar, &stored.filename);
                    results.sent += 1;
                    results.bytes += sends.get(&stored.filename).copied().unwrap_or(0);
                    results.replaced += u64::from(replacing.contains(&stored.filename));
                    bar.set_message(format!("{}/{count} files", results.sent + results.failed));
                }
                ServerMessage::Error(Refusal { filename, code, message }) if filename.is_empty() => {
                    return Ok::<_, Error>((results, Some(RequestError::new(code, message))))
                }
                ServerMessage::Error(Refusal { filename, message, .. }) => {
                    file_failed(&opts.ui, &mut results, &filename, &reason(&message))
                }
                ServerMessage::End(_) => return Ok((results, None)),
                reply => return Err(unexpected_reply(reply, "ok, error or end")),
            }
        }
    };
    tokio::pin!(sending, receiving);
    let (results, stopped) = tokio::select! {
        sent = &mut sending => {
            sent?;
            receiving.await?
        }
        // Stopped: what is still being sent is abandoned with the connection.
        got = &mut receiving => match got? {
            (results, None) => {
                sending.await?;
                (results, None)
            }
            stopped => stopped,
        },
    };
    bar.finish_and_clear();
    report.sent = results.sent;
    report.replaced = results.replaced;
    report.bytes = results.bytes;
    report.failed += results.failed;
    if let Some(err) = stopped {
        opts.ui.tree_summary("put", &remote, &report, started.elapsed());
        return Err(Error::Remote(err));
    }
    // Files we could not even open count as failed too.
    report.failed += count as u64 - results.sent - results.failed;
    opts.ui.tree_summary("put", &remote, &report, started.elapsed());
    Ok(report)
}

/// The `data` message for a file of the tree, sent whole.
/// Our copy of a file put -r compares, opened for hashing with the size
/// the walk found.
fn open_ours(top: &Path, e: &TreeEntry) -> std::io::Result<(std::fs::File, u64)> {
    std::fs::File::open(tree::local_path(top, &e.rel)).map(|f| (f, e.size))
}

fn file_data(e: &TreeEntry) -> Data {
    Data { filename: e.rel.clone(), mode: Some(e.mode), mtime: Some(e.mtime), ..Data::default() }
}

/// Streams a large file of the tree (see [`send::send_large`]); `prefix`
/// is the digest of the parts before it. A file that changes under us
/// stops the tree: its body cannot be completed.
async fn send_large(
    writer: &mut Writer<ClientMessage>,
    data: Data,
    file: (std::fs::File, u64),
    prefix: PartsDigest,
    bar: &ProgressBar,
    path: &Path,
) -> Result<Md5Hex, Error> {
    // Part digests are kept only by a server, to send again.
    match send::send_large(writer, data, file, (prefix, Digest::Compute), 0, bar).await? {
        Ok(sent) => Ok(sent.digest.finish()),
        Err(err) => Err(Error::LocalUnusable(format!("{}: {err}; stopping", path.display()))),
    }
}

/// Makes the local directory `top` a copy of the remote tree `remote`.
/// Everything is made beneath a directory handle on `top`, as the server
/// does beneath its root (see [`crate::tree::receive`]); a directory made
/// for a tree that then fails at once is removed again.
pub async fn get_tree(
    client: &mut Client,
    opts: &Options,
    remote: &str,
    top: &Path,
    flags: Flags,
) -> Result<TreeReport, Error> {
    if flags.dry_run {
        return fetch_tree(client, opts, remote, top, !top.exists(), flags).await;
    }
    let fresh = make_top(top).map_err(|e| Error::local(top, e))?;
    let fetched = fetch_tree(client, opts, remote, top, fresh, flags).await;
    if fetched.is_err() && fresh {
        // Only if still empty: nothing of the tree came.
        let _ = std::fs::remove_dir(top);
    }
    fetched
}

/// [`get_tree`] into `top`, there already; `fresh` if made just now.
async fn fetch_tree(
    client: &mut Client,
    opts: &Options,
    remote: &str,
    top: &Path,
    fresh: bool,
    flags: Flags,
) -> Result<TreeReport, Error> {
    // A dry run into a directory not there yet looks from the nearest one
    // that is (and finds nothing, all of it being new).
    let (opened, below) = match fresh && flags.dry_run {
        true => nearest_existing(top),
        false => (top.to_path_buf(), String::new()),
    };
    let root = std::sync::Arc::new(Root::open(&opened).map_err(|e| Error::local(top, e))?);
    let below =
        RemotePath::parse(&below).map_err(|e| Error::LocalUnusable(format!("{}: {e}", top.display())))?;
    let started = Instant::now();
    let conn = &mut client.conn;
    let req = GetTree {
        filename: remote.to_string(),
        force: flags.force,
        dry_run: flags.dry_run,
        compress: conn.writer.compressing(),
    };
    conn.writer.write(&ClientMessage::GetTree(req)).await?;

    // The manifest, applied beneath `root` as it comes in batches: every
    // name is checked as strictly as the server checks ours, and no link a
    // hostile server makes can lead a write outside `top`.
    let mut report = TreeReport::default();
    let mut receiver = Receiver::new(below, fresh, flags.force, flags.resume)
        .touching_top()
        .dry_run(flags.dry_run)
        .deleting(flags.delete);
    let shown = |rel: &str| tree::local_path(top, rel).to_string_lossy().into_owned();
    let mut wants = Vec::new();
    // Files wanted where a copy is (identical, or replaced with --force).
    let mut replacing = std::collections::HashSet::new();
    let (mut batch, mut budget) = (Vec::new(), tree::ManifestBudget::default());
    // The top's own mode and time, from the manifest's `end`.
    let top_meta = loop {
        if !batch.is_empty() && !conn.reader.header_buffered() {
            let applied;
            (receiver, applied) =
                receiver.apply_off_thread(root.clone(), std::mem::take(&mut batch), false).await;
            want_or_fail(opts, applied, &receiver, flags.force, (&mut wants, &mut replacing), &mut report);
        }
        let h = conn.reader.expect_control().await?;
        let note = match &h {
            ServerMessage::Entry(e) if e.kind == EntryKind::Other => e.message.as_deref(),
            ServerMessage::Error(r) => Some(r.message.as_str()),
            _ => None,
        };
        if note.is_some_and(|note| !budget.admit_note(note)) {
            return Err(ConnError::Unexpected { got: h.op(), expected: tree::MANIFEST_LIMIT }.into());
        }
        let entry = match h {
            // What the server's walk left out: a warning, or (could not
            // be read) a failure, as our own walk reports them in put -r.
            ServerMessage::Entry(e) if e.kind == EntryKind::Other => {
                let why = e.message.as_deref().unwrap_or("skipped");
                warn(opts, &format!("{}: {why}", e.filename));
                receiver.note(&e.filename);
                continue;
            }
            ServerMessage::Error(Refusal { filename, message, .. }) if !filename.is_empty() => {
                file_failed(&opts.ui, &mut report, &filename, &reason(&message));
                receiver.note(&filename);
                continue;
            }
            ServerMessage::Entry(e) => e,
            ServerMessage::End(end) => break end.mode.zip(end.mtime),
            reply => return Err(unexpected_reply(reply, "entry or end")),
        };
        let Some(e) = TreeEntry::from_entry(entry) else { continue };
        if !budget.admit(&e) {
            return Err(ConnError::Unexpected { got: "entry", expected: tree::MANIFEST_LIMIT }.into());
        }
        batch.push(e);
    };
    let applied;
    (receiver, applied) = receiver.apply_off_thread(root.clone(), batch, true).await;
    want_or_fail(opts, applied, &receiver, flags.force, (&mut wants, &mut replacing), &mut report);
    if flags.delete {
        // What the remote tree lacks goes first, making room.
        let pruning = root.clone();
        let (back, (deleted, failed)) = tokio::task::spawn_blocking(move || {
            let pruned = receiver.prune(&pruning);
            (receiver, pruned)
        })
        .await
        .expect("pruning does not panic");
        receiver = back;
        for rel in deleted {
            report.deleted += 1;
            match flags.dry_run {
                true => opts.ui.planned(Planned::Delete, &shown(&rel)),
                false => opts.ui.deleting(&ProgressBar::hidden(), &shown(&rel)),
            }
        }
        if let Some((rel, e)) = failed {
            file_failed(
                &opts.ui,
                &mut report,
                &rel,
                &format!("cannot delete: {}", crate::error::plain_io(&e)),
            );
        }
    }

    let files = &receiver.files;
    let total: u64 =
        wants.iter().filter_map(|w: &Want| Some(files.get(&w.filename)?.size - w.offset.unwrap_or(0))).sum();
    let count = wants.len() as u64;
    for w in wants {
        // An offer to resume carries its parts' digests.
        let body = match w.offset {
            Some(_) => receiver.offered_body(&w.filename),
            None => Vec::new(),
        };
        conn.writer.queue(&ClientMessage::Want(w), &body).await?;
    }
    conn.writer.write(&End::default().into()).await?;
    if flags.dry_run {
        return dry_results(conn, opts, remote, report, &replacing, shown).await;
    }

    // Small files are verified and written by the tree writer's threads
    // while we read on; larger ones are streamed here.
    let base = root.handle().map_err(|err| Error::local(top, err))?;
    let mut small = TreeWriter::start(base, flags.force).map_err(|err| Error::local(top, err))?;
    let bar = opts.ui.tree_bar(total, count);
    let mut answered = 0u64;
    // A full disk here stops the tree: why, told once.
    let mut full = None;
    while full.is_none() {
        for w in small.ready() {
            small_result(&mut report, w, opts, &bar, &mut full);
        }
        let frame = conn.reader.expect().await?;
        let len = frame.total_size;
        let h = match frame.msg {
            ServerMessage::Data(data) => data,
            other => {
                conn.reader.skip_body(len).await?;
                match other {
                    ServerMessage::End(_) => break,
                    ServerMessage::Ok(Stored { skipped: true, .. }) => report.skipped += 1,
                    ServerMessage::Error(Refusal { filename, message, .. }) => {
                        file_failed(&opts.ui, &mut report, &filename, &reason(&message))
                    }
                    reply => return Err(unexpected_reply(reply, "data, ok, error or end")),
                }
                answered += 1;
                bar.set_message(format!("{answered}/{count} files"));
                continue;
            }
        };
        let Some(e) = receiver.files.get(&h.filename).cloned() else {
            return Err(ConnError::Unexpected { got: "data", expected: "a file we asked for" }.into());
        };
        if len <= WHOLE_MAX && h.offset.is_none() {
            // Not resumed after all (the file shrank): its partial is stale.
            receiver.forget_partial(&h.filename);
            let body = conn.reader.read_small_body(len, WHOLE_MAX as usize).await?;
            let sent = match conn.reader.expect_control().await? {
                ServerMessage::Done(done) => done.md5,
                reply => return Err(unexpected_reply(reply, "done")),
            };
            // Names were checked when the manifest came.
            let Ok(path) = receiver.path(&e.rel) else {
                return Err(ConnError::Unexpected { got: "data", expected: "a file we asked for" }.into());
            };
            let meta = (h.mode.unwrap_or(e.mode), h.mtime.unwrap_or(e.mtime));
            bar.inc(len);
            small.write(SmallFile { rel: e.rel.clone(), path, body, sent, meta }).await;
            answered += 1;
            bar.set_message(format!("{answered}/{count} files"));
            continue;
        }
        // The threads write what waits while this one streams.
        small.flush().await;
        if let Some(offset) = h.offset.filter(|&o| o > 0) {
            bar.suspend(|| opts.ui.resuming(&e.rel, offset));
        }
        match receive_file(conn, &root, &mut receiver, (&h, len), &bar).await? {
            Ok(bytes) => {
                opts.ui.copied(&bar, &e.rel);
                report.sent += 1;
                report.bytes += bytes;
            }
            Err((msg, true)) => full = Some(msg),
            Err((msg, false)) => file_failed(&opts.ui, &mut report, &e.rel, &msg),
        }
        answered += 1;
        bar.set_message(format!("{answered}/{count} files"));
    }
    for w in small.finish().await {
        small_result(&mut report, w, opts, &bar, &mut full);
    }
    bar.finish_and_clear();
    if let Some(why) = full {
        // What is still coming is abandoned with the connection.
        opts.ui.tree_summary("get", remote, &report, started.elapsed());
        let words = "the local disk is full; the tree stopped (free space and run again to go on)";
        return Err(Error::LocalUnusable(format!("{}: {why}: {words}", top.display())));
    }
    // Directory modes and times last, then, if asked, everything to disk:
    // on the blocking pool, as the server does.
    let synced = tokio::task::spawn_blocking(move || {
        receiver.finish_dirs(&root, top_meta);
        match flags.fsync {
            true => root.handle().and_then(|dir| crate::local::sync_filesystem(&dir)),
            false => Ok(()),
        }
    })
    .await
    .expect("setting directory times does not panic");
    if let Err(err) = synced {
        file_failed(&opts.ui, &mut report, &top.to_string_lossy(), &crate::error::plain_io(&err));
    }
    opts.ui.tree_summary("get", remote, &report, started.elapsed());
    Ok(report)
}

/// What a dry get_tree's answers say would become of each wanted file,
/// printed as the plan, then its summary.
async fn dry_results(
    conn: &mut ClientConnection,
    opts: &Options,
    remote: &str,
    mut report: TreeReport,
    replacing: &std::collections::HashSet<String>,
    shown: impl Fn(&str) -> String,
) -> Result<TreeReport, Error> {
    loop {
        match conn.reader.expect_control().await? {
            ServerMessage::Ok(Stored { filename, skipped: true, .. }) => {
                opts.ui.planned(Planned::Skip, &shown(&filename));
                report.skipped += 1;
            }
            ServerMessage::Ok(Stored { filename, size, .. }) => {
                let n = size.unwrap_or(0);
                report.sent += 1;
                report.bytes += n;
                match replacing.contains(&filename) {
                    true => {
                        report.replaced += 1;
                        opts.ui.planned(Planned::Replace(Some(n)), &shown(&filename))
                    }
                    false => opts.ui.planned(Planned::Copy(Some(n)), &shown(&filename)),
                }
            }
            ServerMessage::Error(Refusal { filename, message, .. }) => {
                file_failed(&opts.ui, &mut report, &filename, &reason(&message))
            }
            ServerMessage::End(_) => break,
            reply => return Err(unexpected_reply(reply, "ok, error or end")),
        }
    }
    opts.ui.plan_summary("get -r", remote, &report);
    Ok(report)
}

/// The nearest directory at or above `path` that exists, and the rest of
/// `path` below it, `/`-separated.
fn nearest_existing(path: &Path) -> (std::path::PathBuf, String) {
    let mut below = Vec::new();
    let mut at = path.to_path_buf();
    while !at.is_dir() {
        match (at.file_name().map(|n| n.to_string_lossy().into_owned()), at.parent()) {
            (Some(name), Some(parent)) => {
                below.push(name);
                at = if parent.as_os_str().is_empty() { ".".into() } else { parent.to_path_buf() };
            }
            _ => break,
        }
    }
    below.reverse();
    (at, below.join("/"))
}

/// Makes the destination the user named, and missing parents (as `mkdir
/// -p`); says whether it was made just now.
fn make_top(path: &Path) -> std::io::Result<bool> {
    match std::fs::create_dir(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && path.is_dir() => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir_all(path).map(|()| true),
        Err(e) => Err(e),
    }
}

/// Turns what the manifest's entries found into `want` frames, or into
/// failures: a differing file is wanted only with `--force`.
fn want_or_fail(
    opts: &Options,
    applied: Vec<Applied>,
    receiver: &Receiver,
    force: bool,
    (wants, replacing): (&mut Vec<Want>, &mut std::collections::HashSet<String>),
    report: &mut TreeReport,
) {
    for a in applied {
        match a {
            Applied::Refused { rel, err } => file_failed(&opts.ui, report, &rel, &err.message),
            Applied::File { rel, found } => {
                let size = receiver.files.get(&rel).map_or(0, |e| e.size);
                let mut want = Want { filename: rel.clone(), md5: None, offset: None };
                match found {
                    Found::Nothing => {}
                    Found::Existing { size: theirs, md5 } if theirs == size => {
                        replacing.insert(rel.clone());
                        want.md5 = md5
                    }
                    Found::Existing { .. } if !force => {
                        file_failed(&opts.ui, report, &rel, &exists_words("exists and differs"));
                        continue;
                    }
                    Found::Existing { .. } => drop(replacing.insert(rel.clone())),
                    Found::Partial { offset, md5 } => {
                        want.offset = Some(offset);
                        want.md5 = Some(md5);
                    }
                }
                wants.push(want);
            }
        }
    }
}

/// Counts a small file the tree writer is done with; a full disk is not
/// counted but kept in `full`, to stop the tree.
fn small_result(
    report: &mut TreeReport,
    w: Written,
    opts: &Options,
    bar: &ProgressBar,
    full: &mut Option<String>,
) {
    match w.result {
        Err(WriteError::Io(err)) if crate::error::disk_full(&err) => {
            full.get_or_insert_with(|| format!("{}: {}", escape(&w.rel), crate::error::plain_io(&err)));
        }
        Ok(_) => {
            opts.ui.copied(bar, &w.rel);
            report.sent += 1;
            report.bytes += w.size;
        }
        Err(WriteError::Mismatch { sent, received }) => {
            let msg = mismatch_words(None, sent.as_ref().map(|m| m.as_str()), received.as_str());
            file_failed(&opts.ui, report, &w.rel, &msg);
        }
        Err(WriteError::Exists) => file_failed(&opts.ui, report, &w.rel, &exists_words("exists")),
        Err(WriteError::Io(err)) => file_failed(&opts.ui, report, &w.rel, &crate::error::plain_io(&err)),
    }
}

/// Receives one large file (see [`Receiver::receive_file`]). The outer
/// error is a broken connection or a server that resumes what we did not
/// offer; the inner one a failure of this file alone, in words, and
/// whether it was a full disk. Returns the body bytes received.
async fn receive_file(
    conn: &mut ClientConnection,
    root: &Root,
    receiver: &mut Receiver,
    data: (&Data, u64),
    bar: &ProgressBar,
) -> Result<Result<u64, (String, bool)>, Error> {
    Ok(Err(match receiver.receive_file(&mut conn.reader, root, data, bar).await? {
        Ok(committed) => return Ok(Ok(committed.bytes)),
        Err(FileFailure::Offset { .. }) => {
            return Err(
                ConnError::Unexpected { got: "data", expected: "data from an offset we offered" }.into()
            )
        }
        Err(FileFailure::Refused(err))
            if data.0.offset.is_some() && err.code == crate::protocol::ErrorCode::BadRequest =>
        {
            return Err(
                ConnError::Unexpected { got: "data", expected: "data from an offset we offered" }.into()
            )
        }
        Err(FileFailure::Refused(err)) => (err.message, false),
        Err(FileFailure::Write { source: e, .. } | FileFailure::Commit(e)) => {
            (crate::error::plain_io(&e), crate::error::disk_full(&e))
        }
        Err(FileFailure::Mismatch { sent, received }) => {
            (mismatch_words(None, sent.as_ref().map(|m| m.as_str()), &received), false)
        }
        Err(FileFailure::Exists) => (exists_words("exists"), false),
    }))
}
