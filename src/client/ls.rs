//! `xfer ls`: list a remote directory.

use super::{unexpected_reply, Client, Options};
use crate::error::Error;
use crate::local::escape;
use crate::protocol::{ClientMessage, Entry, EntryKind, Ls, ServerMessage};
use std::io::Write;
use std::time::{Duration, UNIX_EPOCH};

/// How remote patterns match, as a shell's do: `*` and `?` never match a
/// leading `.` (nor, in one name, a `/`).
pub(super) const GLOB: glob::MatchOptions = glob::MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: true,
};

/// Listings held in memory at most: a directory this large would cost
/// some 100 MiB; ls streams, but a pattern's matches are sorted first.
const MAX_LISTED: usize = 1_000_000;

/// Lists `dir` (the root when `None`) to `out`, one entry a line:
/// size (`-` for directories), modification time (UTC), name (`/` after
/// directories, `@` after symlinks). A pattern in the last part (`logs/*.gz`)
/// lists the matching names of its directory.
pub async fn ls(opts: &Options, dir: Option<&str>, out: &mut impl Write) -> Result<(), Error> {
    let mut client = Client::connect(opts).await?;
    let dir = dir.unwrap_or("").trim_start_matches('/');
    let print = |out: &mut dyn Write, entry: &Entry| {
        writeln!(out, "{}", entry_line(entry)).map_err(|e| Error::local("stdout", e))
    };
    if let Some((parent, pattern)) = pattern_of(dir) {
        let matched: Vec<_> = list(&mut client, parent)
            .await?
            .into_iter()
            .filter(|e| pattern.matches_with(&e.filename, GLOB))
            .collect();
        if matched.is_empty() {
            return Err(Error::Remote(crate::error::RequestError::new(
                crate::protocol::ErrorCode::NotFound,
                format!("no remote file matches {dir}"),
            )));
        }
        return matched.iter().try_for_each(|e| print(out, e));
    }
    let conn = &mut client.conn;
    conn.writer.write(&ClientMessage::Ls(Ls { filename: dir.to_string() })).await?;
    loop {
        match conn.reader.expect_control().await? {
            ServerMessage::Entry(entry) => print(out, &entry)?,
            ServerMessage::End(_) => return Ok(()),
            reply => return Err(unexpected_reply(reply, "entry or end")),
        }
    }
}

/// The entries of the remote directory `dir`, in the server's order (by
/// name).
pub(super) async fn list(client: &mut Client, dir: &str) -> Result<Vec<Entry>, Error> {
    let conn = &mut client.conn;
    conn.writer.write(&ClientMessage::Ls(Ls { filename: dir.to_string() })).await?;
    let mut entries = Vec::new();
    loop {
        match conn.reader.expect_control().await? {
            ServerMessage::Entry(_) if entries.len() >= MAX_LISTED => {
                let msg =
                    format!("{dir} holds more than {MAX_LISTED} entries: too many to match a pattern in");
                return Err(Error::LocalUnusable(msg));
            }
            ServerMessage::Entry(entry) => entries.push(entry),
            ServerMessage::End(_) => return Ok(entries),
            reply => return Err(unexpected_reply(reply, "entry or end")),
        }
    }
}

/// A remote path whose last part is a pattern (`*`, `?` or `[...]`), as
/// its directory and the pattern; `None` for a plain path.
pub(super) fn pattern_of(path: &str) -> Option<(&str, glob::Pattern)> {
    let (dir, last) = path.rsplit_once('/').unwrap_or(("", path));
    if !last.contains(['*', '?', '[']) {
        return None;
    }
    Some((dir, glob::Pattern::new(last).ok()?))
}

fn entry_line(h: &Entry) -> String {
    let (size, mark) = match h.kind {
        EntryKind::Dir => ("-".to_string(), "/"),
        EntryKind::Symlink => (h.size.unwrap_or(0).to_string(), "@"),
        _ => (h.size.unwrap_or(0).to_string(), ""),
    };
    let secs = h.mtime.unwrap_or(0).max(0) as u64;
    let when = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs));
    format!("{size:>12}  {when}  {}{mark}", escape(&h.filename))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_lines_mark_kinds_and_escape_names() {
        let mut h = Entry { size: Some(42), mtime: Some(0), ..Entry::new("a\x1b[1mb", EntryKind::File) };
        assert_eq!(entry_line(&h), "          42  1970-01-01T00:00:00Z  a\\u{1b}[1mb");
        h.kind = EntryKind::Dir;
        assert!(entry_line(&h).ends_with("b/"));
    }
}
