//! Shared-token authentication: where the token comes from, and the
//! challenge-response that proves both sides hold it without sending it.
//!
//! It runs inside TLS. The server greets with a random nonce; the client
//! answers with its own nonce and an HMAC-SHA256, keyed by the token, over
//! the protocol's label, the TLS channel binding (see the `tls` module) and
//! both nonces; the server answers with its own HMAC over the same, so the
//! client knows it reached a server that holds the token too, on this very
//! TLS connection. Digests are compared in constant time.

use crate::protocol::hex;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use thiserror::Error;

/// Random bytes in a nonce: 256 bits, so a nonce never repeats.
pub const NONCE_LEN: usize = 32;

/// Environment variable holding the token itself (not a path).
pub const TOKEN_ENV: &str = "XFER_TOKEN";

/// Shortest token accepted, in characters: 32 random hex digits are 128
/// bits, beyond any guessing. A generated token has 64.
pub const MIN_TOKEN_LEN: usize = 32;

/// The name of the server's key file, kept beside the token file.
pub const KEY_FILE: &str = "server-key.pem";

/// The shared secret.
#[derive(Clone)]
pub struct Token(Vec<u8>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(…)")
    }
}

impl Token {
    /// A token from its text. Surrounding whitespace (a token file's final
    /// newline, say) is not part of it; `None` when what is left is shorter
    /// than [`MIN_TOKEN_LEN`] characters.
    pub fn new(text: &str) -> Option<Token> {
        let t = text.trim();
        (t.chars().count() >= MIN_TOKEN_LEN).then(|| Token(t.as_bytes().to_vec()))
    }

    /// A new random token: 64 hex digits (256 bits).
    pub fn generate() -> Token {
        Token(hex(&rand::random::<[u8; 32]>()).into_bytes())
    }

    /// The token's text, to print for copying to a client host.
    pub fn reveal(&self) -> &str {
        std::str::from_utf8(&self.0).expect("tokens are made from text")
    }
}

/// Why no token could be had.
#[derive(Debug, Error)]
pub enum TokenError {
    #[error("cannot read token file {}: {}", .0.display(), crate::plain::plain_io(.1))]
    Read(PathBuf, io::Error),
    #[error(
        "the token in {0} is {1} characters long; xfer needs at least {MIN_TOKEN_LEN} \
         (use the 64 hex digits `xfer token` prints on the server, or make new ones with `xfer token --new`)"
    )]
    TooShort(String, usize),
    #[error(
        "token file {} is readable by others (mode {:04o}): run chmod 600 {}",
        .0.display(), .1, .0.display()
    )]
    Loose(PathBuf, u32),
    #[error("the token comes from {TOKEN_ENV}; set a new one there, or pass --token-file to replace a file")]
    EnvNotReplaced,
    #[error(
        "no token: set {TOKEN_ENV}, pass --token-file, or copy the server's token to {}",
        .0.display()
    )]
    Missing(PathBuf),
    #[error("cannot write token file {}: {}", .0.display(), crate::plain::plain_io(.1))]
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

impl TokenSource {
    /// Where the server keeps its key: beside the token file, or in the
    /// default directory for a token from the environment.
    pub fn key_path(&self) -> Option<PathBuf> {
        self.beside(KEY_FILE)
    }

    /// The file `name` beside the token file (beside the default one for
    /// a token from the environment): the key, the tokens file.
    pub fn beside(&self, name: &str) -> Option<PathBuf> {
        match self {
            TokenSource::File(p) | TokenSource::Default(p) | TokenSource::Created(p) => {
                Some(p.with_file_name(name))
            }
            TokenSource::Env => Some(default_token_path()?.with_file_name(name)),
        }
    }
}

