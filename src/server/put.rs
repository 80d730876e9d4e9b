//! `put`: receive a file into the partial beside its destination, verify
//! the sender's MD5 of the whole file, then commit it by rename. A partial
//! left by an interrupted put is offered back for resuming.

use super::request::{refuse, Outcome};
use super::Shared;
use crate::connection::ServerConnection;
use crate::digest::Md5;
use crate::error::{ConnError, RequestError};
use crate::fs::{CommitError, RemotePath, Staged};
use crate::protocol::{ClientMessage, ErrorCode, Message, Put, ServerMessage};
use crate::transfer::{hash_prefix, receive_into, CopyError, NoProgress};
use std::io::Seek;
use std::sync::Arc;

/// A destination ready to receive: its partial, and what it already holds.
struct Prepared {
    /// The partial file's guard.
    staged: Staged,
    /// The partial, open for writing.
    file: std::fs::File,
    /// Bytes the partial holds that may be resumed from (0: start over).
    held: u64,
    /// MD5 of those bytes, ready to continue with the rest.
    prefix: Md5,
    /// The destination path as shown in messages.
    path: String,
}

pub(crate) async fn handle(
    conn: &mut ServerConnection,
    shared: &Arc<Shared>,
    req: Put,
) -> Result<Outcome, ConnError> {
    let mut outcome = Outcome::new(&req.filename);
    let prepared = match prepare(shared, &req).await {
        Ok(p) => p,
        Err(e) => return refuse(conn, outcome, e).await,
    };
    let Prepared { staged, mut file, held, prefix, path } = prepared;
    let ready = ServerMessage::Ready {
        filename: req.filename.clone(),
        offset: Some(held),
        md5: (held > 0).then(|| prefix.clone().finish()),
    };
    conn.writer.write(&ready).await?;

    let frame = conn.reader.expect().await?;
    let ClientMessage::Data(data) = frame.msg else {
        return Err(ConnError::Unexpected { got: frame.msg.op(), expected: "data" });
    };
    let len = frame.total_size;
    // The client resumes at our offset when its own prefix matches, or
    // starts over at 0; nothing else is valid.
    let (start, md5) = match data.offset.unwrap_or(0) {
        0 => (0, Md5::new()),
        o if o == held => (held, prefix),
        other => {
            // Stay in step: the body still follows.
            conn.reader.skip_body(len).await?;
            let msg = format!("data for {path} starts at {other}, but the server holds {held} bytes");
            return refuse(conn, outcome, RequestError::new(ErrorCode::BadRequest, msg)).await;
        }
    };
    if start == 0 {
        let reset = file.set_len(0).and_then(|()| file.rewind());
        if let Err(e) = reset {
            conn.reader.skip_body(len).await?;
            return refuse(conn, outcome, RequestError::from_io(&e, &path)).await;
        }
    }
    let copied = receive_into(&mut conn.reader.body(len), len, file, md5, &NoProgress).await;
    let received = match copied {
        Ok(md5) => md5,
        // The client vanished mid-body: the partial keeps what arrived, for
        // the next run to resume.
        Err(CopyError::Read { .. } | CopyError::Short { .. }) => return Err(ConnError::Truncated("body")),
        Err(CopyError::Write { done, source }) => {
            // Our disk failed (full, say). Tell the client at once, so it can
            // stop sending, then stay in step by discarding the rest.
            staged.discard();
            outcome.bytes = done;
            let outcome = refuse(conn, outcome, RequestError::from_io(&source, &path)).await?;
            conn.reader.skip_body(len - done).await?;
            conn.reader.expect_done().await?;
            return Ok(outcome);
        }
    };
    outcome.bytes = len;

    let sent = match conn.reader.expect_done().await {
        Ok(sent) => sent,
        Err(e) => {
            // A peer that breaks the protocol here gets nothing kept; one that
            // merely vanished may resume (its bytes are checked then).
            if matches!(e, ConnError::Frame(_) | ConnError::Unexpected { .. }) {
                staged.discard();
            }
            return Err(e);
        }
    };
    if sent.as_ref() != Some(&received) {
        staged.discard();
        return refuse(conn, outcome, RequestError::mismatch(&path.to_string(), sent.as_ref(), &received))
            .await;
    }
    let (force, durable) = (req.force, req.fsync || shared.config.fsync);
    let committed = tokio::task::spawn_blocking(move || match durable {
        true => staged.commit_durably(force),
        false => staged.commit(force),
    })
    .await
    .expect("commit does not panic");
    match committed {
        Ok(()) => {}
        Err(CommitError::Exists) => return refuse(conn, outcome, exists(&path)).await,
        Err(CommitError::Io(e)) => return refuse(conn, outcome, RequestError::from_io(&e, &path)).await,
    }
    let ok = ServerMessage::Ok {
        filename: req.filename.clone(),
        md5: Some(received.clone()),
        size: Some(start + len),
        skipped: false,
    };
    conn.writer.write(&ok).await?;
    outcome.md5 = Some(received);
    Ok(outcome)
}

/// Checks the request and opens the partial, before any body is sent.
async fn prepare(shared: &Arc<Shared>, req: &Put) -> Result<Prepared, RequestError> {
    let path =
        RemotePath::parse(&req.filename).map_err(|e| RequestError::new(ErrorCode::BadPath, e.to_string()))?;
    if path.is_root() {
        return Err(RequestError::new(ErrorCode::BadPath, "put needs a file name, not the root"));
    }
    let (force, resume, size, task_shared) = (req.force, req.resume, req.size, shared.clone());
    tokio::task::spawn_blocking(move || {
        let shown = path.to_string();
        match task_shared.root.kind_of(&path) {
            Ok(Some(true)) => {
                let msg = format!("remote path is a directory: {shown} (end it with / to put inside it)");
                return Err(RequestError::new(ErrorCode::WrongType, msg));
            }
            Ok(Some(false)) if !force => return Err(exists(&shown)),
            Ok(_) => {}
            Err(e) => return Err(RequestError::from_io(&e, &shown)),
        }
        let (staged, mut file, held) = task_shared.root.stage(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                // A missing file here is a parent that could not be made.
                RequestError::new(ErrorCode::NotFound, format!("cannot create {shown}: a parent is missing"))
            } else {
                RequestError::from_io(&e, &shown)
            }
        })?;
        // Resume only what can be a prefix of the incoming file.
        let usable = resume && size.is_some_and(|s| held <= s);
        let (held, prefix) = match usable.then(|| hash_prefix(&mut file, held)) {
            Some(Ok(prefix)) if held > 0 => (held, prefix),
            _ => (0, Md5::new()),
        };
        Ok(Prepared { staged, file, held, prefix, path: shown })
    })
    .await
    .expect("staging does not panic")
}

fn exists(path: &str) -> RequestError {
    RequestError::exists(path)
}
