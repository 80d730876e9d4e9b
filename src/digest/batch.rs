//! The one rule for hashing many small bodies together.

use super::file_digests;
use crate::protocol::Md5Hex;

/// Small bodies waiting to be hashed together by [`md5_many`](super::md5_many), which
/// hashes 32 side by side (16 with AVX2 alone) and keeps its lanes busy only with many to choose
/// from. /usr/include's small files, by batch size: 16: 57-90 ms, 64:
/// 27-46 ms, 128: 23-40 ms, all 7,581 at once: 21-39 ms (one at a time:
/// 129-140 ms). Capped in bytes too, so memory stays bounded.
pub struct HashBatch<T> {
    /// Bodies read, in arrival order.
    waiting: Vec<T>,
    /// Their total size.
    bytes: usize,
}

impl<T: AsRef<[u8]>> HashBatch<T> {
    /// Files per batch (see the type's figures).
    pub const FILES: usize = 128;
    /// Bytes per batch: 2 MiB holds 128 files of /usr/include's 16 KiB
    /// average; the bound matters only when many are near 64 KiB.
    const BYTES: usize = 2 << 20;

    /// Whether `files` bodies of `bytes` in all make a full batch: the one
    /// bound, also for batches of bodies that need no hashing.
    pub fn full(files: usize, bytes: usize) -> bool {
        files >= Self::FILES || bytes >= Self::BYTES
    }

    /// An empty batch.
    pub fn new() -> Self {
        HashBatch { waiting: Vec::new(), bytes: 0 }
    }

    /// Adds a body; says whether the batch is full and should be hashed now.
    pub fn push(&mut self, item: T) -> bool {
        self.bytes += item.as_ref().len();
        self.waiting.push(item);
        Self::full(self.waiting.len(), self.bytes)
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Every waiting body with its digest over its parts (its MD5, for a
    /// body of one part), in the order they came; empties the batch.
    pub fn hash(&mut self) -> Vec<(T, Md5Hex)> {
        let bodies: Vec<&[u8]> = self.waiting.iter().map(AsRef::as_ref).collect();
        let digests = file_digests(&bodies);
        self.bytes = 0;
        self.waiting.drain(..).zip(digests).collect()
    }
}

impl<T: AsRef<[u8]> + Send + 'static> HashBatch<T> {
    /// [`hash`](Self::hash), on the blocking pool when the batch holds more
    /// than 64 KiB: hashing more would hold up an async thread, and every
    /// connection on it, for over 0.1 ms.
    pub async fn hash_off_thread(&mut self) -> Vec<(T, Md5Hex)> {
        if self.bytes <= 64 * 1024 {
            return self.hash();
        }
        let mut batch = std::mem::take(self);
        tokio::task::spawn_blocking(move || batch.hash()).await.expect("hashing does not panic")
    }
}

impl<T: AsRef<[u8]>> Default for HashBatch<T> {
    fn default() -> Self {
        Self::new()
    }
}
