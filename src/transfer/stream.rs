//! Streaming a file body of an exact length as parts, each behind its own
//! `data` header with its MD5, many parts hashed at once in SIMD lanes.
//!
//! Each direction is a pipeline joined by bounded channels of reused
//! buffers, each a batch of up to [`BATCH`] parts, so a side is limited by
//! its slowest stage rather than the sum of them, and memory stays at
//! [`BUFFERS`] batches whatever the size:
//!
//! - sending ([`send_parts`]): a blocking thread reads a batch and hashes
//!   its parts together (or takes the digests the server remembers), the
//!   async task writes each part behind its header;
//! - receiving ([`receive_parts`]): the async task reads parts from the
//!   socket into a batch (verified early when the network makes it wait),
//!   a blocking thread verifies the batch's parts together, a second writes
//!   the verified bytes to the file, so a partial only ever holds verified
//!   whole parts.
//!
//! One MD5 stream runs at 0.74 GB/s here and was the longest stage of every
//! transfer (1 GiB put 2.7-3.1 s); 32 parts side by side hash at 6.5 GB/s
//! with AVX-512 and 2.9 with AVX2 (examples/md5_lanes.rs).

use super::Progress;
use crate::connection::{FrameReader, FrameWriter};
use crate::digest::parts::BATCH;
use crate::digest::{md5_many, Md5, PartsDigest};
use crate::error::ConnError;
use crate::protocol::{Common, Data, Md5Hex, PART};
use bytes::BytesMut;
use std::future::Future;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::task::Poll;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::mpsc;

/// Batches in flight per transfer: one being filled (from the file, or
/// from the socket) while the other is hashed and sent, or verified and
/// written; 8 MiB at most per transfer. A third was no faster (1 GiB get
/// to /dev/null 0.823 s with three, 0.825 with two; put into tmpfs 1.41
/// and 1.11, medians of 6) and cost the server 4 MiB of its peak.
pub const BUFFERS: usize = 2;

/// Bodies up to this size are read or written on the async task itself:
/// for a small file the hop to a blocking thread and back costs more than
/// the I/O (a page-cache copy of at most 64 KiB, a few microseconds).
/// Measured on /usr/include (7,911 files, 14 KiB on average): see
/// BENCHMARKS.md.
pub const INLINE_MAX: u64 = 64 * 1024;

/// Bytes in a full batch of parts.
const BATCH_BYTES: usize = BATCH * PART as usize;

/// A copy that stopped before the end.
#[derive(Debug, Error)]
pub enum CopyError {
    /// Reading the source failed.
    #[error("read failed after {done} bytes: {source}")]
    Read {
        /// Bytes read before the failure.
        done: u64,
        /// What went wrong.
        source: io::Error,
    },
    /// The source ended before the announced length.
    #[error("source ended after {done} of {expected} bytes")]
    Short {
        /// Bytes read.
        done: u64,
        /// Bytes announced.
        expected: u64,
    },
    /// Writing the destination failed.
    #[error("write failed after {done} bytes: {source}")]
    Write {
        /// Bytes taken from the source before the failure.
        done: u64,
        /// What went wrong.
        source: io::Error,
    },
}

/// The buffers of one transfer, cut on first need from one allocation made
/// for them all, then passed back and forth, so a small file costs a small
/// allocation and a large one [`BUFFERS`] batches. One allocation of 8 MiB
/// is mapped for the transfer and unmapped after it; a receiver's 64 parts
/// allocated one by one stayed in the allocator's arena once freed, and a
/// server that had taken one large put held 8.6 MiB more from then on,
/// which the next transfer's peak stood on (malloc_stats: 8.59 MB of the
/// arena's memory, 0.1 MB of it in use).
struct Pool {
    /// What is not cut yet: room for the buffers not yet handed out.
    uncut: BytesMut,
    /// Buffers still to be cut from it.
    left: usize,
    /// Capacity of each buffer: a batch, or the whole body if smaller.
    size: usize,
    /// Buffers the consuming stage has finished with.
    returned: mpsc::UnboundedReceiver<BytesMut>,
}

impl Pool {
    /// [`BUFFERS`] buffers of a batch each, or one of `len` if smaller.
    fn new(len: u64) -> (Pool, mpsc::UnboundedSender<BytesMut>) {
        let size = len.min(BATCH_BYTES as u64);
        Pool::sized(size, if len > size { BUFFERS } else { 1 })
    }

    /// `most` buffers of `size` bytes.
    fn sized(size: u64, most: usize) -> (Pool, mpsc::UnboundedSender<BytesMut>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let size = size as usize;
        (Pool { uncut: BytesMut::with_capacity(size * most), left: most, size, returned: rx }, tx)
    }

    /// A returned buffer, or a fresh one while there is room for one.
    fn fresh(&mut self) -> Option<BytesMut> {
        if let Ok(b) = self.returned.try_recv() {
            return Some(b);
        }
        (self.left > 0).then(|| {
            self.left -= 1;
            let rest = self.uncut.split_off(self.size);
            std::mem::replace(&mut self.uncut, rest)
        })
    }

    /// An empty buffer, waiting (async) for one to come back if all are out.
    async fn take(&mut self) -> Option<BytesMut> {
        match self.fresh() {
            Some(b) => Some(b),
            None => self.returned.recv().await,
        }
    }

    /// The same, from a blocking thread.
    fn take_blocking(&mut self) -> Option<BytesMut> {
        match self.fresh() {
            Some(b) => Some(b),
            None => self.returned.blocking_recv(),
        }
    }
}

