//! Who may do what on a server: named tokens, each with its rights (read,
//! write, exec) and, if given, the directory of the root it is confined
//! to, as rsync daemon modules and sftp chroots give. They live in a
//! tokens file beside the token file, one line each:
//!
//! ```text
//! # NAME  RIGHTS           DIR       TOKEN
//! backup  read,write       backups   3f2a…(64 hex digits)
//! viewer  read             .         9c01…
//! ```
//!
//! `DIR` is `.` for the whole root. The file is private (mode 0600), as
//! the token file is; a token's value never appears in a log or listing,
//! only its name. The server's own token stays the simple default: every
//! right (exec still needs `--allow-exec`), the whole root.

use crate::auth::{Token, MIN_TOKEN_LEN};
use crate::local::RemotePath;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// The file name of the tokens file, beside the token file.
pub const TOKENS_FILE: &str = "tokens";

/// Named tokens a file may hold: far more than any deployment needs; each
/// costs one HMAC per connection's proof.
const MAX_GRANTS: usize = 1000;

/// What one request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Right {
    /// get, get_tree, ls, md5sum, df.
    Read,
    /// put, put_tree, rm, mv, mkdir.
    Write,
    /// exec.
    Exec,
}

impl fmt::Display for Right {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Right::Read => "read",
            Right::Write => "write",
            Right::Exec => "exec",
        })
    }
}

/// The rights a token carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rights {
    /// May read: get, ls, cat, md5sum, df.
    pub read: bool,
    /// May change: put, rm, mv, mkdir.
    pub write: bool,
    /// May run commands (where the server allows exec at all).
    pub exec: bool,
}

impl Rights {
    /// Every right: the server's own token.
    pub const ALL: Rights = Rights { read: true, write: true, exec: true };

    /// Whether these rights include `right`.
    pub fn allow(&self, right: Right) -> bool {
        match right {
            Right::Read => self.read,
            Right::Write => self.write,
            Right::Exec => self.exec,
        }
    }

    /// `read,write,exec` (any of them, any order, comma-separated).
    pub fn parse(text: &str) -> Option<Rights> {
        let mut r = Rights::default();
        for part in text.split(',') {
            match part.trim() {
                "read" => r.read = true,
                "write" => r.write = true,
                "exec" => r.exec = true,
                _ => return None,
            }
        }
        Some(r)
    }
}

impl fmt::Display for Rights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<_> = [(self.read, "read"), (self.write, "write"), (self.exec, "exec")]
            .into_iter()
            .filter_map(|(on, name)| on.then_some(name))
            .collect();
        f.write_str(&names.join(","))
    }
}

/// One token and what it may do.
#[derive(Debug, Clone)]
pub struct Grant {
    /// Its name, for logs and listings (never its value).
    pub name: String,
    /// The secret.
    pub token: Token,
    /// What it may do.
    pub rights: Rights,
    /// The directory of the root it is confined to (`None`: all of it).
    pub dir: Option<RemotePath>,
}

impl Grant {
    /// The server's own token: every right, the whole root.
    pub fn default_for(token: Token) -> Grant {
        Grant { name: "default".into(), token, rights: Rights::ALL, dir: None }
    }

    fn line(&self) -> String {
        let dir = self.dir.as_ref().map_or(".".to_string(), |d| d.to_string());
        format!("{}\t{}\t{}\t{}\n", self.name, self.rights, dir, self.token.reveal())
    }
}

/// Why a tokens file cannot be used.
#[derive(Debug, Error)]
pub enum GrantError {
    #[error("cannot read tokens file {}: {}", .0.display(), crate::plain::plain_io(.1))]
    Read(PathBuf, io::Error),
    #[error("tokens file {} is readable by others (mode {:04o}): run chmod 600 {}", .0.display(), .1, .0.display())]
    Loose(PathBuf, u32),
    #[error("tokens file {}, line {}: {}", .0.display(), .1, .2)]
    Line(PathBuf, usize, String),
    #[error("cannot write tokens file {}: {}", .0.display(), crate::plain::plain_io(.1))]
    Write(PathBuf, io::Error),
    #[error("{0}")]
    Usage(String),
}

/// Whether `name` can name a token: letters, digits, `.`, `_`, `-`, as
/// log fields and command lines take them without quoting; and not
/// `default`, the server's own token's name.
fn good_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name != "default"
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Reads the tokens file at `path`; a missing file holds none.
pub fn load(path: &Path) -> Result<Vec<Grant>, GrantError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(GrantError::Read(path.to_path_buf(), e)),
    };
    let mode = crate::private_file::mode(path).map_err(|e| GrantError::Read(path.to_path_buf(), e))?;
    if crate::private_file::is_loose(mode) {
        return Err(GrantError::Loose(path.to_path_buf(), mode));
    }
    parse(&text).map_err(|(n, why)| GrantError::Line(path.to_path_buf(), n, why))
}