/// Finds the token: `--token-file`, then the environment, then the default
/// file. With `create` (the server), a missing file (the one named, or the
/// default) is created with a random 256-bit token, readable by its owner
/// only.
pub fn load_token(token_file: Option<&Path>, create: bool) -> Result<(Token, TokenSource), TokenError> {
    if let Some(path) = token_file {
        return match read_token(path) {
            // The server (or `xfer token`) makes a missing one, as it makes
            // the default file: a unit file can name where it goes.
            Err(TokenError::Read(_, e)) if create && e.kind() == io::ErrorKind::NotFound => {
                Ok((create_token_file(path)?, TokenSource::Created(path.to_path_buf())))
            }
            read => Ok((read?, TokenSource::File(path.to_path_buf()))),
        };
    }
    if let Some(text) = std::env::var_os(TOKEN_ENV).filter(|t| !t.is_empty()) {
        let text = text.to_string_lossy();
        let token = Token::new(&text)
            .ok_or_else(|| TokenError::TooShort(TOKEN_ENV.to_string(), text.trim().chars().count()))?;
        return Ok((token, TokenSource::Env));
    }
    let path = default_token_path().ok_or(TokenError::NoHome)?;
    match read_token(&path) {
        Ok(t) => Ok((t, TokenSource::Default(path))),
        Err(TokenError::Read(_, e)) if e.kind() == io::ErrorKind::NotFound => {
            if !create {
                return Err(TokenError::Missing(path));
            }
            let token = create_token_file(&path)?;
            Ok((token, TokenSource::Created(path)))
        }
        Err(e) => Err(e),
    }
}

/// Writes a new random token where [`load_token`] finds it (not the
/// environment), replacing the old one atomically. A running server keeps
/// the token it started with until it is restarted.
pub fn replace_token(token_file: Option<&Path>) -> Result<(Token, PathBuf), TokenError> {
    let path = match token_file {
        Some(p) => p.to_path_buf(),
        None if std::env::var_os(TOKEN_ENV).is_some_and(|t| !t.is_empty()) => {
            return Err(TokenError::EnvNotReplaced)
        }
        None => default_token_path().ok_or(TokenError::NoHome)?,
    };
    let token = Token::generate();
    crate::private_file::replace(&path, format!("{}\n", token.reveal()).as_bytes())
        .map_err(|e| TokenError::Create(path.clone(), e))?;
    Ok((token, path))
}

fn read_token(path: &Path) -> Result<Token, TokenError> {
    let read_err = |e| TokenError::Read(path.to_path_buf(), e);
    let mode = crate::private_file::mode(path).map_err(read_err)?;
    if crate::private_file::is_loose(mode) {
        return Err(TokenError::Loose(path.to_path_buf(), mode));
    }
    let text = std::fs::read_to_string(path).map_err(read_err)?;
    Token::new(&text)
        .ok_or_else(|| TokenError::TooShort(path.display().to_string(), text.trim().chars().count()))
}

fn create_token_file(path: &Path) -> Result<Token, TokenError> {
    let token = Token::generate();
    match crate::private_file::write_new(path, format!("{}\n", token.reveal()).as_bytes()) {
        Ok(()) => Ok(token),
        // Another process made it first: theirs wins.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => read_token(path),
        Err(e) => Err(TokenError::Create(path.to_path_buf(), e)),
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

/// What both proofs of one connection cover besides the token.
#[derive(Debug, Clone, Copy)]
pub struct Challenge<'a> {
    /// The TLS channel binding: SHA-256 of the server's certificate.
    pub binding: &'a [u8; 32],
    /// The server's nonce, as the hex text sent.
    pub server_nonce: &'a str,
    /// The client's nonce, as the hex text sent.
    pub client_nonce: &'a str,
}

/// The hex HMAC-SHA256 a `role` sends for this challenge.
pub fn mac(token: &Token, role: Role, challenge: Challenge<'_>) -> String {
    hex(&keyed(token, role, challenge).finalize().into_bytes())
}

/// Checks a received hex MAC in constant time.
pub fn verify(token: &Token, role: Role, challenge: Challenge<'_>, received: &str) -> bool {
    let Some(bytes) = unhex(received) else { return false };
    keyed(token, role, challenge).verify_slice(&bytes).is_ok()
}

fn keyed(token: &Token, role: Role, c: Challenge<'_>) -> Hmac<Sha256> {
    let mut m = Hmac::<Sha256>::new_from_slice(&token.0).expect("HMAC takes keys of any length");
    let label: &[u8] = match role {
        Role::Client => b"xfer/2 client",
        Role::Server => b"xfer/2 server",
    };
    for part in [label, c.binding.as_slice(), c.server_nonce.as_bytes(), c.client_nonce.as_bytes()] {
        // Length-prefixed, so no two different inputs give the same bytes.
        m.update(&(part.len() as u32).to_be_bytes());
        m.update(part);
    }
    m
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() > 128 {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// The part of an address that counts as one source: an IPv4 address, or
/// an IPv6 /64 (one host is usually given a whole /64).
pub fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(v6.to_bits() & !((1u128 << 64) - 1))),
        },
    }
}