/// Reads a whole file of at most `max` bytes into memory; `Ok(None)` if
/// it holds more than that. `size` is what the file is expected to hold,
/// to size the buffer once.
pub fn read_whole(file: impl Read, size: u64, max: u64) -> io::Result<Option<Vec<u8>>> {
    let mut body = Vec::with_capacity(size.min(max) as usize);
    file.take(max + 1).read_to_end(&mut body)?;
    Ok((body.len() as u64 <= max).then_some(body))
}

/// Where a sent body's part digests come from.
#[derive(Clone)]
pub enum Digest {
    /// Hashed from the bytes as they are read.
    Compute,
    /// Known already: the digest of every part of the file, remembered
    /// since all its bytes were last hashed and unchanged since. The
    /// receiver checks the bytes against them all the same.
    Known(Arc<[[u8; 16]]>),
}

/// What [`send_parts`] sent.
pub struct Sent {
    /// The file's digest over its parts, the prefix's included.
    pub digest: PartsDigest,
    /// Every part's digest, when the whole file was sent and hashed here
    /// (for the server to remember); at most `collect` of them.
    pub parts: Option<Vec<[u8; 16]>>,
    /// The plain MD5 of the whole file, prefix included, when asked for.
    pub whole: Option<Md5Hex>,
}

/// How [`send_parts`] sends a body.
pub struct Sending<'a> {
    /// The first part's header: which file, and its mode and time; each
    /// part's offset and MD5 are filled in.
    pub head: Data,
    /// Where in the file the body starts: a whole number of parts, those
    /// before it known to the receiver already.
    pub from: u64,
    /// Bytes to send from there.
    pub len: u64,
    /// The digest of the parts before `from`.
    pub prefix: PartsDigest,
    /// Where the part digests come from.
    pub digests: Digest,
    /// Keep the part digests for the caller when there are at most this
    /// many (0: never).
    pub collect: usize,
    /// Also compute the plain MD5 of the whole file, on a thread of its own.
    pub whole: bool,
    /// Told of the bytes sent.
    pub bar: &'a dyn Progress,
}

/// One batch read: its bytes, where they start in the file, and the
/// digest of each part.
struct Batch {
    /// Up to [`BATCH`] parts, back to back.
    buf: BytesMut,
    /// The file offset of the first.
    at: u64,
    /// One digest per part.
    digests: Vec<[u8; 16]>,
}

/// The part digests of `bytes` (starting at file offset `at`), from `known`
/// or hashed together.
fn digests_of(bytes: &[u8], at: u64, known: &Digest) -> Vec<[u8; 16]> {
    let parts: Vec<&[u8]> = bytes.chunks(PART as usize).collect();
    let first = (at / PART) as usize;
    // Known digests are of this very version of the file, so of as many
    // parts; any other count is hashed rather than trusted.
    match known {
        Digest::Known(all) if all.len() >= first + parts.len() => all[first..first + parts.len()].to_vec(),
        _ => md5_many(&parts).iter().map(Md5Hex::to_digest).collect(),
    }
}

/// Reads exactly `buf.len()` bytes of `file`, counting from `done`.
fn fill(file: &mut std::fs::File, buf: &mut [u8], done: u64, expected: u64) -> Result<(), CopyError> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => return Err(CopyError::Short { done: done + filled as u64, expected }),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => return Err(CopyError::Read { done: done + filled as u64, source }),
        }
    }
    Ok(())
}

/// The plain MD5 of a file being sent, for `--md5`: the `from` bytes
/// before the body read with `pread` (a resume's prefix), then each batch's
/// bytes once it is sent, in order, each buffer given back to the reader
/// after. Hashing the buffers already read, rather than the file a second
/// time, spares the one sequential MD5 (the longest job) a second copy of
/// every byte; and since it holds a buffer until it is hashed, the parts
/// are never sent more than the pool's batches ahead of it: left to race
/// ahead they were sent long before it ended, sharing both cores with it
/// and then leaving one idle while it finished alone (put --md5 of 1 GiB,
/// medians of 6: 2.19 s racing, 1.96 paced). Blocking.
fn hash_whole(
    file: &std::fs::File,
    from: u64,
    mut sent: mpsc::UnboundedReceiver<BytesMut>,
    give_back: &mpsc::UnboundedSender<BytesMut>,
) -> io::Result<Md5Hex> {
    use std::os::unix::fs::FileExt;
    let mut md5 = Md5::new();
    let mut buf = vec![0u8; from.min(PART) as usize];
    let mut at = 0u64;
    while at < from {
        let want = (from - at).min(buf.len() as u64) as usize;
        file.read_exact_at(&mut buf[..want], at)?;
        md5.update(&buf[..want]);
        at += want as u64;
    }
    while let Some(batch) = sent.blocking_recv() {
        md5.update(&batch);
        // The reader may have finished; then the buffer is simply freed.
        let _ = give_back.send(batch);
    }
    Ok(md5.finish())
}

/// A socket failure as the I/O error it is.
fn conn_io(e: ConnError) -> io::Error {
    match e {
        ConnError::Io(e) => e,
        other => io::Error::other(other.to_string()),
    }
}

