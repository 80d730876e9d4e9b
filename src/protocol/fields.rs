//! The small types that messages carry: digests, error codes, kinds of
//! entry, the protocol version.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The protocol version this build speaks. A peer announcing another version
/// is refused with [`ErrorCode::Version`] before any request is read.
pub const PROTOCOL_VERSION: u32 = 6;

/// Bytes in each part of a file body but the last: each part travels in a
/// `data` frame of its own with its MD5, so the receiver verifies many at
/// once in SIMD lanes (see `digest::lanes`). With AVX-512, 32 parts of 64
/// KiB to 1 MiB hash at 6.5-6.6 GB/s alike (examples/md5_lanes.rs), so the
/// part is as small as keeps headers negligible (0.08 % of the bytes) and
/// a batch of 32 within 4 MiB.
pub const PART: u64 = 128 * 1024;

/// Most part digests an offer to resume carries (4 MiB of them, 32 GiB of
/// file): a receiver offers at most this many parts of a partial, and a
/// sender refuses a longer list before reading it.
pub const OFFER_MOST_PARTS: usize = 262_144;

/// An offer's part digests as its frame's body: 16 bytes each, in order.
pub fn parts_body(parts: &[[u8; 16]]) -> Vec<u8> {
    parts.concat()
}

/// The part digests in an offer's body; `None` unless it holds whole
/// digests, at most [`OFFER_MOST_PARTS`] of them.
pub fn parts_of_body(body: &[u8]) -> Option<Vec<[u8; 16]>> {
    let (parts, rest) = body.as_chunks::<16>();
    (rest.is_empty() && parts.len() <= OFFER_MOST_PARTS).then(|| parts.to_vec())
}

/// Seconds between `keepalive` frames: the server's to a client whose
/// command is silent, a client's while it waits (between commands of a
/// session, or while a command runs). A peer silent for four of these is
/// taken for gone, well inside the server's 30 s idle timeout.
pub const KEEPALIVE_SECS: u64 = 5;

/// Machine-readable reason carried by an `error` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
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
    /// The token proven may not do this (read, write or exec).
    Forbidden,
    /// Anything else that went wrong on the server (also what an `error`
    /// frame without a code means).
    #[default]
    Internal,
}

/// Lowercase hex of `bytes`: the one hex encoding (digests, nonces, MACs).
pub fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    bytes.iter().flat_map(|b| [HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]).map(char::from).collect()
}

/// A lowercase hex MD5 digest, checked on parse: exactly 32 of `0-9a-f`;
/// or a file's digest over its parts (see `digest::PartsDigest`), the MD5
/// of its parts' digests followed by `-` and the count of parts (2 or more).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Md5Hex(String);

impl Md5Hex {
    /// Formats a raw 16-byte digest.
    pub fn from_digest(bytes: &[u8; 16]) -> Self {
        Md5Hex(hex(bytes))
    }

    /// The raw 16-byte digest (of the parts' digests, for a file of parts).
    pub fn to_digest(&self) -> [u8; 16] {
        let nibble = |c: u8| if c.is_ascii_digit() { c - b'0' } else { c - b'a' + 10 };
        let mut out = [0u8; 16];
        for (o, pair) in out.iter_mut().zip(self.0.as_bytes().chunks_exact(2)) {
            *o = nibble(pair[0]) << 4 | nibble(pair[1]);
        }
        out
    }

    /// A file's digest over `parts` parts of digest `bytes`: the plain form
    /// for one part or none, else with the count.
    pub fn of_parts(bytes: &[u8; 16], parts: u64) -> Self {
        match parts {
            0 | 1 => Md5Hex::from_digest(bytes),
            n => Md5Hex(format!("{}-{n}", hex(bytes))),
        }
    }

    /// How many parts a file digest is over: 1 for a plain MD5.
    pub fn parts(&self) -> u64 {
        self.0.get(33..).and_then(|n| n.parse().ok()).unwrap_or(1)
    }

    /// The digest as written: 32 hex digits, and `-N` for a file of parts.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Md5Hex {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        let hex = s.len() >= 32 && s.as_bytes()[..32].iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        // A count of parts: 2 or more, in decimal without leading zeros.
        let count = match s.get(32..) {
            Some("") => true,
            Some(rest) => rest.strip_prefix('-').is_some_and(|n| {
                n.len() <= 19
                    && !n.starts_with('0')
                    && n.bytes().all(|b| b.is_ascii_digit())
                    && n.parse::<u64>().is_ok_and(|n| n >= 2)
            }),
            None => false,
        };
        if hex && count {
            Ok(Md5Hex(s))
        } else {
            Err(format!("md5 must be 32 lowercase hex digits, and -N for a file of N parts, got {s:?}"))
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
            "d41d8cd98f00b204e9800998ecf8427e-1",
            "d41d8cd98f00b204e9800998ecf8427e-0",
            "d41d8cd98f00b204e9800998ecf8427e-02",
            "d41d8cd98f00b204e9800998ecf8427e-",
            "d41d8cd98f00b204e9800998ecf8427e-+3",
            "d41d8cd98f00b204e9800998ecf8427e-99999999999999999999",
        ] {
            assert!(Md5Hex::try_from(bad.to_string()).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_file_digest_over_parts_carries_its_count() {
        let d = [7u8; 16];
        let many = Md5Hex::of_parts(&d, 1024);
        assert_eq!(many.as_str(), "07070707070707070707070707070707-1024");
        assert_eq!(many.parts(), 1024);
        assert_eq!(many.to_digest(), d);
        assert_eq!(Md5Hex::try_from(many.as_str().to_string()), Ok(many));
        assert_eq!(Md5Hex::of_parts(&d, 1).as_str(), "07070707070707070707070707070707");
        assert_eq!(Md5Hex::of_parts(&d, 1).parts(), 1);
    }

    #[test]
    fn md5_hex_formats_digest() {
        let d = [0xd4, 0x1d, 0x8c, 0xd9, 0x8f, 0, 0xb2, 4, 0xe9, 0x80, 9, 0x98, 0xec, 0xf8, 0x42, 0x7e];
        assert_eq!(Md5Hex::from_digest(&d).as_str(), "d41d8cd98f00b204e9800998ecf8427e");
    }
}
