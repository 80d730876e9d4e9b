//! `ls`: stream a directory's entries, one `entry` frame each, then `end`.

use super::request::{refuse, Outcome};
use super::{blocking, Shared};
use crate::connection::Connection;
use crate::error::{ConnError, RequestError};
use crate::fs::RemotePath;
use crate::protocol::{ErrorCode, Header, Op};
use std::sync::Arc;

pub(crate) async fn handle(
    conn: &mut Connection,
    shared: &Arc<Shared>,
    req: Header,
) -> Result<Outcome, ConnError> {
    let outcome = Outcome::new(&req.filename);
    let path = match RemotePath::parse(&req.filename) {
        Ok(p) => p,
        Err(e) => return refuse(conn, outcome, RequestError::new(ErrorCode::BadPath, e.to_string())).await,
    };
    let shown = if path.is_root() { ".".to_string() } else { path.to_string() };
    let listed = blocking(shared, move |root| root.list(&path)).await;
    let entries = match listed {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let err = RequestError::new(ErrorCode::NotFound, format!("remote directory not found: {shown}"));
            return refuse(conn, outcome, err).await;
        }
        Err(e) => return refuse(conn, outcome, RequestError::from_io(&e, &shown)).await,
    };
    for entry in entries {
        let mut h = Header::new(Op::Entry).with_filename(entry.name);
        h.kind = Some(entry.kind);
        h.size = Some(entry.size);
        h.mtime = Some(entry.mtime);
        conn.writer.write_header(&h).await?;
    }
    conn.writer.write_header(&Header::new(Op::End)).await?;
    Ok(outcome)
}