/// Sends `how.len` bytes of `file` from its current position (file offset
/// `how.from`) as `data` frames of one part each to `writer`, then flushes
/// it; the caller sends `done` with the returned digest.
pub async fn send_parts<W, M>(
    file: std::fs::File,
    how: Sending<'_>,
    writer: &mut FrameWriter<W, M>,
) -> Result<Sent, CopyError>
where
    W: AsyncWrite + Unpin,
    M: Common,
{
    let Sending { head, from, len, mut prefix, digests, collect, whole, bar } = how;
    let (mut pool, give_back) = Pool::new(len);
    // With --md5, each batch sent goes on to the whole-file MD5, which
    // gives its buffer back to the pool.
    let (to_hash, whole) = match whole {
        true => {
            let file = file.try_clone().map_err(|source| CopyError::Read { done: 0, source })?;
            let (to_hash, sent) = mpsc::unbounded_channel();
            let give_back = give_back.clone();
            let hashing = tokio::task::spawn_blocking(move || hash_whole(&file, from, sent, &give_back));
            (Some(to_hash), Some(hashing))
        }
        false => (None, None),
    };
    // Where a buffer goes once its parts are sent: to the whole MD5, or
    // straight back (also when hashing has failed, which the end reports,
    // so the reader is never left waiting for a buffer).
    let done_with = |buf: BytesMut| {
        let buf = match &to_hash {
            Some(hashing) => match hashing.send(buf) {
                Ok(()) => return,
                Err(unsent) => unsent.0,
            },
            None => buf,
        };
        let _ = give_back.send(buf);
    };
    let mut collected = (from == 0 && len.div_ceil(PART) <= collect as u64).then(Vec::new);
    let mut first = Some(head);
    let filename = first.as_ref().map(|h| h.filename.clone()).unwrap_or_default();
    let mut sent = 0u64;
    let mut send_batch = async |batch: &Batch, writer: &mut FrameWriter<W, M>| -> Result<(), CopyError> {
        // An empty body is one empty part, which says there is nothing more.
        let parts: Vec<&[u8]> = match batch.buf.is_empty() {
            true => vec![&[]],
            false => batch.buf.chunks(PART as usize).collect(),
        };
        for (i, (part, digest)) in parts.into_iter().zip(&batch.digests).enumerate() {
            let data = Data {
                md5: Some(Md5Hex::from_digest(digest)),
                offset: Some(batch.at + i as u64 * PART),
                ..first.take().unwrap_or_else(|| Data { filename: filename.clone(), ..Data::default() })
            };
            // Packed, parts go in stretches of several (see
            // `connection::PACKED_QUEUE_MAX`); the end flushes them.
            let written = match writer.compressing() {
                true => writer.queue(&data.into(), part).await,
                false => writer.write_frame(&data.into(), part).await,
            };
            written.map_err(|e| CopyError::Write { done: sent, source: conn_io(e) })?;
            if !part.is_empty() {
                prefix.push(digest);
                if let Some(c) = collected.as_mut() {
                    c.push(*digest);
                }
            }
            sent += part.len() as u64;
            bar.advance(part.len() as u64);
        }
        Ok(())
    };

    if len <= INLINE_MAX {
        // One part (or none, said by an empty one): read and hashed here.
        let mut file = file;
        // The pool's one buffer, already allocated at the body's size.
        let mut buf = pool.fresh().expect("a new pool has a buffer");
        buf.resize(len as usize, 0);
        fill(&mut file, &mut buf, 0, len)?;
        let digests = match len {
            0 => vec![Md5::new().finish().to_digest()],
            _ => digests_of(&buf, from, &digests),
        };
        let batch = Batch { buf, at: from, digests };
        send_batch(&batch, writer).await?;
        done_with(batch.buf);
    } else {
        let (to_send, mut rx) = mpsc::channel::<Batch>(BUFFERS - 1);
        let reader = tokio::task::spawn_blocking(move || -> Result<(), CopyError> {
            let mut file = file;
            let mut done = 0u64;
            while done < len {
                let Some(mut buf) = pool.take_blocking() else { break };
                let want = (len - done).min(BATCH_BYTES as u64) as usize;
                buf.resize(want, 0);
                fill(&mut file, &mut buf, done, len)?;
                let at = from + done;
                let digests = digests_of(&buf, at, &digests);
                done += want as u64;
                if to_send.blocking_send(Batch { buf, at, digests }).is_err() {
                    // The socket failed; the sending side reports why.
                    break;
                }
            }
            Ok(())
        });
        while let Some(batch) = rx.recv().await {
            if let Err(e) = send_batch(&batch, writer).await {
                drop(rx);
                let _ = reader.await;
                return Err(e);
            }
            done_with(batch.buf);
        }
        reader.await.expect("the reading thread does not panic")?;
    }
    writer.flush().await.map_err(|e| CopyError::Write { done: sent, source: conn_io(e) })?;
    // Every batch is sent: the whole MD5 has all it will get.
    drop(to_hash);
    let whole = match whole {
        Some(hashing) => Some(
            hashing
                .await
                .expect("the hashing thread does not panic")
                .map_err(|source| CopyError::Read { done: sent, source })?,
        ),
        None => None,
    };
    Ok(Sent { digest: prefix, parts: collected, whole })
}

/// What a receiver offers to resume: the first `offset` bytes of its
/// partial, whole parts, with their digest over the parts and, when it sent
/// them, each part's own.
#[derive(Debug, Clone, Default)]
pub struct Offer {
    /// Bytes offered: a whole number of parts (0: nothing).
    pub offset: u64,
    /// Their digest over the parts.
    pub md5: Option<Md5Hex>,
    /// Each part's digest, in order (empty: only `md5` was sent).
    pub parts: Vec<[u8; 16]>,
}

