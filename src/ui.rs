//! What the client shows its user: progress bars and summary lines.
//!
//! Bars go to stderr and only when stderr is a terminal (indicatif hides them
//! otherwise) and `--quiet` is off. Names are escaped before display.

use crate::local::escape;
use crate::protocol::Md5Hex;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::time::Duration;

/// How the client talks to its user.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ui {
    /// `--quiet`: no bars, no summary lines; errors only.
    pub quiet: bool,
    /// `-v`: a line for each file a tree transfer copies.
    pub verbose: bool,
    /// `--json`: one JSON object per line on stdout for each result and
    /// each error, and nothing else anywhere (no bars, no lines on stderr).
    pub json: bool,
}

impl Ui {
    /// Whether bars and human lines are off.
    fn silent(&self) -> bool {
        self.quiet || self.json
    }

    /// A byte-progress bar for a transfer of `len` bytes, or a hidden one.
    pub fn transfer_bar(&self, name: &str, len: u64) -> ProgressBar {
        if self.silent() {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(len).with_style(bytes_style());
        bar.set_message(escape(name));
        bar
    }

    /// A spinner with bytes and rate, for a body of unknown length (a put
    /// from standard input), or a hidden one.
    pub fn stream_spinner(&self, name: &str) -> ProgressBar {
        if self.silent() {
            return ProgressBar::hidden();
        }
        let style = ProgressStyle::with_template("{spinner} {msg} {bytes} {binary_bytes_per_sec}")
            .expect("the template is valid");
        let bar = ProgressBar::new_spinner().with_style(style);
        bar.set_message(escape(name));
        bar
    }

    /// One bar for a whole tree: bytes of all its files, and files done.
    pub fn tree_bar(&self, total_bytes: u64, files: u64) -> ProgressBar {
        if self.silent() {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(total_bytes).with_style(bytes_style());
        bar.set_message(format!("0/{files} files"));
        bar
    }

    /// Prints the one-line summary of a tree transfer on stderr.
    pub fn tree_summary(&self, verb: &str, name: &str, r: &crate::tree::TreeReport, elapsed: Duration) {
        if self.json {
            let status = if r.failed > 0 { "failed" } else { "ok" };
            emit(json!({
                "type": "tree", "op": verb, "name": name, "copied": r.sent, "skipped": r.skipped,
                "failed": r.failed, "deleted": r.deleted, "bytes": r.bytes,
                "seconds": elapsed.as_secs_f64(), "status": status,
            }));
        } else if !self.quiet {
            eprintln!("{}", tree_summary_line(verb, name, r, elapsed));
        }
    }

    /// Names a file of a tree once it is copied (with `-v`), above `bar`.
    pub fn copied(&self, bar: &ProgressBar, rel: &str) {
        if self.json {
            emit(json!({"type": "file", "name": rel, "status": "copied"}));
        } else if self.verbose && !self.quiet {
            bar.suspend(|| eprintln!("{}", escape(rel)));
        }
    }

    /// Names something removed by `--delete` (with `-v`), above `bar`.
    pub fn deleting(&self, bar: &ProgressBar, rel: &str) {
        if self.json {
            emit(json!({"type": "deleted", "name": rel}));
        } else if self.verbose && !self.quiet {
            bar.suspend(|| eprintln!("deleting {}", escape(rel)));
        }
    }

    /// One line of a dry run's plan, on stdout (it is the command's
    /// output, so `--quiet` keeps it): what would become of `name`.
    pub fn planned(&self, what: Planned, name: &str) {
        if self.json {
            let (action, bytes) = match what {
                Planned::Copy(n) => ("copy", n),
                Planned::Replace(n) => ("replace", n),
                Planned::Skip => ("skip", None),
                Planned::Delete => ("delete", None),
            };
            return emit(json!({"type": "plan", "action": action, "name": name, "bytes": bytes}));
        }
        let name = escape(name);
        let size = |n: Option<u64>| n.map_or_else(|| "standard input".to_string(), |n| human_bytes(n as f64));
        match what {
            Planned::Copy(n) => println!("copy {name} ({})", size(n)),
            Planned::Replace(n) => println!("replace {name} ({})", size(n)),
            Planned::Skip => println!("skip {name} (identical)"),
            Planned::Delete => println!("delete {name}"),
        }
    }

    /// The last line of a dry run, on stderr.
    pub fn plan_summary(&self, verb: &str, name: &str, r: &crate::tree::TreeReport) {
        if self.json {
            emit(json!({
                "type": "plan_summary", "op": verb, "name": name, "copy": r.sent - r.replaced,
                "replace": r.replaced, "skip": r.skipped, "delete": r.deleted, "failed": r.failed,
                "bytes": r.bytes,
            }));
        } else if !self.quiet {
            eprintln!(
                "dry run: {verb} {}  {} to copy ({}), {} to replace, {} identical, {} to delete, {} failed; nothing was changed",
                escape(name),
                r.sent - r.replaced,
                human_bytes(r.bytes as f64),
                r.replaced,
                r.skipped,
                r.deleted,
                r.failed
            );
        }
    }

    /// Prints an error: one that ends the command (from `main`), or one of
    /// several items, the rest going on.
    pub fn error(&self, e: &crate::error::Error) {
        if self.json {
            emit(json!({"type": "error", "code": e.code(), "message": e.to_string(), "exit": e.exit_code()}));
        } else {
            eprintln!("xfer: error: {e}");
        }
    }

    /// An item of a tree that failed (`rel`), and why; the tree goes on.
    pub fn item_error(&self, rel: &str, why: &str) {
        if self.json {
            emit(json!({"type": "error", "name": rel, "message": why}));
        } else {
            eprintln!("xfer: error: {}: {}", escape(rel), escape(why));
        }
    }

    /// Something left out of a tree, with why.
    pub fn warning(&self, msg: &str) {
        if self.json {
            emit(json!({"type": "warning", "message": msg}));
        } else if !self.quiet {
            eprintln!("xfer: warning: {}", escape(msg));
        }
    }

    /// One entry of `ls` at `path`: `line` as the user asked it shown.
    pub fn listed(
        &self,
        out: &mut dyn std::io::Write,
        path: &str,
        entry: &crate::protocol::Entry,
        line: &str,
    ) -> std::io::Result<()> {
        if !self.json {
            return writeln!(out, "{line}");
        }
        let object = json!({
            "type": "entry", "name": path, "kind": entry.kind, "size": entry.size,
            "mtime": entry.mtime, "mode": entry.mode, "target": entry.target,
        });
        writeln!(out, "{object}")
    }

    /// Something `xfer rm` removed (named with `-v`).
    pub fn removed(&self, path: &str) {
        if self.json {
            emit(json!({"type": "removed", "name": path}));
        } else if self.verbose && !self.quiet {
            println!("removed {}", escape(path));
        }
    }

    /// What `xfer mv` did (said with `-v`).
    pub fn moved(&self, from: &str, to: &str) {
        if self.json {
            emit(json!({"type": "moved", "from": from, "to": to}));
        } else if self.verbose && !self.quiet {
            println!("renamed {} -> {}", escape(from), escape(to));
        }
    }

    /// A directory `xfer mkdir` made (named with `-v`).
    pub fn made(&self, dir: &str) {
        if self.json {
            emit(json!({"type": "made", "name": dir}));
        } else if self.verbose && !self.quiet {
            println!("created directory {}", escape(dir));
        }
    }

    /// A file's digest, as md5sum prints it: `HASH  NAME`.
    pub fn digest(&self, path: &str, md5: &Md5Hex, size: u64) {
        if self.json {
            emit(json!({"type": "digest", "name": path, "md5": md5.as_str(), "size": size}));
        } else {
            println!("{md5}  {}", escape(path));
        }
    }

    /// The space where the server's root lives, as `df` shows it.
    pub fn space(&self, total: u64, free: u64, human: bool) {
        let used = total.saturating_sub(free);
        if self.json {
            return emit(json!({"type": "space", "total": total, "used": used, "free": free}));
        }
        let pct = if total > 0 { (used as f64 * 100.0 / total as f64).ceil() as u64 } else { 0 };
        let n = |v: u64| if human { human_bytes(v as f64) } else { v.to_string() };
        println!("{:>14}  {:>14}  {:>14}  {:>4}", "size", "used", "free", "use%");
        println!("{:>14}  {:>14}  {:>14}  {:>3}%", n(total), n(used), n(free), pct);
    }

    /// A chunk of a remote command's `stream` (stdout or stderr), for
    /// `--json`: text as `data`, anything not UTF-8 as `base64`.
    pub fn output(&self, stream: &str, chunk: &[u8]) {
        use base64::Engine;
        match std::str::from_utf8(chunk) {
            Ok(text) => emit(json!({"type": stream, "data": text})),
            Err(_) => {
                let b64 = base64::engine::general_purpose::STANDARD.encode(chunk);
                emit(json!({"type": stream, "base64": b64}))
            }
        }
    }

    /// How a remote command ended, for `--json`.
    pub fn exited(&self, exit_code: Option<i32>, signal: Option<i32>, timed_out: bool) {
        if self.json {
            emit(json!({"type": "exit", "exit_code": exit_code, "signal": signal, "timed_out": timed_out}));
        }
    }

    /// Says that a file was not sent: its destination holds the same bytes.
    pub fn identical(&self, verb: &str, name: &str) {
        if self.json {
            emit(json!({"type": "transfer", "op": verb, "name": name, "status": "skipped"}));
        } else if !self.quiet {
            eprintln!("{verb} {}  identical, skipped", escape(name));
        }
    }

    /// Says that a transfer continues from an earlier, interrupted one.
    pub fn resuming(&self, name: &str, offset: u64) {
        if self.json {
            emit(json!({"type": "resuming", "name": name, "offset": offset}));
        } else if !self.quiet {
            eprintln!("resuming {} at {}", escape(name), human_bytes(offset as f64));
        }
    }

    /// Prints the one-line summary of a finished transfer on stderr.
    pub fn summary(
        &self,
        verb: &str,
        name: &str,
        bytes: u64,
        elapsed: Duration,
        md5: &Md5Hex,
        whole: Option<&Md5Hex>,
    ) {
        if self.json {
            let mut line = json!({
                "type": "transfer", "op": verb, "name": name, "bytes": bytes,
                "seconds": elapsed.as_secs_f64(), "md5": md5.as_str(), "status": "ok",
            });
            if let Some(whole) = whole {
                line["whole_md5"] = whole.as_str().into();
            }
            emit(line);
        } else if !self.quiet {
            eprintln!("{}", summary_line(verb, name, bytes, elapsed, md5, whole));
        }
    }
}

/// Prints one JSON object as a line of stdout. A closed stdout is left for
/// the next write that checks to find.
fn emit(object: serde_json::Value) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{object}");
}

/// What a dry run says would become of one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Planned {
    /// Copied, new there: this many bytes (`None`: standard input, of a
    /// length not known before it is read).
    Copy(Option<u64>),
    /// Copied over a differing file (`--force`): this many bytes, or
    /// standard input.
    Replace(Option<u64>),
    /// Left alone: the destination holds the same bytes.
    Skip,
    /// Removed (`--delete`).
    Delete,
}

