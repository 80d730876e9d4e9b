//! `put`: receive a file into a temporary beside its destination, verify the
//! sender's MD5, then commit it by rename.

use super::handler::{refuse, Outcome};
use super::Shared;
use crate::connection::Connection;
use crate::error::{ConnError, RequestError};
use crate::fs::{CommitError, RemotePath, Staged};
use crate::protocol::{ErrorCode, Header, Op};
use crate::transfer::{receive_into, CopyError};
use indicatif::ProgressBar;
use std::sync::Arc;

pub(crate) async fn handle(
    conn: &mut Connection,
    shared: &Arc<Shared>,
    req: Header,
) -> Result<Outcome, ConnError> {
    let mut outcome = Outcome::new(&req.filename);
    let (staged, file, path) = match prepare(shared, &req).await {
        Ok(s) => s,
        Err(e) => return refuse(conn, outcome, e).await,
    };
    conn.writer.write_header(&Header::new(Op::Ready).with_filename(&req.filename)).await?;

    let data = conn.reader.expect_header().await?;
    if data.op != Op::Data {
        return Err(ConnError::Unexpected { got: data.op, expected: "data" });
    }
    let len = data.total_size;
    let copied = receive_into(&mut conn.reader.body(len), len, file, &ProgressBar::hidden()).await;
    let received = match copied {
        Ok(md5) => md5,
        // The client vanished mid-body: dropping `staged` removes the
        // temporary, and the connection is over.
        Err(CopyError::Read { .. } | CopyError::Short { .. }) => return Err(ConnError::Truncated("body")),
        Err(CopyError::Write { done, source }) => {
            // Our disk failed (full, say). Tell the client at once, so it can
            // stop sending, then stay in step by discarding the rest.
            drop(staged);
            outcome.bytes = done;
            let outcome = refuse(conn, outcome, RequestError::from_io(&source, &path)).await?;
            conn.reader.skip_body(len - done).await?;
            expect_done(conn).await?;
            return Ok(outcome);
        }
    };
    outcome.bytes = len;

    let sent = expect_done(conn).await?;
    if sent.as_ref() != Some(&received) {
        let sent = sent.map_or_else(|| "nothing".to_string(), |m| m.to_string());
        let msg = format!("md5 mismatch for {path} (sent {sent}, received {received}): nothing was saved");
        return refuse(conn, outcome, RequestError::new(ErrorCode::Md5Mismatch, msg)).await;
    }
    let force = req.force;
    let committed =
        tokio::task::spawn_blocking(move || staged.commit(force)).await.expect("commit does not panic");
    match committed {
        Ok(()) => {}
        Err(CommitError::Exists) => return refuse(conn, outcome, exists(&path)).await,
        Err(CommitError::Io(e)) => return refuse(conn, outcome, RequestError::from_io(&e, &path)).await,
    }
    let mut ok = Header::new(Op::Ok).with_filename(&req.filename).with_md5(received);
    ok.size = Some(len);
    conn.writer.write_header(&ok).await?;
    Ok(outcome)
}

/// Checks the request and creates the temporary, before any body is sent.
async fn prepare(
    shared: &Arc<Shared>,
    req: &Header,
) -> Result<(Staged, std::fs::File, String), RequestError> {
    let path =
        RemotePath::parse(&req.filename).map_err(|e| RequestError::new(ErrorCode::BadPath, e.to_string()))?;
    let shown = path.to_string();
    if path.is_root() {
        return Err(RequestError::new(ErrorCode::BadPath, "put needs a file name, not the root"));
    }
    let (force, task_shared) = (req.force, shared.clone());
    tokio::task::spawn_blocking(move || {
        match task_shared.root.kind_of(&path) {
            Ok(Some(true)) => {
                let msg = format!("remote path is a directory: {path} (end it with / to put inside it)");
                return Err(RequestError::new(ErrorCode::WrongType, msg));
            }
            Ok(Some(false)) if !force => return Err(exists(&path.to_string())),
            Ok(_) => {}
            Err(e) => return Err(RequestError::from_io(&e, &path.to_string())),
        }
        let (staged, file) =
            task_shared.root.stage(&path).map_err(|e| RequestError::from_io(&e, &path.to_string()))?;
        Ok((staged, file, path.to_string()))
    })
    .await
    .expect("staging does not panic")
    .map_err(|e| {
        if e.code == ErrorCode::NotFound {
            // A missing file here is a parent that could not be made.
            RequestError::new(ErrorCode::NotFound, format!("cannot create {shown}: a parent is missing"))
        } else {
            e
        }
    })
}

/// Reads the `done` frame that ends a body and returns the sender's digest.
async fn expect_done(conn: &mut Connection) -> Result<Option<crate::protocol::Md5Hex>, ConnError> {
    let done = conn.reader.expect_header().await?;
    if done.op != Op::Done {
        return Err(ConnError::Unexpected { got: done.op, expected: "done" });
    }
    conn.reader.skip_body(done.total_size).await?;
    Ok(done.md5)
}

fn exists(path: &str) -> RequestError {
    RequestError::new(ErrorCode::Exists, format!("remote file exists: {path} (use --force to replace it)"))
}
