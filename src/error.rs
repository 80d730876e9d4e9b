//! Error types, one per phase, and how each maps to a message and exit code.
//!
//! - [`ConnError`]: talking to the peer failed (socket, framing, sequence).
//! - [`RequestError`]: the server refuses or fails one request; it travels to
//!   the client as an `error` frame and the connection stays usable.
//! - [`enum@Error`]: what the client reports to its user, with an exit code.

pub use crate::plain::plain_io;
use crate::protocol::{ErrorCode, FrameError, Md5Hex};
use std::io;
use std::path::PathBuf;
use thiserror::Error;

/// Exit code when the remote side could not be reached or refused us
/// (as ssh uses 255).
pub const EXIT_CONNECT: u8 = 255;
/// Exit code for a failed operation (missing file, digest mismatch...).
pub const EXIT_FAILURE: u8 = 1;

/// Exit code for a command line that asks for something that cannot be
/// done, as clap's own usage errors.
pub const EXIT_USAGE: u8 = 2;
/// Exit code for `exec --timeout` running out (as timeout(1)).
pub const EXIT_TIMEOUT: u8 = 124;

/// Talking to the peer failed; the connection cannot be used further.
#[derive(Debug, Error)]
pub enum ConnError {
    /// The peer closed the connection between frames.
    #[error("connection closed")]
    Closed,
    /// The peer closed the connection in the middle of a frame or body.
    #[error("connection closed in the middle of a {0}")]
    Truncated(&'static str),
    /// The peer sent bytes that are not a valid frame.
    #[error("malformed frame: {0}")]
    Frame(#[from] FrameError),
    /// The peer sent a valid frame at the wrong point of the exchange.
    #[error("unexpected {got} frame (expected {expected})")]
    Unexpected {
        /// The op that arrived.
        got: &'static str,
        /// What the exchange called for, in words.
        expected: &'static str,
    },
    /// The peer sent a file body's parts against the rules of parts.
    #[error("{0} (a file body's parts must follow one another whole, each with its md5)")]
    BadPart(&'static str),
    /// An offer to resume whose body is not whole part digests, or more
    /// of them than an offer may carry.
    #[error("an offer to resume with a body of {0} bytes (whole 16-byte part digests, at most 262,144, were expected)")]
    BadOffer(u64),
    /// The peer sent a `zstd` envelope it may not send.
    #[error(transparent)]
    Envelope(#[from] crate::protocol::envelope::EnvelopeError),
    /// The peer was silent for longer than the idle timeout.
    #[error("no data from peer for {0} s")]
    Idle(u64),
    /// The socket itself failed.
    #[error("{}", plain_io(.0))]
    Io(#[from] io::Error),
}

/// A FIFO, socket or device where a regular file was asked for.
#[derive(Debug, Error)]
#[error("not a regular file")]
pub struct NotRegular;

/// A link where a path had to go through directories only: what is made
/// there would stand elsewhere than its name says.
#[derive(Debug, Error)]
#[error("a link on the way")]
pub struct LinkOnTheWay;

impl LinkOnTheWay {
    /// Whether `err` is this one.
    pub fn is(err: &io::Error) -> bool {
        err.get_ref().is_some_and(|e| e.is::<LinkOnTheWay>())
    }
}

/// One request failed on the server; sent back as an `error` frame.
#[derive(Debug, Error, Clone, PartialEq)]
#[error("{message}")]
pub struct RequestError {
    /// Machine-readable reason.
    pub code: ErrorCode,
    /// Plain words for the user, naming the file concerned.
    pub message: String,
}

/// The words for something that exists and is not replaced without
/// `--force`: `what` says what, and the remedy follows. Every side's
/// message of this kind is made here.
pub fn exists_words(what: &str) -> String {
    format!("{what} (use --force to replace it)")
}

/// The words for a body whose digest is not the sender's: `name` (if the
/// message names the file) and both digests (`sent`: none when the sender
/// sent none). Every side's message of this kind is made here.
pub fn mismatch_words(name: Option<&str>, sent: Option<&str>, received: &str) -> String {
    let sent = sent.unwrap_or("nothing");
    match name {
        Some(name) => {
            format!("md5 mismatch for {name} (sent {sent}, received {received}): nothing was saved")
        }
        None => format!("md5 mismatch (sent {sent}, received {received}): nothing was saved"),
    }
}

impl RequestError {
    /// The remote file `path` exists and the request may not replace it.
    pub fn exists(path: &str) -> Self {
        RequestError::new(ErrorCode::Exists, exists_words(&format!("remote file exists: {path}")))
    }

    /// A body for `path` starts at `offset`, where `held` bytes were offered.
    pub fn offset(path: &str, offset: u64, held: u64) -> Self {
        let msg = format!("data for {path} starts at {offset}, but {held} bytes were offered");
        RequestError::new(ErrorCode::BadRequest, msg)
    }

    /// The body received for `path` is not what its sender's digest says.
    pub fn mismatch(path: &str, sent: Option<&Md5Hex>, received: &str) -> Self {
        let words = mismatch_words(Some(path), sent.map(|m| m.as_str()), received);
        RequestError::new(ErrorCode::Md5Mismatch, words)
    }

    /// A request error with the given code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        RequestError { code, message: message.into() }
    }

    /// Maps a filesystem error on `path` to the code and words a client sees.
    pub fn from_io(err: &io::Error, path: &str) -> Self {
        let code = match err.kind() {
            io::ErrorKind::NotFound => ErrorCode::NotFound,
            io::ErrorKind::PermissionDenied => ErrorCode::PermissionDenied,
            _ if disk_full(err) => ErrorCode::NoSpace,
            io::ErrorKind::IsADirectory | io::ErrorKind::NotADirectory => ErrorCode::WrongType,
            io::ErrorKind::AlreadyExists => ErrorCode::Exists,
            _ if err.get_ref().is_some_and(|e| e.is::<NotRegular>()) => ErrorCode::WrongType,
            _ if LinkOnTheWay::is(err) => ErrorCode::BadPath,
            _ => ErrorCode::Internal,
        };
        let message = match code {
            ErrorCode::NotFound => format!("remote file not found: {path}"),
            ErrorCode::NoSpace => format!("no space left on the server's disk while writing {path}"),
            _ => format!("{} on the server: {path}", plain_io(err)),
        };
        RequestError { code, message }
    }
}

/// Whether `err` says the disk (or the user's quota on it) is full: what
/// stops a whole tree rather than one file.
pub fn disk_full(err: &io::Error) -> bool {
    /// EDQUOT on Linux.
    const QUOTA_EXCEEDED: i32 = 122;
    err.kind() == io::ErrorKind::StorageFull || err.raw_os_error() == Some(QUOTA_EXCEEDED)
}

/// What the client reports to its user.
#[derive(Debug, Error)]
pub enum Error {
    /// The TCP connection could not be made.
    #[error("cannot connect to {addr}: {reason} (is xfer serve running?)")]
    Connect {
        /// The address as the user gave it.
        addr: String,
        /// Plain words from the OS.
        reason: String,
    },
    /// `xfer serve` could not listen or open its root.
    #[error("cannot serve on {addr}: {reason}")]
    Serve {
        /// The listen address.
        addr: String,
        /// Plain words from the OS.
        reason: String,
    },
    /// The server speaks a protocol version this client does not.
    #[error("server at {addr} speaks protocol version {theirs}, this client speaks {ours}")]
    Version {
        /// The server's address.
        addr: String,
        /// Version the server announced.
        theirs: u32,
        /// Our version.
        ours: u32,
    },
    /// The peer answered, but not as an xfer server does.
    #[error("{addr} is not an xfer server ({reason})")]
    NotXfer {
        /// The address as the user gave it.
        addr: String,
        /// What it did instead, in plain words.
        reason: String,
    },
    /// The server did not accept our token.
    #[error("authentication failed: the server refused this token (check that the client and the server use the same one)")]
    AuthFailed,
    /// The server could not prove that it holds the token on this channel.
    #[error(
        "authentication failed: the server did not prove it holds the token, so nothing was sent \
         (an impostor, or someone relaying the connection)"
    )]
    ServerNotProven,
    /// The server's TLS identity could not be had.
    #[error("{0}")]
    Identity(#[from] crate::tls::IdentityError),
    /// No token could be found or made.
    #[error("{0}")]
    Token(#[from] crate::auth::TokenError),
    /// The tokens file cannot be used.
    #[error(transparent)]
    Grants(#[from] crate::access::GrantError),
    /// The server refused or failed the request.
    #[error("{}", .0.message)]
    Remote(RequestError),
    /// The received body does not match the sender's digest.
    #[error("{}", mismatch_words(Some(.name), Some(.sent), .received))]
    Md5Mismatch {
        /// The file concerned.
        name: String,
        /// The sender's digest.
        sent: String,
        /// Ours.
        received: String,
    },
    /// A local destination exists and `--force` was not given.
    #[error("{}", exists_words(&format!("{} already exists", .0.display())))]
    LocalExists(PathBuf),
    /// A local file could not be read, written or committed.
    #[error("local {}: {}", .path.display(), plain_io(.source))]
    Local {
        /// The local path concerned.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The connection to the server failed mid-exchange, or the server
    /// broke the protocol (and the connection was closed).
    #[error("{}", conn_words(.0))]
    Conn(#[from] ConnError),
    /// The command line asks for something that cannot be done (a path
    /// that names nothing usable).
    #[error("{0}")]
    Usage(String),
    /// A local file cannot be used as the command needs (not a regular
    /// file or directory, changed while being sent).
    #[error("{0}")]
    LocalUnusable(String),
    /// Exec was refused because the server was started without it.
    #[error("exec is disabled on this server (start it with --allow-exec)")]
    ExecDisabled,
    /// The server refused to run the command.
    #[error("{0}")]
    NotRun(String),
    /// `exec --timeout` ran out.
    #[error("command timed out after {0} s")]
    Timeout(u64),
}

impl Error {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Connect { .. }
            | Error::NotXfer { .. }
            | Error::Version { .. }
            | Error::AuthFailed
            | Error::ServerNotProven
            | Error::Identity(_)
            | Error::Token(_)
            | Error::ExecDisabled
            | Error::NotRun(_)
            // The connection failed or broke, as ssh's 255 says.
            | Error::Conn(_) => EXIT_CONNECT,
            Error::Timeout(_) => EXIT_TIMEOUT,
            Error::Usage(_) | Error::Grants(crate::access::GrantError::Usage(_)) => EXIT_USAGE,
            _ => EXIT_FAILURE,
        }
    }

    /// A machine-readable name for what went wrong, for `--json`: the
    /// server's error code when it refused, else one of `connect`,
    /// `not_xfer`, `version`, `auth_failed`, `server_not_proven`, `token`,
    /// `usage`, `exists`, `md5_mismatch`, `local`, `protocol`,
    /// `exec_disabled`, `not_run`, `timeout`, `serve`.
    pub fn code(&self) -> String {
        let name = match self {
            Error::Remote(e) => {
                return serde_json::to_value(e.code)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default()
            }
            Error::Connect { .. } => "connect",
            Error::Serve { .. } => "serve",
            Error::Version { .. } => "version",
            Error::NotXfer { .. } => "not_xfer",
            Error::AuthFailed => "auth_failed",
            Error::ServerNotProven => "server_not_proven",
            Error::Identity(_) | Error::Token(_) | Error::Grants(_) => "token",
            Error::Md5Mismatch { .. } => "md5_mismatch",
            Error::LocalExists(_) => "exists",
            Error::Local { .. } | Error::LocalUnusable(_) => "local",
            Error::Conn(_) => "protocol",
            Error::Usage(_) => "usage",
            Error::ExecDisabled => "exec_disabled",
            Error::NotRun(_) => "not_run",
            Error::Timeout(_) => "timeout",
        };
        name.to_string()
    }

    /// Whether this is our own output closed by its reader (`xfer get f - |
    /// head`): no failure to tell of, as cat and ssh tell none.
    pub fn is_closed_output(&self) -> bool {
        matches!(self, Error::Local { source, .. } if source.kind() == io::ErrorKind::BrokenPipe)
    }

    /// The bytes of `name` are not what the sender's digest says: `sent`
    /// and `received` as the two sides computed them, either missing when
    /// that side gave none.
    pub fn md5_mismatch(name: impl Into<String>, sent: Option<&Md5Hex>, received: impl Into<String>) -> Self {
        let sent = sent.map_or_else(|| "nothing".to_string(), Md5Hex::to_string);
        Error::Md5Mismatch { name: name.into(), sent, received: received.into() }
    }

    /// A local I/O failure on `path`.
    pub fn local(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Local { path: path.into(), source }
    }
}

/// What a person is told when the connection to the server ends early.
fn conn_words(e: &ConnError) -> String {
    match e {
        ConnError::Frame(_) | ConnError::Unexpected { .. } => {
            format!("the server broke the protocol ({e}); nothing more was sent to it")
        }
        _ => format!("connection to server lost: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_io_drops_os_error_tail_and_capital() {
        let e = io::Error::from_raw_os_error(rustix::io::Errno::ISDIR.raw_os_error());
        assert_eq!(plain_io(&e), "is a directory");
        let e = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(plain_io(&e), "connection refused");
    }

    #[test]
    fn exit_codes_follow_ssh() {
        let e = Error::Connect { addr: "x".into(), reason: "y".into() };
        assert_eq!(e.exit_code(), 255);
        assert_eq!(Error::ExecDisabled.exit_code(), 255);
        assert_eq!(Error::Timeout(1).exit_code(), 124);
        assert_eq!(Error::Usage("u".into()).exit_code(), 2, "as clap's usage errors");
    }

    #[test]
    fn missing_remote_file_names_the_path() {
        let e = io::Error::from(io::ErrorKind::NotFound);
        let r = RequestError::from_io(&e, "docs/a.txt");
        assert_eq!(r.code, ErrorCode::NotFound);
        assert_eq!(r.message, "remote file not found: docs/a.txt");
    }

    /// Each message says which side failed.
    #[test]
    fn failures_name_their_side() {
        let denied = io::Error::from(io::ErrorKind::PermissionDenied);
        let r = RequestError::from_io(&denied, "secret.txt");
        assert_eq!(r.message, "permission denied on the server: secret.txt");
        let here = Error::local("secret.txt", io::Error::from(io::ErrorKind::PermissionDenied));
        assert_eq!(here.to_string(), "local secret.txt: permission denied");
    }
}
