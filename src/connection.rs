//! The only code that touches a connection's bytes: frames in, frames out,
//! bodies streamed, all inside TLS.
//!
//! A [`Connection`] splits into a [`FrameReader`] and a [`FrameWriter`] so
//! that one task can send (stdin, a file body) while another receives.

use crate::error::ConnError;
use crate::protocol::envelope::{EnvelopeError, Packer, Unpacker, ENVELOPE_MAX};
use crate::protocol::{
    self, parts_of_body, ClientMessage, Common, Frame, FrameError, Md5Hex, Message, ServerMessage,
    OFFER_MOST_PARTS,
};
use bytes::BytesMut;
use std::future::Future;
use std::io::{self, Cursor};
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf, ReadHalf, WriteHalf};
use tokio::time::Sleep;

/// Bytes asked of the socket per read. A tree's small files arrive as
/// runs of header + body + header frames, and one read of 64 KiB takes in
/// several of them (8 KiB cost a read and a wake-up per file: server
/// recvfrom calls per /usr/include tree 6,116 with 8 KiB). The buffer grows
/// past this only while a header is larger, up to
/// [`protocol::MAX_HEADER_LEN`].
const READ_BUF: usize = 64 * 1024;

/// Bodies up to this size are sent in the same write as their header, so a
/// small exec output chunk costs one syscall and one TCP segment.
const COALESCE_MAX: usize = 16 * 1024;

/// Receives frames of messages `M` from one peer.
pub struct FrameReader<R, M> {
    /// The socket's read half (or any byte stream in tests).
    inner: R,
    /// Bytes read from `inner` but not yet consumed: the start of the next
    /// header, or the first bytes of a body read along with its header.
    buf: BytesMut,
    /// How long to wait for the next header before giving up on the peer.
    idle: Option<Duration>,
    /// Whether `zstd` envelopes are taken: only once the peer has
    /// authenticated (nobody unknown makes us decompress).
    envelopes: bool,
    /// Unpacks them, made at the first: a connection that never sends one
    /// never allocates its decompression context.
    unpacker: Option<Unpacker>,
    /// Bytes at the front of `buf` that came out of an envelope, where
    /// another envelope is refused.
    unpacked: usize,
    /// The direction's messages: what this reader decodes.
    messages: PhantomData<fn() -> M>,
}

/// Queued frames are sent once this many bytes wait: a tree's thousands of
/// small files then cost one write and one wake-up of the peer per batch
/// instead of three per file (server sendto calls per /usr/include tree,
/// strace -c: 7,916 before, 47 after). Large enough for ~20 files of
/// /usr/include's 14 KiB average; other sizes were not compared.
pub const QUEUE_MAX: usize = 256 * 1024;

/// The same when packing: fewer, larger envelopes (stretches packed as
/// frames of their own came 5.5 times smaller at 256 KiB and 5.8 at 1 MiB;
/// in one stream the window counts for more, see `envelope::WINDOW_LOG`).
/// Low enough that a whole small file (1 MiB) queued after it still fits
/// an envelope.
const PACKED_QUEUE_MAX: usize = 768 * 1024;

/// Sends frames of messages `M` to one peer.
pub struct FrameWriter<W, M> {
    /// The socket's write half.
    inner: W,
    /// Reused scratch space for encoding headers, so sending allocates
    /// nothing; it also holds frames queued with [`queue`](Self::queue)
    /// until the next write or [`flush`](Self::flush).
    scratch: Vec<u8>,
    /// Packs what is sent into `zstd` envelopes where smaller (`-z`, or a
    /// request that asked for it); `None` sends it as it is.
    packer: Option<Packer>,
    /// Leading bytes of `scratch` queued before packing began (the end of
    /// an earlier stream's frame among them): sent as they are.
    raw_head: usize,
    /// The direction's messages: what this writer encodes.
    messages: PhantomData<fn(M)>,
}

