//! The JSON header that opens every frame, and the small types it carries.
//!
//! The header is one flat object so that a client in any language can build
//! it with a dictionary. Every header carries `op`, `filename`, `md5` and
//! `total_size`; the other fields appear only on the ops that use them and
//! are left out of the JSON when unset. `PROTOCOL.md` lists which op uses
//! which field.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The protocol version this build speaks. A peer announcing another version
/// is refused with [`ErrorCode::Version`] before any request is read.
pub const PROTOCOL_VERSION: u32 = 2;

/// What a frame asks for or answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Server greeting, first frame on every connection: version and nonce.
    Hello,
    /// Client's answer to `hello`: its nonce and proof of the token.
    Auth,
    /// Server's answer to a good `auth`: its own proof of the token.
    Welcome,
    /// Client request: store the following `data` body at `filename`.
    Put,
    /// Server reply to `put`: send the body now.
    Ready,
    /// Client request: send the file at `filename`.
    Get,
    /// A file body of `total_size` bytes (either direction).
    Data,
    /// Ends a body: `md5` is the sender's digest of everything it sent.
    Done,
    /// Final server reply to a successful `put`.
    Ok,
    /// Client request: list the directory at `filename`.
    Ls,
    /// One listing entry.
    Entry,
    /// Ends a listing.
    End,
    /// Client request: run `command` with `sh -c`.
    Exec,
    /// Server reply to `exec`: the command is running.
    Started,
    /// A chunk of the command's standard input (`total_size` 0 is EOF).
    Stdin,
    /// A chunk of the command's standard output.
    Stdout,
    /// A chunk of the command's standard error.
    Stderr,
    /// The command ended: status and per-stream digests.
    Exit,
    /// A request failed: `code` and `message` say why.
    Error,
    /// Client request: make the directory `filename` a copy of the tree
    /// described by the `entry` frames that follow.
    PutTree,
    /// Client request: send the tree at `filename`.
    GetTree,
    /// A file the receiving side already has: its size, and MD5 when the
    /// size matches (tree transfers).
    Have,
    /// A file the client wants sent, with its own MD5 if it has a copy of
    /// the same size, or `offset` and the MD5 of that many bytes if it
    /// holds a partial to resume (get_tree).
    Want,
    /// A partial the server holds for a file of the tree: its first
    /// `offset` bytes, of MD5 `md5`, which the client may resume (put_tree).
    Partial,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The serde name is the wire name; reuse it so logs match PROTOCOL.md.
        let name = serde_json::to_value(self).ok();
        let name = name.as_ref().and_then(|v| v.as_str()).unwrap_or("?");
        f.write_str(name)
    }
}

/// Machine-readable reason carried by an `error` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The named file or directory does not exist.
    NotFound,
    /// The destination exists and `force` was not set.
    Exists,
    /// The path is not acceptable (absolute, `..`, control characters...).
    BadPath,
    /// The path names a directory where a file was expected, or the reverse.
    WrongType,
    /// The received body did not match the sender's MD5.
    Md5Mismatch,
    /// The frame or the message sequence is not valid.
    BadRequest,
    /// The peer speaks another protocol version.
    Version,
    /// The client did not prove it holds the token.
    AuthFailed,
    /// Exec was asked of a server started without `--allow-exec`.
    ExecDisabled,
    /// The server refused for lack of permission.
    PermissionDenied,
    /// The server's disk is full.
    NoSpace,
    /// Anything else that went wrong on the server.
    Internal,
}

/// Lowercase hex of `bytes`: the one hex encoding (digests, nonces, MACs).
pub fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    bytes.iter().flat_map(|b| [HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]).map(char::from).collect()
}

/// A lowercase hex MD5 digest, checked on parse: exactly 32 of `0-9a-f`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Md5Hex(String);

impl Md5Hex {
    /// Formats a raw 16-byte digest.
    pub fn from_digest(bytes: &[u8; 16]) -> Self {
        Md5Hex(hex(bytes))
    }

    /// The raw 16-byte digest.
    pub fn to_digest(&self) -> [u8; 16] {
        let nibble = |c: u8| if c.is_ascii_digit() { c - b'0' } else { c - b'a' + 10 };
        let mut out = [0u8; 16];
        for (o, pair) in out.iter_mut().zip(self.0.as_bytes().chunks_exact(2)) {
            *o = nibble(pair[0]) << 4 | nibble(pair[1]);
        }
        out
    }

    /// The 32 hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Md5Hex {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        let ok = s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if ok {
            Ok(Md5Hex(s))
        } else {
            Err(format!("md5 must be 32 lowercase hex digits, got {s:?}"))
        }
    }
}

impl From<Md5Hex> for String {
    fn from(m: Md5Hex) -> String {
        m.0
    }
}

impl fmt::Display for Md5Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What kind of thing a listing entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    Other,
}

/// Size and digest of one exec output stream, sent in the `exit` frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamSummary {
    /// Bytes the server read from the stream and sent.
    pub total_size: u64,
    /// MD5 of those bytes.
    pub md5: Md5Hex,
}

