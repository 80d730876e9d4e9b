//! `xfer ls`: list a remote directory.

use super::{unexpected_reply, Client, Options};
use crate::error::Error;
use crate::local::escape;
use crate::protocol::{ClientMessage, Entry, EntryKind, Ls, ServerMessage};
use std::io::Write;
use std::time::{Duration, UNIX_EPOCH};

/// Lists `dir` (the root when `None`) to `out`, one entry a line:
/// size (`-` for directories), modification time (UTC), name (`/` after
/// directories, `@` after symlinks).
pub async fn ls(opts: &Options, dir: Option<&str>, out: &mut impl Write) -> Result<(), Error> {
    let mut client = Client::connect(opts).await?;
    let conn = &mut client.conn;
    conn.writer.write(&ClientMessage::Ls(Ls { filename: dir.unwrap_or("").to_string() })).await?;
    loop {
        match conn.reader.expect_control().await? {
            ServerMessage::Entry(entry) => {
                let line = entry_line(&entry);
                writeln!(out, "{line}").map_err(|e| Error::local("stdout", e))?;
            }
            ServerMessage::End(_) => return Ok(()),
            reply => return Err(unexpected_reply(reply, "entry or end")),
        }
    }
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
