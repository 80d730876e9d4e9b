//! The wire protocol: header types and the pure frame codec.
//!
//! `PROTOCOL.md` at the top of the repository is the full description; this
//! module is its implementation and holds no I/O.

pub mod frame;
pub mod header;

pub use frame::{decode_header, encode_header, FrameError, MAX_HEADER_LEN, PREFIX_LEN};
pub use header::{hex, EntryKind, ErrorCode, Header, Md5Hex, Op, StreamSummary, PROTOCOL_VERSION};
