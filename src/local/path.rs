//! Paths named by the other side, checked before anything touches the disk.

use super::TEMP_SUFFIX;
pub use crate::plain::escape;
use std::path::PathBuf;
use thiserror::Error;

/// Longest path a client may name, in bytes (Linux's PATH_MAX).
const MAX_PATH_LEN: usize = 4096;

/// Why a client-supplied path was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PathError {
    #[error("path is empty")]
    Empty,
    #[error("absolute paths are not allowed: {0}")]
    Absolute(String),
    #[error("'..' is not allowed in paths: {0}")]
    DotDot(String),
    #[error("backslashes are not allowed in paths: {0}")]
    Backslash(String),
    #[error("drive letters are not allowed in paths: {0}")]
    Drive(String),
    #[error("control characters are not allowed in paths: {0}")]
    Control(String),
    #[error("path is longer than {MAX_PATH_LEN} bytes")]
    TooLong,
    #[error("names ending in {TEMP_SUFFIX} are reserved for xfer's temporary files: {0}")]
    Reserved(String),
}

impl PathError {
    /// The rule broken, without the path: for a message that names the
    /// path already (an item of a tree).
    pub fn rule(&self) -> String {
        let text = self.to_string();
        match self {
            PathError::Absolute(p)
            | PathError::DotDot(p)
            | PathError::Backslash(p)
            | PathError::Drive(p)
            | PathError::Control(p)
            | PathError::Reserved(p) => text.strip_suffix(&format!(": {p}")).unwrap_or(&text).to_string(),
            PathError::Empty | PathError::TooLong => text,
        }
    }
}

/// A path relative to the served root, known to hold no way out of it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RemotePath {
    /// Normal components only: no `.`, `..`, empty or separator-bearing parts.
    parts: Vec<String>,
}

impl RemotePath {
    /// Checks a client-supplied path. `""`, `.` and `/`-separated `.` or empty
    /// components are allowed and dropped, so `""` is the root itself; every
    /// other sign of escape or trickery is refused with a reason.
    pub fn parse(raw: &str) -> Result<Self, PathError> {
        let shown = escape(raw);
        if raw.len() > MAX_PATH_LEN {
            return Err(PathError::TooLong);
        }
        if raw.chars().any(|c| c.is_control()) {
            return Err(PathError::Control(shown));
        }
        if raw.contains('\\') {
            return Err(PathError::Backslash(shown));
        }
        if raw.starts_with('/') {
            return Err(PathError::Absolute(shown));
        }
        let mut parts = Vec::new();
        for part in raw.split('/') {
            match part {
                "" | "." => {}
                ".." => return Err(PathError::DotDot(shown)),
                p if p.ends_with(TEMP_SUFFIX) => return Err(PathError::Reserved(shown)),
                // Where the path starts once `.` and empty parts are
                // dropped: `./C:/x` is `C:/x`, as it prints.
                p if parts.is_empty() && is_drive(p) => return Err(PathError::Drive(shown)),
                p => parts.push(p.to_string()),
            }
        }
        Ok(RemotePath { parts })
    }

    /// The root itself.
    pub fn root() -> RemotePath {
        RemotePath { parts: Vec::new() }
    }

    /// Whether this is the root itself.
    pub fn is_root(&self) -> bool {
        self.parts.is_empty()
    }

    /// The last component, `None` for the root.
    pub fn file_name(&self) -> Option<&str> {
        self.parts.last().map(String::as_str)
    }

    /// The path as a relative `Path` for `cap_std` calls ("." for the root).
    pub fn to_path(&self) -> PathBuf {
        if self.parts.is_empty() {
            PathBuf::from(".")
        } else {
            self.parts.iter().collect()
        }
    }

    /// The directory it is in (the root for a name at the top) and its
    /// last component as a path of its own; `None` for the root.
    pub fn split_last(&self) -> Option<(RemotePath, RemotePath)> {
        let (name, parent) = self.parts.split_last()?;
        Some((RemotePath { parts: parent.to_vec() }, RemotePath { parts: vec![name.clone()] }))
    }

    /// The parent directory as a relative `Path` ("." at the top).
    pub fn parent_path(&self) -> PathBuf {
        match self.parts.split_last() {
            Some((_, parent)) if !parent.is_empty() => parent.iter().collect(),
            _ => PathBuf::from("."),
        }
    }
}

