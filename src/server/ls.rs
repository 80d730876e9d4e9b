//! `ls`: stream a directory's entries, one `entry` frame each, then `end`;
//! and `stat`: the one `entry` of a path itself.

use super::request::{checked_path, refuse, Outcome};
use super::{blocking, Session};
use crate::connection::ServerConnection;
use crate::error::{ConnError, RequestError};
use crate::local::ListEntry;
use crate::protocol::{End, Entry, ErrorCode, Ls, ServerMessage, Stat};
use std::sync::Arc;

pub(crate) async fn handle(
    conn: &mut ServerConnection,
    shared: &Arc<Session>,
    req: Ls,
) -> Result<Outcome, ConnError> {
    let outcome = Outcome::new(&req.filename);
    let (path, shown) = match named(&req.filename) {
        Ok(named) => named,
        Err(e) => return refuse(conn, outcome, e).await,
    };
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
        conn.writer.write(&entry_of(entry).into()).await?;
    }
    conn.writer.write(&ServerMessage::End(End::default())).await?;
    Ok(outcome)
}

/// The client's path, checked, and as messages show it (`.` for the root).
fn named(raw: &str) -> Result<(crate::local::RemotePath, String), RequestError> {
    let path = checked_path(raw)?;
    let shown = if path.is_root() { ".".to_string() } else { path.to_string() };
    Ok((path, shown))
}

/// The `entry` message for a listed item.
fn entry_of(e: ListEntry) -> Entry {
    Entry {
        size: Some(e.size),
        mtime: Some(e.mtime),
        mode: Some(e.mode),
        target: e.target,
        ..Entry::new(e.name, e.kind)
    }
}

/// `stat`: what the path itself is, as one `entry` (named by its last
/// part; a link is not followed), or `not_found`. Cheap where `ls` of a
/// large directory is not: how a client learns that a path is one.
pub(crate) async fn stat(
    conn: &mut ServerConnection,
    shared: &Arc<Session>,
    req: Stat,
) -> Result<Outcome, ConnError> {
    let outcome = Outcome::new(&req.filename);
    let (path, shown) = match named(&req.filename) {
        Ok(named) => named,
        Err(e) => return refuse(conn, outcome, e).await,
    };
    match blocking(shared, move |root| root.entry(&path)).await {
        Ok(entry) => {
            conn.writer.write(&entry_of(entry).into()).await?;
            Ok(outcome)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let err = RequestError::new(ErrorCode::NotFound, format!("remote path not found: {shown}"));
            refuse(conn, outcome, err).await
        }
        Err(e) => refuse(conn, outcome, RequestError::from_io(&e, &shown)).await,
    }
}
