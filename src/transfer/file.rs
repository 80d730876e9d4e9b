//! Receive → verify → commit: the one path a streamed file takes on the
//! receiving side, whichever side that is (the server for put and put -r,
//! the client for get and get -r). The body goes into the file's partial,
//! is hashed on the way, is compared with the sender's `done` digest, and
//! only then is the partial given its mode and time and renamed into place.
//! Any failure leaves the destination as it was.

use super::stream::receive_continuing;
use super::{CopyError, Progress};
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
    /// Writing the partial failed (a full disk, say); it is removed. The
    /// rest of the body (`unread` bytes) and its `done` frame have not been
    /// read: the caller tells the sender first, then [`drain`]s them.
    Write {
        /// What the OS said.
        source: io::Error,
        /// Body bytes written before the failure.
        written: u64,
        /// Body bytes still to come.
        unread: u64,
    },
    /// The bytes received are not what the sender's digest says.
    Mismatch {
        /// The sender's digest (none if it sent none).
        sent: Option<Md5Hex>,
        /// The digest of what arrived.
        received: Md5Hex,
    },
    /// The destination appeared meanwhile and replacing was not asked.
    Exists,
    /// Setting its mode or time, or the rename, failed.
    Commit(io::Error),
}

/// Receives a body of `len` bytes announced by `data` (which says where in
/// the file it starts) into
/// `partial`, and any `data` frames that continue it (each starting where
/// the last ended: a body of unknown length, from standard input, comes so),
/// then its `done` frame; commits the file as `how` says if the digests
/// agree. Returns the file's MD5 and the body bytes received. The outer error is a broken connection; a
/// peer that breaks the protocol after a body has its bytes thrown away
/// (one that merely vanished leaves them to be resumed).
pub async fn receive_file<R, M>(
    reader: &mut FrameReader<R, M>,
    mut partial: Partial,
    (data, len): (&Data, u64),
    how: Commit,
    bar: &dyn Progress,
) -> Result<Result<(Md5Hex, u64), FileFailure>, ConnError>
where
    R: AsyncRead + Unpin,
    M: Common,
{
    let (filename, offset) = (data.filename.as_str(), data.offset.unwrap_or(0));
    let (file, md5) = match partial.start_at(offset) {
        Ok(Some(start)) => start,
        Ok(None) => {
            drain(reader, len).await?;
            return Ok(Err(FileFailure::Offset { offset, held: partial.held() }));
        }
        Err(source) => return Ok(Err(FileFailure::Write { source, written: 0, unread: len })),
    };
    let (mut sink, mut md5, mut len, mut at) = (file, md5, len, offset);
    let sent = loop {
        md5 = match receive_continuing(&mut reader.body(len), len, sink, md5, bar).await {
            Ok(md5) => md5,
            // The sender vanished mid-body: the partial keeps what arrived,
            // for the next run to resume.
            Err(CopyError::Read { source, .. }) => return Err(ConnError::Io(source)),
            Err(CopyError::Short { .. }) => return Err(ConnError::Truncated("body")),
            Err(CopyError::Write { done, source }) => {
                partial.discard();
                return Ok(Err(FileFailure::Write {
                    source,
                    written: at - offset + done,
                    unread: len - done,
                }));
            }
        };
        at += len;
        let next = match next_body(reader, filename, at).await {
            Ok(next) => next,
            Err(e) => {
                if matches!(e, ConnError::Frame(_) | ConnError::Unexpected { .. }) {
                    partial.discard();
                }
                return Err(e);
            }
        };
        match next {
            Next::Done(sent) => break sent,
            // Shares the partial's file offset: it goes on where this ended.
            Next::Body(more) => (sink, len) = (partial.file().try_clone().map_err(ConnError::Io)?, more),
        }
    };
    let received = md5.finish();
    if sent.as_ref() != Some(&received) {
        partial.discard();
        return Ok(Err(FileFailure::Mismatch { sent, received }));
    }
    // Setting times and renaming are quick, but a durable commit waits for
    // the disk: on a blocking thread, not the connection's.
    let committed =
        tokio::task::spawn_blocking(move || commit(partial, how)).await.expect("committing does not panic");
    Ok(committed.map(|()| (received, at - offset)))
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

/// What follows a body of a file being received.
enum Next {
    /// Its `done` frame, with the sender's digest.
    Done(Option<Md5Hex>),
    /// A `data` frame that continues it, of this many bytes.
    Body(u64),
}

/// Reads what follows a body of `filename` that ended at `at`: its `done`,
/// or a `data` that continues it there.
async fn next_body<R, M>(reader: &mut FrameReader<R, M>, filename: &str, at: u64) -> Result<Next, ConnError>
where
    R: AsyncRead + Unpin,
    M: Common,
{
    let frame = reader.expect().await?;
    match frame.msg.into_data() {
        Ok(data) if data.filename == filename && data.offset == Some(at) => Ok(Next::Body(frame.total_size)),
        Ok(_) => Err(ConnError::Unexpected {
            got: "data",
            expected: "done, or data going on where the last ended",
        }),
        Err(other) => {
            reader.skip_body(frame.total_size).await?;
            match other.into_done() {
                Ok(done) => Ok(Next::Done(done.md5)),
                Err(other) => Err(ConnError::Unexpected { got: other.op(), expected: "done" }),
            }
        }
    }
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
