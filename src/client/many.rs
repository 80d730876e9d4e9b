//! The shapes of `xfer put` and `xfer get` that scp and cp users type:
//! several sources and a destination last, into a directory, remote
//! patterns, `.` and `/`. All sources go over one connection; a source
//! that fails is reported and the others go on (exit code 1).

use super::ls::expand;
use super::{get, get_tree, put, put_tree, Client, Flags, GetTarget, Options, Sources};
use crate::error::{Error, EXIT_FAILURE};
use crate::protocol::{ClientMessage, EntryKind, ErrorCode, Refusal, ServerMessage};
use std::path::{Path, PathBuf};

/// `xfer put SOURCE... [DEST]`.
pub async fn put_many(opts: &Options, paths: &[PathBuf], how: Sources, flags: Flags) -> Result<u8, Error> {
    let (sources, dest) = match paths {
        [one] => (std::slice::from_ref(one), None),
        [sources @ .., last] => (sources, Some(remote_arg(last)?)),
        [] => return Err(Error::Usage("put needs a file to send".into())),
    };
    if sources.iter().any(|s| s.as_os_str() == "-") {
        // Standard input, of unknown length, to the one name given.
        let ([_], Some(dest)) = (sources, &dest) else {
            return Err(Error::Usage(
                "- (standard input) is the only source, with a remote name after it".into(),
            ));
        };
        let mut client = Client::connect(opts).await?;
        super::put::put_stdin(&mut client, opts, dest, flags).await?;
        return Ok(0);
    }
    if let ([source], Some(dest)) = (sources, &dest) {
        // `xfer put *.txt` with two matches would send one under the
        // other's name: a destination that is a local file too is refused.
        let local_too = Path::new(dest).is_file() && Path::new(dest) != source.as_path();
        if local_too && !how.no_target_directory && !how.recursive {
            return Err(Error::Usage(format!(
                "{dest} is a local file too, so this would send {} under its name: to send both, name \
                 a remote directory last (xfer put {} {dest} DIR/); to send it as {dest} anyway, add -T",
                source.display(),
                source.display(),
            )));
        }
    }
    let mut client = Client::connect(opts).await?;
    // Several sources go into a directory: one that exists, or one to make.
    // A single tree goes into a directory that exists (as cp -r and scp -r
    // put it), and otherwise becomes the destination.
    let tree = how.recursive && sources.iter().all(|s| s.is_dir());
    let into = match &dest {
        Some(d) if sources.len() > 1 || is_root(d) || (!tree && d.ends_with('/')) => Some(d.clone()),
        Some(d) if tree && !is_contents(sources[0].as_os_str().as_encoded_bytes()) => {
            remote_is_dir(&mut client, d).await?.then(|| d.clone())
        }
        _ => None,
    };
    if let (Some(d), true) = (&into, sources.len() > 1) {
        if !d.ends_with('/') && !is_root(d) && !remote_is_dir(&mut client, d).await? {
            return Err(Error::Usage(format!(
                "the remote destination {d} is not a directory: several sources go into one (end it with / to make it)"
            )));
        }
    }
    let mut failed = 0;
    for source in sources {
        // A tree named with a trailing / (or `.`) goes in as its contents,
        // as rsync.
        let contents = how.recursive && is_contents(source.as_os_str().as_encoded_bytes());
        let target = match (&into, &dest) {
            (Some(dir), _) if contents => Ok(dir.trim_end_matches('/').to_string()),
            (Some(dir), _) => local_name(source).map(|name| join(dir, &name)),
            (None, Some(d)) => Ok(d.clone()),
            (None, None) => local_name(source),
        };
        let target = match target {
            Ok(t) => t,
            Err(e) => {
                failed += settle(Err(e), sources.len() > 1, &mut client, opts).await?;
                continue;
            }
        };
        let sent = if source.is_dir() || (how.recursive && !source.is_file()) {
            if !how.recursive {
                Err(Error::LocalUnusable(format!("{} is a directory (use -r to send it)", source.display())))
            } else {
                put_tree(&mut client, opts, source, &target, flags).await.map(|r| r.failed == 0)
            }
        } else {
            match put(&mut client, opts, source, &target, flags).await {
                // `put a.txt d` where d is a remote directory: into it.
                Err(Error::Remote(e))
                    if into.is_none() && dest.is_some() && e.code == ErrorCode::WrongType =>
                {
                    match (remote_is_dir(&mut client, &target).await?, local_name(source)) {
                        (true, Ok(name)) => {
                            put(&mut client, opts, source, &join(&target, &name), flags).await.map(|()| true)
                        }
                        _ => Err(Error::Remote(e)),
                    }
                }
                sent => sent.map(|()| true),
            }
        };
        failed += settle(sent, sources.len() > 1, &mut client, opts).await?;
    }
    Ok(if failed > 0 { EXIT_FAILURE } else { 0 })
}

