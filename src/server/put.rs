//! `put`: receive a file's parts into the partial beside its destination,
//! verify each part and the sender's digest over them, then commit it by
//! rename. A partial
//! left by an interrupted put is offered back for resuming.

use super::request::{refuse, Outcome};
use super::Session;
use crate::connection::ServerConnection;
use crate::error::{ConnError, RequestError};
use crate::local::meta::MODE_MASK;
use crate::local::Partial;
use crate::protocol::{
    parts_body, ClientMessage, ErrorCode, Have, Md5Hex, Message, Put, ServerMessage, Stored,
};
use crate::transfer::{drain, receive_file, Commit, FileFailure, NoProgress};
use std::sync::Arc;

pub(crate) async fn handle(
    conn: &mut ServerConnection,
    shared: &Arc<Session>,
    req: Put,
) -> Result<Outcome, ConnError> {
    let mut outcome = Outcome::new(&req.filename);
    let (partial, path) = match prepare(shared, &req).await {
        Ok(Prepared::Partial(partial, path)) => (*partial, path),
        // Not replaced without `force`: the client decides from its size
        // and MD5 whether it is identical (then done) or in the way.
        Ok(Prepared::Existing { size, md5 }) => {
            let have = Have { filename: req.filename.clone(), size, md5 };
            conn.writer.write(&ServerMessage::Have(have)).await?;
            outcome.existing = true;
            return Ok(outcome);
        }
        Ok(Prepared::Nothing) => {
            // A dry run, and nothing in the way: a put would store it.
            let would = Stored { filename: req.filename.clone(), md5: None, size: req.size, skipped: false };
            conn.writer.write(&ServerMessage::Ok(would)).await?;
            return Ok(outcome);
        }
        Err(e) => return refuse(conn, outcome, e).await,
    };
    // The partial's parts, each with its digest, so the client resumes
    // after those that are its own.
    let (offset, md5, parts) =
        partial.offer().map_or((0, None, &[][..]), |(k, md5, parts)| (k, Some(md5), parts));
    let ready = ServerMessage::Ready { filename: req.filename.clone(), offset: Some(offset), md5 };
    conn.writer.write_frame(&ready, &parts_body(parts)).await?;
    conn.writer.flush().await?;

    let frame = conn.reader.expect().await?;
    let ClientMessage::Data(data) = frame.msg else {
        return Err(ConnError::Unexpected { got: frame.msg.op(), expected: "data" });
    };
    // The client resumes after the parts of ours that are its own (all,
    // some or none); any other offset is refused.
    let (start, len) = (data.offset.unwrap_or(0), frame.total_size);
    let meta = req.mode.zip(req.mtime).map(|(mode, mtime)| (mode & MODE_MASK, mtime));
    let how = Commit { replace: req.force, durable: req.fsync || shared.config.fsync, meta };
    let received = match receive_file(&mut conn.reader, partial, (&data, len), how, &NoProgress).await? {
        Ok(received) => received,
        Err(failure) => {
            let err = match failure {
                FileFailure::Offset { offset, held } => RequestError::offset(&path, offset, held),
                FileFailure::Refused(err) => err,
                FileFailure::Write { source, written, pending } => {
                    // Our disk failed (full, say). Tell the client at once,
                    // so it can stop sending, then stay in step.
                    outcome.bytes = written;
                    let outcome = refuse(conn, outcome, RequestError::from_io(&source, &path)).await?;
                    if pending {
                        drain(&mut conn.reader, 0).await?;
                    }
                    return Ok(outcome);
                }
                FileFailure::Mismatch { sent, received } => {
                    RequestError::mismatch(&path, sent.as_ref(), &received)
                }
                FileFailure::Exists => RequestError::exists(&path),
                FileFailure::Commit(e) => RequestError::from_io(&e, &path),
            };
            return refuse(conn, outcome, err).await;
        }
    };
    outcome.bytes = received.bytes;
    let ok = ServerMessage::Ok(Stored {
        filename: req.filename.clone(),
        md5: Some(received.md5.clone()),
        size: Some(start + received.bytes),
        skipped: false,
    });
    conn.writer.write(&ok).await?;
    outcome.md5 = Some(received.md5);
    Ok(outcome)
}

/// Where a put stands before any body is sent.
enum Prepared {
    /// Ready to receive: the partial (hashed, if it may be resumed) and
    /// the path as shown.
    Partial(Box<Partial>, String),
    /// A file is there and `force` was not given: its size, and its MD5
    /// when the size is the one coming.
    Existing { size: u64, md5: Option<Md5Hex> },
    /// A dry run with nothing in the way.
    Nothing,
}

/// Checks the request and opens the partial, or looks at the file in the
/// way.
async fn prepare(shared: &Arc<Session>, req: &Put) -> Result<Prepared, RequestError> {
    let path = super::request::checked_path(&req.filename)?;
    if path.is_root() {
        return Err(RequestError::new(ErrorCode::BadPath, "put needs a file name, not the root"));
    }
    let (force, resume, size, task_shared) = (req.force, req.resume, req.size, shared.clone());
    let dry = req.dry_run;
    tokio::task::spawn_blocking(move || {
        let shown = path.to_string();
        match task_shared.root.kind_of(&path) {
            Ok(Some(true)) => {
                let msg = format!("remote path is a directory: {shown} (end it with / to put inside it)");
                return Err(RequestError::new(ErrorCode::WrongType, msg));
            }
            // A dry run says what is there even with `force`, to tell
            // replacing from skipping.
            Ok(Some(false)) if !force || dry => {
                let (size, md5) = task_shared
                    .digests
                    .compare(&task_shared.root, &path, size)
                    .map_err(|e| RequestError::from_io(&e, &shown))?;
                return Ok(Prepared::Existing { size, md5 });
            }
            Ok(_) if dry => return Ok(Prepared::Nothing),
            Ok(_) => {}
            Err(e) => return Err(RequestError::from_io(&e, &shown)),
        }
        let mut partial = task_shared.root.stage(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                // A missing file here is a parent that could not be made.
                RequestError::new(ErrorCode::NotFound, format!("cannot create {shown}: a parent is missing"))
            } else {
                RequestError::from_io(&e, &shown)
            }
        })?;
        // Resume only what can be a prefix of the incoming file.
        if resume && size.is_some_and(|s| partial.found() <= s) {
            partial.hash_for_resume();
        }
        Ok(Prepared::Partial(Box::new(partial), shown))
    })
    .await
    .expect("staging does not panic")
}