/// Slows down authentication failures. From one source, each failure
/// doubles the wait before the next refusal, from 100 ms up to 5 s (a
/// success, or 10 quiet minutes, forgets the source). Across all sources,
/// failures are answered at most [`GLOBAL_RATE`] a second, so spreading
/// guesses over many addresses gains nothing: a failing connection holds
/// its place among the unauthenticated ones until its turn, so no more
/// new guesses get in either.
pub struct FailureLimiter {
    /// Failures so far and when the last one happened, per source.
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
    /// The global pace and the log's rate limit.
    global: Mutex<Global>,
}

/// State shared by all sources.
struct Global {
    /// Where the pace of failures has got to: each failure moves it one
    /// interval on from itself or from now, whichever is later.
    next: Instant,
    /// When a failure was last logged.
    logged: Option<Instant>,
    /// Failures not logged since then.
    unlogged: u64,
}

/// What to do about one failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// How long to wait before answering it.
    pub delay: Duration,
    /// Whether to log it, and how many failures went unlogged before it.
    pub log: Option<u64>,
}

/// First delay; doubled per failure.
const BASE_DELAY: Duration = Duration::from_millis(100);
/// Longest delay: long enough to make guessing hopeless, short enough that
/// a user who mistyped is not locked out.
const MAX_DELAY: Duration = Duration::from_secs(5);
/// Quiet time after which a source's failures are forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(600);
/// Sources remembered at most; past that the oldest are dropped, so a
/// flood from many addresses cannot grow memory without bound.
const MAX_TRACKED: usize = 10_000;
/// Failures answered per second across all sources.
pub const GLOBAL_RATE: u32 = 20;
/// Failures answered at once before the global pace applies, so a few
/// users mistyping at the same moment are not slowed by each other.
const GLOBAL_BURST: u32 = 20;
/// At most one failure logged per this interval; the next line says how
/// many were left out (a spread-out guesser made 26,000 lines in 30 s).
const LOG_EVERY: Duration = Duration::from_secs(1);

impl Default for FailureLimiter {
    fn default() -> Self {
        FailureLimiter {
            failures: Mutex::default(),
            global: Mutex::new(Global { next: Instant::now(), logged: None, unlogged: 0 }),
        }
    }
}

impl FailureLimiter {
    /// Records a failure from `ip`: how long to wait before answering it,
    /// and whether to log it.
    pub fn failed(&self, ip: IpAddr) -> Failure {
        let now = Instant::now();
        let local = self.failed_locally(source_of(ip), now);
        let mut g = self.global.lock().expect("no panics while holding the lock");
        // A leaky bucket: `next` runs ahead by one interval per failure and
        // falls back with time; up to a burst's worth ahead costs no wait.
        let interval = Duration::from_secs(1) / GLOBAL_RATE;
        let ahead = g.next.max(now);
        g.next = ahead + interval;
        let global = ahead.saturating_duration_since(now).saturating_sub(interval * GLOBAL_BURST);
        let log = match g.logged {
            Some(at) if now.duration_since(at) < LOG_EVERY => {
                g.unlogged += 1;
                None
            }
            _ => {
                g.logged = Some(now);
                Some(std::mem::take(&mut g.unlogged))
            }
        };
        Failure { delay: local.max(global), log }
    }

