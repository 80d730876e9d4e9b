//! `xfer get`: stream a remote file into a local partial, verify, commit;
//! an interrupted fetch resumes where its partial ends.

use super::{unexpected_reply, Client, Flags, Options};
use crate::digest::PartsDigest;
use crate::error::{ConnError, Error};
use crate::local::meta::MODE_MASK;
use crate::local::Partial;
use crate::protocol::{parts_body, ClientMessage, ErrorCode, Get, Refusal, ServerMessage, Stored, PART};
use crate::transfer::{part_differs, receive_file, receive_parts, Commit, FileFailure, PartFailure};
use crate::ui::Planned;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Where a fetched file goes.
#[derive(Debug, Clone)]
pub enum GetTarget {
    /// A local path, the file's own name.
    Path(PathBuf),
    /// Standard output (`-`): written as it arrives, so a digest mismatch
    /// is reported after the bytes were already out.
    Stdout,
}

/// Fetches the remote file `remote` into `target`, with its permission
/// bits and modification time. A local file already there is replaced only
/// with `force`, and left as it is when identical.
pub async fn get(
    client: &mut Client,
    opts: &Options,
    remote: &str,
    target: GetTarget,
    flags: Flags,
) -> Result<(), Error> {
    let name = remote.trim_end_matches('/').rsplit('/').next().unwrap_or(remote);
    let target = match target {
        GetTarget::Path(p) => Some(p),
        GetTarget::Stdout => None,
    };
    let conn = &mut client.conn;
    if let Some(path) = target.as_ref().filter(|p| !flags.force && p.symlink_metadata().is_ok()) {
        // Ours is identical to theirs, or in the way: the server compares.
        let file = std::fs::File::open(path).ok().filter(|f| f.metadata().is_ok_and(|m| m.is_file()));
        let Some(file) = file else { return Err(Error::LocalExists(path.clone())) };
        let len = file.metadata().map_err(|e| Error::local(path, e))?.len();
        let ours = super::put::hash_parts(file, len).await.map_err(|e| Error::local(path, e))?;
        let req = Get {
            filename: remote.to_string(),
            offset: None,
            md5: Some(ours),
            size: Some(len),
            dry_run: flags.dry_run,
            whole_md5: false,
            compress: false,
        };
        conn.writer.write(&ClientMessage::Get(req)).await?;
        return match conn.reader.expect_control().await? {
            ServerMessage::Ok(Stored { skipped: true, .. }) if flags.dry_run => {
                opts.ui.planned(Planned::Skip, &path.to_string_lossy());
                Ok(())
            }
            ServerMessage::Ok(Stored { skipped: true, .. }) => {
                opts.ui.identical("get", name);
                Ok(())
            }
            ServerMessage::Error(Refusal { code: ErrorCode::Exists, .. }) => {
                Err(Error::LocalExists(path.clone()))
            }
            reply => Err(unexpected_reply(reply, "ok")),
        };
    }

    if flags.dry_run {
        // What a get would bring, and to where; nothing is opened here.
        let req = Get { filename: remote.to_string(), dry_run: true, ..Get::default() };
        conn.writer.write(&ClientMessage::Get(req)).await?;
        let size = match conn.reader.expect_control().await? {
            ServerMessage::Ok(Stored { size, .. }) => size.unwrap_or(0),
            reply => return Err(unexpected_reply(reply, "ok")),
        };
        match &target {
            Some(path) if path.symlink_metadata().is_ok() => {
                opts.ui.planned(Planned::Replace(Some(size)), &path.to_string_lossy())
            }
            Some(path) => opts.ui.planned(Planned::Copy(Some(size)), &path.to_string_lossy()),
            None => opts.ui.planned(Planned::Copy(Some(size)), "standard output"),
        }
        return Ok(());
    }
    // A partial from an interrupted run is offered to the server with the
    // digest of each of its parts; the server resumes after those that
    // are its own.
    let partial = match &target {
        Some(path) => Some(open_partial(path, flags.resume).await?),
        None => None,
    };
    let offer = partial.as_ref().and_then(Partial::offer);
    let parts = offer.as_ref().map_or(Vec::new(), |o| parts_body(o.2));
    let req = Get {
        filename: remote.to_string(),
        offset: offer.as_ref().map(|o| o.0),
        md5: offer.map(|o| o.1),
        size: None,
        dry_run: false,
        whole_md5: flags.md5,
        compress: conn.writer.compressing(),
    };
    conn.writer.write_frame(&ClientMessage::Get(req), &parts).await?;
    conn.writer.flush().await?;
    let frame = conn.reader.expect().await?;
    let ServerMessage::Data(data) = frame.msg else {
        conn.reader.skip_body(frame.total_size).await?;
        return Err(unexpected_reply(frame.msg, "data"));
    };
    let part_len = frame.total_size;
    let offset = data.offset.unwrap_or(0);
    // The first part says the file's size; what is sent is the rest.
    let body_len = data.size.unwrap_or(offset + part_len).saturating_sub(offset);
    let started = Instant::now();

    let received = match (partial, &target) {
        (Some(partial), Some(path)) => {
            if offset > partial.held() || !offset.is_multiple_of(PART) {
                let expected = "data at a part of the partial we offered, or at 0";
                return Err(ConnError::Unexpected { got: "data", expected }.into());
            }
            if offset > 0 {
                opts.ui.resuming(name, offset);
            }
            let bar = opts.ui.transfer_bar(name, offset + body_len);
            bar.set_position(offset);
            let meta = data.mode.zip(data.mtime).map(|(mode, mtime)| (mode & MODE_MASK, mtime));
            let how = Commit { replace: flags.force, durable: flags.fsync, meta };
            let received = receive_file(&mut conn.reader, partial, (&data, part_len), how, &bar).await?;
            bar.finish_and_clear();
            match received {
                Ok(committed) => (committed.md5, committed.whole),
                Err(FileFailure::Offset { .. } | FileFailure::Refused(_)) => {
                    let expected = "data at a part of the partial we offered, or at 0";
                    return Err(ConnError::Unexpected { got: "data", expected }.into());
                }
                Err(FileFailure::Write { source, .. } | FileFailure::Commit(source)) => {
                    return Err(Error::local(path, source))
                }
                Err(FileFailure::Mismatch { sent, received }) => {
                    return Err(Error::md5_mismatch(remote, sent.as_ref(), received))
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
            let first = (&data, part_len);
            let copied = receive_parts(&mut conn.reader, first, 0, sink, PartsDigest::new(), &bar).await?;
            bar.finish_and_clear();
            let received = match copied {
                Ok(received) => received,
                Err(PartFailure::Write { source, .. }) => return Err(Error::local("stdout", source)),
                Err(PartFailure::Mismatch { offset, sent }) => {
                    return Err(Error::md5_mismatch(remote, sent.as_ref(), part_differs(offset)));
                }
            };
            match received.agreed() {
                Ok(md5) => (md5, received.done.whole),
                Err(md5) => {
                    return Err(Error::md5_mismatch(remote, received.done.md5.as_ref(), md5.to_string()))
                }
            }
        }
    };
    let (received, whole) = received;
    opts.ui.summary("get", remote, body_len, started.elapsed(), &received, whole.as_ref());
    Ok(())
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