/// The receiving half of a connection, for messages `M`.
pub type Reader<M> = FrameReader<Idle<ReadHalf<crate::tls::Stream>>, M>;
/// The sending half of a connection, for messages `M`.
pub type Writer<M> = FrameWriter<Idle<WriteHalf<crate::tls::Stream>>, M>;

/// Both halves of a TLS connection, plus who is on the other end: messages
/// `In` arrive, messages `Out` leave.
pub struct Connection<In, Out> {
    /// Incoming frames.
    pub reader: Reader<In>,
    /// Outgoing frames.
    pub writer: Writer<Out>,
    /// The peer's address, for logs and messages.
    pub peer: SocketAddr,
}

/// The server's end: client messages in, server messages out.
pub type ServerConnection = Connection<ClientMessage, ServerMessage>;
/// The client's end: server messages in, client messages out.
pub type ClientConnection = Connection<ServerMessage, ClientMessage>;

impl<In: Message, Out: Message> Connection<In, Out> {
    /// Wraps an established TLS connection to `peer`.
    pub fn new(stream: crate::tls::Stream, peer: SocketAddr) -> Self {
        let (r, w) = tokio::io::split(stream);
        Connection { reader: FrameReader::new(Idle::new(r)), writer: FrameWriter::new(Idle::new(w)), peer }
    }

    /// Gives up on the peer when it makes no progress for `limit`: no
    /// complete header within it, or no byte of a body read or written
    /// within it. `None` waits forever.
    pub fn set_idle_timeout(&mut self, limit: Option<Duration>) {
        self.reader.set_idle_timeout(limit);
        self.reader.inner.set_limit(limit);
        self.writer.inner.set_limit(limit);
    }
}

/// A byte stream that fails with `TimedOut` when a read or write makes no
/// progress for a set time, so a stalled or vanished peer cannot hold a
/// connection (and its slot) forever, even in the middle of a body.
pub struct Idle<S> {
    /// The wrapped stream.
    inner: S,
    /// How long an operation may wait without progress; `None` is forever.
    limit: Option<Duration>,
    /// Running since the current wait began; reset by any progress.
    timer: Option<Pin<Box<Sleep>>>,
}

impl<S> Idle<S> {
    /// Wraps `inner` with no limit.
    pub fn new(inner: S) -> Self {
        Idle { inner, limit: None, timer: None }
    }

    /// Sets the limit; `None` waits forever.
    pub fn set_limit(&mut self, limit: Option<Duration>) {
        self.limit = limit;
        self.timer = None;
    }

