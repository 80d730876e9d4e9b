//! Receive → verify → commit: the one path a streamed file takes on the
//! receiving side, whichever side that is (the server for put and put -r,
//! the client for get and get -r). The body goes into the file's partial,
//! is hashed on the way, is compared with the sender's `done` digest, and
//! only then is the partial given its mode and time and renamed into place.
//! Any failure leaves the destination as it was.

use super::stream::{part_differs, receive_parts, PartFailure};
use super::Progress;
use crate::connection::FrameReader;
use crate::error::ConnError;
use crate::local::{meta, CommitError, Partial};
use crate::protocol::{Common, Data, Md5Hex};
use std::io;
use tokio::io::AsyncRead;

/// How a verified file is committed.
#[derive(Debug, Clone, Copy)]
pub struct Commit {
    /// Replace a file already at the destination.
    pub replace: bool,
    /// Flush the file and its directory to disk before returning.
    pub durable: bool,
    /// Permission bits and modification time to give it, if the sender's
    /// are kept.
    pub meta: Option<(u32, i64)>,
}

/// Why one file was not committed, with the connection still in step
/// (except where said). Each side tells it in its own words.
#[derive(Debug)]
pub enum FileFailure {
    /// Refused before a byte was written: not a file that was asked for,
    /// or a name it cannot have.
    Refused(crate::error::RequestError),
    /// The body starts at `offset`, but the partial offered `held` bytes.
    Offset {
        /// Where the sender started.
        offset: u64,
        /// What the receiver offered.
        held: u64,
    },
    /// Writing the partial failed (a full disk, say); it is removed. With
    /// `pending`, the rest of the body and its `done` frame have not been
    /// read: the caller tells the sender first, then [`drain`]s them.
    Write {
        /// What the OS said.
        source: io::Error,
        /// Body bytes written before the failure.
        written: u64,
        /// Whether the rest of the body is still to be read.
        pending: bool,
    },
    /// The bytes received are not what the sender's digests say: a part's
    /// own, or the file's over its parts.
    Mismatch {
        /// The sender's digest (none if it sent none).
        sent: Option<Md5Hex>,
        /// The digest of what arrived, or which part differed, in words.
        received: String,
    },
    /// The destination appeared meanwhile and replacing was not asked.
    Exists,
    /// Setting its mode or time, or the rename, failed.
    Commit(io::Error),
}

/// A file received and committed.
#[derive(Debug)]
pub struct Committed {
    /// Its digest over its parts, as verified.
    pub md5: Md5Hex,
    /// The sender's plain MD5 of the whole file, if it sent one.
    pub whole: Option<Md5Hex>,
    /// Body bytes received (less than the file after a resume).
    pub bytes: u64,
}

/// Receives a body whose first part `data` (of `len` bytes) says where in
/// the file it starts, into `partial`, and the parts that continue it,
/// then its `done` frame; commits the file as `how` says if every part and
/// the file's digest over them agree with the sender's. The outer error is a
/// broken connection; a peer that breaks the protocol has the partial's
/// bytes thrown away (one that merely vanished leaves the verified whole
/// parts to be resumed).
pub async fn receive_file<R, M>(
    reader: &mut FrameReader<R, M>,
    mut partial: Partial,
    (data, len): (&Data, u64),
    how: Commit,
    bar: &dyn Progress,
) -> Result<Result<Committed, FileFailure>, ConnError>
where
    R: AsyncRead + Unpin,
    M: Common,
{
    let offset = data.offset.unwrap_or(0);
    let (file, prefix) = match partial.start_at(offset) {
        Ok(Some(start)) => start,
        Ok(None) => {
            drain(reader, len).await?;
            return Ok(Err(FileFailure::Offset { offset, held: partial.held() }));
        }
        Err(source) => return Ok(Err(FileFailure::Write { source, written: 0, pending: true })),
    };
    let received = match receive_parts(reader, (data, len), offset, file, prefix, bar).await {
        Ok(Ok(received)) => received,
        Ok(Err(PartFailure::Mismatch { offset, sent })) => {
            partial.discard();
            return Ok(Err(FileFailure::Mismatch { sent, received: part_differs(offset) }));
        }
        Ok(Err(PartFailure::Write { source, written, pending })) => {
            partial.discard();
            return Ok(Err(FileFailure::Write { source, written, pending }));
        }
        // The sender vanished mid-body: the partial keeps the verified
        // parts that arrived, for the next run to resume.
        Err(e @ (ConnError::Io(_) | ConnError::Truncated(_) | ConnError::Closed | ConnError::Idle(_))) => {
            return Err(e)
        }
        Err(e) => {
            partial.discard();
            return Err(e);
        }
    };
    let md5 = match received.agreed() {
        Ok(md5) => md5,
        Err(md5) => {
            partial.discard();
            return Ok(Err(FileFailure::Mismatch { sent: received.done.md5, received: md5.to_string() }));
        }
    };
    // Setting times and renaming are quick, but a durable commit waits for
    // the disk: on a blocking thread, not the connection's.
    let committed =
        tokio::task::spawn_blocking(move || commit(partial, how)).await.expect("committing does not panic");
    Ok(committed.map(|()| Committed { md5, whole: received.done.whole, bytes: received.bytes }))
}

/// Gives a verified partial its metadata and renames it into place.
fn commit(partial: Partial, how: Commit) -> Result<(), FileFailure> {
    if let Some((mode, mtime)) = how.meta {
        meta::apply_meta(partial.file(), mode, mtime).map_err(FileFailure::Commit)?;
    }
    let committed = match how.durable {
        true => partial.commit_durably(how.replace),
        false => partial.commit(how.replace),
    };
    committed.map_err(|e| match e {
        CommitError::Exists => FileFailure::Exists,
        CommitError::Io(e) => FileFailure::Commit(e),
    })
}

/// Reads and drops the rest of a body (`unread` bytes), any bodies that
/// continue it, and its `done` frame, to stay in step after a file failed
/// part way.
pub async fn drain<R, M>(reader: &mut FrameReader<R, M>, unread: u64) -> Result<(), ConnError>
where
    R: AsyncRead + Unpin,
    M: Common,
{
    reader.skip_body(unread).await?;
    loop {
        let frame = reader.expect().await?;
        reader.skip_body(frame.total_size).await?;
        match frame.msg.into_data() {
            Ok(_) => continue,
            Err(other) => match other.into_done() {
                Ok(_) => return Ok(()),
                Err(other) => return Err(ConnError::Unexpected { got: other.op(), expected: "done" }),
            },
        }
    }
}