/// Bytes done and total, rate and ETA, after a message (name or files).
fn bytes_style() -> ProgressStyle {
    ProgressStyle::with_template("{msg} [{wide_bar}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}")
        .expect("the template is valid")
        .progress_chars("=> ")
}

/// `put report.pdf  12.3 MiB in 0.41 s (30.0 MiB/s)  md5 … verified`
pub fn summary_line(
    verb: &str,
    name: &str,
    bytes: u64,
    elapsed: Duration,
    md5: &Md5Hex,
    whole: Option<&Md5Hex>,
) -> String {
    let secs = elapsed.as_secs_f64();
    let rate = if secs > 0.0 { bytes as f64 / secs } else { 0.0 };
    // The sender's plain MD5 of the whole file (--md5), when it is not the
    // digest already shown (a file of one part).
    let whole = match whole.filter(|w| *w != md5) {
        Some(whole) => format!(", whole-file md5 {whole}"),
        None => String::new(),
    };
    format!(
        "{verb} {}  {} in {secs:.2} s ({}/s)  md5 {md5} verified{whole}",
        escape(name),
        human_bytes(bytes as f64),
        human_bytes(rate)
    )
}

/// `put -r src  12 files copied, 3 skipped, 0 failed, 4.0 MiB in 0.10 s (40.0 MiB/s)`
pub fn tree_summary_line(verb: &str, name: &str, r: &crate::tree::TreeReport, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    let rate = if secs > 0.0 { r.bytes as f64 / secs } else { 0.0 };
    let deleted = if r.deleted > 0 { format!(", {} deleted", r.deleted) } else { String::new() };
    format!(
        "{verb} -r {}  {} files copied, {} skipped, {} failed{deleted}, {} in {secs:.2} s ({}/s)",
        escape(name),
        r.sent,
        r.skipped,
        r.failed,
        human_bytes(r.bytes as f64),
        human_bytes(rate)
    )
}

