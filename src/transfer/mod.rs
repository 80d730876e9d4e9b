//! Moving a file's bytes: the streaming pipelines that hash on the way
//! ([`stream`]), and the one path every received file takes, whichever
//! side receives it and whatever its size class: receive into its partial,
//! verify against the sender's MD5, commit ([`mod@file`]).

pub mod file;
pub mod stream;

pub use file::{drain, receive_file, Commit, Committed, FileFailure};
pub use stream::{
    part_differs, read_whole, receive_parts, resume_point, send_parts, CopyError, Digest, Offer, PartFailure,
    Received, Sending, Sent, INLINE_MAX,
};

/// Told how many bytes of a body have gone through, for a progress bar;
/// the streaming code knows nothing of how progress is shown.
pub trait Progress: Sync {
    /// `n` more bytes have been sent or received.
    fn advance(&self, n: u64);
}

/// Progress that nobody watches (the server's transfers).
pub struct NoProgress;

impl Progress for NoProgress {
    fn advance(&self, _: u64) {}
}
