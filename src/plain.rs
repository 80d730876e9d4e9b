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
/// become visible escapes, so a hostile name cannot rewrite the terminal.
pub fn escape(name: &str) -> String {
    if !name.chars().any(char::is_control) {
        return name.to_string();
    }
    name.chars()
        .map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() })
        .collect()
}