    fn failed_locally(&self, source: IpAddr, now: Instant) -> Duration {
        let mut map = self.failures.lock().expect("no panics while holding the lock");
        map.retain(|_, (_, last)| now.duration_since(*last) < FORGET_AFTER);
        if map.len() >= MAX_TRACKED {
            if let Some(oldest) = map.iter().min_by_key(|(_, (_, last))| *last).map(|(ip, _)| *ip) {
                map.remove(&oldest);
            }
        }
        let entry = map.entry(source).or_insert((0, now));
        entry.0 = entry.0.saturating_add(1);
        entry.1 = now;
        BASE_DELAY.saturating_mul(1 << (entry.0 - 1).min(16)).min(MAX_DELAY)
    }

    /// Forgets `ip`'s source after it authenticated.
    pub fn succeeded(&self, ip: IpAddr) {
        self.failures.lock().expect("no panics while holding the lock").remove(&source_of(ip));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use sha2::Digest;

    const BINDING: [u8; 32] = [7; 32];

    fn challenge<'a>(ns: &'a str, nc: &'a str) -> Challenge<'a> {
        Challenge { binding: &BINDING, server_nonce: ns, client_nonce: nc }
    }

    fn token(text: &str) -> Token {
        Token::new(&format!("{text:-<40}")).unwrap()
    }

    #[test]
    fn macs_verify_only_with_the_same_token_role_binding_and_nonces() {
        let t = token("secret");
        let m = mac(&t, Role::Client, challenge("aa", "bb"));
        assert!(verify(&t, Role::Client, challenge("aa", "bb"), &m));
        assert!(!verify(&token("other"), Role::Client, challenge("aa", "bb"), &m));
        assert!(!verify(&t, Role::Server, challenge("aa", "bb"), &m), "a client proof is no server proof");
        assert!(!verify(&t, Role::Client, challenge("ab", "bb"), &m));
        assert!(!verify(&t, Role::Client, challenge("aa", "bc"), &m));
        let other = [8u8; 32];
        let rebound = Challenge { binding: &other, ..challenge("aa", "bb") };
        assert!(!verify(&t, Role::Client, rebound, &m), "a proof for another TLS channel");
        assert!(!verify(&t, Role::Client, challenge("aa", "bb"), "zz"));
        assert!(!verify(&t, Role::Client, challenge("aa", "bb"), ""));
    }

    /// The vector in PROTOCOL.md, so the document and the code cannot
    /// drift apart.
    #[test]
    fn protocol_md_example_verifies() {
        let t = Token::new("example-token-0123456789abcdef0123456789").unwrap();
        let binding: [u8; 32] = Sha256::digest(b"example certificate").into();
        let ns = "38bfed7e1cbdd68c5a61d360ba91007aec77b27a3f4452e08aa832c2bb983b80";
        let nc = "23f691d483d0852890af726a9a740f07333f17f7d9b3bea00da2dabd0fe7863c";
        let c = Challenge { binding: &binding, server_nonce: ns, client_nonce: nc };
        let doc = include_str!("../PROTOCOL.md");
        for line in [
            format!("binding    {}", hex(&binding)),
            format!("Ns         {ns}"),
            format!("Nc         {nc}"),
            format!("client mac {}", mac(&t, Role::Client, c)),
            format!("server mac {}", mac(&t, Role::Server, c)),
        ] {
            assert!(doc.contains(&line), "PROTOCOL.md lacks {line}");
        }
        assert_eq!(
            mac(&t, Role::Client, c),
            "b25657f29d7cbe40f1c95adee2bd7ec683d86c022959534a8d7cc020f7db030d"
        );
        assert_eq!(
            mac(&t, Role::Server, c),
            "043bac89f5d9fcae36724272128b2518974ec44bca0114d0d1e8849c8ed39139"
        );
    }

    #[test]
    fn nonce_fields_cannot_be_shifted_into_each_other() {
        let t = token("secret");
        assert_ne!(
            mac(&t, Role::Client, challenge("aab", "b")),
            mac(&t, Role::Client, challenge("aa", "bb"))
        );
    }

    #[test]
    fn tokens_are_trimmed_and_at_least_32_characters() {
        assert!(Token::new("  \n").is_none());
        assert!(Token::new(&"x".repeat(31)).is_none());
        assert!(Token::new(&format!(" {}\n", "é".repeat(32))).is_some(), "characters, not bytes");
        assert_eq!(Token::new(&format!(" {}\n", "a".repeat(32))).unwrap().0, "a".repeat(32).as_bytes());
        assert_eq!(Token::generate().reveal().len(), 64);
    }

    #[test]
    fn created_token_file_is_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cfg/xfer/token");
        let first = create_token_file(&path).unwrap();
        assert_eq!(crate::private_file::mode(&path).unwrap(), 0o600);
        assert_eq!(first.0.len(), 64);
        assert_eq!(read_token(&path).unwrap().0, first.0);
        let second = create_token_file(&path).unwrap();
        assert_eq!(second.0, first.0, "an existing token is never replaced");
        let (third, at) = replace_token(Some(&path)).unwrap();
        assert_eq!(at, path);
        assert_ne!(third.0, first.0);
        assert_eq!(read_token(&path).unwrap().0, third.0);
    }

