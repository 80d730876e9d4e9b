//! `xfer ls`: list remote directories (or files, or what a pattern
//! matches), long (`-l`), recursive (`-R`), sizes for people (`-h`).

use super::{unexpected_reply, Client, Options};
use crate::error::{Error, RequestError};
use crate::local::escape;
use crate::protocol::{ClientMessage, Entry, EntryKind, ErrorCode, Ls, ServerMessage};
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

/// How deep `ls -R` goes, as deep as a tree transfer's walk.
const MAX_DEPTH: usize = crate::local::MAX_DEPTH;

/// How `xfer ls` shows what it lists.
#[derive(Debug, Clone, Copy, Default)]
pub struct LsOptions {
    /// `-l`: mode, size, time, name, and where a link points.
    pub long: bool,
    /// `-R`: what directories hold too, by path.
    pub recursive: bool,
    /// `-h`: sizes with units.
    pub human: bool,
}

/// Lists each of `paths` (the root when there are none) to `out`, one
/// entry a line: size (`-` for directories), modification time (UTC),
/// name (`/` after directories, `@` after symlinks); `-l` adds the mode
/// and a link's target. A pattern in the last part (`logs/*.gz`) lists the
/// matching names; a file lists itself.
pub async fn ls(opts: &Options, paths: &[String], how: LsOptions, out: &mut impl Write) -> Result<(), Error> {
    let mut client = Client::connect(opts).await?;
    let root = [String::new()];
    let paths = if paths.is_empty() { &root[..] } else { paths };
    let headed = paths.len() > 1;
    for (i, path) in paths.iter().enumerate() {
        let path = path.trim_start_matches('/');
        if headed {
            let gap = if i > 0 { "\n" } else { "" };
            writeln!(out, "{gap}{}:", escape(if path.is_empty() { "." } else { path }))
                .map_err(|e| Error::local("stdout", e))?;
        }
        if let Some((parent, pattern)) = pattern_of(path) {
            let matched: Vec<_> = list(&mut client, parent)
                .await?
                .into_iter()
                .filter(|e| pattern.matches_with(&e.filename, GLOB))
                .collect();
            if matched.is_empty() {
                return Err(no_match(path));
            }
            for e in matched {
                show(opts, out, &Listed { entry: &e, prefix: parent, how })?;
            }
            continue;
        }
        list_into(&mut client, opts, path, how, out).await?;
    }
    Ok(())
}

/// One entry as `ls` shows it: the entry, the directory it is in (shown
/// before its name with `-R`), and how.
pub struct Listed<'a> {
    /// What the server said of it.
    pub entry: &'a Entry,
    /// The directory it is in, relative to the root, as listed.
    pub prefix: &'a str,
    /// How `ls` was asked to show it.
    pub how: LsOptions,
}

/// Lists `dir` to `out` as the server streams it; with `-R`, then each
/// directory in it, by path, to [`MAX_DEPTH`] levels (links are not
/// followed). Only the directories still to list are held.
async fn list_into(
    client: &mut Client,
    opts: &Options,
    dir: &str,
    how: LsOptions,
    out: &mut impl Write,
) -> Result<(), Error> {
    let mut pending = vec![(dir.to_string(), 0usize)];
    while let Some((dir, depth)) = pending.pop() {
        let conn = &mut client.conn;
        conn.writer.write(&ClientMessage::Ls(Ls { filename: dir.clone() })).await?;
        let mut below = Vec::new();
        // A file lists itself: its entry then has no directory to show.
        let prefix = if depth == 0 { "" } else { dir.as_str() };
        loop {
            match conn.reader.expect_control().await? {
                ServerMessage::Entry(entry) => {
                    if how.recursive && entry.kind == EntryKind::Dir && depth < MAX_DEPTH {
                        below.push(join(&dir, &entry.filename));
                    }
                    show(opts, out, &Listed { entry: &entry, prefix, how })?;
                }
                ServerMessage::End(_) => break,
                reply => return Err(unexpected_reply(reply, "entry or end")),
            }
        }
        // In name order: the last pushed is listed first.
        pending.extend(below.into_iter().rev().map(|d| (d, depth + 1)));
    }
    Ok(())
}

/// Prints one entry through the user's output settings.
fn show(opts: &Options, out: &mut impl Write, l: &Listed) -> Result<(), Error> {
    let path = join(l.prefix, &l.entry.filename);
    opts.ui.listed(out, &path, l.entry, &entry_line(l)).map_err(|e| Error::local("stdout", e))
}

/// `dir/name`, or `name` in the root.
fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() || dir == "." {
        name.to_string()
    } else {
        format!("{}/{name}", dir.trim_end_matches('/'))
    }
}

