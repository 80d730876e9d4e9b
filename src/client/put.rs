//! `xfer put`: stream a local file to the server, resuming an interrupted
//! upload when the server holds a partial whose bytes match ours.

use super::{unexpected_reply, Client, Flags, Options};
use crate::digest::hash_prefix;
use crate::digest::Md5;
use crate::error::{ConnError, Error};
use crate::protocol::{ClientMessage, Data, Done, Put, ServerMessage};
use crate::transfer::{send_file, CopyError, Digest};
use std::path::Path;
use std::time::{Duration, Instant};

/// How long to wait for the server's reason after it stopped taking the body.
const REASON_WAIT: Duration = Duration::from_secs(2);

/// Sends `local` to `remote` (default: `local`'s file name; a trailing `/`
/// puts it inside that directory).
pub async fn put(opts: &Options, local: &Path, remote: Option<&str>, flags: Flags) -> Result<(), Error> {
    let name = local.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
        Error::Usage(format!("{} has no usable file name; name the remote path", local.display()))
    })?;
    let remote = match remote {
        None => name.to_string(),
        Some(r) if r.ends_with('/') => format!("{r}{name}"),
        Some(r) => r.to_string(),
    };
    let file = std::fs::File::open(local).map_err(|e| Error::local(local, e))?;
    let meta = file.metadata().map_err(|e| Error::local(local, e))?;
    if !meta.is_file() {
        return Err(Error::LocalUnusable(format!("{} is not a regular file", local.display())));
    }
    let len = meta.len();

    let mut client = Client::connect(opts).await?;
    let conn = &mut client.conn;
    let req = Put {
        filename: remote.clone(),
        size: Some(len),
        resume: flags.resume,
        force: flags.force,
        fsync: flags.fsync,
    };
    conn.writer.write(&ClientMessage::Put(req)).await?;
    let (offered, theirs) = match conn.reader.expect_control().await? {
        ServerMessage::Ready { offset, md5, .. } => (offset.unwrap_or(0), md5),
        reply => return Err(unexpected_reply(reply, "ready")),
    };

    // The server offers the partial it holds; take it only if our first
    // bytes hash the same, so a changed source starts over.
    let (file, offset, md5) =
        resume_point(file, len, offered, theirs).await.map_err(|e| Error::local(local, e))?;
    if offset > 0 {
        opts.ui.resuming(&remote, offset);
    }

    let started = Instant::now();
    let data = Data { filename: remote.clone(), offset: Some(offset), mode: None, mtime: None };
    conn.writer.write_head(&data.into(), len - offset).await?;
    let bar = opts.ui.transfer_bar(&remote, len);
    bar.set_position(offset);
    // The server may refuse part way (its disk filled): watch for its reply
    // while sending, and stop at once when it comes.
    let copied = tokio::select! {
        res = send_file(file, len - offset, Digest::Compute(md5), conn.writer.body_writer(), &bar) => res,
        early = conn.reader.expect_control() => {
            bar.abandon();
            return Err(unexpected_reply(early?, "ok"));
        }
    };
    bar.finish_and_clear();
    let md5 = match copied {
        Ok(md5) => md5,
        Err(CopyError::Read { source, .. }) => return Err(Error::local(local, source)),
        Err(CopyError::Short { done, expected }) => {
            return Err(Error::LocalUnusable(format!(
                "{} shrank while being sent ({} of {} bytes): nothing was saved",
                local.display(),
                offset + done,
                offset + expected
            )))
        }
        Err(CopyError::Write { source, .. }) => {
            // The server may have said why before closing.
            if let Ok(Ok(Some(reply))) = tokio::time::timeout(REASON_WAIT, conn.reader.read()).await {
                return Err(unexpected_reply(reply.msg, "ok"));
            }
            return Err(ConnError::Io(source).into());
        }
    };
    conn.writer.write(&Done { filename: remote.clone(), md5: Some(md5.clone()) }.into()).await?;
    let stored = match conn.reader.expect_control().await? {
        ServerMessage::Ok(stored) => stored.md5,
        reply => return Err(unexpected_reply(reply, "ok")),
    };
    if stored.as_ref() != Some(&md5) {
        let received = stored.map_or_else(|| "nothing".to_string(), |m| m.to_string());
        return Err(Error::Md5Mismatch { name: remote, sent: md5.to_string(), received });
    }
    opts.ui.summary("put", &remote, len - offset, started.elapsed(), &md5);
    Ok(())
}

/// Where to start sending: `offered` if our first `offered` bytes have the
/// server's digest `theirs`, else 0. Returns the file positioned there and
/// the MD5 of what precedes it.
async fn resume_point(
    mut file: std::fs::File,
    len: u64,
    offered: u64,
    theirs: Option<crate::protocol::Md5Hex>,
) -> std::io::Result<(std::fs::File, u64, Md5)> {
    let Some(theirs) = theirs.filter(|_| offered > 0 && offered <= len) else {
        return Ok((file, 0, Md5::new()));
    };
    tokio::task::spawn_blocking(move || {
        let prefix = hash_prefix(&mut file, offered)?;
        if prefix.clone().finish() == theirs {
            return Ok((file, offered, prefix));
        }
        std::io::Seek::rewind(&mut file)?;
        Ok((file, 0, Md5::new()))
    })
    .await
    .expect("hashing does not panic")
}