    #[test]
    fn loose_and_short_token_files_are_refused_with_the_fix() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "a".repeat(40)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = read_token(&path).unwrap_err().to_string();
        assert!(err.contains("readable by others (mode 0640)") && err.contains("chmod 600"), "{err}");
        std::fs::write(&path, "short\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let err = read_token(&path).unwrap_err().to_string();
        assert!(err.contains("5 characters long") && err.contains("at least 32"), "{err}");
    }

    #[test]
    fn failure_delays_double_per_source_and_reset() {
        let l = FailureLimiter::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(l.failed(ip).delay, Duration::from_millis(100));
        assert_eq!(l.failed(ip).delay, Duration::from_millis(200));
        assert_eq!(l.failed(ip).delay, Duration::from_millis(400));
        l.succeeded(ip);
        assert_eq!(l.failed(ip).delay, Duration::from_millis(100));
    }

    #[test]
    fn failures_spread_over_sources_are_paced_globally_and_logged_sparingly() {
        let l = FailureLimiter::default();
        let mut delays = Vec::new();
        let mut logged = 0;
        for i in 0..200u32 {
            let f = l.failed(IpAddr::from([127, 0, (i >> 8) as u8, i as u8]));
            delays.push(f.delay);
            logged += usize::from(f.log.is_some());
        }
        // After the burst, each further failure waits one more interval.
        let last = *delays.last().unwrap();
        let expected = Duration::from_secs(1) / GLOBAL_RATE * (200 - GLOBAL_BURST - 1);
        assert!(last >= expected.saturating_sub(Duration::from_millis(100)), "{last:?} < {expected:?}");
        assert_eq!(logged, 1, "one line for a burst within a second");
        assert!(delays[0] < Duration::from_millis(150));
    }

    #[test]
    fn ipv6_sources_are_their_64_prefix() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(source_of(a), source_of(b));
        assert_ne!(source_of(a), source_of(c));
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(source_of(mapped), "127.0.0.1".parse::<IpAddr>().unwrap());
    }
}
