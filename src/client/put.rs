//! `xfer put`: stream a local file to the server.

use super::{unexpected_reply, Client, Options};
use crate::error::{ConnError, Error};
use crate::protocol::{Header, Op};
use crate::transfer::{send_file, CopyError};
use std::path::Path;
use std::time::{Duration, Instant};

/// How long to wait for the server's reason after it stopped taking the body.
const REASON_WAIT: Duration = Duration::from_secs(2);

/// Sends `local` to `remote` (default: `local`'s file name; a trailing `/`
/// puts it inside that directory).
pub async fn put(opts: &Options, local: &Path, remote: Option<&str>, force: bool) -> Result<(), Error> {
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
        return Err(Error::Usage(format!("{} is not a regular file", local.display())));
    }
    let len = meta.len();

    let mut client = Client::connect(opts).await?;
    let conn = &mut client.conn;
    let mut req = Header::new(Op::Put).with_filename(&remote);
    req.force = force;
    req.size = Some(len);
    conn.writer.write_header(&req).await?;
    let reply = conn.reader.expect_header().await?;
    if reply.op != Op::Ready {
        return Err(unexpected_reply(reply, "ready"));
    }

    let started = Instant::now();
    conn.writer.write_header(&Header::new(Op::Data).with_filename(&remote).with_body(len)).await?;
    let bar = opts.ui.transfer_bar(&remote, len);
    // The server may refuse part way (its disk filled): watch for its reply
    // while sending, and stop at once when it comes.
    let copied = tokio::select! {
        res = send_file(file, len, conn.writer.body_writer(), &bar) => res,
        early = conn.reader.expect_header() => {
            bar.abandon();
            return Err(unexpected_reply(early?, "ok"));
        }
    };
    bar.finish_and_clear();
    let md5 = match copied {
        Ok(md5) => md5,
        Err(CopyError::Read { source, .. }) => return Err(Error::local(local, source)),
        Err(CopyError::Short { done, expected }) => {
            return Err(Error::Usage(format!(
                "{} shrank while being sent ({done} of {expected} bytes): nothing was saved",
                local.display()
            )))
        }
        Err(CopyError::Write { source, .. }) => {
            // The server may have said why before closing.
            if let Ok(Ok(Some(reply))) = tokio::time::timeout(REASON_WAIT, conn.reader.read_header()).await {
                return Err(unexpected_reply(reply, "ok"));
            }
            return Err(ConnError::Io(source).into());
        }
    };
    conn.writer.write_header(&Header::new(Op::Done).with_filename(&remote).with_md5(md5.clone())).await?;
    let reply = conn.reader.expect_header().await?;
    if reply.op != Op::Ok {
        return Err(unexpected_reply(reply, "ok"));
    }
    if reply.md5.as_ref() != Some(&md5) {
        let received = reply.md5.map_or_else(|| "nothing".to_string(), |m| m.to_string());
        return Err(Error::Md5Mismatch { name: remote, sent: md5.to_string(), received });
    }
    opts.ui.summary("put", &remote, len, started.elapsed(), &md5);
    Ok(())
}
