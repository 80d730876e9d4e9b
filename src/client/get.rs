//! `xfer get`: stream a remote file into a local temporary, verify, commit.

use super::{unexpected_reply, Client, Options};
use crate::error::{ConnError, Error};
use crate::fs::{CommitError, Staged};
use crate::protocol::{Header, Op};
use crate::transfer::{receive_into, CopyError};
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
pub async fn get(opts: &Options, remote: &str, target: Option<GetTarget>, force: bool) -> Result<(), Error> {
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
        if !force && path.symlink_metadata().is_ok() {
            return Err(Error::LocalExists(path.clone()));
        }
    }

    let mut client = Client::connect(opts).await?;
    let conn = &mut client.conn;
    conn.writer.write_header(&Header::new(Op::Get).with_filename(remote)).await?;
    let data = conn.reader.expect_header().await?;
    if data.op != Op::Data {
        return Err(unexpected_reply(data, "data"));
    }
    let len = data.total_size;
    let started = Instant::now();
    let bar = opts.ui.transfer_bar(name, len);

    let (staged, copied) = match &target {
        Some(path) => {
            let (staged, file) = Staged::beside(path).map_err(|e| Error::local(path, e))?;
            (Some(staged), receive_into(&mut conn.reader.body(len), len, file, &bar).await)
        }
        None => (None, receive_into(&mut conn.reader.body(len), len, std::io::stdout(), &bar).await),
    };
    bar.finish_and_clear();
    let received = match copied {
        Ok(md5) => md5,
        Err(CopyError::Read { source, .. }) => return Err(ConnError::Io(source).into()),
        Err(CopyError::Short { .. }) => return Err(ConnError::Truncated("body").into()),
        Err(CopyError::Write { source, .. }) => {
            let shown = target.as_deref().unwrap_or(Path::new("stdout"));
            return Err(Error::local(shown, source));
        }
    };

    let done = conn.reader.expect_header().await?;
    if done.op != Op::Done {
        return Err(unexpected_reply(done, "done"));
    }
    if done.md5.as_ref() != Some(&received) {
        let sent = done.md5.map_or_else(|| "nothing".to_string(), |m| m.to_string());
        return Err(Error::Md5Mismatch { name: remote.to_string(), sent, received: received.to_string() });
    }
    if let (Some(staged), Some(path)) = (staged, &target) {
        match staged.commit(force) {
            Ok(()) => {}
            Err(CommitError::Exists) => return Err(Error::LocalExists(path.clone())),
            Err(CommitError::Io(e)) => return Err(Error::local(path, e)),
        }
    }
    opts.ui.summary("get", remote, len, started.elapsed(), &received);
    Ok(())
}
