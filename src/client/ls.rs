//! `xfer ls`: list a remote directory.

use super::{unexpected_reply, Client, Options};
use crate::error::Error;
use crate::fs::escape;
use crate::protocol::{EntryKind, Header, Op};
use std::io::Write;
use std::time::{Duration, UNIX_EPOCH};

/// Lists `dir` (the root when `None`) to `out`, one entry a line:
/// size (`-` for directories), modification time (UTC), name (`/` after
/// directories, `@` after symlinks).
pub async fn ls(opts: &Options, dir: Option<&str>, out: &mut impl Write) -> Result<(), Error> {
    let mut client = Client::connect(opts).await?;
    let conn = &mut client.conn;
    conn.writer.write_header(&Header::new(Op::Ls).with_filename(dir.unwrap_or(""))).await?;
    loop {
        let h = conn.reader.expect_header().await?;
        match h.op {
            Op::Entry => {
                let line = entry_line(&h);
                writeln!(out, "{line}").map_err(|e| Error::local("stdout", e))?;
            }
            Op::End => return Ok(()),
            _ => return Err(unexpected_reply(h, "entry or end")),
        }
    }
}

fn entry_line(h: &Header) -> String {
    let (size, mark) = match h.kind {
        Some(EntryKind::Dir) => ("-".to_string(), "/"),
        Some(EntryKind::Symlink) => (h.size.unwrap_or(0).to_string(), "@"),
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
        let mut h = Header::new(Op::Entry).with_filename("a\x1b[1mb");
        h.kind = Some(EntryKind::File);
        h.size = Some(42);
        h.mtime = Some(0);
        assert_eq!(entry_line(&h), "          42  1970-01-01T00:00:00Z  a\\u{1b}[1mb");
        h.kind = Some(EntryKind::Dir);
        assert!(entry_line(&h).ends_with("b/"));
    }
}
