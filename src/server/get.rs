//! `get`: stream a file as one `data` body, hashing as it goes, then send its
//! MD5 in a `done` frame.

use super::handler::{refuse, Outcome};
use super::Shared;
use crate::connection::Connection;
use crate::error::{ConnError, RequestError};
use crate::fs::RemotePath;
use crate::protocol::{ErrorCode, Header, Op};
use crate::transfer::{send_file, CopyError};
use indicatif::ProgressBar;
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
    let task_shared = shared.clone();
    let opened = tokio::task::spawn_blocking(move || task_shared.root.open_read(&path))
        .await
        .expect("open does not panic");
    let (file, len, mtime) = match opened {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::IsADirectory => {
            let err = RequestError::new(ErrorCode::WrongType, format!("remote path is a directory: {shown}"));
            return refuse(conn, outcome, err).await;
        }
        Err(e) => return refuse(conn, outcome, RequestError::from_io(&e, &shown)).await,
    };
    let mut data = Header::new(Op::Data).with_filename(&req.filename).with_body(len);
    data.mtime = Some(mtime);
    conn.writer.write_header(&data).await?;

    let md5 = match send_file(file, len, conn.writer.body_writer(), &ProgressBar::hidden()).await {
        Ok(md5) => md5,
        // The file shrank or became unreadable after its size was announced:
        // the body cannot be completed, so the connection must end. The
        // client sees a truncated body and commits nothing.
        Err(CopyError::Read { source, .. }) => return Err(ConnError::Io(source)),
        Err(CopyError::Short { .. }) => return Err(ConnError::Truncated("file read (it shrank)")),
        Err(CopyError::Write { source, .. }) => return Err(ConnError::Io(source)),
    };
    outcome.bytes = len;
    conn.writer.write_header(&Header::new(Op::Done).with_filename(&req.filename).with_md5(md5)).await?;
    Ok(outcome)
}
