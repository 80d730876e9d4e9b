//! `xfer put`: stream a local file to the server, resuming an interrupted
//! upload when the server holds a partial whose bytes match ours.

use super::{unexpected_reply, Client, Flags, Options};
use crate::digest::{md5_many, PartsDigest};
use crate::error::{ConnError, Error, RequestError};
use crate::local::meta::MODE_MASK;
use crate::protocol::{ClientMessage, Data, Done, Md5Hex, Put, ServerMessage, PART};
use crate::transfer::{resume_point, send_parts, CopyError, Digest, Offer, Sending};
use crate::ui::Planned;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long to wait for the server's reason after it stopped taking the body.
const REASON_WAIT: Duration = Duration::from_secs(2);

/// Sends the file `local` to the remote path `remote`, with its
/// permission bits and modification time. A file already there is replaced
/// only with `force`, and left as it is when identical.
pub async fn put(
    client: &mut Client,
    opts: &Options,
    local: &Path,
    remote: &str,
    flags: Flags,
) -> Result<(), Error> {
    use std::os::unix::fs::MetadataExt;
    let remote = remote.to_string();
    let file = std::fs::File::open(local).map_err(|e| Error::local(local, e))?;
    let meta = file.metadata().map_err(|e| Error::local(local, e))?;
    if !meta.is_file() {
        return Err(Error::LocalUnusable(format!("{} is not a regular file", local.display())));
    }
    let len = meta.len();

    let conn = &mut client.conn;
    let req = Put {
        filename: remote.clone(),
        size: Some(len),
        resume: flags.resume,
        force: flags.force,
        fsync: flags.fsync,
        mode: Some(meta.mode() & MODE_MASK),
        mtime: Some(meta.mtime()),
        dry_run: flags.dry_run,
    };
    conn.writer.write(&ClientMessage::Put(req)).await?;
    let (reply, parts) = conn.reader.expect_with_parts(|m| matches!(m, ServerMessage::Ready { .. })).await?;
    let offer = match reply {
        ServerMessage::Ready { offset, md5, .. } if !flags.dry_run => {
            Offer { offset: offset.unwrap_or(0), md5, parts }
        }
        // A dry run, and nothing there: a put would store it.
        ServerMessage::Ok(_) if flags.dry_run => {
            opts.ui.planned(Planned::Copy(Some(len)), &remote);
            return Ok(());
        }
        // A file is there: ours is identical to it, or it is in the way
        // (or, dry with --force, would replace it).
        ServerMessage::Have(have) => {
            let same = match have.md5 {
                Some(theirs) if have.size == len => {
                    let ours = hash_parts(file, len).await.map_err(|e| Error::local(local, e))?;
                    ours == theirs
                }
                _ => false,
            };
            match (same, flags.dry_run) {
                (true, true) => opts.ui.planned(Planned::Skip, &remote),
                (true, false) => opts.ui.identical("put", &remote),
                (false, true) if flags.force => opts.ui.planned(Planned::Replace(Some(len)), &remote),
                (false, _) => return Err(Error::Remote(RequestError::exists(&remote))),
            }
            return Ok(());
        }
        reply => return Err(unexpected_reply(reply, "ready")),
    };

    // The server offers the partial it holds; go on after the parts of it
    // that are ours, so a changed source starts over where it changed.
    let (file, offset, prefix) = tokio::task::spawn_blocking(move || resume_point(file, len, &offer))
        .await
        .expect("hashing does not panic")
        .map_err(|e| Error::local(local, e))?;
    if offset > 0 {
        opts.ui.resuming(&remote, offset);
    }

    let started = Instant::now();
    let bar = opts.ui.transfer_bar(&remote, len);
    bar.set_position(offset);
    let how = Sending {
        head: Data { filename: remote.clone(), ..Data::default() },
        from: offset,
        len: len - offset,
        prefix,
        digests: Digest::Compute,
        collect: 0,
        whole: flags.md5,
        bar: &bar,
    };
    // The server may refuse part way (its disk filled): watch for its reply
    // while sending, and stop at once when it comes.
    let copied = tokio::select! {
        res = send_parts(file, how, &mut conn.writer) => res,
        early = conn.reader.expect_control() => {
            bar.abandon();
            return Err(unexpected_reply(early?, "ok"));
        }
    };
    bar.finish_and_clear();
    let sent = match copied {
        Ok(sent) => sent,
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
    let md5 = sent.digest.finish();
    finish(client, &remote, &md5, sent.whole.clone()).await?;
    opts.ui.summary("put", &remote, len - offset, started.elapsed(), &md5, sent.whole.as_ref());
    Ok(())
}

/// Sends standard input, of unknown length, to the remote path `remote`:
/// as parts like any file's, each sent once it is full (or stdin ends),
/// then `done` with the digest over them. Committed like any put: verified
/// first, atomically, never resumed.
pub async fn put_stdin(client: &mut Client, opts: &Options, remote: &str, flags: Flags) -> Result<(), Error> {
    use tokio::io::AsyncReadExt;
    let conn = &mut client.conn;
    let req = Put {
        filename: remote.to_string(),
        force: flags.force,
        fsync: flags.fsync,
        dry_run: flags.dry_run,
        ..Put::default()
    };
    conn.writer.write(&ClientMessage::Put(req)).await?;
    match conn.reader.expect_control().await? {
        ServerMessage::Ready { .. } if !flags.dry_run => {}
        // A dry run reads nothing of stdin: its length is not known.
        ServerMessage::Ok(_) if flags.dry_run => {
            opts.ui.planned(Planned::Copy(None), remote);
            return Ok(());
        }
        ServerMessage::Have(_) if flags.dry_run && flags.force => {
            opts.ui.planned(Planned::Replace(None), remote);
            return Ok(());
        }
        // What stdin holds is not known before it is read: never identical.
        ServerMessage::Have(_) => return Err(Error::Remote(RequestError::exists(remote))),
        reply => return Err(unexpected_reply(reply, "ready")),
    }
    let started = Instant::now();
    let spinner = opts.ui.stream_spinner(remote);
    let (mut stdin, mut buf, mut digest, mut sent) =
        (tokio::io::stdin(), vec![0u8; PART as usize], PartsDigest::new(), 0u64);
    let mut whole = flags.md5.then(crate::digest::Md5::new);
    loop {
        // Fill a chunk, or take what there is at the end.
        let mut filled = 0;
        while filled < buf.len() {
            let n = tokio::select! {
                n = stdin.read(&mut buf[filled..]) => n.map_err(|e| Error::local("stdin", e))?,
                early = conn.reader.expect_control() => {
                    spinner.abandon();
                    return Err(unexpected_reply(early?, "ok"));
                }
            };
            if n == 0 {
                break;
            }
            filled += n;
        }
        // An empty input still sends its one (empty) part.
        if filled > 0 || sent == 0 {
            let part = &buf[..filled];
            let md5 = md5_many(&[part]).remove(0);
            if filled > 0 {
                digest.push(&md5.to_digest());
            }
            if let Some(whole) = whole.as_mut() {
                whole.update(part);
            }
            let data =
                Data { filename: remote.to_string(), md5: Some(md5), offset: Some(sent), ..Data::default() };
            conn.writer.write_frame(&data.into(), part).await?;
            sent += filled as u64;
            spinner.set_position(sent);
        }
        if filled < buf.len() {
            break;
        }
    }
    spinner.finish_and_clear();
    let md5 = digest.finish();
    let whole = whole.map(crate::digest::Md5::finish);
    finish(client, remote, &md5, whole.clone()).await?;
    opts.ui.summary("put", remote, sent, started.elapsed(), &md5, whole.as_ref());
    Ok(())
}

/// Sends the `done` frame with our digest `md5` (and the plain MD5 of the
/// whole file, if computed) and checks that the server stored what we sent.
async fn finish(client: &mut Client, remote: &str, md5: &Md5Hex, whole: Option<Md5Hex>) -> Result<(), Error> {
    let conn = &mut client.conn;
    let done = Done { filename: remote.to_string(), md5: Some(md5.clone()), whole };
    conn.writer.write(&done.into()).await?;
    let stored = match conn.reader.expect_control().await? {
        ServerMessage::Ok(stored) => stored.md5,
        reply => return Err(unexpected_reply(reply, "ok")),
    };
    if stored.as_ref() != Some(md5) {
        return Err(Error::md5_mismatch(
            remote,
            Some(md5),
            stored.map_or_else(|| "nothing".into(), |m| m.to_string()),
        ));
    }
    Ok(())
}

/// The digest over its parts of the `len` bytes of `file`, hashed on the
/// blocking pool.
pub(super) async fn hash_parts(mut file: std::fs::File, len: u64) -> std::io::Result<Md5Hex> {
    tokio::task::spawn_blocking(move || Ok(crate::digest::parts_of(&mut file, len)?.finish()))
        .await
        .expect("hashing does not panic")
}