/// The header of one frame. See the module doc and `PROTOCOL.md`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// What this frame is.
    pub op: Op,
    /// Path relative to the server's root (requests, `data`, `entry`), or
    /// empty where no file is concerned.
    #[serde(default)]
    pub filename: String,
    /// Digest of a body: set on `done`, `ok` and in `data` frames only when
    /// known up front; `null` otherwise.
    #[serde(default)]
    pub md5: Option<Md5Hex>,
    /// Exact length of the body that follows this header; 0 for control frames.
    #[serde(default)]
    pub total_size: u64,

    /// Protocol version (`hello`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    /// Random challenge, 64 hex digits (`hello`, `auth`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// HMAC-SHA256 proof of the token, 64 hex digits (`auth`, `welcome`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Permission bits (`entry`, `data` in trees).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    /// Where a symlink points (`entry`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The file was already identical and was not sent (`ok` in trees).
    #[serde(default, skip_serializing_if = "is_false")]
    pub skipped: bool,
    /// Where a body starts in its file: bytes a resumed transfer skips
    /// (`ready`, `get`, `data`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// The client may resume from a partial the server holds (`put`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub resume: bool,
    /// Replace an existing destination (`put`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub force: bool,
    /// Flush what is committed to disk before saying so (`put`, `put_tree`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub fsync: bool,
    /// Size of the file in a listing, or being sent (`entry`, `put`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Modification time, seconds since the Unix epoch (`entry`, `data`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtime: Option<i64>,
    /// What a listing entry is (`entry`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<EntryKind>,
    /// Shell command line (`exec`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Seconds before the command's process group is killed (`exec`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    /// Whether the client will forward standard input (`exec`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub stdin: bool,
    /// Exit code of a command that exited normally (`exit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Signal that killed the command (`exit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// The command was killed because its time ran out (`exit`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub timed_out: bool,
    /// Size and digest of everything sent on stdout (`exit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout: Option<StreamSummary>,
    /// Size and digest of everything sent on stderr (`exit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr: Option<StreamSummary>,
    /// Machine-readable failure reason (`error`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<ErrorCode>,
    /// Human-readable failure message (`error`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Header {
    /// A header of `op` with every optional field unset and no body.
    pub fn new(op: Op) -> Self {
        Header {
            op,
            filename: String::new(),
            md5: None,
            total_size: 0,
            version: None,
            nonce: None,
            mac: None,
            offset: None,
            resume: false,
            mode: None,
            target: None,
            skipped: false,
            force: false,
            fsync: false,
            size: None,
            mtime: None,
            kind: None,
            command: None,
            timeout: None,
            stdin: false,
            exit_code: None,
            signal: None,
            timed_out: false,
            stdout: None,
            stderr: None,
            code: None,
            message: None,
        }
    }

    /// Sets `filename`.
    pub fn with_filename(mut self, name: impl Into<String>) -> Self {
        self.filename = name.into();
        self
    }

    /// Sets `total_size`, the length of the body that follows.
    pub fn with_body(mut self, len: u64) -> Self {
        self.total_size = len;
        self
    }

    /// Sets `md5`.
    pub fn with_md5(mut self, md5: Md5Hex) -> Self {
        self.md5 = Some(md5);
        self
    }

    /// An `error` frame.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        let mut h = Header::new(Op::Error);
        h.code = Some(code);
        h.message = Some(message.into());
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_hex_round_trips_raw_digests() {
        let raw: [u8; 16] = std::array::from_fn(|i| (i as u8).wrapping_mul(37) ^ 0xa5);
        let hex = Md5Hex::from_digest(&raw);
        assert_eq!(hex.as_str(), "a580efca311c7ba68de8d7321944a38e");
        assert_eq!(hex.to_digest(), raw);
        assert!(Md5Hex::try_from(hex.as_str().to_string()).is_ok());
    }

    #[test]
    fn md5_hex_accepts_only_lowercase_32_hex() {
        assert!(Md5Hex::try_from("d41d8cd98f00b204e9800998ecf8427e".to_string()).is_ok());
        for bad in [
            "",
            "D41D8CD98F00B204E9800998ECF8427E",
            "d41d8cd98f00b204e9800998ecf8427",
            "d41d8cd98f00b204e9800998ecf8427e0",
            "g41d8cd98f00b204e9800998ecf8427e",
        ] {
            assert!(Md5Hex::try_from(bad.to_string()).is_err(), "{bad}");
        }
    }

    #[test]
    fn md5_hex_formats_digest() {
        let d = [0xd4, 0x1d, 0x8c, 0xd9, 0x8f, 0, 0xb2, 4, 0xe9, 0x80, 9, 0x98, 0xec, 0xf8, 0x42, 0x7e];
        assert_eq!(Md5Hex::from_digest(&d).as_str(), "d41d8cd98f00b204e9800998ecf8427e");
    }

    #[test]
    fn unset_fields_stay_off_the_wire_but_core_fields_do_not() {
        let json = serde_json::to_string(&Header::new(Op::Get).with_filename("a")).unwrap();
        assert_eq!(json, r#"{"op":"get","filename":"a","md5":null,"total_size":0}"#);
    }

    #[test]
    fn op_display_is_wire_name() {
        assert_eq!(Op::Stdout.to_string(), "stdout");
    }
}
