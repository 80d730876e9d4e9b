//! Shared-token authentication: where the token comes from, and the
//! challenge-response that proves both sides hold it without sending it.
//!
//! The server greets with a random nonce; the client answers with its own
//! nonce and an HMAC-SHA256, keyed by the token, over both nonces and the
//! protocol version; the server answers with its own HMAC over the same, so
//! the client knows it reached a server that holds the token too. Digests
//! are compared in constant time.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::HashMap;
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use thiserror::Error;

/// Random bytes in a nonce: 256 bits, so a nonce never repeats.
pub const NONCE_LEN: usize = 32;

/// Environment variable holding the token.
pub const TOKEN_ENV: &str = "XFER_TOKEN";

/// The shared secret.
#[derive(Clone)]
pub struct Token(Vec<u8>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(…)")
    }
}

impl Token {
    /// A token from its text (surrounding whitespace is not part of it).
    pub fn new(text: &str) -> Option<Token> {
        let t = text.trim();
        (!t.is_empty()).then(|| Token(t.as_bytes().to_vec()))
    }
}

/// Why no token could be had.
#[derive(Debug, Error)]
pub enum TokenError {
    #[error("cannot read token file {}: {}", .0.display(), crate::error::plain_io(.1))]
    Read(PathBuf, io::Error),
    #[error("token file {} is empty", .0.display())]
    Empty(PathBuf),
    #[error(
        "no token: set {TOKEN_ENV}, pass --token-file, or copy the server's token to {}",
        .0.display()
    )]
    Missing(PathBuf),
    #[error("cannot create token file {}: {}", .0.display(), crate::error::plain_io(.1))]
    Create(PathBuf, io::Error),
    #[error("no home directory to keep the token in: set {TOKEN_ENV} or pass --token-file")]
    NoHome,
}

/// Where a token was found, for the server's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `--token-file`.
    File(PathBuf),
    /// The environment variable.
    Env,
    /// The default file, which existed.
    Default(PathBuf),
    /// The default file, created just now.
    Created(PathBuf),
}

/// `$XDG_CONFIG_HOME/xfer/token`, or `~/.config/xfer/token`.
pub fn default_token_path() -> Option<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME") {
        Some(x) if !x.is_empty() => PathBuf::from(x),
        _ => PathBuf::from(std::env::var_os("HOME").filter(|h| !h.is_empty())?).join(".config"),
    };
    Some(base.join("xfer").join("token"))
}

/// Finds the token: `--token-file`, then the environment, then the default
/// file. With `create` (the server), a missing default file is created with
/// a random 256-bit token, readable by its owner only.
pub fn load_token(token_file: Option<&Path>, create: bool) -> Result<(Token, TokenSource), TokenError> {
    if let Some(path) = token_file {
        return Ok((read_token(path)?, TokenSource::File(path.to_path_buf())));
    }
    if let Some(token) = std::env::var(TOKEN_ENV).ok().and_then(|t| Token::new(&t)) {
        return Ok((token, TokenSource::Env));
    }
    let path = default_token_path().ok_or(TokenError::NoHome)?;
    match read_token(&path) {
        Ok(t) => Ok((t, TokenSource::Default(path))),
        Err(TokenError::Read(_, e)) if e.kind() == io::ErrorKind::NotFound => {
            if !create {
                return Err(TokenError::Missing(path));
            }
            let token = create_token_file(&path).map_err(|e| TokenError::Create(path.clone(), e))?;
            Ok((token, TokenSource::Created(path)))
        }
        Err(e) => Err(e),
    }
}

fn read_token(path: &Path) -> Result<Token, TokenError> {
    let text = std::fs::read_to_string(path).map_err(|e| TokenError::Read(path.to_path_buf(), e))?;
    Token::new(&text).ok_or_else(|| TokenError::Empty(path.to_path_buf()))
}

fn create_token_file(path: &Path) -> io::Result<Token> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    let text = hex(&rand::random::<[u8; 32]>());
    // create_new: if another process made it first, theirs wins.
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(mut f) => {
            f.write_all(format!("{text}\n").as_bytes())?;
            Ok(Token(text.into_bytes()))
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => read_token(path).map_err(|_| e),
        Err(e) => Err(e),
    }
}

/// A fresh random nonce, hex-encoded for the header.
pub fn new_nonce() -> String {
    hex(&rand::random::<[u8; NONCE_LEN]>())
}

/// Which side a MAC speaks for; each side's proof differs, so one cannot be
/// replayed as the other.
#[derive(Debug, Clone, Copy)]
pub enum Role {
    Client,
    Server,
}

/// The hex HMAC-SHA256 a `role` sends for this pair of nonces.
pub fn mac(token: &Token, role: Role, server_nonce: &str, client_nonce: &str) -> String {
    hex(&keyed(token, role, server_nonce, client_nonce).finalize().into_bytes())
}

/// Checks a received hex MAC in constant time.
pub fn verify(token: &Token, role: Role, server_nonce: &str, client_nonce: &str, received: &str) -> bool {
    let Some(bytes) = unhex(received) else { return false };
    keyed(token, role, server_nonce, client_nonce).verify_slice(&bytes).is_ok()
}

