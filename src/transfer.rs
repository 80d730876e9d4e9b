//! Streaming copy of an exact number of bytes, hashing with MD5 on the way.
//!
//! The bytes are read in chunks; each chunk goes to the destination and, by
//! a bounded channel, to a hashing thread, so hashing overlaps with I/O and
//! memory stays at a few chunks whatever the size of the body.

use crate::protocol::Md5Hex;
use bytes::{Bytes, BytesMut};
use indicatif::ProgressBar;
use md5::{Digest, Md5};
use std::io;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// Chunk size for reads and writes. 1 MiB keeps syscalls and channel sends
/// rare (about 1,000 per GiB) while the working set stays small: at most
/// `HASH_QUEUE + 2` chunks are alive at once.
pub const CHUNK: usize = 1024 * 1024;

/// Chunks that may wait for the hashing thread before the copy pauses.
const HASH_QUEUE: usize = 4;

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
        /// Bytes read from the source (and so consumed) before the failure.
        done: u64,
        /// What went wrong.
        source: io::Error,
    },
}

impl CopyError {
    /// How many bytes of the source were consumed.
    pub fn done(&self) -> u64 {
        match self {
            CopyError::Read { done, .. } | CopyError::Short { done, .. } | CopyError::Write { done, .. } => {
                *done
            }
        }
    }
}

/// An MD5 computed on a separate thread from chunks fed to it.
pub struct Hasher {
    /// Feeds chunks to the thread; dropping it lets the thread finish.
    tx: mpsc::Sender<Bytes>,
    /// Yields the digest once `tx` is dropped.
    done: tokio::task::JoinHandle<[u8; 16]>,
}

impl Hasher {
    /// Starts the hashing thread.
    pub fn start() -> Hasher {
        let (tx, mut rx) = mpsc::channel::<Bytes>(HASH_QUEUE);
        let done = tokio::task::spawn_blocking(move || {
            let mut md5 = Md5::new();
            while let Some(chunk) = rx.blocking_recv() {
                md5.update(&chunk);
            }
            md5.finalize().into()
        });
        Hasher { tx, done }
    }

    /// Queues a chunk; waits while the thread is [`HASH_QUEUE`] chunks behind.
    pub async fn update(&self, chunk: Bytes) {
        // The receiver lives until `tx` is dropped, so this cannot fail.
        let _ = self.tx.send(chunk).await;
    }

    /// Waits for the digest of everything queued.
    pub async fn finish(self) -> Md5Hex {
        drop(self.tx);
        let digest = self.done.await.expect("the hashing thread does not panic");
        Md5Hex::from_digest(&digest)
    }
}

/// Copies exactly `len` bytes from `src` to `dst`, flushing at the end, and
/// returns the MD5 of those bytes. Advances `bar` as bytes are written.
pub async fn copy_hashed<R, W>(
    src: &mut R,
    dst: &mut W,
    len: u64,
    bar: &ProgressBar,
) -> Result<Md5Hex, CopyError>
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    let hasher = Hasher::start();
    let mut done = 0u64;
    while done < len {
        let want = (len - done).min(CHUNK as u64) as usize;
        let mut chunk = BytesMut::with_capacity(want);
        while chunk.len() < want {
            match src.read_buf(&mut chunk).await {
                Ok(0) => return Err(CopyError::Short { done: done + chunk.len() as u64, expected: len }),
                Ok(_) => {}
                Err(source) => return Err(CopyError::Read { done: done + chunk.len() as u64, source }),
            }
        }
        done += want as u64;
        let chunk = chunk.freeze();
        hasher.update(chunk.clone()).await;
        dst.write_all(&chunk).await.map_err(|source| CopyError::Write { done, source })?;
        bar.inc(want as u64);
    }
    dst.flush().await.map_err(|source| CopyError::Write { done, source })?;
    Ok(hasher.finish().await)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md5_of(data: &[u8]) -> String {
        Md5Hex::from_digest(&Md5::digest(data).into()).to_string()
    }

    #[tokio::test]
    async fn copies_exact_length_and_hashes_it() {
        // Not a multiple of CHUNK, and more than one chunk.
        let data: Vec<u8> = (0..CHUNK * 2 + 12345).map(|i| (i * 7 % 251) as u8).collect();
        let mut src = &data[..];
        let mut dst = Vec::new();
        let md5 = copy_hashed(&mut src, &mut dst, data.len() as u64, &ProgressBar::hidden()).await.unwrap();
        assert_eq!(dst, data);
        assert_eq!(md5.to_string(), md5_of(&data));
    }

    #[tokio::test]
    async fn empty_copy_gives_md5_of_nothing() {
        let mut src = &b""[..];
        let md5 = copy_hashed(&mut src, &mut Vec::new(), 0, &ProgressBar::hidden()).await.unwrap();
        assert_eq!(md5.as_str(), "d41d8cd98f00b204e9800998ecf8427e");
    }

    #[tokio::test]
    async fn short_source_is_an_error() {
        let mut src = &b"abc"[..];
        let err = copy_hashed(&mut src, &mut Vec::new(), 10, &ProgressBar::hidden()).await.unwrap_err();
        assert!(matches!(err, CopyError::Short { done: 3, expected: 10 }), "{err:?}");
    }

    #[tokio::test]
    async fn only_len_bytes_are_taken() {
        let mut src = &b"abcdef"[..];
        let mut dst = Vec::new();
        copy_hashed(&mut src, &mut dst, 4, &ProgressBar::hidden()).await.unwrap();
        assert_eq!(dst, b"abcd");
        assert_eq!(src, b"ef");
    }
}