/// Where a sender of a `len`-byte `file` starts, given the receiver's
/// `offer`: after the longest run of leading parts whose digests are those
/// of our own first parts (hashed from the bytes here, never taken from
/// what is remembered), when the offer lists them; else after all `offered`
/// bytes when the digest over our first parts is its `md5`; else at 0. An
/// offer that is not whole parts within the file starts over. Returns the
/// offset, the file positioned there, and the digest of the parts before
/// it. Blocking: parts are read and hashed a batch at a time, up to the
/// first that differs.
pub fn resume_point(
    mut file: std::fs::File,
    len: u64,
    offer: &Offer,
) -> io::Result<(std::fs::File, u64, PartsDigest)> {
    let offered = offer.offset;
    let usable = offered > 0 && offered <= len && offered.is_multiple_of(PART);
    if usable && offer.parts.len() as u64 == offered / PART {
        let matched = matching_parts(&mut file, &offer.parts)?;
        let at = matched as u64 * PART;
        io::Seek::seek(&mut file, io::SeekFrom::Start(at))?;
        return Ok((file, at, PartsDigest::of(&offer.parts[..matched])));
    }
    if let Some(theirs) = offer.md5.as_ref().filter(|_| usable && offer.parts.is_empty()) {
        let prefix = crate::digest::parts_of(&mut file, offered)?;
        if prefix.finish() == *theirs {
            return Ok((file, offered, prefix));
        }
    }
    io::Seek::rewind(&mut file)?;
    Ok((file, 0, PartsDigest::new()))
}

/// How many of `theirs` are the digests of `file`'s first parts, in order:
/// read and hashed from the start a batch at a time, stopping at the batch
/// where one differs. The file must hold all the parts.
fn matching_parts(file: &mut std::fs::File, theirs: &[[u8; 16]]) -> io::Result<usize> {
    io::Seek::rewind(file)?;
    let mut matched = 0;
    crate::digest::for_each_part_while(file, theirs.len() as u64 * PART, |ours| {
        let same = *ours == theirs[matched];
        matched += same as usize;
        same
    })?;
    Ok(matched)
}

/// What [`receive_parts`] received, every part verified.
pub struct Received {
    /// The file's digest over its parts, the prefix's included.
    pub digest: PartsDigest,
    /// Body bytes received.
    pub bytes: u64,
    /// The `done` frame that ended the body.
    pub done: crate::protocol::Done,
}

impl Received {
    /// The file's digest over its parts when it is what `done` says; else
    /// the digest of what arrived.
    pub fn agreed(&self) -> Result<Md5Hex, Md5Hex> {
        let md5 = self.digest.finish();
        match self.done.md5.as_ref() == Some(&md5) {
            true => Ok(md5),
            false => Err(md5),
        }
    }
}

/// What arrived, in words, where the part at `offset` failed its MD5.
pub fn part_differs(offset: u64) -> String {
    format!("other bytes in the part at byte {offset}")
}

/// Why a body was not received whole, with the connection in step, or
/// (`pending`) to be put in step by the caller.
#[derive(Debug)]
pub enum PartFailure {
    /// A part's bytes are not what its header's MD5 says (the rest was
    /// read and dropped).
    Mismatch {
        /// Where the part starts in the file.
        offset: u64,
        /// The digest its header claimed.
        sent: Option<Md5Hex>,
    },
    /// Writing the sink failed (a full disk, say). With `pending`, the
    /// rest of the body and its `done` are still to be read: the caller
    /// may tell the sender first, then [`drain`](super::drain) them.
    Write {
        /// What the OS said.
        source: io::Error,
        /// Body bytes written before the failure.
        written: u64,
        /// Whether the rest of the body is still to be read.
        pending: bool,
    },
}

/// Hands `batch` over to be verified; `false` if verifying has stopped (a
/// part failed, or the sink).
async fn verify(batch: &mut Vec<Arrived>, to_verify: &mpsc::Sender<Vec<Arrived>>) -> bool {
    to_verify.send(std::mem::take(batch)).await.is_ok()
}

/// Awaits `io` to its end; if it would wait first, hands `batch` over to be
/// verified meanwhile. Returns its output and whether verifying has stopped.
async fn verifying_while<F: Future>(
    io: F,
    batch: &mut Vec<Arrived>,
    to_verify: &mpsc::Sender<Vec<Arrived>>,
) -> (F::Output, bool) {
    let mut io = std::pin::pin!(io);
    if let Poll::Ready(out) = std::future::poll_fn(|cx| Poll::Ready(io.as_mut().poll(cx))).await {
        return (out, false);
    }
    let stopped = !batch.is_empty() && !verify(batch, to_verify).await;
    (io.await, stopped)
}

/// Reads `body` into `bytes` until it ends or `len` bytes are in; returns
/// how many came. Never asks for more room than `bytes` has: a full buffer
/// would grow out of its pool's allocation.
async fn read_part(mut body: impl AsyncRead + Unpin, bytes: &mut BytesMut, len: u64) -> io::Result<usize> {
    while (bytes.len() as u64) < len {
        if body.read_buf(bytes).await? == 0 {
            break;
        }
    }
    Ok(bytes.len())
}

/// A part received, on its way to be verified and written.
struct Arrived {
    /// Its bytes, in a buffer of the transfer's pool.
    bytes: BytesMut,
    /// The digest its header claims.
    claimed: [u8; 16],
}

