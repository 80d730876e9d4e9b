//! `get`: stream a file as one `data` body, hashing as it goes, then send its
//! MD5 in a `done` frame. A client holding a verified prefix gets the rest.

use super::handler::{refuse, Outcome};
use super::{blocking, Shared};
use crate::connection::Connection;
use crate::digest::Md5;
use crate::error::{ConnError, RequestError};
use crate::fs::RemotePath;
use crate::protocol::{ErrorCode, Header, Op};
use crate::transfer::{hash_prefix, send_file, CopyError};
use indicatif::ProgressBar;
use std::io::Seek;
use std::sync::Arc;

pub(crate) async fn handle(
    conn: &mut Connection,
    shared: &Arc<Shared>,
    req: Header,
) -> Result<Outcome, ConnError> {
    let mut outcome = Outcome::new(&req.filename);
    let path = match RemotePath::parse(&req.filename) {
        Ok(p) if !p.is_root() => p,
        Ok(_) => {
            return refuse(
                conn,
                outcome,
                RequestError::new(ErrorCode::WrongType, "get needs a file, not the root"),
            )
            .await
        }
        Err(e) => return refuse(conn, outcome, RequestError::new(ErrorCode::BadPath, e.to_string())).await,
    };
    let shown = path.to_string();
    let opened = blocking(shared, move |root| root.open_read(&path)).await;
    let (mut file, len, mtime) = match opened {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::IsADirectory => {
            let err = RequestError::new(ErrorCode::WrongType, format!("remote path is a directory: {shown}"));
            return refuse(conn, outcome, err).await;
        }
        Err(e) => return refuse(conn, outcome, RequestError::from_io(&e, &shown)).await,
    };
    // Resume where the client's partial ends, if its prefix is ours.
    let (offset, md5) = match (req.offset, &req.md5) {
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
                Ok(prefix) if prefix.clone().finish() == theirs => (held, prefix),
                _ => (0, Md5::new()),
            }
        }
        _ => (0, Md5::new()),
    };
    if offset == 0 {
        if let Err(e) = file.rewind() {
            return refuse(conn, outcome, RequestError::from_io(&e, &shown)).await;
        }
    }
    let body = len - offset;
    let mut data = Header::new(Op::Data).with_filename(&req.filename).with_body(body);
    data.mtime = Some(mtime);
    data.offset = Some(offset);
    conn.writer.write_header(&data).await?;

    let md5 = match send_file(file, body, md5, conn.writer.body_writer(), &ProgressBar::hidden()).await {
        Ok(md5) => md5,
        // The file shrank or became unreadable after its size was announced:
        // the body cannot be completed, so the connection must end. The
        // client sees a truncated body and commits nothing.
        Err(CopyError::Read { source, .. }) => return Err(ConnError::Io(source)),
        Err(CopyError::Short { .. }) => return Err(ConnError::Truncated("file read (it shrank)")),
        Err(CopyError::Write { source, .. }) => return Err(ConnError::Io(source)),
    };
    outcome.bytes = body;
    conn.writer
        .write_header(&Header::new(Op::Done).with_filename(&req.filename).with_md5(md5.clone()))
        .await?;
    outcome.md5 = Some(md5);
    Ok(outcome)
}