fn no_match(path: &str) -> Error {
    Error::Remote(RequestError::new(ErrorCode::NotFound, format!("no remote file matches {path}")))
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

/// Remote paths from the command line, patterns expanded on the server's
/// listing (never matching its partials), each with whether it is a
/// directory where the listing said; a pattern matching nothing is an
/// error. A leading `/` is the served root, as in sftp.
pub(super) async fn expand(
    client: &mut Client,
    paths: &[String],
) -> Result<Vec<(String, Option<bool>)>, Error> {
    let mut out = Vec::new();
    for p in paths {
        let p = p.trim_start_matches('/');
        match pattern_of(p) {
            Some((dir, pattern)) => {
                let before = out.len();
                out.extend(
                    list(client, dir)
                        .await?
                        .into_iter()
                        .filter(|e| pattern.matches_with(&e.filename, GLOB))
                        .map(|e| (join(dir, &e.filename), Some(e.kind == EntryKind::Dir))),
                );
                if out.len() == before {
                    return Err(no_match(p));
                }
            }
            None => out.push((if p.is_empty() { ".".to_string() } else { p.to_string() }, None)),
        }
    }
    Ok(out)
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

/// The line `ls` prints for an entry.
pub fn entry_line(l: &Listed) -> String {
    let h = l.entry;
    let size = h.size.unwrap_or(0);
    let size = match (h.kind, l.how.human) {
        (EntryKind::Dir, _) if !l.how.long => "-".to_string(),
        (_, true) => human_size(size),
        (_, false) => size.to_string(),
    };
    let mark = match h.kind {
        EntryKind::Dir => "/",
        EntryKind::Symlink if !l.how.long => "@",
        _ => "",
    };
    let secs = h.mtime.unwrap_or(0).max(0) as u64;
    let when = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs));
    let name = escape(&join(l.prefix, &h.filename));
    if !l.how.long {
        return format!("{size:>12}  {when}  {name}{mark}");
    }
    let target = match (&h.target, h.kind) {
        (Some(t), EntryKind::Symlink) => format!(" -> {}", escape(t)),
        _ => String::new(),
    };
    format!("{}  {size:>12}  {when}  {name}{mark}{target}", mode_text(h.kind, h.mode.unwrap_or(0)))
}

/// `drwxr-xr-x`, as ls -l shows a kind and permission bits (setuid,
/// setgid and sticky as `s`, `s`, `t`).
fn mode_text(kind: EntryKind, mode: u32) -> String {
    let mut s = String::with_capacity(10);
    s.push(match kind {
        EntryKind::Dir => 'd',
        EntryKind::Symlink => 'l',
        EntryKind::File => '-',
        EntryKind::Other => '?',
    });
    for (i, special, mark) in [(6, 0o4000, 's'), (3, 0o2000, 's'), (0, 0o1000, 't')] {
        let bits = (mode >> i) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(match (bits & 1 != 0, mode & special != 0) {
            (true, true) => mark,
            (false, true) => mark.to_ascii_uppercase(),
            (true, false) => 'x',
            (false, false) => '-',
        });
    }
    s
}

/// A size as `ls -h` shows it: `512`, `1.2K`, `3.4M`, `12G`.
fn human_size(n: u64) -> String {
    const UNITS: [char; 6] = ['K', 'M', 'G', 'T', 'P', 'E'];
    if n < 1024 {
        return n.to_string();
    }
    let (mut v, mut unit) = (n as f64 / 1024.0, 0);
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    match v < 10.0 {
        true => format!("{v:.1}{}", UNITS[unit]),
        false => format!("{v:.0}{}", UNITS[unit]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(e: &Entry, how: LsOptions) -> String {
        entry_line(&Listed { entry: e, prefix: "", how })
    }

    #[test]
    fn entry_lines_mark_kinds_and_escape_names() {
        let mut h = Entry { size: Some(42), mtime: Some(0), ..Entry::new("a\x1b[1mb", EntryKind::File) };
        assert_eq!(line(&h, LsOptions::default()), "          42  1970-01-01T00:00:00Z  a\\u{1b}[1mb");
        h.kind = EntryKind::Dir;
        assert!(line(&h, LsOptions::default()).ends_with("b/"));
    }

    #[test]
    fn long_lines_show_mode_size_and_link_targets() {
        let long = LsOptions { long: true, ..LsOptions::default() };
        let link = Entry {
            size: Some(6),
            mtime: Some(0),
            mode: Some(0o777),
            target: Some("real.h".into()),
            ..Entry::new("b.h", EntryKind::Symlink)
        };
        assert_eq!(line(&link, long), "lrwxrwxrwx             6  1970-01-01T00:00:00Z  b.h -> real.h");
        let f = Entry {
            size: Some(3 << 20),
            mtime: Some(0),
            mode: Some(0o4755),
            ..Entry::new("f", EntryKind::File)
        };
        let human = LsOptions { human: true, ..long };
        assert_eq!(line(&f, human), "-rwsr-xr-x          3.0M  1970-01-01T00:00:00Z  f");
        assert_eq!(mode_text(EntryKind::Dir, 0o1750), "drwxr-x--T");
        assert_eq!(human_size(1023), "1023");
        assert_eq!(human_size(1536), "1.5K");
        assert_eq!(human_size(200 << 30), "200G");
        let rtl =
            Entry { size: Some(1), mtime: Some(0), ..Entry::new("invoice\u{202e}fdp.exe", EntryKind::File) };
        assert!(line(&rtl, LsOptions::default()).ends_with("invoice\\u{202e}fdp.exe"));
    }
}
