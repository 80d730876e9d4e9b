//! `ls`: stream a directory's entries, one `entry` frame each, then `end`.

use super::request::{checked_path, refuse, Outcome};
use super::{blocking, Session};
use crate::connection::ServerConnection;
use crate::error::{ConnError, RequestError};
use crate::protocol::{End, Entry, ErrorCode, Ls, ServerMessage};
use std::sync::Arc;

pub(crate) async fn handle(
    conn: &mut ServerConnection,
    shared: &Arc<Session>,
    req: Ls,
) -> Result<Outcome, ConnError> {
    let outcome = Outcome::new(&req.filename);
    let path = match checked_path(&req.filename) {
        Ok(p) => p,
        Err(e) => return refuse(conn, outcome, e).await,
    };
    let shown = if path.is_root() { ".".to_string() } else { path.to_string() };
    // A directory lists what it holds; anything else, itself (as ls does).
    let listed = blocking(shared, move |root| match root.list(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => Ok(vec![root.entry(&path)?]),
        listed => listed,
    })
    .await;
    let entries = match listed {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let err = RequestError::new(ErrorCode::NotFound, format!("remote directory not found: {shown}"));
            return refuse(conn, outcome, err).await;
        }
        Err(e) => return refuse(conn, outcome, RequestError::from_io(&e, &shown)).await,
    };
    for entry in entries {
        let listed = Entry {
            size: Some(entry.size),
            mtime: Some(entry.mtime),
            mode: Some(entry.mode),
            target: entry.target,
            ..Entry::new(entry.name, entry.kind)
        };
        conn.writer.write(&listed.into()).await?;
    }
    conn.writer.write(&ServerMessage::End(End::default())).await?;
    Ok(outcome)
}