/// `xfer get SOURCE... [DEST]`.
pub async fn get_many(opts: &Options, paths: &[String], how: Sources, flags: Flags) -> Result<u8, Error> {
    let (patterns, dest) = match paths {
        [one] => (std::slice::from_ref(one), None),
        [sources @ .., last] => (sources, Some(last.as_str())),
        [] => return Err(Error::Usage("get needs a remote file".into())),
    };
    let mut client = Client::connect(opts).await?;
    // Remote patterns match on the server's listing, never its partials.
    let sources = expand(&mut client, patterns).await?;
    let several = sources.len() > 1;
    if dest == Some("-") && (several || how.recursive) {
        return Err(Error::Usage("- (standard output) takes one file".into()));
    }
    if dest == Some("-") && opts.ui.json {
        return Err(Error::Usage("--json keeps stdout for its objects: fetch the file to a path".into()));
    }
    // Several sources go into a directory: one that exists, or one to make.
    // A single tree goes into a directory that exists (as cp -r and scp -r
    // put it), and otherwise becomes the destination.
    let tree = how.recursive && sources.iter().all(|(_, dir)| *dir != Some(false));
    let into = match dest {
        Some(d) if d != "-" && (several || (!tree && d.ends_with('/')) || Path::new(d).is_dir()) => {
            let dir = PathBuf::from(d);
            if !dir.is_dir() {
                if !several {
                    return Err(Error::LocalUnusable(format!("local directory {d} does not exist")));
                }
                if !d.ends_with('/') {
                    return Err(Error::Usage(format!(
                        "the local destination {d} is not a directory: several sources go into one (end it with / to make it)"
                    )));
                }
                std::fs::create_dir_all(&dir).map_err(|e| Error::local(&dir, e))?;
            }
            Some(dir)
        }
        _ => None,
    };
    let mut failed = 0;
    for (source, is_dir) in sources {
        let target = match (&into, dest) {
            // A tree named with a trailing / (or the root) goes in as its
            // contents, as rsync.
            (Some(dir), _) if how.recursive && (is_contents(source.as_bytes()) || is_root(&source)) => {
                Ok(dir.clone())
            }
            (Some(dir), _) => remote_name(&source).map(|name| dir.join(name)),
            (None, Some(d)) => Ok(PathBuf::from(d)),
            (None, None) => remote_name(&source).map(PathBuf::from),
        };
        let target = match target {
            Ok(t) => t,
            Err(e) => {
                failed += settle(Err(e), several, &mut client, opts).await?;
                continue;
            }
        };
        let got = if how.recursive && is_dir != Some(false) {
            get_tree(&mut client, opts, &source, &target, flags).await.map(|r| r.failed == 0)
        } else if is_dir == Some(true) {
            Err(Error::Usage(format!("{source} is a remote directory (use -r to fetch it)")))
        } else {
            let target = if target.as_os_str() == "-" { GetTarget::Stdout } else { GetTarget::Path(target) };
            get(&mut client, opts, &source, target, flags).await.map(|()| true)
        };
        failed += settle(got, several, &mut client, opts).await?;
    }
    Ok(if failed > 0 { EXIT_FAILURE } else { 0 })
}

/// What one source's outcome adds to the failures. With a single source
/// its error is the command's; with several it is told and the rest go
/// on, over a new connection (the old one may be mid-frame), unless the
/// server itself is gone.
async fn settle(
    outcome: Result<bool, Error>,
    several: bool,
    client: &mut Client,
    opts: &Options,
) -> Result<u32, Error> {
    match outcome {
        Ok(true) => Ok(0),
        Ok(false) => Ok(1),
        Err(e) if !several || e.exit_code() == crate::error::EXIT_CONNECT => Err(e),
        Err(e) => {
            opts.ui.error(&e);
            *client = Client::connect(opts).await?;
            Ok(1)
        }
    }
}

/// Whether `dir` names the served root (`.`, `/`, or nothing).
fn is_root(dir: &str) -> bool {
    dir.split('/').all(|part| part.is_empty() || part == ".")
}

/// Whether a tree source so named means what is in it rather than the
/// directory itself: a trailing `/` (as in rsync), or `.` (as cp takes it).
fn is_contents(source: &[u8]) -> bool {
    source.ends_with(b"/") || source == b"." || source.ends_with(b"/.")
}

/// `dir/name` as a remote path (just `name` in the root).
fn join(dir: &str, name: &str) -> String {
    match dir.trim_end_matches('/') {
        d if is_root(d) => name.to_string(),
        d => format!("{d}/{name}"),
    }
}

/// A remote path from the command line: `/` at its start is the served
/// root, as in sftp.
fn remote_arg(arg: &Path) -> Result<String, Error> {
    let arg = arg.to_str().ok_or_else(|| Error::Usage(format!("{} is not UTF-8", arg.display())))?;
    let trimmed = arg.trim_start_matches('/');
    Ok(if trimmed.is_empty() { ".".to_string() } else { trimmed.to_string() })
}

/// The name a local source has on the other side: its last component (a
/// directory named `.` or ending in `/` is its own name).
fn local_name(source: &Path) -> Result<String, Error> {
    let named = match source.file_name() {
        Some(n) => Some(n.to_owned()),
        None => std::fs::canonicalize(source).ok().and_then(|p| p.file_name().map(ToOwned::to_owned)),
    };
    named.and_then(|n| n.into_string().ok()).ok_or_else(|| {
        Error::Usage(format!(
            "{} has no name to give it on the server; name the destination",
            source.display()
        ))
    })
}

/// The name a remote source gets here: its last component.
fn remote_name(source: &str) -> Result<String, Error> {
    match source.trim_end_matches('/').rsplit('/').next() {
        Some(n) if !n.is_empty() && n != "." && n != ".." => Ok(n.to_string()),
        _ => Err(Error::Usage(format!("{source:?} has no name to give it here; name the local destination"))),
    }
}

/// Whether the remote path `dir` is a directory.
async fn remote_is_dir(client: &mut Client, dir: &str) -> Result<bool, Error> {
    let conn = &mut client.conn;
    let req = crate::protocol::Stat { filename: dir.trim_start_matches('/').to_string() };
    conn.writer.write(&ClientMessage::Stat(req)).await?;
    match conn.reader.expect_control().await? {
        ServerMessage::Entry(e) => Ok(e.kind == EntryKind::Dir),
        ServerMessage::Error(Refusal { code: ErrorCode::NotFound, .. }) => Ok(false),
        reply => Err(super::unexpected_reply(reply, "entry")),
    }
}