impl RemotePath {
    /// `self/rel`, checked like any client-supplied path.
    pub fn join(&self, rel: &str) -> Result<RemotePath, PathError> {
        let joined = RemotePath::parse(rel)?;
        if joined.is_root() {
            return Err(PathError::Empty);
        }
        let mut parts = self.parts.clone();
        parts.extend(joined.parts);
        Ok(RemotePath { parts })
    }
}

/// Whether a path's first part starts with a drive letter (`C:`).
fn is_drive(part: &str) -> bool {
    matches!(part.as_bytes(), [letter, b':', ..] if letter.is_ascii_alphabetic())
}

impl std::fmt::Display for RemotePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.parts.join("/"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Case = (&'static str, fn(&PathError) -> bool);

    #[test]
    fn plain_relative_paths_parse() {
        let p = RemotePath::parse("docs/./a b/ünï.txt/").unwrap();
        assert_eq!(p.to_string(), "docs/a b/ünï.txt");
        assert_eq!(p.file_name(), Some("ünï.txt"));
        assert!(RemotePath::parse("").unwrap().is_root());
        assert!(RemotePath::parse(".").unwrap().is_root());
        assert!(RemotePath::parse("..a/b..").is_ok(), "dots inside names are fine");
        assert_eq!(RemotePath::parse("a/c:x").unwrap().to_string(), "a/c:x", "a colon further in is a name");
    }

    proptest::proptest! {
        /// What a path prints as (in logs, listings, replies) names that
        /// same path again. Found by fuzzing (fuzz/, target `path`): `./t:`
        /// parsed, but printed as `t:`, which did not.
        #[test]
        fn a_parsed_path_prints_as_itself(
            parts in proptest::collection::vec(
                proptest::sample::select(vec!["", ".", "..", "a", "c:", "c:x", "é", "b\\c", "d.xfer-part"]),
                0..6,
            )
        ) {
            if let Ok(path) = RemotePath::parse(&parts.join("/")) {
                proptest::prop_assert_eq!(RemotePath::parse(&path.to_string()), Ok(path));
            }
        }
    }

    #[test]
    fn escapes_are_refused_with_a_reason() {
        let cases: &[Case] = &[
            ("/etc/passwd", |e| matches!(e, PathError::Absolute(_))),
            ("../x", |e| matches!(e, PathError::DotDot(_))),
            ("a/../../x", |e| matches!(e, PathError::DotDot(_))),
            ("a/..", |e| matches!(e, PathError::DotDot(_))),
            ("a\\..\\x", |e| matches!(e, PathError::Backslash(_))),
            ("C:/Windows", |e| matches!(e, PathError::Drive(_))),
            ("c:x", |e| matches!(e, PathError::Drive(_))),
            // Where the path starts once `.` and empty parts are dropped.
            ("./C:/x", |e| matches!(e, PathError::Drive(_))),
            (".//c:x", |e| matches!(e, PathError::Drive(_))),
            ("a\0b", |e| matches!(e, PathError::Control(_))),
            ("a\nb", |e| matches!(e, PathError::Control(_))),
            ("\x1b[31mred", |e| matches!(e, PathError::Control(_))),
            ("a\u{9b}b", |e| matches!(e, PathError::Control(_))),
            ("x.xfer-part", |e| matches!(e, PathError::Reserved(_))),
        ];
        for (raw, expected) in cases {
            let err = RemotePath::parse(raw).expect_err(raw);
            assert!(expected(&err), "{raw:?} gave {err:?}");
        }
        assert_eq!(RemotePath::parse(&"a".repeat(5000)), Err(PathError::TooLong));
    }

    #[test]
    fn error_messages_never_carry_raw_control_characters() {
        let err = RemotePath::parse("\x1b]0;pwned\x07").unwrap_err().to_string();
        assert!(!err.chars().any(char::is_control), "{err:?}");
    }

    #[test]
    fn escape_shows_control_characters() {
        assert_eq!(escape("a\nb\x1b"), "a\\nb\\u{1b}");
        assert_eq!(escape("plain"), "plain");
    }
}
