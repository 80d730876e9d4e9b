//! Words for people, in one place below everything else: an OS error in
//! plain words, and names escaped before they reach a terminal.

use std::io;

/// An OS error in plain lowercase words, without the "(os error N)" tail.
pub fn plain_io(err: &io::Error) -> String {
    let text = match err.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
        io::ErrorKind::ConnectionReset => "connection reset by peer".to_string(),
        io::ErrorKind::BrokenPipe => "connection closed by peer".to_string(),
        io::ErrorKind::NotFound => "no such file or directory".to_string(),
        io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        io::ErrorKind::StorageFull => "no space left on device".to_string(),
        io::ErrorKind::UnexpectedEof => "unexpected end of data".to_string(),
        _ => {
            let s = err.to_string();
            let s = match s.find(" (os error") {
                Some(i) => s[..i].to_string(),
                None => s,
            };
            let mut chars = s.chars();
            match chars.next() {
                Some(c) => c.to_lowercase().chain(chars).collect(),
                None => s,
            }
        }
    };
    text
}

/// Makes a name safe to print: control characters (ANSI escapes, newlines)
/// and bidirectional controls become visible escapes, so a hostile name
/// cannot rewrite the terminal or disguise itself.
pub fn escape(name: &str) -> String {
    if !name.chars().any(hidden) {
        return name.to_string();
    }
    name.chars().map(|c| if hidden(c) { c.escape_default().to_string() } else { c.to_string() }).collect()
}

/// Whether `c` would not show as itself on a terminal: a control
/// character, or one that reorders the text around it (bidirectional
/// controls: `invoice\u{202e}fdp.exe` would show as `invoiceexe.pdf`).
fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{061c}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_would_not_show_as_themselves_are_escaped() {
        assert_eq!(escape("plain name.txt"), "plain name.txt");
        assert_eq!(escape("a\x1b[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(escape("invoice\u{202e}fdp.exe"), "invoice\\u{202e}fdp.exe");
        assert_eq!(escape("x\u{2066}y\u{200f}"), "x\\u{2066}y\\u{200f}");
        assert_eq!(escape("ünï"), "ünï", "letters are letters");
    }
}
