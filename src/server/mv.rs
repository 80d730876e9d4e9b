//! `mv`: rename within the root, atomically; into `target` when that is a
//! directory, as mv does. Nothing is replaced without `force`.

use super::request::{checked_path, refuse, Outcome};
use super::{blocking, Session};
use crate::connection::ServerConnection;
use crate::error::{exists_words, ConnError, RequestError};
use crate::protocol::{ErrorCode, Mv, ServerMessage, Stored};
use std::sync::Arc;

pub(crate) async fn handle(
    conn: &mut ServerConnection,
    shared: &Arc<Session>,
    req: Mv,
) -> Result<Outcome, ConnError> {
    let outcome = Outcome::new(&req.filename);
    let (from, to) = match (checked_path(&req.filename), checked_path(&req.target)) {
        (Ok(from), _) if from.is_root() => {
            return refuse(conn, outcome, RequestError::new(ErrorCode::BadPath, "mv cannot move the root"))
                .await
        }
        (Ok(from), Ok(to)) => (from, to),
        (Err(e), _) | (_, Err(e)) => return refuse(conn, outcome, e).await,
    };
    let force = req.force;
    let moved = blocking(shared, move |root| {
        let shown = from.to_string();
        let Some(meta) = root.lstat(&from).map_err(|e| RequestError::from_io(&e, &shown))? else {
            return Err(RequestError::new(ErrorCode::NotFound, format!("remote path not found: {shown}")));
        };
        // Into a directory that is there (never through a link to one).
        let into = root.lstat(&to).ok().flatten().is_some_and(|m| m.is_dir());
        let to = match (into, from.file_name()) {
            (true, Some(name)) => {
                to.join(name).map_err(|e| RequestError::new(ErrorCode::BadPath, e.to_string()))?
            }
            _ => to,
        };
        if to.is_root() {
            return Err(RequestError::new(ErrorCode::BadPath, "mv cannot replace the root"));
        }
        let target = to.to_string();
        // A link keeps its target as it moves: a relative one must still
        // lead inside the root from where it lands (`a/b/l -> ../../x`
        // moved to `l` would climb out). What it points to is not judged
        // here; an absolute target means the same anywhere.
        let link = meta.file_type().is_symlink().then(|| root.read_link(&from).ok()).flatten();
        if let Some(link) = link.as_deref().map(std::path::Path::to_string_lossy) {
            if !link.starts_with('/') && !crate::tree::link_stays_inside(&target, &link) {
                let link = crate::local::escape(&link);
                let msg = format!("moving link {shown} to {target} would lead it out of the root ({link})");
                return Err(RequestError::new(ErrorCode::BadPath, msg));
            }
        }
        root.rename(&from, &to, force).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => {
                RequestError::new(ErrorCode::Exists, exists_words(&format!("remote path {target} exists")))
            }
            // EINVAL: a directory into itself.
            std::io::ErrorKind::InvalidInput => {
                RequestError::new(ErrorCode::BadPath, format!("cannot move {shown} into itself ({target})"))
            }
            _ => RequestError::from_io(&e, &target),
        })?;
        Ok(target)
    })
    .await;
    match moved {
        Ok(target) => {
            let ok = Stored { filename: target, ..Stored::default() };
            conn.writer.write(&ServerMessage::Ok(ok)).await?;
            Ok(outcome)
        }
        Err(err) => refuse(conn, outcome, err).await,
    }
}
