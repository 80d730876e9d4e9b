//! `get`: stream a file as parts, each with its MD5 (hashed a batch at a
//! time as it goes, unless remembered from an earlier read), then send the
//! digest over them in a `done` frame. A client holding verified parts
//! gets the rest.

use super::digests::MOST_PARTS;
use super::request::{checked_path, refuse, Outcome};
use super::{blocking, Session};
use crate::connection::ServerConnection;
use crate::error::{exists_words, ConnError, RequestError};
use crate::protocol::{Data, Done, ErrorCode, Get, ServerMessage, Stored};
use crate::transfer::{resume_point, send_parts, CopyError, Digest, NoProgress, Offer, Sending};
use std::sync::Arc;

pub(crate) async fn handle(
    conn: &mut ServerConnection,
    shared: &Arc<Session>,
    req: Get,
    offered_parts: Vec<[u8; 16]>,
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
    let (file, len, mode, mtime, stamp) = match opened {
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
    // Resume after the parts of the client's partial that are ours.
    let offer = Offer { offset: req.offset.unwrap_or(0), md5: req.md5.clone(), parts: offered_parts };
    let start = tokio::task::spawn_blocking(move || resume_point(file, len, &offer));
    let (file, offset, prefix) = match start.await.expect("hashing does not panic") {
        Ok(start) => start,
        Err(e) => return refuse(conn, outcome, RequestError::from_io(&e, &shown)).await,
    };
    let whole = shared.digests.whole(stamp.as_ref()).filter(|_| req.whole_md5);
    let how = Sending {
        head: Data {
            filename: req.filename.clone(),
            size: Some(len),
            mode: Some(mode),
            mtime: Some(mtime),
            ..Data::default()
        },
        from: offset,
        len: len - offset,
        prefix,
        digests: shared.digests.parts(stamp.as_ref()).map_or(Digest::Compute, Digest::Known),
        collect: MOST_PARTS,
        whole: req.whole_md5 && whole.is_none(),
        bar: &NoProgress,
    };
    let sent = match send_parts(file, how, &mut conn.writer).await {
        Ok(sent) => sent,
        // The file shrank or became unreadable after its size was announced:
        // the body cannot be completed, so the connection must end. The
        // client sees a truncated body and commits nothing.
        Err(CopyError::Read { source, .. }) => return Err(ConnError::Io(source)),
        Err(CopyError::Short { .. }) => return Err(ConnError::Truncated("file read (it shrank)")),
        Err(CopyError::Write { source, .. }) => return Err(ConnError::Io(source)),
    };
    // Digests computed over the whole file are worth remembering.
    if let Some(parts) = sent.parts {
        shared.digests.remember_parts(stamp, parts);
    }
    if let Some(whole) = &sent.whole {
        shared.digests.remember_whole(stamp, whole);
    }
    let md5 = sent.digest.finish();
    outcome.bytes = len - offset;
    let done = Done { filename: req.filename, md5: Some(md5.clone()), whole: sent.whole.or(whole) };
    conn.writer.write(&ServerMessage::Done(done)).await?;
    outcome.md5 = Some(md5);
    Ok(outcome)
}