fn keyed(token: &Token, role: Role, server_nonce: &str, client_nonce: &str) -> Hmac<Sha256> {
    let mut m = Hmac::<Sha256>::new_from_slice(&token.0).expect("HMAC takes keys of any length");
    let label: &[u8] = match role {
        Role::Client => b"xfer/1 client",
        Role::Server => b"xfer/1 server",
    };
    for part in [label, server_nonce.as_bytes(), client_nonce.as_bytes()] {
        // Length-prefixed, so no two different inputs give the same bytes.
        m.update(&(part.len() as u32).to_be_bytes());
        m.update(part);
    }
    m
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() > 128 {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// Slows down repeated authentication failures from one address: each
/// failure doubles the wait before the next refusal, from 100 ms up to 5 s.
/// A success, or 10 quiet minutes, forgets the address.
#[derive(Default)]
pub struct FailureLimiter {
    /// Failures so far and when the last one happened, per address.
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

/// First delay; doubled per failure.
const BASE_DELAY: Duration = Duration::from_millis(100);
/// Longest delay: long enough to make guessing hopeless, short enough that
/// a user who mistyped is not locked out.
const MAX_DELAY: Duration = Duration::from_secs(5);
/// Quiet time after which an address's failures are forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(600);
/// Addresses remembered at most; past that the oldest are dropped, so a
/// flood from many addresses cannot grow memory without bound.
const MAX_TRACKED: usize = 10_000;

impl FailureLimiter {
    /// Records a failure from `ip` and returns how long to wait before
    /// answering it.
    pub fn failed(&self, ip: IpAddr) -> Duration {
        let mut map = self.failures.lock().expect("no panics while holding the lock");
        let now = Instant::now();
        map.retain(|_, (_, last)| now.duration_since(*last) < FORGET_AFTER);
        if map.len() >= MAX_TRACKED {
            if let Some(oldest) = map.iter().min_by_key(|(_, (_, last))| *last).map(|(ip, _)| *ip) {
                map.remove(&oldest);
            }
        }
        let entry = map.entry(ip).or_insert((0, now));
        entry.0 = entry.0.saturating_add(1);
        entry.1 = now;
        BASE_DELAY.saturating_mul(1 << (entry.0 - 1).min(16)).min(MAX_DELAY)
    }

    /// Forgets `ip` after it authenticated.
    pub fn succeeded(&self, ip: IpAddr) {
        self.failures.lock().expect("no panics while holding the lock").remove(&ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_verify_only_with_the_same_token_role_and_nonces() {
        let t = Token::new("secret").unwrap();
        let m = mac(&t, Role::Client, "aa", "bb");
        assert!(verify(&t, Role::Client, "aa", "bb", &m));
        assert!(!verify(&Token::new("other").unwrap(), Role::Client, "aa", "bb", &m));
        assert!(!verify(&t, Role::Server, "aa", "bb", &m), "a client proof is no server proof");
        assert!(!verify(&t, Role::Client, "ab", "bb", &m));
        assert!(!verify(&t, Role::Client, "aa", "bc", &m));
        assert!(!verify(&t, Role::Client, "aa", "bb", "zz"));
        assert!(!verify(&t, Role::Client, "aa", "bb", ""));
    }

    /// The exchange captured in PROTOCOL.md, so the document and the code
    /// cannot drift apart.
    #[test]
    fn protocol_md_example_verifies() {
        let t = Token::new("example-token").unwrap();
        let ns = "38bfed7e1cbdd68c5a61d360ba91007aec77b27a3f4452e08aa832c2bb983b80";
        let nc = "23f691d483d0852890af726a9a740f07333f17f7d9b3bea00da2dabd0fe7863c";
        assert_eq!(
            mac(&t, Role::Client, ns, nc),
            "6521414bd4cd2f27d9d68d2063be082f3f20b2b2bdc6f506389352a1932b8d6c"
        );
        assert_eq!(
            mac(&t, Role::Server, ns, nc),
            "12231cd676f5fe0eb757fe949eca07a271a8eb9f53713e6702626adfdd6dd24d"
        );
        let doc = include_str!("../PROTOCOL.md");
        for line in [format!("Ns         {ns}"), format!("client mac {}", mac(&t, Role::Client, ns, nc))] {
            assert!(doc.contains(&line), "PROTOCOL.md lacks {line}");
        }
    }

    #[test]
    fn nonce_fields_cannot_be_shifted_into_each_other() {
        let t = Token::new("secret").unwrap();
        assert_ne!(mac(&t, Role::Client, "aab", "b"), mac(&t, Role::Client, "aa", "bb"));
    }

    #[test]
    fn tokens_are_trimmed_and_never_empty() {
        assert!(Token::new("  \n").is_none());
        assert_eq!(Token::new(" abc\n").unwrap().0, b"abc");
    }

    #[test]
    fn created_token_file_is_private_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cfg/xfer/token");
        let first = create_token_file(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(first.0.len(), 64);
        assert_eq!(read_token(&path).unwrap().0, first.0);
        let second = create_token_file(&path).unwrap();
        assert_eq!(second.0, first.0, "an existing token is never replaced");
    }

    #[test]
    fn failure_delays_double_and_reset() {
        let l = FailureLimiter::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(l.failed(ip), Duration::from_millis(100));
        assert_eq!(l.failed(ip), Duration::from_millis(200));
        assert_eq!(l.failed(ip), Duration::from_millis(400));
        for _ in 0..40 {
            l.failed(ip);
        }
        assert_eq!(l.failed(ip), MAX_DELAY);
        l.succeeded(ip);
        assert_eq!(l.failed(ip), Duration::from_millis(100));
    }
}
