//! `get`: stream a file as one `data` body, hashing as it goes (unless its
//! digest is remembered from an earlier read), then send its MD5 in a
//! `done` frame. A client holding a verified prefix gets the rest.

use super::request::{checked_path, refuse, Outcome};
use super::{blocking, Session};
use crate::connection::ServerConnection;
use crate::digest::hash_prefix;
use crate::digest::Md5;
use crate::error::{exists_words, ConnError, RequestError};
use crate::protocol::{Data, Done, ErrorCode, Get, ServerMessage, Stored};
use crate::transfer::{send_file, CopyError, Digest, NoProgress};
use std::io::Seek;
use std::sync::Arc;

pub(crate) async fn handle(
    conn: &mut ServerConnection,
    shared: &Arc<Session>,
    req: Get,
) -> Result<Outcome, ConnError> {
    let mut outcome = Outcome::new(&req.filename);
    let path = match checked_path(&req.filename) {
        Ok(p) if !p.is_root() => p,
        Ok(_) => {
            return refuse(
                conn,
                outcome,
                RequestError::new(ErrorCode::WrongType, "get needs a file, not the root"),
            )
            .await
        }
        Err(e) => return refuse(conn, outcome, e).await,
    };
    let shown = path.to_string();
    // The client has a copy of this size and MD5: identical, or in its way.
    if let (None, Some(size), Some(theirs)) = (req.offset, req.size, req.md5.clone()) {
        let (digests, p) = (shared.clone(), path.clone());
        let ours = blocking(shared, move |root| digests.digests.compare(root, &p, Some(size))).await;
        return match ours {
            Ok((_, Some(ours))) if ours == theirs => {
                let skipped = Stored {
                    filename: req.filename.clone(),
                    md5: Some(ours),
                    size: Some(size),
                    skipped: true,
                };
                conn.writer.write(&ServerMessage::Ok(skipped)).await?;
                Ok(outcome)
            }
            Ok(_) => {
                let msg = exists_words(&format!("the client's copy of {shown} differs"));
                refuse(conn, outcome, RequestError::new(ErrorCode::Exists, msg)).await
            }
            Err(e) => refuse(conn, outcome, RequestError::from_io(&e, &shown)).await,
        };
    }
    let opened = blocking(shared, move |root| root.open_read(&path)).await;
    let (mut file, len, mode, mtime, stamp) = match opened {
        Ok(o) => (o.file, o.size, o.mode, o.mtime, o.stamp),
        Err(e) if e.kind() == std::io::ErrorKind::IsADirectory => {
            let err = RequestError::new(ErrorCode::WrongType, format!("remote path is a directory: {shown}"));
            return refuse(conn, outcome, err).await;
        }
        Err(e) => return refuse(conn, outcome, RequestError::from_io(&e, &shown)).await,
    };
    if req.dry_run {
        // The file is there and readable: what a get would bring.
        let would = Stored { filename: req.filename, md5: None, size: Some(len), skipped: false };
        conn.writer.write(&ServerMessage::Ok(would)).await?;
        return Ok(outcome);
    }
    // Resume where the client's partial ends, if its prefix is ours.
    let (offset, digest) = match (req.offset, &req.md5) {
        (Some(held), Some(theirs)) if held > 0 && held <= len => {
            let (mut f, theirs) = (file, theirs.clone());
            let checked = tokio::task::spawn_blocking(move || {
                let ours = hash_prefix(&mut f, held);
                (f, ours)
            })
            .await
            .expect("hashing does not panic");
            file = checked.0;
            match checked.1 {
                Ok(prefix) if prefix.clone().finish() == theirs => (held, Digest::Compute(prefix)),
                _ => (0, remembered(shared, stamp.as_ref())),
            }
        }
        _ => (0, remembered(shared, stamp.as_ref())),
    };
    if offset == 0 {
        if let Err(e) = file.rewind() {
            return refuse(conn, outcome, RequestError::from_io(&e, &shown)).await;
        }
    }
    let body = len - offset;
    let data =
        Data { filename: req.filename.clone(), offset: Some(offset), mode: Some(mode), mtime: Some(mtime) };
    conn.writer.write_head(&data.into(), body).await?;

    // A digest computed over the whole file is worth remembering.
    let whole = offset == 0 && matches!(digest, Digest::Compute(_));
    let sent = send_file(file, body, digest, conn.writer.body_writer(), &NoProgress).await;
    let md5 = match sent {
        Ok(md5) => md5,
        // The file shrank or became unreadable after its size was announced:
        // the body cannot be completed, so the connection must end. The
        // client sees a truncated body and commits nothing.
        Err(CopyError::Read { source, .. }) => return Err(ConnError::Io(source)),
        Err(CopyError::Short { .. }) => return Err(ConnError::Truncated("file read (it shrank)")),
        Err(CopyError::Write { source, .. }) => return Err(ConnError::Io(source)),
    };
    if whole {
        shared.digests.remember(stamp, &md5);
    }
    outcome.bytes = body;
    let done = Done { filename: req.filename, md5: Some(md5.clone()) };
    conn.writer.write(&ServerMessage::Done(done)).await?;
    outcome.md5 = Some(md5);
    Ok(outcome)
}

/// The digest to send the whole file `stamp` with: the remembered one, or
/// one computed on the way.
pub(super) fn remembered(shared: &Session, stamp: Option<&crate::local::Stamp>) -> Digest {
    shared.digests.get(stamp).map_or_else(|| Digest::Compute(Md5::new()), Digest::Known)
}
