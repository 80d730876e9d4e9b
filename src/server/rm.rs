//! `rm`: remove a file, a link, or (`recursive`) a directory and all in
//! it, beneath the root; one `deleted` per thing removed, then `end`.

use super::request::{checked_path, refuse, Outcome};
use super::{blocking, Session};
use crate::connection::ServerConnection;
use crate::error::{ConnError, RequestError};
use crate::local::Removal;
use crate::protocol::{End, ErrorCode, Rm, ServerMessage};
use std::sync::Arc;

/// Names of removed things sent per batch while the removal goes on.
const BATCH: usize = 256;

pub(crate) async fn handle(
    conn: &mut ServerConnection,
    shared: &Arc<Session>,
    req: Rm,
) -> Result<Outcome, ConnError> {
    let outcome = Outcome::new(&req.filename);
    let path = match checked_path(&req.filename) {
        Ok(p) if p.is_root() => {
            let err = RequestError::new(ErrorCode::BadPath, "rm refuses the root; name what is in it");
            return refuse(conn, outcome, err).await;
        }
        Ok(p) => p,
        Err(e) => return refuse(conn, outcome, e).await,
    };
    // Removed on the blocking pool; the names come back in batches, so a
    // large tree never sits whole in memory.
    let (names, mut batches) = tokio::sync::mpsc::channel::<Vec<String>>(4);
    let how = Removal { recursive: req.recursive, dry: false };
    let shown = path.to_string();
    let removing = blocking(shared, move |root| {
        let mut batch = Vec::new();
        let done = root.remove(&path, &shown, how, &mut |gone| {
            batch.push(gone.to_string());
            if batch.len() >= BATCH {
                let _ = names.blocking_send(std::mem::take(&mut batch));
            }
        });
        let _ = names.blocking_send(batch);
        done
    });
    tokio::pin!(removing);
    let mut result = None;
    loop {
        tokio::select! {
            batch = batches.recv() => match batch {
                Some(batch) => {
                    for filename in batch {
                        conn.writer.queue(&ServerMessage::Deleted { filename }, &[]).await?;
                    }
                    conn.writer.flush().await?;
                }
                None => break,
            },
            done = &mut removing, if result.is_none() => result = Some(done),
        }
    }
    let result = match result {
        Some(r) => r,
        None => removing.await,
    };
    match result {
        Ok(()) => {
            conn.writer.write(&ServerMessage::End(End::default())).await?;
            Ok(outcome)
        }
        Err((what, e)) if e.kind() == std::io::ErrorKind::IsADirectory => {
            let msg = format!("remote path is a directory: {what} (use -r to remove it and all in it)");
            refuse(conn, outcome, RequestError::new(ErrorCode::WrongType, msg)).await
        }
        Err((what, e)) => refuse(conn, outcome, RequestError::from_io(&e, &what)).await,
    }
}
