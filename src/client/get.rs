//! `xfer get`: stream a remote file into a local partial, verify, commit;
//! an interrupted fetch resumes where its partial ends.

use super::{unexpected_reply, Client, Flags, Options};
use crate::digest::Md5;
use crate::error::{ConnError, Error};
use crate::local::Partial;
use crate::protocol::{ClientMessage, Get, Md5Hex, ServerMessage};
use crate::transfer::{receive_file, receive_into, Commit, CopyError, FileFailure};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Where a fetched file goes.
#[derive(Debug, Clone)]
pub enum GetTarget {
    /// A local path (a directory means: inside it, under the remote name).
    Path(PathBuf),
    /// Standard output (`-`): written as it arrives, so a digest mismatch
    /// is reported after the bytes were already out.
    Stdout,
}

/// Fetches `remote` into `target` (default: its file name in the current
/// directory).
pub async fn get(opts: &Options, remote: &str, target: Option<GetTarget>, flags: Flags) -> Result<(), Error> {
    let name = remote.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    if name.is_empty() || name == "." || name == ".." {
        return Err(Error::Usage(format!("{remote:?} does not name a file")));
    }
    let target = match target {
        Some(GetTarget::Path(p)) if p.is_dir() => Some(p.join(name)),
        Some(GetTarget::Path(p)) => Some(p),
        Some(GetTarget::Stdout) => None,
        None => Some(PathBuf::from(name)),
    };
    if let Some(path) = &target {
        if !flags.force && path.symlink_metadata().is_ok() {
            return Err(Error::LocalExists(path.clone()));
        }
    }

    // A partial from an interrupted run is offered to the server with the
    // MD5 of its bytes; the server resumes after them only if they match.
    let partial = match &target {
        Some(path) => Some(open_partial(path, flags.resume).await?),
        None => None,
    };

    let mut client = Client::connect(opts).await?;
    let conn = &mut client.conn;
    let offer = partial.as_ref().and_then(Partial::offer);
    let req =
        Get { filename: remote.to_string(), offset: offer.as_ref().map(|o| o.0), md5: offer.map(|o| o.1) };
    conn.writer.write(&ClientMessage::Get(req)).await?;
    let frame = conn.reader.expect().await?;
    let ServerMessage::Data(data) = frame.msg else {
        conn.reader.skip_body(frame.total_size).await?;
        return Err(unexpected_reply(frame.msg, "data"));
    };
    let body_len = frame.total_size;
    let offset = data.offset.unwrap_or(0);
    let started = Instant::now();

    let received = match (partial, &target) {
        (Some(partial), Some(path)) => {
            if offset != 0 && offset != partial.held() {
                let expected = "data at offset 0 or at the offset we offered";
                return Err(ConnError::Unexpected { got: "data", expected }.into());
            }
            if offset > 0 {
                opts.ui.resuming(name, offset);
            }
            let bar = opts.ui.transfer_bar(name, offset + body_len);
            bar.set_position(offset);
            let how = Commit { replace: flags.force, durable: flags.fsync, meta: None };
            let received = receive_file(&mut conn.reader, partial, (offset, body_len), how, &bar).await?;
            bar.finish_and_clear();
            match received {
                Ok(md5) => md5,
                Err(FileFailure::Offset { .. } | FileFailure::Refused(_)) => {
                    let expected = "data at offset 0 or at the offset we offered";
                    return Err(ConnError::Unexpected { got: "data", expected }.into());
                }
                Err(FileFailure::Write { source, .. } | FileFailure::Commit(source)) => {
                    return Err(Error::local(path, source))
                }
                Err(FileFailure::Mismatch { sent, received }) => {
                    return Err(mismatch(remote, sent, &received))
                }
                Err(FileFailure::Exists) => return Err(Error::LocalExists(path.clone())),
            }
        }
        _ => {
            if offset != 0 {
                return Err(ConnError::Unexpected { got: "data", expected: "data at offset 0" }.into());
            }
            let bar = opts.ui.transfer_bar(name, body_len);
            let sink = std::io::stdout();
            let copied =
                receive_into(&mut conn.reader.body(body_len), body_len, sink, Md5::new(), &bar).await;
            bar.finish_and_clear();
            let received = match copied {
                Ok(md5) => md5,
                Err(CopyError::Read { source, .. }) => return Err(ConnError::Io(source).into()),
                Err(CopyError::Short { .. }) => return Err(ConnError::Truncated("body").into()),
                Err(CopyError::Write { source, .. }) => return Err(Error::local("stdout", source)),
            };
            let sent = conn.reader.expect_done().await?;
            if sent.as_ref() != Some(&received) {
                return Err(mismatch(remote, sent, &received));
            }
            received
        }
    };
    let len = offset + body_len;
    opts.ui.summary("get", remote, len - offset, started.elapsed(), &received);
    Ok(())
}

/// The words for a file whose bytes are not what the server's digest says.
fn mismatch(remote: &str, sent: Option<Md5Hex>, received: &Md5Hex) -> Error {
    let sent = sent.map_or_else(|| "nothing".to_string(), |m| m.to_string());
    Error::Md5Mismatch { name: remote.to_string(), sent, received: received.to_string() }
}

/// Opens the partial beside `path` and hashes what it holds (nothing when
/// resuming is off).
async fn open_partial(path: &Path, resume: bool) -> Result<Partial, Error> {
    let owned = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut partial = Partial::beside(&owned)?;
        if resume {
            partial.hash_for_resume();
        }
        Ok(partial)
    })
    .await
    .expect("hashing does not panic")
    .map_err(|e: std::io::Error| Error::local(path, e))
}