    /// Called when the inner stream is not ready: fails once the wait has
    /// lasted `limit`.
    fn poll_stalled<T>(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<T>> {
        let Some(limit) = self.limit else { return Poll::Pending };
        let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.timer = None;
                let msg = format!("peer made no progress for {} s", limit.as_secs());
                Poll::Ready(Err(std::io::Error::new(std::io::ErrorKind::TimedOut, msg)))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// Passes a result through, clearing the timer on any progress.
    fn progressed<T>(
        &mut self,
        r: Poll<std::io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<T>> {
        match r {
            Poll::Ready(r) => {
                self.timer = None;
                Poll::Ready(r)
            }
            Poll::Pending => self.poll_stalled(cx),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Idle<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.progressed(r, cx)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Idle<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.progressed(r, cx)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.progressed(r, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.progressed(r, cx)
    }
}

impl<R: AsyncRead + Unpin, M: Message> FrameReader<R, M> {
    /// Wraps a byte stream.
    pub fn new(inner: R) -> Self {
        FrameReader {
            inner,
            buf: BytesMut::with_capacity(READ_BUF),
            idle: None,
            envelopes: false,
            unpacker: None,
            unpacked: 0,
            messages: PhantomData,
        }
    }

    /// Accepts `zstd` envelopes from now on: the peer has authenticated.
    pub fn accept_envelopes(&mut self) {
        self.envelopes = true;
    }

    /// Drops `n` bytes from the front of the buffer, consumed.
    fn consume(&mut self, n: usize) -> BytesMut {
        self.unpacked = self.unpacked.saturating_sub(n);
        self.buf.split_to(n)
    }

    /// Fails [`read`](Self::read) with [`ConnError::Idle`] when
    /// no complete header arrives within `idle`.
    pub fn set_idle_timeout(&mut self, idle: Option<Duration>) {
        self.idle = idle;
    }

    /// Reads the next header. `Ok(None)` means the peer closed the connection
    /// cleanly between frames.
    pub async fn read(&mut self) -> Result<Option<Frame<M>>, ConnError> {
        match self.idle {
            Some(limit) => tokio::time::timeout(limit, self.read_inner())
                .await
                .map_err(|_| ConnError::Idle(limit.as_secs()))?,
            None => self.read_inner().await,
        }
    }

    async fn read_inner(&mut self) -> Result<Option<Frame<M>>, ConnError> {
        loop {
            if let Some((frame, used)) = protocol::decode::<M>(&self.buf)? {
                let nested = self.unpacked > 0;
                self.consume(used);
                match frame.msg.as_zstd() {
                    Some(size) => self.unpack(frame.total_size, size, nested).await?,
                    None => return Ok(Some(frame)),
                }
                continue;
            }
            // The codec has checked the prefix against the limit, so reserving
            // room for the whole header is bounded.
            if let Some(len) = protocol::frame::header_len(&self.buf)? {
                self.buf.reserve(protocol::PREFIX_LEN + len - self.buf.len());
            } else {
                self.buf.reserve(READ_BUF);
            }
            if self.inner.read_buf(&mut self.buf).await? == 0 {
                return if self.buf.is_empty() { Ok(None) } else { Err(ConnError::Truncated("header")) };
            }
        }
    }

    /// Reads the body of an envelope of `len` bytes that unpacks to `size`,
    /// and puts what it unpacks to in its place, to be read next.
    async fn unpack(&mut self, len: u64, size: u64, nested: bool) -> Result<(), ConnError> {
        if nested {
            return Err(EnvelopeError::Nested.into());
        }
        if !self.envelopes {
            return Err(EnvelopeError::Early.into());
        }
        Unpacker::check(len, size)?;
        let body = self.read_small_body(len, ENVELOPE_MAX).await?;
        let unpacker = match &mut self.unpacker {
            Some(unpacker) => unpacker,
            None => self.unpacker.insert(Unpacker::new()?),
        };
        let unpacked = unpacker.unpack(&body, size)?;
        let mut buf = BytesMut::with_capacity(unpacked.len() + self.buf.len().max(READ_BUF));
        buf.extend_from_slice(&unpacked);
        buf.extend_from_slice(&self.buf);
        (self.buf, self.unpacked) = (buf, unpacked.len());
        Ok(())
    }

    /// Whether the next header has already arrived whole, so reading it will
    /// not wait on the peer (replies queued meanwhile can wait too).
    pub fn header_buffered(&self) -> bool {
        matches!(protocol::frame::header_len(&self.buf), Ok(Some(len)) if self.buf.len() >= protocol::PREFIX_LEN + len)
    }

    /// Reads a header, treating a clean close as an error: for the points of
    /// an exchange where the peer owes us a frame.
    pub async fn expect(&mut self) -> Result<Frame<M>, ConnError> {
        self.read().await?.ok_or(ConnError::Closed)
    }

    /// Reads a message that carries no body of its own: a body announced
    /// anyway is read and dropped, never parsed as frames. A keepalive
    /// (one that crossed a request on the way) is passed over.
    pub async fn expect_control(&mut self) -> Result<M, ConnError> {
        loop {
            let frame = self.expect().await?;
            self.skip_body(frame.total_size).await?;
            if !frame.msg.is_keepalive() {
                return Ok(frame.msg);
            }
        }
    }

    /// Reads a message; when `offers` says it is an offer to resume, its
    /// body is the offer's part digests (see [`read_parts`](Self::read_parts)),
    /// returned; any other body is read and dropped. A keepalive is passed
    /// over.
    pub async fn expect_with_parts(
        &mut self,
        offers: impl Fn(&M) -> bool,
    ) -> Result<(M, Vec<[u8; 16]>), ConnError> {
        loop {
            let frame = self.expect().await?;
            if offers(&frame.msg) {
                return Ok((frame.msg, self.read_parts(frame.total_size).await?));
            }
            self.skip_body(frame.total_size).await?;
            if !frame.msg.is_keepalive() {
                return Ok((frame.msg, Vec::new()));
            }
        }
    }

    /// Reads a body of `len` bytes that holds part digests, 16 bytes each:
    /// what an offer to resume carries. More than [`OFFER_MOST_PARTS`] of
    /// them are refused before any is read.
    pub async fn read_parts(&mut self, len: u64) -> Result<Vec<[u8; 16]>, ConnError> {
        if len > (OFFER_MOST_PARTS * 16) as u64 || !len.is_multiple_of(16) {
            return Err(ConnError::BadOffer(len));
        }
        let body = self.read_small_body(len, OFFER_MOST_PARTS * 16).await?;
        parts_of_body(&body).ok_or(ConnError::BadOffer(len))
    }

    /// The body of `len` bytes that follows the header just read, as a
    /// stream. The caller must read it to the end (or drop the connection):
    /// the next header starts right after it. A stream that ends early means
    /// the peer closed mid-body.
    pub fn body(&mut self, len: u64) -> impl AsyncRead + Unpin + '_ {
        let buffered = (self.buf.len() as u64).min(len) as usize;
        let head = Cursor::new(self.consume(buffered).freeze());
        AsyncReadExt::chain(head, (&mut self.inner).take(len - buffered as u64))
    }

    /// Completes with [`ConnError::Closed`] (or the socket's error) when the
    /// peer closes the connection, reading ahead into the buffer meanwhile
    /// (at most `cap` bytes; past that it waits forever). Cancel-safe: what
    /// it read stays buffered for the next header.
    pub async fn closed_while_buffering(&mut self, cap: usize) -> ConnError {
        while self.buf.len() < cap {
            self.buf.reserve(READ_BUF);
            match self.inner.read_buf(&mut self.buf).await {
                Ok(0) => return ConnError::Closed,
                Ok(_) => {}
                Err(e) => return e.into(),
            }
        }
        std::future::pending().await
    }

    /// Reads the `done` frame that ends a body and returns the sender's
    /// digest.
    pub async fn expect_done(&mut self) -> Result<Option<Md5Hex>, ConnError>
    where
        M: Common,
    {
        match self.expect_control().await?.into_done() {
            Ok(done) => Ok(done.md5),
            Err(other) => Err(ConnError::Unexpected { got: other.op(), expected: "done" }),
        }
    }

    /// Reads and discards a body of `len` bytes, to keep the stream in step
    /// after a request failed part way.
    pub async fn skip_body(&mut self, len: u64) -> Result<(), ConnError> {
        // Most frames have no body: no copy buffer (8 KiB, zeroed) for them.
        if len == 0 {
            return Ok(());
        }
        let copied = tokio::io::copy(&mut self.body(len), &mut tokio::io::sink()).await?;
        if copied < len {
            return Err(ConnError::Truncated("body"));
        }
        Ok(())
    }

    /// Reads a whole body of at most `max` bytes into memory. Only for small
    /// bodies whose size the protocol bounds (exec stdin chunks).
    pub async fn read_small_body(&mut self, len: u64, max: usize) -> Result<Vec<u8>, ConnError> {
        if len > max as u64 {
            return Err(FrameError::TooLarge(len).into());
        }
        let mut out = Vec::with_capacity(len as usize);
        self.body(len).read_to_end(&mut out).await?;
        if (out.len() as u64) < len {
            return Err(ConnError::Truncated("body"));
        }
        Ok(out)
    }
}

impl<W: AsyncWrite + Unpin, M: Message> FrameWriter<W, M> {
    /// Wraps a byte stream.
    pub fn new(inner: W) -> Self {
        FrameWriter {
            inner,
            scratch: Vec::with_capacity(1024),
            packer: None,
            raw_head: 0,
            messages: PhantomData,
        }
    }

    /// Packs what is sent into `zstd` envelopes from now on, where that
    /// makes it smaller (`on`), or sends it as it is.
    /// Turning it off ends the stream's zstd frame with an envelope that
    /// goes out with the next write.
    pub fn set_compress(&mut self, on: bool) -> io::Result<()> {
        match (on, self.packer.take()) {
            (true, None) => {
                self.packer = Some(Packer::new()?);
                self.raw_head = self.scratch.len();
            }
            (false, Some(packer)) => packer.end::<M>(&mut self.scratch)?,
            (_, kept) => self.packer = kept,
        }
        Ok(())
    }

    /// Whether what is sent is packed where smaller.
    pub fn compressing(&self) -> bool {
        self.packer.is_some()
    }

    /// Sends a message without a body (after any queued frames).
    pub async fn write(&mut self, msg: &M) -> Result<(), ConnError> {
        self.write_head(msg, 0).await
    }

    /// Sends the header of a frame whose body of `len` bytes must follow
    /// through [`body_writer`](Self::body_writer).
    pub async fn write_head(&mut self, msg: &M, len: u64) -> Result<(), ConnError> {
        protocol::encode(msg, len, &mut self.scratch)?;
        self.flush().await
    }

    /// Sends a frame of `msg` and `body`; small bodies go out in the same
    /// write as the header.
    pub async fn write_frame(&mut self, msg: &M, body: &[u8]) -> Result<(), ConnError> {
        protocol::encode(msg, body.len() as u64, &mut self.scratch)?;
        // Packed, a body goes with its header into one envelope.
        if body.len() <= COALESCE_MAX || self.packer.is_some() {
            self.scratch.extend_from_slice(body);
            self.flush().await
        } else {
            self.flush().await?;
            self.inner.write_all(body).await?;
            Ok(())
        }
    }

    /// Queues a frame (header and whole body) to go out with the next write;
    /// sends the queue once it holds [`QUEUE_MAX`] bytes.
    pub async fn queue(&mut self, msg: &M, body: &[u8]) -> Result<(), ConnError> {
        protocol::encode(msg, body.len() as u64, &mut self.scratch)?;
        self.scratch.extend_from_slice(body);
        let most = if self.packer.is_some() { PACKED_QUEUE_MAX } else { QUEUE_MAX };
        if self.scratch.len() >= most {
            self.flush().await?;
        }
        Ok(())
    }

    /// Sends whatever is queued, and what TLS still holds of what was
    /// written before (a write into a full socket leaves its last records
    /// there until a flush).
    pub async fn flush(&mut self) -> Result<(), ConnError> {
        if !self.scratch.is_empty() {
            let (head, rest) = self.scratch.split_at(self.raw_head);
            let packed = match self.packer.as_mut() {
                Some(p) => p.pack::<M>(rest)?,
                None => None,
            };
            let pieces: [&[u8]; 3] = match packed {
                Some((header, body)) => [head, header, body],
                None => [&self.scratch, &[], &[]],
            };
            let inner = &mut self.inner;
            let sent = async {
                for piece in pieces {
                    inner.write_all(piece).await?;
                }
                Ok::<_, io::Error>(())
            }
            .await;
            self.scratch.clear();
            self.raw_head = 0;
            sent?;
        }
        self.inner.flush().await?;
        Ok(())
    }

    /// The raw stream, for writing a body announced by the last header
    /// (which sent the queue, so nothing is pending). Never packed.
    pub fn body_writer(&mut self) -> &mut W {
        debug_assert!(self.scratch.is_empty(), "a body must not overtake queued frames");
        &mut self.inner
    }

    /// Closes the sending direction; the peer reads EOF after what was sent.
    pub async fn shutdown(&mut self) -> Result<(), ConnError> {
        self.flush().await?;
        self.inner.shutdown().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Done, End};

    type Reader<S> = FrameReader<S, ServerMessage>;
    type Writer<S> = FrameWriter<S, ServerMessage>;

    fn data() -> ServerMessage {
        ServerMessage::Data(Default::default())
    }

    #[tokio::test]
    async fn headers_and_bodies_survive_arbitrary_splits() {
        let (client, server) = tokio::io::duplex(7);
        let send = tokio::spawn(async move {
            let mut w = Writer::new(client);
            w.write_frame(&data(), b"hello").await.unwrap();
            w.write(&Done::default().into()).await.unwrap();
            w.write_frame(&ServerMessage::Stdout(Default::default()), b"").await.unwrap();
        });
        let mut r = Reader::new(server);
        let h = r.expect().await.unwrap();
        assert_eq!((h.msg, h.total_size), (data(), 5));
        let mut body = Vec::new();
        r.body(5).read_to_end(&mut body).await.unwrap();
        assert_eq!(body, b"hello");
        assert_eq!(r.expect().await.unwrap().msg.op(), "done");
        assert_eq!(r.expect().await.unwrap().msg, ServerMessage::Stdout(Default::default()));
        send.await.unwrap();
        assert!(r.read().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn queued_frames_go_out_in_order_before_the_next_write() {
        let (client, server) = tokio::io::duplex(1 << 20);
        let mut w = Writer::new(client);
        let mut r = Reader::new(server);
        w.queue(&data(), b"abc").await.unwrap();
        w.queue(&Done::default().into(), &[]).await.unwrap();
        // Nothing is sent until a write or a flush.
        let early = tokio::time::timeout(std::time::Duration::from_millis(50), r.read()).await;
        assert!(early.is_err(), "a queued frame went out early");
        w.write(&End::default().into()).await.unwrap();
        let h = r.expect().await.unwrap();
        assert_eq!((h.msg, h.total_size), (data(), 3));
        let mut body = Vec::new();
        r.body(3).read_to_end(&mut body).await.unwrap();
        assert_eq!(body, b"abc");
        assert!(r.header_buffered(), "done and end arrived in the same write");
        assert_eq!(r.expect().await.unwrap().msg.op(), "done");
        assert_eq!(r.expect().await.unwrap().msg.op(), "end");
        assert!(!r.header_buffered());
        // A full queue goes out by itself.
        let big = vec![7u8; QUEUE_MAX];
        w.queue(&data(), &big).await.unwrap();
        assert_eq!(r.expect().await.unwrap().total_size, QUEUE_MAX as u64);
    }

    #[tokio::test]
    async fn close_inside_a_header_is_truncation() {
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(&[0, 0, 0, 10, b'{']).await.unwrap();
        drop(client);
        let mut r = Reader::new(server);
        assert!(matches!(r.read().await, Err(ConnError::Truncated("header"))));
    }

    #[tokio::test]
    async fn short_body_is_detected_by_skip() {
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b"abc").await.unwrap();
        drop(client);
        let mut r = Reader::new(server);
        assert!(matches!(r.skip_body(10).await, Err(ConnError::Truncated("body"))));
    }

    #[tokio::test(start_paused = true)]
    async fn silent_peer_hits_idle_timeout() {
        let (_client, server) = tokio::io::duplex(64);
        let mut r = Reader::new(server);
        r.set_idle_timeout(Some(Duration::from_secs(3)));
        assert!(matches!(r.read().await, Err(ConnError::Idle(3))));
    }
}