/// The grants of a tokens file's text, or the first bad line (1-based)
/// and what is wrong with it.
pub fn parse(text: &str) -> Result<Vec<Grant>, (usize, String)> {
    let mut grants: Vec<Grant> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [name, rights, dir, token] = fields[..] else {
            return Err((n, "expected NAME RIGHTS DIR TOKEN".into()));
        };
        if !good_name(name) {
            return Err((
                n,
                format!("{name:?} cannot name a token (letters, digits, . _ -; not \"default\")"),
            ));
        }
        if grants.iter().any(|g| g.name == name) {
            return Err((n, format!("a second token named {name}")));
        }
        let rights = Rights::parse(rights)
            .ok_or_else(|| (n, format!("rights are read, write, exec: not {rights:?}")))?;
        let dir = match RemotePath::parse(dir) {
            Ok(d) if d.is_root() => None,
            Ok(d) => Some(d),
            Err(e) => return Err((n, format!("directory {dir:?}: {e}"))),
        };
        let token = Token::new(token)
            .ok_or_else(|| (n, format!("the token of {name} is shorter than {MIN_TOKEN_LEN} characters")))?;
        if grants.len() >= MAX_GRANTS {
            return Err((n, format!("more than {MAX_GRANTS} tokens")));
        }
        grants.push(Grant { name: name.to_string(), token, rights, dir });
    }
    Ok(grants)
}

/// Adds a token named `name` with `rights`, confined to `dir` (`None`: the
/// whole root), to the tokens file at `path` (made, private, if missing);
/// returns it. The file is replaced atomically.
pub fn add(path: &Path, name: &str, rights: Rights, dir: Option<&str>) -> Result<Grant, GrantError> {
    let mut grants = load(path)?;
    if !good_name(name) {
        return Err(GrantError::Usage(format!(
            "{name:?} cannot name a token: use letters, digits, . _ - (and not \"default\")"
        )));
    }
    if grants.iter().any(|g| g.name == name) {
        return Err(GrantError::Usage(format!(
            "there is a token named {name} already (xfer token --revoke {name})"
        )));
    }
    let dir = match dir.map(RemotePath::parse) {
        None => None,
        Some(Ok(d)) if d.is_root() => None,
        Some(Ok(d)) => Some(d),
        Some(Err(e)) => return Err(GrantError::Usage(format!("--dir: {e}"))),
    };
    let grant = Grant { name: name.to_string(), token: Token::generate(), rights, dir };
    grants.push(grant.clone());
    save(path, &grants)?;
    Ok(grant)
}

/// Removes the token named `name` from the tokens file; false if there was none.
pub fn revoke(path: &Path, name: &str) -> Result<bool, GrantError> {
    let mut grants = load(path)?;
    let before = grants.len();
    grants.retain(|g| g.name != name);
    if grants.len() == before {
        return Ok(false);
    }
    save(path, &grants)?;
    Ok(true)
}

fn save(path: &Path, grants: &[Grant]) -> Result<(), GrantError> {
    let mut text =
        String::from("# NAME\tRIGHTS\tDIR\tTOKEN (made by xfer token --new NAME; private: mode 0600)\n");
    for g in grants {
        text.push_str(&g.line());
    }
    crate::private_file::replace(path, text.as_bytes()).map_err(|e| GrantError::Write(path.to_path_buf(), e))
}

/// The tokens file beside the token file at `token_path`.
pub fn tokens_path(token_path: &Path) -> PathBuf {
    token_path.with_file_name(TOKENS_FILE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tokens_file_is_read_with_its_rights_and_bad_lines_named() {
        let t = "a".repeat(64);
        let text = format!("# comment\n\nbackup read,write backups {t}\nviewer read . {t}\n");
        let grants = parse(&text).unwrap();
        assert_eq!(grants.len(), 2);
        assert_eq!(grants[0].rights, Rights { read: true, write: true, exec: false });
        assert_eq!(grants[0].dir.as_ref().map(|d| d.to_string()).as_deref(), Some("backups"));
        assert!(grants[1].dir.is_none());
        assert_eq!(grants[1].rights.to_string(), "read");
        for (bad, why) in [
            ("x read . short".to_string(), "shorter than"),
            (format!("x read,fly . {t}"), "rights are"),
            (format!("x read ../up {t}"), "directory"),
            (format!("default read . {t}"), "cannot name"),
            (format!("x read . {t}\nx read . {t}"), "a second token"),
            ("x read .".to_string(), "expected NAME"),
        ] {
            let (_, msg) = parse(&bad).unwrap_err();
            assert!(msg.contains(why), "{bad}: {msg}");
        }
    }

    #[test]
    fn tokens_are_added_and_revoked_in_a_private_file() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("tokens");
        let g = add(&path, "up", Rights { write: true, ..Rights::default() }, Some("uploads")).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let back = load(&path).unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].token.reveal(), g.token.reveal());
        assert!(add(&path, "up", Rights::ALL, None).is_err(), "names are unique");
        assert!(revoke(&path, "up").unwrap());
        assert!(!revoke(&path, "up").unwrap());
        assert!(load(&path).unwrap().is_empty());
    }
}
