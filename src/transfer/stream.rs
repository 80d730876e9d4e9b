//! Streaming a file body of an exact length, hashing it with MD5 on the way.
//!
//! Each direction is a three-stage pipeline joined by bounded channels of
//! reused buffers, so a side is limited by its slowest stage rather than
//! the sum of them, and memory stays at [`BUFFERS`] chunks whatever the size:
//!
//! - sending ([`send_file`]): a blocking thread reads the file, a second
//!   hashes each chunk, the async task writes the chunks to the socket;
//! - receiving ([`receive_into`]): the async task reads chunks from the
//!   socket, a blocking thread hashes each, a second writes it to the file.
//!
//! Hashing has a thread of its own because it is the longest stage (MD5
//! runs at ~600 MiB/s here), and writing into the page cache the next
//! (0.5-2 s per GiB of system time on this project's machines): sharing a
//! thread, they made the receiving side the bottleneck (1 GiB put measured
//! 4.4-4.9 s with two stages, 2.9-3.6 s with three; see BENCHMARKS.md).
//! File I/O goes straight from our buffers to the kernel (no intermediate
//! copy).

use super::Progress;
use crate::digest::Md5;
use crate::protocol::Md5Hex;
use std::io::{self, Read, Write};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// Size of one chunk. Measured on 1 GiB over loopback (bench/run): 256 KiB
/// chunks cost more syscalls and wake-ups, 4 MiB and up gained nothing over
/// 1 MiB and held more memory.
pub const CHUNK: usize = 1024 * 1024;

/// Chunks in flight per transfer: enough for each stage to work on one
/// while the other fills or drains the rest; 4 MiB of memory per transfer.
pub const BUFFERS: usize = 4;

/// Bodies up to this size are read or written on the async task itself:
/// for a small file the hop to a blocking thread and back costs more than
/// the I/O (a page-cache copy of at most 64 KiB, a few microseconds).
/// Measured on /usr/include (7,911 files, 14 KiB on average): see
/// BENCHMARKS.md.
pub const INLINE_MAX: u64 = 64 * 1024;

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

/// The buffers of one transfer: allocated on first need (at most
/// [`BUFFERS`], each no larger than the body), then passed back and forth,
/// so a small file costs a small allocation and a large one no more than
/// four chunks.
struct Pool {
    /// Buffers allocated so far.
    made: usize,
    /// Capacity of each buffer: a chunk, or the whole body if smaller.
    size: usize,
    /// Buffers the consuming stage has finished with.
    returned: mpsc::UnboundedReceiver<Vec<u8>>,
}

impl Pool {
    fn new(len: u64) -> (Pool, mpsc::UnboundedSender<Vec<u8>>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let size = len.min(CHUNK as u64) as usize;
        (Pool { made: 0, size, returned: rx }, tx)
    }

    /// A fresh buffer while fewer than [`BUFFERS`] exist.
    fn fresh(&mut self) -> Option<Vec<u8>> {
        if let Ok(b) = self.returned.try_recv() {
            return Some(b);
        }
        (self.made < BUFFERS).then(|| {
            self.made += 1;
            Vec::with_capacity(self.size)
        })
    }

    /// An empty buffer, waiting (async) for one to come back if all are out.
    async fn take(&mut self) -> Option<Vec<u8>> {
        match self.fresh() {
            Some(b) => Some(b),
            None => self.returned.recv().await,
        }
    }

