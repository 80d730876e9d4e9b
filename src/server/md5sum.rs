//! `md5sum`: a file's plain MD5 (what md5sum prints) or, with `parts`, its
//! digest over its parts, and its size: from the remembered digest of that
//! version of the file where there is one, else hashed (and remembered).

use super::request::{checked_path, refuse, Outcome};
use super::{blocking, Session};
use crate::connection::ServerConnection;
use crate::digest::{hash_prefix, parts_of};
use crate::error::{ConnError, RequestError};
use crate::protocol::{ErrorCode, Md5sum, ServerMessage, Stored};
use std::sync::Arc;

pub(crate) async fn handle(
    conn: &mut ServerConnection,
    shared: &Arc<Session>,
    req: Md5sum,
) -> Result<Outcome, ConnError> {
    let mut outcome = Outcome::new(&req.filename);
    let path = match checked_path(&req.filename) {
        Ok(p) if !p.is_root() => p,
        Ok(_) => {
            return refuse(conn, outcome, RequestError::new(ErrorCode::WrongType, "the root is a directory"))
                .await
        }
        Err(e) => return refuse(conn, outcome, e).await,
    };
    let (digests, parts) = (shared.clone(), req.parts);
    let shown = path.to_string();
    let hashed = blocking(shared, move |root| {
        let mut o = root.open_read(&path)?;
        let known = &digests.digests;
        let md5 = match (parts, known.get(o.stamp.as_ref()), known.whole(o.stamp.as_ref())) {
            (true, Some(md5), _) | (false, _, Some(md5)) => md5,
            (true, None, _) => {
                let md5 = parts_of(&mut o.file, o.size)?.finish();
                known.remember(o.stamp, &md5);
                md5
            }
            (false, _, None) => {
                let md5 = hash_prefix(&mut o.file, o.size)?.finish();
                known.remember_whole(o.stamp, &md5);
                md5
            }
        };
        Ok::<_, std::io::Error>((md5, o.size))
    })
    .await;
    match hashed {
        Ok((md5, size)) => {
            outcome.md5 = Some(md5.clone());
            let ok = Stored { filename: req.filename, md5: Some(md5), size: Some(size), skipped: false };
            conn.writer.write(&ServerMessage::Ok(ok)).await?;
            Ok(outcome)
        }
        Err(e) if e.kind() == std::io::ErrorKind::IsADirectory => {
            let err = RequestError::new(ErrorCode::WrongType, format!("remote path is a directory: {shown}"));
            refuse(conn, outcome, err).await
        }
        Err(e) => refuse(conn, outcome, RequestError::from_io(&e, &shown)).await,
    }
}
