//! The wire protocol: the messages of each direction, the small types they
//! carry, and the pure frame codec.
//!
//! `PROTOCOL.md` at the top of the repository is the full description; this
//! module is its implementation and holds no I/O.

pub mod envelope;
pub mod fields;
pub mod frame;
pub mod message;
mod split;

pub use fields::{
    hex, parts_body, parts_of_body, EntryKind, ErrorCode, Md5Hex, StreamSummary, KEEPALIVE_SECS,
    OFFER_MOST_PARTS, PART, PROTOCOL_VERSION,
};
pub use frame::{decode, encode, FrameError, MAX_HEADER_LEN, PREFIX_LEN};
pub use message::{
    Chunk, ClientMessage, Common, Data, Done, End, Entry, Exec, Frame, Get, GetTree, Have, Ls, Md5sum,
    Message, Mkdir, Mv, Put, PutTree, Refusal, Rm, ServerMessage, Stat, Stored, Tty, Want,
};