    /// The same, from a blocking thread.
    fn take_blocking(&mut self) -> Option<Vec<u8>> {
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

/// The middle stage of both pipelines: a blocking thread that hashes each
/// chunk and passes it on, so hashing overlaps both the reading and the
/// writing. Returns the MD5 of everything that went through.
fn spawn_hasher(
    mut md5: Md5,
    mut chunks: mpsc::Receiver<Vec<u8>>,
    next: mpsc::Sender<Vec<u8>>,
) -> tokio::task::JoinHandle<Md5> {
    tokio::task::spawn_blocking(move || {
        while let Some(buf) = chunks.blocking_recv() {
            md5.update(&buf);
            if next.blocking_send(buf).is_err() {
                break;
            }
        }
        md5
    })
}

/// The MD5 a sent body is announced with.
#[derive(Clone)]
pub enum Digest {
    /// Computed while sending, by an MD5 that has seen what came before
    /// (a resumed prefix, or nothing).
    Compute(Md5),
    /// Known already: the file is unchanged since all its bytes were last
    /// hashed. The receiver checks the bytes against it all the same.
    Known(Md5Hex),
}

/// Sends exactly `len` bytes of `file` (from its current position) to
/// `dst`, then flushes it; returns the MD5 of the whole file as `digest`
/// gives or computes it.
pub async fn send_file<W>(
    file: std::fs::File,
    len: u64,
    digest: Digest,
    dst: &mut W,
    bar: &dyn Progress,
) -> Result<Md5Hex, CopyError>
where
    W: AsyncWrite + Unpin + ?Sized,
{
    if len <= INLINE_MAX {
        let mut file = file;
        let mut buf = vec![0u8; len as usize];
        let mut filled = 0;
        while filled < buf.len() {
            match file.read(&mut buf[filled..]) {
                Ok(0) => return Err(CopyError::Short { done: filled as u64, expected: len }),
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => return Err(CopyError::Read { done: filled as u64, source }),
            }
        }
        let md5 = match digest {
            Digest::Compute(mut md5) => {
                md5.update(&buf);
                md5.finish()
            }
            Digest::Known(md5) => md5,
        };
        dst.write_all(&buf).await.map_err(|source| CopyError::Write { done: 0, source })?;
        dst.flush().await.map_err(|source| CopyError::Write { done: len, source })?;
        bar.advance(len);
        return Ok(md5);
    }
    let (mut pool, give_back) = Pool::new(len);
    let (to_send, mut rx) = mpsc::channel::<Vec<u8>>(BUFFERS);
    // Read chunks go to the hashing thread, or straight to the socket.
    let (read_tx, hasher) = match digest {
        Digest::Compute(md5) => {
            let (to_hash, hash_rx) = mpsc::channel::<Vec<u8>>(BUFFERS);
            (to_hash, Err(spawn_hasher(md5, hash_rx, to_send)))
        }
        Digest::Known(md5) => (to_send, Ok(md5)),
    };
    let reader = tokio::task::spawn_blocking(move || -> Result<(), CopyError> {
        let mut file = file;
        let mut done = 0u64;
        while done < len {
            let Some(mut buf) = pool.take_blocking() else { break };
            let want = (len - done).min(CHUNK as u64) as usize;
            buf.resize(want, 0);
            let mut filled = 0;
            while filled < want {
                match file.read(&mut buf[filled..]) {
                    Ok(0) => return Err(CopyError::Short { done: done + filled as u64, expected: len }),
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(source) => return Err(CopyError::Read { done: done + filled as u64, source }),
                }
            }
            done += want as u64;
            if read_tx.blocking_send(buf).is_err() {
                // A later stage stopped (socket error); it reports why.
                break;
            }
        }
        Ok(())
    });

    let mut sent = 0u64;
    while let Some(buf) = rx.recv().await {
        if let Err(source) = dst.write_all(&buf).await {
            drop(rx);
            let _ = reader.await;
            if let Err(hashing) = hasher {
                let _ = hashing.await;
            }
            return Err(CopyError::Write { done: sent, source });
        }
        sent += buf.len() as u64;
        bar.advance(buf.len() as u64);
        let _ = give_back.send(buf);
    }
    reader.await.expect("the reading thread does not panic")?;
    let md5 = match hasher {
        Ok(known) => known,
        Err(hashing) => hashing.await.expect("the hashing thread does not panic").finish(),
    };
    dst.flush().await.map_err(|source| CopyError::Write { done: sent, source })?;
    Ok(md5)
}

/// Receives exactly `len` bytes from `src` into `sink` (a file at its
/// current position, or stdout), written on a blocking thread. `md5` has
/// seen what came before; returns the MD5 of that and these bytes once
/// they are all written.
pub async fn receive_into<R, S>(
    src: &mut R,
    len: u64,
    sink: S,
    md5: Md5,
    bar: &dyn Progress,
) -> Result<Md5Hex, CopyError>
where
    R: AsyncRead + Unpin + ?Sized,
    S: Write + Send + 'static,
{
    receive_continuing(src, len, sink, md5, bar).await.map(Md5::finish)
}

/// [`receive_into`], returning the MD5 not yet finished, for a body that
/// more bodies continue.
pub async fn receive_continuing<R, S>(
    src: &mut R,
    len: u64,
    sink: S,
    md5: Md5,
    bar: &dyn Progress,
) -> Result<Md5, CopyError>
where
    R: AsyncRead + Unpin + ?Sized,
    S: Write + Send + 'static,
{
    if len <= INLINE_MAX {
        let (mut sink, mut md5) = (sink, md5);
        let mut buf = Vec::with_capacity(len as usize);
        let read = (&mut *src).take(len).read_to_end(&mut buf).await;
        let short = buf.len() as u64;
        // What did arrive is a valid prefix: keep it for a resume.
        let written = sink.write_all(&buf).and_then(|()| sink.flush());
        md5.update(&buf);
        bar.advance(short);
        return match (read, written) {
            (Err(source), _) => Err(CopyError::Read { done: short, source }),
            (Ok(_), _) if short < len => Err(CopyError::Short { done: short, expected: len }),
            (Ok(_), Err(source)) => Err(CopyError::Write { done: len, source }),
            (Ok(_), Ok(())) => Ok(md5),
        };
    }
    let (mut pool, give_back) = Pool::new(len);
    let (tx, hash_rx) = mpsc::channel::<Vec<u8>>(BUFFERS);
    let (to_write, mut write_rx) = mpsc::channel::<Vec<u8>>(BUFFERS);
    let hasher = spawn_hasher(md5, hash_rx, to_write);
    let writer = tokio::task::spawn_blocking(move || -> Result<(), (u64, io::Error)> {
        let mut sink = sink;
        let mut written = 0u64;
        while let Some(buf) = write_rx.blocking_recv() {
            sink.write_all(&buf).map_err(|e| (written, e))?;
            written += buf.len() as u64;
            let _ = give_back.send(buf);
        }
        sink.flush().map_err(|e| (written, e))
    });

    let mut done = 0u64;
    let mut failed = None;
    while done < len {
        let Some(mut buf) = pool.take().await else { break };
        buf.clear();
        let want = (len - done).min(CHUNK as u64) as usize;
        while buf.len() < want {
            // `read_buf` appends into the spare capacity: no zeroing.
            let mut limited = (&mut *src).take((want - buf.len()) as u64);
            match limited.read_buf(&mut buf).await {
                Ok(0) => {
                    failed = Some(CopyError::Short { done: done + buf.len() as u64, expected: len });
                    break;
                }
                Ok(_) => {}
                Err(source) => {
                    failed = Some(CopyError::Read { done: done + buf.len() as u64, source });
                    break;
                }
            }
        }
        if failed.is_some() {
            // What did arrive is a valid prefix: write it, so a resumed
            // transfer need not send it again.
            if !buf.is_empty() {
                let _ = tx.send(buf).await;
            }
            break;
        }
        done += want as u64;
        bar.advance(want as u64);
        if tx.send(buf).await.is_err() {
            // The writing thread stopped: its error says why.
            break;
        }
    }
    drop(tx);
    let md5 = hasher.await.expect("the hashing thread does not panic");
    let written = writer.await.expect("the writing thread does not panic");
    match (failed, written) {
        (Some(e), _) => Err(e),
        (None, Err((_, source))) => Err(CopyError::Write { done, source }),
        (None, Ok(())) => Ok(md5),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::hash_prefix;
    use crate::transfer::NoProgress;

    fn md5_of(data: &[u8]) -> String {
        let mut m = Md5::new();
        m.update(data);
        m.finish().to_string()
    }

    fn temp_with(data: &[u8]) -> std::fs::File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(data).unwrap();
        io::Seek::rewind(&mut f).unwrap();
        f
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

    /// More than one chunk, and a multiple of nothing.
    fn odd_data() -> Vec<u8> {
        (0..CHUNK * 2 + 12345).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[tokio::test]
    async fn send_file_sends_exactly_len_and_hashes_it() {
        let data = odd_data();
        let mut dst = Vec::new();
        let md5 = send_file(
            temp_with(&data),
            data.len() as u64,
            Digest::Compute(Md5::new()),
            &mut dst,
            &NoProgress,
        )
        .await
        .unwrap();
        assert_eq!(dst, data);
        assert_eq!(md5.to_string(), md5_of(&data));
        let mut dst = Vec::new();
        send_file(temp_with(&data), 10, Digest::Compute(Md5::new()), &mut dst, &NoProgress).await.unwrap();
        assert_eq!(dst, &data[..10]);
    }

    #[tokio::test]
    async fn a_known_digest_is_sent_as_given_with_the_bytes_unchanged() {
        let known = Md5Hex::try_from("0123456789abcdef0123456789abcdef".to_string()).unwrap();
        for data in [odd_data(), b"small".to_vec()] {
            let mut dst = Vec::new();
            let digest = Digest::Known(known.clone());
            let len = data.len() as u64;
            let md5 = send_file(temp_with(&data), len, digest, &mut dst, &NoProgress).await.unwrap();
            assert_eq!(dst, data);
            assert_eq!(md5, known);
        }
    }

    #[tokio::test]
    async fn receive_into_takes_exactly_len_and_hashes_it() {
        let mut data = odd_data();
        data.extend_from_slice(b"next frame");
        let len = data.len() as u64 - 10;
        let mut src = &data[..];
        let sink = Shared::default();
        let md5 = receive_into(&mut src, len, sink.clone(), Md5::new(), &NoProgress).await.unwrap();
        assert_eq!(&*sink.0.lock().unwrap(), &data[..len as usize]);
        assert_eq!(md5.to_string(), md5_of(&data[..len as usize]));
        assert_eq!(src, b"next frame");
    }

    #[tokio::test]
    async fn a_resumed_copy_hashes_the_whole_file() {
        let data = odd_data();
        let (head, tail) = data.split_at(777_777);
        let mut prefix = Md5::new();
        prefix.update(head);
        let mut dst = Vec::new();
        let md5 = send_file(
            temp_with(tail),
            tail.len() as u64,
            Digest::Compute(prefix.clone()),
            &mut dst,
            &NoProgress,
        )
        .await
        .unwrap();
        assert_eq!(md5.to_string(), md5_of(&data));
        let md5 = receive_into(&mut &tail[..], tail.len() as u64, Shared::default(), prefix, &NoProgress)
            .await
            .unwrap();
        assert_eq!(md5.to_string(), md5_of(&data));
        let mut f = temp_with(&data);
        assert_eq!(hash_prefix(&mut f, 777_777).unwrap().finish().to_string(), md5_of(head));
        assert!(hash_prefix(&mut temp_with(b"ab"), 3).is_err());
    }

    #[tokio::test]
    async fn empty_bodies_hash_to_the_md5_of_nothing() {
        let mut dst = Vec::new();
        let md5 =
            send_file(temp_with(b""), 0, Digest::Compute(Md5::new()), &mut dst, &NoProgress).await.unwrap();
        assert_eq!(md5.as_str(), "d41d8cd98f00b204e9800998ecf8427e");
        let md5 = receive_into(&mut &b""[..], 0, Shared::default(), Md5::new(), &NoProgress).await.unwrap();
        assert_eq!(md5.as_str(), "d41d8cd98f00b204e9800998ecf8427e");
    }

    #[tokio::test]
    async fn short_sources_are_errors() {
        let err = send_file(temp_with(b"abc"), 10, Digest::Compute(Md5::new()), &mut Vec::new(), &NoProgress)
            .await
            .unwrap_err();
        assert!(matches!(err, CopyError::Short { done: 3, expected: 10 }), "{err:?}");
        let err =
            receive_into(&mut &b"abc"[..], 10, Shared::default(), Md5::new(), &NoProgress).await.unwrap_err();
        assert!(matches!(err, CopyError::Short { done: 3, expected: 10 }), "{err:?}");
    }

    #[tokio::test]
    async fn sink_failures_are_write_errors() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::from(io::ErrorKind::StorageFull))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let data = odd_data();
        let err =
            receive_into(&mut &data[..], data.len() as u64, Full, Md5::new(), &NoProgress).await.unwrap_err();
        assert!(
            matches!(err, CopyError::Write { ref source, .. } if source.kind() == io::ErrorKind::StorageFull)
        );
    }
}
