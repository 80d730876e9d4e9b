//! `mkdir`: make a directory beneath the root (with `parents`, as
//! `mkdir -p`).

use super::request::{checked_path, refuse, Outcome};
use super::{blocking, Session};
use crate::connection::ServerConnection;
use crate::error::{ConnError, RequestError};
use crate::protocol::{ErrorCode, Mkdir, ServerMessage, Stored};
use std::sync::Arc;

pub(crate) async fn handle(
    conn: &mut ServerConnection,
    shared: &Arc<Session>,
    req: Mkdir,
) -> Result<Outcome, ConnError> {
    let outcome = Outcome::new(&req.filename);
    let path = match checked_path(&req.filename) {
        Ok(p) => p,
        Err(e) => return refuse(conn, outcome, e).await,
    };
    let (shown, parents) = (path.to_string(), req.parents);
    let made = blocking(shared, move |root| root.make_dir_at(&path, parents || path.is_root())).await;
    let err = match made {
        Ok(()) => {
            let ok = Stored { filename: req.filename, ..Stored::default() };
            conn.writer.write(&ServerMessage::Ok(ok)).await?;
            return Ok(outcome);
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let words = format!("remote path {shown} exists (mkdir -p accepts a directory that is there)");
            RequestError::new(ErrorCode::Exists, words)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let words = format!("cannot make {shown}: its parent is missing on the server (use -p)");
            RequestError::new(ErrorCode::NotFound, words)
        }
        Err(e) => RequestError::from_io(&e, &shown),
    };
    refuse(conn, outcome, err).await
}
