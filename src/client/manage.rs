//! `xfer rm`, `xfer mv`, `xfer mkdir`, `xfer md5sum`, `xfer df` and `xfer
//! cat`: remote file management, as sftp offers it, one request each over
//! one connection. Remote patterns expand on the server's listing, as for
//! get; with several paths, one that fails is told and the rest go on.

use super::ls::expand;
use super::{get, unexpected_reply, Client, Flags, GetTarget, Options};
use crate::error::{Error, EXIT_FAILURE};
use crate::protocol::{ClientMessage, Md5sum, Mkdir, Mv, Rm, ServerMessage, Stored};

/// Runs `one` on each of `paths` (patterns expanded) over one connection;
/// a failure is told and the rest go on (exit 1), as for several sources.
async fn each<'a>(
    opts: &'a Options,
    paths: &'a [String],
    mut one: impl AsyncFnMut(&mut Client, &str) -> Result<(), Error>,
) -> Result<u8, Error> {
    let mut client = Client::connect(opts).await?;
    let paths = expand(&mut client, paths).await?;
    let several = paths.len() > 1;
    let mut failed = false;
    for (path, _) in paths {
        match one(&mut client, &path).await {
            Ok(()) => {}
            Err(e) if !several || e.exit_code() == crate::error::EXIT_CONNECT => return Err(e),
            Err(e) => {
                opts.ui.error(&e);
                failed = true;
                // The connection may be mid-exchange: a fresh one goes on.
                client = Client::connect(opts).await?;
            }
        }
    }
    Ok(if failed { EXIT_FAILURE } else { 0 })
}

/// `xfer rm [-r] PATH...`.
pub async fn rm(opts: &Options, paths: &[String], recursive: bool) -> Result<u8, Error> {
    each(opts, paths, async |client: &mut Client, path: &str| {
        let conn = &mut client.conn;
        conn.writer.write(&ClientMessage::Rm(Rm { filename: path.to_string(), recursive })).await?;
        loop {
            match conn.reader.expect_control().await? {
                ServerMessage::Deleted { filename } => opts.ui.removed(&filename),
                ServerMessage::End(_) => return Ok(()),
                reply => return Err(unexpected_reply(reply, "deleted or end")),
            }
        }
    })
    .await
}

/// `xfer mv [-f] SRC DST`.
pub async fn mv(opts: &Options, from: &str, to: &str, force: bool) -> Result<u8, Error> {
    let mut client = Client::connect(opts).await?;
    let conn = &mut client.conn;
    let req = Mv {
        filename: from.trim_start_matches('/').to_string(),
        target: to.trim_start_matches('/').into(),
        force,
    };
    conn.writer.write(&ClientMessage::Mv(req)).await?;
    match conn.reader.expect_control().await? {
        ServerMessage::Ok(Stored { filename, .. }) => {
            opts.ui.moved(from, &filename);
            Ok(0)
        }
        reply => Err(unexpected_reply(reply, "ok")),
    }
}

/// `xfer mkdir [-p] DIR...`.
pub async fn mkdir(opts: &Options, dirs: &[String], parents: bool) -> Result<u8, Error> {
    let mut client = Client::connect(opts).await?;
    let mut failed = false;
    for dir in dirs {
        let conn = &mut client.conn;
        let req = Mkdir { filename: dir.trim_start_matches('/').to_string(), parents };
        conn.writer.write(&ClientMessage::Mkdir(req)).await?;
        match conn.reader.expect_control().await? {
            ServerMessage::Ok(_) => opts.ui.made(dir),
            reply if dirs.len() > 1 => {
                opts.ui.error(&unexpected_reply(reply, "ok"));
                failed = true;
            }
            reply => return Err(unexpected_reply(reply, "ok")),
        }
    }
    Ok(if failed { EXIT_FAILURE } else { 0 })
}

/// `xfer md5sum PATH...`: `HASH  NAME` lines, as md5sum prints them
/// (with `parts`, of the digest over the parts).
pub async fn md5sum(opts: &Options, parts: bool, paths: &[String]) -> Result<u8, Error> {
    each(opts, paths, async |client: &mut Client, path: &str| {
        let conn = &mut client.conn;
        conn.writer.write(&ClientMessage::Md5sum(Md5sum { filename: path.to_string(), parts })).await?;
        match conn.reader.expect_control().await? {
            ServerMessage::Ok(Stored { md5: Some(md5), size, .. }) => {
                opts.ui.digest(path, &md5, size.unwrap_or(0));
                Ok(())
            }
            reply => Err(unexpected_reply(reply, "ok with an md5")),
        }
    })
    .await
}

/// `xfer md5sum --local PATH...`: the same lines for local files, hashed
/// here; a file that cannot be read is reported and the rest go on.
pub fn md5sum_local(ui: &crate::ui::Ui, parts: bool, paths: &[String]) -> Result<u8, Error> {
    let mut failed = false;
    for path in paths {
        let hashed = std::fs::File::open(path).and_then(|mut file| {
            let len = file.metadata()?.len();
            match parts {
                true => Ok((crate::digest::parts_of(&mut file, len)?.finish(), len)),
                false => Ok((crate::digest::hash_prefix(&mut file, len)?.finish(), len)),
            }
        });
        match hashed {
            Ok((md5, size)) => ui.digest(path, &md5, size),
            Err(e) => {
                ui.error(&Error::local(path, e));
                failed = true;
            }
        }
    }
    Ok(if failed { EXIT_FAILURE } else { 0 })
}

/// `xfer cat PATH...`: remote files to standard output, each verified.
pub async fn cat(opts: &Options, paths: &[String]) -> Result<u8, Error> {
    if opts.ui.json {
        return Err(Error::Usage("--json keeps stdout for its objects: xfer get the files instead".into()));
    }
    // Only the bytes go out: no summary lines.
    let quiet = Options { ui: crate::ui::Ui { quiet: true, ..opts.ui }, ..opts.clone() };
    each(opts, paths, async |client: &mut Client, path: &str| {
        get(client, &quiet, path, GetTarget::Stdout, Flags::default()).await
    })
    .await
}

/// `xfer df [-h]`: the size, use and free space where the root lives.
pub async fn df(opts: &Options, human: bool) -> Result<u8, Error> {
    let mut client = Client::connect(opts).await?;
    let conn = &mut client.conn;
    conn.writer.write(&ClientMessage::Df).await?;
    let (total, free) = match conn.reader.expect_control().await? {
        ServerMessage::Space { total, free } => (total, free),
        reply => return Err(unexpected_reply(reply, "space")),
    };
    opts.ui.space(total, free, human);
    Ok(0)
}
