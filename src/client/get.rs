//! `xfer get`: stream a remote file into a local partial, verify, commit;
//! an interrupted fetch resumes where its partial ends.

use super::{unexpected_reply, Client, Flags, Options};
use crate::digest::Md5;
use crate::error::{ConnError, Error};
use crate::fs::{CommitError, Staged};
use crate::protocol::{ClientMessage, Get, ServerMessage};
use crate::transfer::{hash_prefix, receive_into, CopyError};
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
    let held = partial.as_ref().filter(|p| p.held > 0);
    let req = Get {
        filename: remote.to_string(),
        offset: held.map(|p| p.held),
        md5: held.map(|p| p.prefix.clone().finish()),
    };
    conn.writer.write(&ClientMessage::Get(req)).await?;
    let frame = conn.reader.expect().await?;
    let ServerMessage::Data(data) = frame.msg else {
        conn.reader.skip_body(frame.total_size).await?;
        return Err(unexpected_reply(frame.msg, "data"));
    };
    let body_len = frame.total_size;
    let offset = data.offset.unwrap_or(0);
    let started = Instant::now();

    let (staged, copied) = match (partial, &target) {
        (Some(p), Some(path)) => {
            let (file, md5) = match p.resume_at(offset) {
                Ok(Some(resumed)) => resumed,
                Ok(None) => {
                    let expected = "data at offset 0 or at the offset we offered";
                    return Err(ConnError::Unexpected { got: "data", expected }.into());
                }
                Err(e) => return Err(Error::local(path, e)),
            };
            if offset > 0 {
                opts.ui.resuming(name, offset);
            }
            let bar = opts.ui.transfer_bar(name, offset + body_len);
            bar.set_position(offset);
            let copied = receive_into(&mut conn.reader.body(body_len), body_len, file, md5, &bar).await;
            bar.finish_and_clear();
            (Some(p.staged), copied)
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
            (None, copied)
        }
    };
    let received = match copied {
        Ok(md5) => md5,
        // The partial keeps what arrived, for the next run to resume.
        Err(CopyError::Read { source, .. }) => return Err(ConnError::Io(source).into()),
        Err(CopyError::Short { .. }) => return Err(ConnError::Truncated("body").into()),
        Err(CopyError::Write { source, .. }) => {
            if let Some(s) = staged {
                s.discard();
            }
            let shown = target.as_deref().unwrap_or(Path::new("stdout"));
            return Err(Error::local(shown, source));
        }
    };
    let len = offset + body_len;

    let sent = match conn.reader.expect_control().await? {
        ServerMessage::Done(done) => done.md5,
        reply => return Err(unexpected_reply(reply, "done")),
    };
    if sent.as_ref() != Some(&received) {
        if let Some(s) = staged {
            s.discard();
        }
        let sent = sent.map_or_else(|| "nothing".to_string(), |m| m.to_string());
        return Err(Error::Md5Mismatch { name: remote.to_string(), sent, received: received.to_string() });
    }
    if let (Some(staged), Some(path)) = (staged, &target) {
        let committed = match flags.fsync {
            true => staged.commit_durably(flags.force),
            false => staged.commit(flags.force),
        };
        match committed {
            Ok(()) => {}
            Err(CommitError::Exists) => return Err(Error::LocalExists(path.clone())),
            Err(CommitError::Io(e)) => return Err(Error::local(path, e)),
        }
    }
    opts.ui.summary("get", remote, len - offset, started.elapsed(), &received);
    Ok(())
}

/// The local partial for a fetch, with what it holds.
struct LocalPartial {
    /// The partial's guard.
    staged: Staged,
    /// The partial, open for writing.
    file: std::fs::File,
    /// Bytes offered for resuming (0: none).
    held: u64,
    /// MD5 of those bytes.
    prefix: Md5,
}

impl LocalPartial {
    /// The file positioned where the server's body starts, with the MD5 of
    /// what precedes it; `None` if the server picked an offset we did not
    /// offer.
    fn resume_at(&self, offset: u64) -> std::io::Result<Option<(std::fs::File, Md5)>> {
        let mut file = self.file.try_clone()?;
        match offset {
            0 => {
                file.set_len(0)?;
                std::io::Seek::rewind(&mut file)?;
                Ok(Some((file, Md5::new())))
            }
            o if o == self.held => {
                std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(o))?;
                Ok(Some((file, self.prefix.clone())))
            }
            _ => Ok(None),
        }
    }
}

/// Opens the partial beside `path` and hashes what it holds (nothing when
/// resuming is off).
async fn open_partial(path: &Path, resume: bool) -> Result<LocalPartial, Error> {
    let owned = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let (staged, mut file, held) = Staged::beside(&owned)?;
        let held = if resume { held } else { 0 };
        let prefix = hash_prefix(&mut file, held)?;
        Ok(LocalPartial { staged, file, held, prefix })
    })
    .await
    .expect("hashing does not panic")
    .map_err(|e| Error::local(path, e))
}