/// Bytes with a binary unit and one decimal: `512 B`, `12.3 MiB`.
pub fn human_bytes(n: f64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024.0 {
        return format!("{n:.0} B");
    }
    let mut v = n / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// A bar shows the bytes the streaming code reports.
impl crate::transfer::Progress for ProgressBar {
    fn advance(&self, n: u64) {
        self.inc(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_bytes_picks_units() {
        assert_eq!(human_bytes(0.0), "0 B");
        assert_eq!(human_bytes(1023.0), "1023 B");
        assert_eq!(human_bytes(1024.0), "1.0 KiB");
        assert_eq!(human_bytes(12.3 * 1024.0 * 1024.0), "12.3 MiB");
        assert_eq!(human_bytes(5.0 * 1024f64.powi(4)), "5.0 TiB");
    }

    #[test]
    fn summary_has_the_documented_shape() {
        let md5 = Md5Hex::try_from("9e107d9d372bb6826bd81d3542a419d6".to_string()).unwrap();
        let line = summary_line("put", "report.pdf", 12_897_485, Duration::from_millis(410), &md5, None);
        assert_eq!(
            line,
            "put report.pdf  12.3 MiB in 0.41 s (30.0 MiB/s)  md5 9e107d9d372bb6826bd81d3542a419d6 verified"
        );
    }

    #[test]
    fn summary_escapes_hostile_names() {
        let md5 = Md5Hex::try_from("9e107d9d372bb6826bd81d3542a419d6".to_string()).unwrap();
        let line = summary_line("get", "a\x1b[2Jb", 1, Duration::from_millis(1), &md5, None);
        assert!(!line.contains('\x1b'));
    }
}
