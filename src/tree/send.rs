//! The sending side of a tree's files, whichever side sends (the client
//! for `put -r`, the server for `get -r`): small files read whole, hashed
//! many at once on a thread of their own and queued behind their headers,
//! so many go out in one write; large ones streamed, each with its `done`
//! frame.

use crate::connection::FrameWriter;
use crate::digest::HashBatch;
use crate::digest::PartsDigest;
use crate::error::ConnError;
use crate::local::Stamp;
use crate::protocol::{Common, Data, Done, Md5Hex};
use crate::transfer::{send_parts, CopyError, Digest, Progress, Sending, Sent};
use tokio::io::AsyncWrite;

/// A small file of a tree read whole, waiting for its MD5.
pub struct Outgoing {
    /// Its `data` message.
    pub data: Data,
    /// Its whole body.
    pub body: Vec<u8>,
    /// The version read, for a sender that remembers digests by it
    /// (`None` when its digest is remembered already).
    pub stamp: Option<Stamp>,
}

impl AsRef<[u8]> for Outgoing {
    fn as_ref(&self) -> &[u8] {
        &self.body
    }
}

/// Queues a small file behind its `data` header, with its `done` frame;
/// returns the body bytes.
pub async fn queue_small<W, M>(
    writer: &mut FrameWriter<W, M>,
    data: Data,
    body: &[u8],
    md5: &Md5Hex,
    bar: &dyn Progress,
) -> Result<u64, ConnError>
where
    W: AsyncWrite + Unpin,
    M: Common,
{
    let done = Done { filename: data.filename.clone(), md5: Some(md5.clone()), whole: None };
    writer.queue(&data.into(), body).await?;
    writer.queue(&done.into(), &[]).await?;
    bar.advance(body.len() as u64);
    Ok(body.len() as u64)
}

/// A small file read and hashed by [`read_small_files`], or why it could
/// not be: its name in the tree and the reason, in words.
pub type ReadSmall = Result<(Outgoing, Md5Hex), (String, String)>;

/// Batches of read small files [`read_small_files`] keeps ready ahead of
/// the socket, besides the one it reads and the one being sent: enough to
/// overlap reading with sending. Two were no faster (get -r of
/// /usr/include into tmpfs 0.279 s either way, medians of 9) and raised
/// the server's peak by a batch (median 29.7 MiB against 28.6).
const READ_AHEAD: usize = 1;

/// Reads and hashes small files on a thread of their own, a batch at a
/// time (as [`HashBatch`] decides), handing each batch over ready to
/// queue: one thread hop per batch, where reading those over 64 KiB on the
/// blocking pool one by one cost a hop each (client CPU +20% on
/// /usr/include). `read` gives each item's file whole, with its MD5 when
/// that is known already (then it is not hashed again), or why not.
pub fn read_small_files<T, F>(items: Vec<T>, read: F) -> tokio::sync::mpsc::Receiver<Vec<ReadSmall>>
where
    T: Send + 'static,
    F: Fn(T) -> Result<(Outgoing, Option<Md5Hex>), (String, String)> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(READ_AHEAD);
    tokio::task::spawn_blocking(move || {
        let mut batch = HashBatch::new();
        let mut ready: Vec<ReadSmall> = Vec::new();
        // Bytes of the bodies in `ready`: a batch of files whose digests
        // are known is bounded as a batch to hash is (128 remembered files
        // of 1 MiB once made a server hold 334 MiB).
        let mut ready_bytes = 0;
        let send = |batch: &mut HashBatch<Outgoing>, ready: &mut Vec<ReadSmall>| {
            ready.extend(batch.hash().into_iter().map(Ok));
            // The receiving side only goes away on a connection error,
            // which it reports.
            tx.blocking_send(std::mem::take(ready)).is_ok()
        };
        for item in items {
            let full = match read(item) {
                Ok((file, Some(md5))) => {
                    ready_bytes += file.body.len();
                    ready.push(Ok((file, md5)));
                    HashBatch::<Outgoing>::full(ready.len(), ready_bytes)
                }
                Ok((file, None)) => batch.push(file),
                Err(why) => {
                    ready.push(Err(why));
                    false
                }
            };
            if full {
                ready_bytes = 0;
                if !send(&mut batch, &mut ready) {
                    return;
                }
            }
        }
        send(&mut batch, &mut ready);
    });
    rx
}

/// [`read_small_files`]' reader for a local file: `data`, path and size.
pub fn read_local(
    (data, path, size): (Data, std::path::PathBuf, u64),
) -> Result<(Outgoing, Option<Md5Hex>), (String, String)> {
    let read =
        std::fs::File::open(&path).and_then(|f| crate::transfer::read_whole(f, size, super::WHOLE_MAX));
    match read {
        Ok(Some(body)) => Ok((Outgoing { data, body, stamp: None }, None)),
        Ok(None) => Err((data.filename, "it grew while being sent; skipped".to_string())),
        Err(e) => Err((data.filename, crate::error::plain_io(&e))),
    }
}
/// Streams one file: `len` bytes of `file` from where it stands (file
/// offset `data.offset`, after parts of digest `prefix` when resumed) as
/// parts, then its `done` frame with the digest over all the parts, whose
/// digests `digests` knows or are hashed on the way, keeping them when the
/// file has at most `collect` parts. Returns what was sent.
/// The outer error is the connection's; the inner one a file that could
/// not be read to its announced length (the body cannot be completed, so
/// the caller must end the connection).
pub async fn send_large<W, M>(
    writer: &mut FrameWriter<W, M>,
    data: Data,
    (file, len): (std::fs::File, u64),
    (prefix, digests): (PartsDigest, Digest),
    collect: usize,
    bar: &dyn Progress,
) -> Result<Result<Sent, CopyError>, ConnError>
where
    W: AsyncWrite + Unpin,
    M: Common,
{
    let filename = data.filename.clone();
    let from = data.offset.unwrap_or(0);
    let how = Sending { head: data, from, len, prefix, digests, collect, whole: false, bar };
    let sent = match send_parts(file, how, writer).await {
        Ok(sent) => sent,
        Err(CopyError::Write { source, .. }) => return Err(ConnError::Io(source)),
        Err(failed) => return Ok(Err(failed)),
    };
    let done = Done { filename, md5: Some(sent.digest.finish()), whole: None };
    writer.write(&done.into()).await?;
    Ok(Ok(sent))
}
