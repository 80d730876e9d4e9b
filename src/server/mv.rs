//! `mv`: rename within the root, atomically; into `target` when that is a
//! directory, as mv does. Nothing is replaced without `force`.

use super::request::{checked_path, refuse, Outcome};
use super::{blocking, Session};
use crate::connection::ServerConnection;
use crate::error::{exists_words, ConnError, RequestError};
use crate::local::{escape, Place, RemotePath, Root};
use crate::protocol::{ErrorCode, Mv, ServerMessage, Stored};
use crate::tree::{link_fault, LinkFault};
use cap_std::fs::Metadata;
use std::path::Path;
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
        let place = |p| root.place(p).map_err(|e| RequestError::from_io(&e, &p.to_string()));
        let (Some(old), Some(new)) = (place(&from)?, place(&to)?) else {
            return Err(RequestError::new(ErrorCode::BadPath, "mv cannot move the root"));
        };
        links_stay_inside(root, &from, &meta, (&old, &new), &target)?;
        root.rename(&old, &new, force).map_err(|e| match e.kind() {
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

/// Refuses to move `from` (of metadata `meta`) from place `old` to `new`
/// (`target` as the client named it) if a link would then lead out of the
/// root. A link keeps its target as it moves: a relative one must still
/// be one a tree keeps from where it really lands (`a/b/l -> ../../x`
/// moved to `l`, or to `d/l` with `d -> .`, would climb out). The links
/// beneath a directory climb from where they stand: moved up, one that
/// climbed to the top before would climb out; moved no higher, each
/// climbs no further than before, and none is looked at.
fn links_stay_inside(
    root: &Root,
    from: &RemotePath,
    meta: &Metadata,
    (old, new): (&Place, &Place),
    target: &str,
) -> Result<(), RequestError> {
    let shown = from.to_string();
    if meta.file_type().is_symlink() {
        let link = root.read_link(from).map_err(|e| RequestError::from_io(&e, &shown))?;
        let link = link.to_string_lossy();
        if let Some(fault) = relative_fault(&new.rel(), &link) {
            let why = match fault {
                LinkFault::LeadsOut => "would lead out of the root from there",
                other => other.words(),
            };
            let link = escape(&link);
            let msg = format!("cannot move link {shown} to {target}: its target {link} {why}");
            return Err(RequestError::new(ErrorCode::BadPath, msg));
        }
    }
    if meta.is_dir() && new.dirs.len() < old.dirs.len() {
        let lands = new.rel();
        let climbs_out = |inner: &str, t: &Path| {
            relative_fault(&format!("{lands}/{inner}"), &t.to_string_lossy()).is_some()
        };
        let found =
            root.find_link_beneath(from, climbs_out).map_err(|e| RequestError::from_io(&e, &shown))?;
        if let Some((inner, link)) = found {
            let link = escape(&link.to_string_lossy());
            let msg = format!(
                "cannot move {shown} to {target}: its link {shown}/{inner} ({link}) would lead out of the root"
            );
            return Err(RequestError::new(ErrorCode::BadPath, msg));
        }
    }
    Ok(())
}

/// What is wrong with a link at `rel` to `target` (see [`link_fault`]), if
/// it is relative: an absolute target is the same wherever the link stands.
fn relative_fault(rel: &str, target: &str) -> Option<LinkFault> {
    (!target.starts_with('/')).then(|| link_fault(rel, target)).flatten()
}