/// Receives a body that starts with the part `first` (its header read,
/// `len` bytes of body to come) at file offset `at`, and every `data` frame
/// of `filename` that continues it, until its `done`; each batch of parts
/// is verified, then written to `sink` (a file at its current position, or
/// stdout) on a blocking thread. `prefix` is the digest of the parts before
/// `at`. A peer that breaks the rules of parts (a part without its MD5,
/// longer than a part, after a short one, or not where the last ended) is
/// a connection error; so is one that vanishes, after the whole verified
/// parts that did arrive are written.
pub async fn receive_parts<R, M, S>(
    reader: &mut FrameReader<R, M>,
    (first, len): (&Data, u64),
    at: u64,
    sink: S,
    prefix: PartsDigest,
    bar: &dyn Progress,
) -> Result<Result<Received, PartFailure>, ConnError>
where
    R: AsyncRead + Unpin,
    M: Common,
    S: Write + Send + 'static,
{
    let filename = first.filename.clone();
    let start = at;
    // A buffer per part: a batch being filled while the other is verified
    // and written, part by part, each buffer back as soon as written. A
    // short first part is the only one.
    let most = if len < PART { 1 } else { BUFFERS * BATCH };
    let (mut pool, give_back) = Pool::sized(len.clamp(1, PART), most);
    let (to_verify, mut verify_rx) = mpsc::channel::<Vec<Arrived>>(1);
    let (to_write, mut write_rx) = mpsc::channel::<Vec<Arrived>>(1);
    let verifier = tokio::task::spawn_blocking(move || -> Result<PartsDigest, (u64, [u8; 16])> {
        let mut digest = prefix;
        let mut at = start;
        while let Some(batch) = verify_rx.blocking_recv() {
            let bodies: Vec<&[u8]> = batch.iter().map(|p| &p.bytes[..]).collect();
            for (part, got) in batch.iter().zip(md5_many(&bodies)) {
                if got.to_digest() != part.claimed {
                    return Err((at, part.claimed));
                }
                digest.push(&part.claimed);
                at += part.bytes.len() as u64;
            }
            if to_write.blocking_send(batch).is_err() {
                break;
            }
        }
        Ok(digest)
    });
    let writer = tokio::task::spawn_blocking(move || -> Result<(), (u64, io::Error)> {
        let mut sink = sink;
        let mut written = 0u64;
        while let Some(batch) = write_rx.blocking_recv() {
            for part in batch {
                sink.write_all(&part.bytes).map_err(|e| (written, e))?;
                written += part.bytes.len() as u64;
                let _ = give_back.send(part.bytes);
            }
        }
        sink.flush().map_err(|e| (written, e))
    });

    let mut done = None;
    let mut broken = None;
    let mut stopped = false;
    let (mut header, mut len, mut at) = (first.clone(), len, at);
    let mut batch: Vec<Arrived> = Vec::with_capacity(BATCH);
    let mut last_short = false;
    loop {
        let bad = match (&header.md5, header.offset) {
            _ if header.filename != filename => Some("a part of another file"),
            (_, offset) if offset != Some(at) => Some("a part not where the last one ended"),
            (None, _) => Some("a part without its md5"),
            _ if len > PART => Some("a part longer than a part"),
            _ if last_short => Some("a part after a short one"),
            _ => None,
        };
        if let Some(bad) = bad {
            broken = Some(ConnError::BadPart(bad));
            break;
        }
        let claimed = header.md5.as_ref().map(Md5Hex::to_digest).unwrap_or_default();
        let Some(mut bytes) = pool.take().await else {
            // The writer stopped (it failed): this body is still skipped,
            // to leave the stream at a frame's start.
            if let Err(e) = reader.skip_body(len).await {
                broken = Some(e);
            }
            break;
        };
        bytes.clear();
        // Each wait on the network is time to verify what came: a receiver
        // waiting on it has time to spare for half-empty lanes, and its
        // partial keeps up with what arrived. (Verified early whenever the
        // next header was not yet buffered, batches of 1-3 parts made a 1
        // GiB get cost 1.8 s of CPU instead of 0.4-0.5.)
        // Verifying may stop here, but this body is still read whole, to
        // leave the stream at a frame's start.
        let read;
        (read, stopped) = {
            let body = reader.body(len).take(len);
            verifying_while(read_part(body, &mut bytes, len), &mut batch, &to_verify).await
        };
        match read {
            Err(e) => {
                broken = Some(ConnError::Io(e));
                break;
            }
            Ok(n) if (n as u64) < len => {
                broken = Some(ConnError::Truncated("body"));
                break;
            }
            Ok(_) if stopped => break,
            Ok(_) => {}
        }
        // An empty part says only that there are no more bytes: it is the
        // only one, and counts for none.
        if len == 0 && (at != start || !batch.is_empty()) {
            broken = Some(ConnError::BadPart("an empty part after others"));
            break;
        }
        if len > 0 {
            batch.push(Arrived { bytes, claimed });
        }
        last_short = len < PART;
        at += len;
        bar.advance(len);
        if batch.len() == BATCH && !verify(&mut batch, &to_verify).await {
            stopped = true;
            break;
        }
        // As above: the header is read whole even if verifying stops.
        let frame;
        (frame, stopped) = verifying_while(reader.expect(), &mut batch, &to_verify).await;
        let frame = match frame {
            Ok(frame) => frame,
            Err(e) => {
                broken = Some(e);
                break;
            }
        };
        match frame.msg.into_data() {
            Ok(_) if stopped => {
                if let Err(e) = reader.skip_body(frame.total_size).await {
                    broken = Some(e);
                }
                break;
            }
            Ok(data) => (header, len) = (data, frame.total_size),
            Err(other) => match other.into_done() {
                Ok(d) => {
                    if let Err(e) = reader.skip_body(frame.total_size).await {
                        broken = Some(e);
                    }
                    done = Some(d);
                    break;
                }
                Err(other) => {
                    broken =
                        Some(ConnError::Unexpected { got: other.op(), expected: "done, or the next part" });
                    break;
                }
            },
        }
    }
    // Whatever whole parts arrived are verified and written, even from a
    // peer that vanished: a resumed transfer need not send them again.
    if !stopped && !batch.is_empty() {
        let _ = to_verify.send(batch).await;
    }
    drop(to_verify);
    let verified = verifier.await.expect("the verifying thread does not panic");
    let written = writer.await.expect("the writing thread does not panic");
    if let Some(e) = broken {
        return Err(e);
    }
    let failure = match (verified, written) {
        (Err((offset, sent)), _) => PartFailure::Mismatch { offset, sent: Some(Md5Hex::from_digest(&sent)) },
        (Ok(_), Err((written, source))) => {
            return Ok(Err(PartFailure::Write { source, written, pending: done.is_none() }))
        }
        (Ok(digest), Ok(())) => match done {
            Some(done) => return Ok(Ok(Received { digest, bytes: at - start, done })),
            // Not reached: the stages stop early only when one failed.
            None => return Err(ConnError::BadPart("a body that stopped")),
        },
    };
    if done.is_none() {
        super::drain(reader, 0).await?;
    }
    Ok(Err(failure))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::parts_of;
    use crate::protocol::{ClientMessage, Done};
    use crate::transfer::NoProgress;

    type Writer = FrameWriter<tokio::io::DuplexStream, ClientMessage>;
    type Reader = FrameReader<tokio::io::DuplexStream, ClientMessage>;

    fn md5_of(data: &[u8]) -> Md5Hex {
        let mut m = Md5::new();
        m.update(data);
        m.finish()
    }

    fn temp_with(data: &[u8]) -> std::fs::File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(data).unwrap();
        io::Seek::rewind(&mut f).unwrap();
        f
    }

    /// The digest over its parts of `data`, computed through a file.
    fn parts_digest(data: &[u8]) -> Md5Hex {
        parts_of(&mut temp_with(data), data.len() as u64).unwrap().finish()
    }

    /// A sink the test can read back after the writing thread is done.
    #[derive(Clone, Default)]
    struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A pipe smaller than a batch: the receiver often finds no next
    /// header waiting, verifies what it has, and reuses its buffers.
    fn pipe() -> (Writer, Reader) {
        pipe_of(64 << 10)
    }

    fn pipe_of(size: usize) -> (Writer, Reader) {
        let (a, b) = tokio::io::duplex(size);
        (FrameWriter::new(a), FrameReader::new(b))
    }

    fn data_of(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i as u32).wrapping_mul(2_654_435_761) as u8).collect()
    }

    fn sending(from: u64, len: u64, prefix: PartsDigest, whole: bool) -> Sending<'static> {
        Sending {
            head: Data { filename: "f".into(), ..Data::default() },
            from,
            len,
            prefix,
            digests: Digest::Compute,
            collect: usize::MAX,
            whole,
            bar: &NoProgress,
        }
    }

    /// Sends `data[from..]` with `how` and receives it on the other end into
    /// a sink, after `prefix`; returns what each side made of it.
    async fn round_trip(
        file: std::fs::File,
        how: Sending<'static>,
        prefix: PartsDigest,
    ) -> (Result<Sent, CopyError>, Result<Result<Received, PartFailure>, ConnError>, Vec<u8>) {
        let (mut writer, mut reader) = pipe();
        let from = how.from;
        let send = async move {
            let sent = send_parts(file, how, &mut writer).await;
            if let Ok(sent) = &sent {
                let done =
                    Done { filename: "f".into(), md5: Some(sent.digest.finish()), whole: sent.whole.clone() };
                writer.write(&done.into()).await.unwrap();
                // The next request, which the receiver must find in step.
                writer.write(&ClientMessage::Df).await.unwrap();
            }
            // A failed sender hangs up.
            sent
        };
        let sink = Shared::default();
        let receive = async {
            let first = reader.expect().await?;
            let ClientMessage::Data(data) = first.msg else { panic!("a data frame first") };
            let got = receive_parts(
                &mut reader,
                (&data, first.total_size),
                from,
                sink.clone(),
                prefix,
                &NoProgress,
            )
            .await;
            if got.is_ok() {
                let next = reader.expect().await.map(|f| f.msg);
                assert!(matches!(next, Ok(ClientMessage::Df)), "the stream is in step after the body");
            }
            got
        };
        let (sent, received) = tokio::join!(send, receive);
        let bytes = sink.0.lock().unwrap().clone();
        (sent, received, bytes)
    }

    #[tokio::test]
    async fn bodies_of_every_size_edge_arrive_whole_with_the_digest_over_their_parts() {
        let p = PART as usize;
        let data = data_of(100 * p + 3);
        for len in [0, 1, p - 1, p, p + 1, 2 * p, 33 * p + 7, 100 * p + 3] {
            let body = &data[..len];
            let (sent, received, bytes) = round_trip(
                temp_with(body),
                sending(0, len as u64, PartsDigest::new(), true),
                PartsDigest::new(),
            )
            .await;
            let sent = sent.unwrap();
            let received = received.unwrap().unwrap();
            assert!(bytes == body, "{len} bytes");
            assert_eq!(sent.digest.finish(), parts_digest(body), "{len} bytes");
            assert_eq!(received.digest.finish(), sent.digest.finish(), "{len} bytes");
            assert_eq!(received.bytes, len as u64);
            assert_eq!(sent.parts.map(|p| p.len() as u64), Some((len as u64).div_ceil(PART)), "collected");
            assert_eq!(received.done.whole, Some(md5_of(body)), "--md5: the plain MD5 of all of it");
        }
    }

    #[tokio::test]
    async fn a_resumed_body_continues_the_digest_of_the_parts_before_it() {
        let data = data_of(5 * PART as usize + 99);
        let from = 2 * PART;
        let mut file = temp_with(&data);
        let prefix = parts_of(&mut file, from).unwrap();
        let len = data.len() as u64 - from;
        let (sent, received, bytes) =
            round_trip(file, sending(from, len, prefix.clone(), true), prefix.clone()).await;
        let (sent, received) = (sent.unwrap(), received.unwrap().unwrap());
        assert!(bytes == data[from as usize..]);
        assert_eq!(received.digest.finish(), parts_digest(&data));
        assert_eq!(sent.digest.finish(), parts_digest(&data));
        assert_eq!(sent.whole, Some(md5_of(&data)), "the whole file's MD5, prefix included");
        assert!(sent.parts.is_none(), "a resumed body has not seen every part");
    }

    #[tokio::test]
    async fn a_pools_buffers_are_cut_from_one_allocation_and_parts_never_outgrow_them() {
        let (mut pool, give_back) = Pool::sized(PART, 3);
        let mut cut = Vec::new();
        for _ in 0..3 {
            cut.push(pool.take().await.unwrap());
        }
        // Back to back in one allocation, each of a part: freed together,
        // the allocation goes back whole.
        for pair in cut.windows(2) {
            assert_eq!(pair[1].as_ptr(), pair[0].as_ptr().wrapping_add(PART as usize));
        }
        assert!(cut.iter().all(|b| b.capacity() == PART as usize));
        assert!(pool.fresh().is_none(), "no more than `most`");
        // A whole part read into one stays in it, reading past it or not.
        let data = data_of(PART as usize + 10);
        let mut buf = cut.pop().unwrap();
        let at = buf.as_ptr();
        assert_eq!(read_part(&data[..], &mut buf, PART).await.unwrap(), PART as usize);
        assert_eq!((buf.as_ptr(), buf.capacity()), (at, PART as usize), "not moved or grown");
        assert_eq!(&buf[..], &data[..PART as usize]);
        // A short body is what there is.
        buf.clear();
        assert_eq!(read_part(&data[..5], &mut buf, PART).await.unwrap(), 5);
        // Given back, a buffer is handed out again.
        give_back.send(buf).unwrap();
        assert_eq!(pool.take().await.unwrap().as_ptr(), at);
        // A body smaller than a batch gets one buffer of its size.
        let (mut small, _back) = Pool::new(100);
        assert_eq!(small.fresh().unwrap().capacity(), 100);
        assert!(small.fresh().is_none());
    }

    #[test]
    fn the_whole_md5_reads_the_prefix_then_hashes_the_batches_sent_and_gives_them_back() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"prefix:").unwrap();
        let (to_hash, sent) = mpsc::unbounded_channel();
        let (give_back, mut returned) = mpsc::unbounded_channel();
        to_hash.send(BytesMut::from(&b"one "[..])).unwrap();
        to_hash.send(BytesMut::from(&b"two"[..])).unwrap();
        drop(to_hash);
        let md5 = hash_whole(&f, 7, sent, &give_back).unwrap();
        assert_eq!(md5, md5_of(b"prefix:one two"));
        assert_eq!(returned.try_recv().unwrap(), &b"one "[..], "each buffer back, in order");
        assert_eq!(returned.try_recv().unwrap(), &b"two"[..]);
        // A prefix longer than the file: the read fails, and says so.
        let (_to_hash, sent) = mpsc::unbounded_channel();
        assert!(hash_whole(&f, 8, sent, &give_back).is_err());
    }

    #[test]
    fn resuming_goes_on_after_the_leading_parts_that_match() {
        let data = data_of(70 * PART as usize + 5);
        let digests: Vec<[u8; 16]> = data.chunks(PART as usize).map(|p| md5_of(p).to_digest()).collect();
        let at = |offer: Offer| {
            let (mut file, at, prefix) = resume_point(temp_with(&data), data.len() as u64, &offer).unwrap();
            assert_eq!(io::Seek::stream_position(&mut file).unwrap(), at, "positioned where it resumes");
            assert_eq!(prefix.finish(), PartsDigest::of(&digests[..(at / PART) as usize]).finish());
            at
        };
        let listing = |n: usize, differs: Option<usize>| {
            let mut parts = digests[..n].to_vec();
            if let Some(i) = differs {
                parts[i][0] ^= 1;
            }
            Offer { offset: n as u64 * PART, md5: None, parts }
        };
        assert_eq!(at(listing(40, None)), 40 * PART, "every part offered is ours");
        assert_eq!(at(listing(70, None)), 70 * PART, "up to the last whole part");
        // A part that differs: inside the first batch, at a batch's edge,
        // just after, and the last offered.
        for i in [0, 5, 31, 32, 33, 69] {
            assert_eq!(at(listing(70, Some(i))), i as u64 * PART, "part {i} differs");
        }
        // A list of another count than the offset says is not trusted.
        let mut odd = listing(40, None);
        odd.offset = 41 * PART;
        assert_eq!(at(odd), 0);
        // Without a list, all of the offer or nothing, by its digest.
        let whole =
            |n: usize, md5: Md5Hex| Offer { offset: n as u64 * PART, md5: Some(md5), parts: Vec::new() };
        assert_eq!(at(whole(3, PartsDigest::of(&digests[..3]).finish())), 3 * PART);
        assert_eq!(at(whole(3, PartsDigest::of(&digests[..2]).finish())), 0);
        // Offers that are not whole parts within the file start over.
        assert_eq!(at(Offer { offset: PART + 1, md5: None, parts: Vec::new() }), 0);
        let mut longer = listing(70, None);
        longer.parts.push([0; 16]);
        longer.offset = 71 * PART;
        assert_eq!(at(longer), 0);
    }

    #[tokio::test]
    async fn a_stale_known_digest_is_caught_by_the_receiver() {
        // Many parts behind the stale one: the receiver stops verifying
        // while they still flow, and must read them out to stay in step.
        let data = data_of(100 * PART as usize);
        let mut wrong: Vec<[u8; 16]> = data.chunks(PART as usize).map(|c| md5_of(c).to_digest()).collect();
        wrong[1][0] ^= 1;
        let how = Sending {
            digests: Digest::Known(wrong.into()),
            ..sending(0, data.len() as u64, PartsDigest::new(), false)
        };
        let (sent, received, bytes) = round_trip(temp_with(&data), how, PartsDigest::new()).await;
        assert!(sent.is_ok());
        match received.unwrap() {
            Err(PartFailure::Mismatch { offset, .. }) => assert_eq!(offset, PART),
            other => panic!("{:?}", other.map(|r| r.bytes)),
        }
        assert!(bytes.len() < data.len(), "nothing of the batch that failed was written");
    }

    /// Frames of a body written by hand: each `(offset, md5, bytes)`.
    async fn receive_frames(
        parts: &[(u64, Option<Md5Hex>, Vec<u8>)],
    ) -> Result<Result<u64, PartFailure>, ConnError> {
        // Room for all of it: it is written before it is read.
        let (mut writer, mut reader) = pipe_of(4 << 20);
        for (offset, md5, bytes) in parts {
            let data =
                Data { filename: "f".into(), offset: Some(*offset), md5: md5.clone(), ..Data::default() };
            writer.write_frame(&data.into(), bytes).await.unwrap();
        }
        writer.write(&Done { filename: "f".into(), md5: None, whole: None }.into()).await.unwrap();
        writer.write(&ClientMessage::Df).await.unwrap();
        let first = reader.expect().await?;
        let ClientMessage::Data(data) = first.msg else { panic!() };
        let got = receive_parts(
            &mut reader,
            (&data, first.total_size),
            0,
            Shared::default(),
            PartsDigest::new(),
            &NoProgress,
        )
        .await?;
        // Whatever happened to the body, the connection is in step.
        assert_eq!(reader.expect().await.unwrap().msg, ClientMessage::Df);
        Ok(got.map(|r| r.bytes))
    }

    #[tokio::test]
    async fn a_damaged_part_is_refused_and_parts_against_the_rules_break_the_connection() {
        let full = data_of(PART as usize);
        let good = |at: u64, b: &[u8]| (at, Some(md5_of(b)), b.to_vec());
        assert_eq!(receive_frames(&[good(0, &full), good(PART, b"end")]).await.unwrap().unwrap(), PART + 3);
        let mut damaged = good(PART, b"end");
        damaged.2[0] ^= 1;
        let got = receive_frames(&[good(0, &full), damaged]).await.unwrap();
        assert!(matches!(got, Err(PartFailure::Mismatch { offset, .. }) if offset == PART), "{got:?}");
        let long = data_of(PART as usize + 1);
        for (bad, why) in [
            (vec![(0, None, b"x".to_vec())], "without its md5"),
            (vec![good(0, &long)], "longer than a part"),
            (vec![good(0, b"short"), good(5, b"more")], "after a short one"),
            (vec![good(0, &full), good(PART + 1, b"x")], "not where the last one ended"),
        ] {
            let got = receive_frames(&bad).await;
            assert!(matches!(&got, Err(ConnError::BadPart(w)) if w.contains(why)), "{why}: {:?}", got);
        }
    }

    #[tokio::test]
    async fn short_sources_and_full_sinks_are_errors() {
        let how = sending(0, 10, PartsDigest::new(), false);
        let (sent, _, _) = round_trip(temp_with(b"abc"), how, PartsDigest::new()).await;
        assert!(matches!(sent, Err(CopyError::Short { done: 3, expected: 10 })), "{:?}", sent.err());
        let how = sending(0, 3 * PART, PartsDigest::new(), false);
        let (sent, _, _) = round_trip(temp_with(&data_of(PART as usize)), how, PartsDigest::new()).await;
        assert!(matches!(sent, Err(CopyError::Short { .. })), "{:?}", sent.err());

        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::from(io::ErrorKind::StorageFull))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let data = data_of(3 * PART as usize);
        let (mut writer, mut reader) = pipe();
        let send = async {
            let how = sending(0, data.len() as u64, PartsDigest::new(), false);
            let _ = send_parts(temp_with(&data), how, &mut writer).await;
            let _ = writer.write(&Done::default().into()).await;
        };
        let receive = async {
            let first = reader.expect().await.unwrap();
            let ClientMessage::Data(d) = first.msg else { panic!() };
            receive_parts(&mut reader, (&d, first.total_size), 0, Full, PartsDigest::new(), &NoProgress).await
        };
        let (_, got) = tokio::join!(send, receive);
        assert!(
            matches!(got, Ok(Err(PartFailure::Write { ref source, .. })) if source.kind() == io::ErrorKind::StorageFull)
        );
    }
}
