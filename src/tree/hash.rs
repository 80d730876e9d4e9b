//! Many files hashed at once: small ones read whole and hashed together
//! in SIMD lanes, on two threads; or ahead of need, on one.

use super::WHOLE_MAX;
use crate::digest::{parts_of, HashBatch};
use crate::protocol::Md5Hex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Threads that hash the files of a re-run side by side: while one side
/// compares, the other mostly waits for its answer (put -r's client hashes
/// ahead on one thread meanwhile, [`HashAhead`]).
const HASHERS: usize = 2;

/// Fewer items than this are not worth starting threads for: starting and
/// joining two costs about 80 µs here (2,000 rounds), the time to open and
/// hash three /usr/include files of average size (14 KiB).
const PAR_MIN: usize = 16;

/// `f` applied to every item, on two threads taking the next item
/// as each finishes (file sizes vary); the results in the items' order.
pub fn par_map<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    use std::sync::atomic::AtomicUsize;
    use std::sync::Mutex;
    if items.len() < PAR_MIN {
        return items.into_iter().map(f).collect();
    }
    let slots: Vec<Mutex<(Option<T>, Option<R>)>> =
        items.into_iter().map(|t| Mutex::new((Some(t), None))).collect();
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..HASHERS {
            s.spawn(|| {
                while let Some(slot) = slots.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let item = slot.lock().expect("no panics while holding it").0.take();
                    let done = item.map(&f);
                    slot.lock().expect("no panics while holding it").1 = done;
                }
            });
        }
    });
    slots
        .into_iter()
        .map(|m| m.into_inner().expect("no panics while holding it").1.expect("every item is done"))
        .collect()
}

/// Items hashed by one thread at a time in [`par_hash`]: the most a
/// [`HashBatch`] takes, so each thread hashes whole batches.
const HASH_CHUNK: usize = HashBatch::<Vec<u8>>::FILES;

/// The MD5 of a file for each item, many computed at once. `open` gives an
/// item's file, positioned at its start, and how many bytes of it to hash
/// (fewer there is an error), or `None` when there is nothing to hash; it
/// may note what it found in the item. Files of up to [`WHOLE_MAX`] bytes
/// are read whole and hashed together, larger ones streamed, on two
/// threads taking the next chunk of items as each finishes. Results in
/// the items' order.
pub fn par_hash<T: Send>(
    items: Vec<T>,
    open: impl Fn(&mut T) -> Option<std::io::Result<(std::fs::File, u64)>> + Sync,
) -> Vec<(T, Option<std::io::Result<Md5Hex>>)> {
    let mut chunks = Vec::new();
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        chunks.push(items.by_ref().take(HASH_CHUNK).collect::<Vec<_>>());
    }
    par_map(chunks, |chunk| hash_chunk(chunk, &open)).into_iter().flatten().collect()
}

/// [`par_hash`] for one chunk, on one thread: small bodies are read and
/// hashed together as [`HashBatch`] decides.
fn hash_chunk<T>(
    chunk: Vec<T>,
    open: impl Fn(&mut T) -> Option<std::io::Result<(std::fs::File, u64)>>,
) -> Vec<(T, Option<std::io::Result<Md5Hex>>)> {
    use std::io::Read;
    let mut out: Vec<(T, Option<std::io::Result<Md5Hex>>)> = Vec::with_capacity(chunk.len());
    // Small bodies read, tagged with their place in `out`.
    let mut small = HashBatch::new();
    let hash = |small: &mut HashBatch<Placed>, out: &mut Vec<(T, Option<_>)>| {
        for (Placed(at, _), md5) in small.hash() {
            out[at].1 = Some(Ok(md5));
        }
    };
    for mut item in chunk {
        let result = match open(&mut item) {
            None => None,
            Some(Err(e)) => Some(Err(e)),
            Some(Ok((file, len))) if len <= WHOLE_MAX => {
                // Read into fresh capacity, not zeroed first (memset was 3 %
                // of a server's samples comparing an unchanged tree).
                let mut body = Vec::with_capacity(len as usize);
                let read = file.take(len).read_to_end(&mut body).and_then(|n| match n as u64 == len {
                    true => Ok(()),
                    false => Err(std::io::ErrorKind::UnexpectedEof.into()),
                });
                match read {
                    Ok(()) => {
                        if small.push(Placed(out.len(), body)) {
                            out.push((item, None));
                            hash(&mut small, &mut out);
                            continue;
                        }
                        // Filled in once hashed.
                        None
                    }
                    Err(e) => Some(Err(e)),
                }
            }
            Some(Ok((mut file, len))) => Some(parts_of(&mut file, len).map(|d| d.finish())),
        };
        out.push((item, result));
    }
    hash(&mut small, &mut out);
    out
}

/// Small files hashed ahead of need, in order, on one thread of their own
/// until [`finish`](Self::finish) (or drop): put -r's own digests, worked
/// out while the server compares its copies, since which of them are
/// needed is known only once all the server's answers are in. One thread,
/// because the server is hashing on this machine's cores too when they
/// share one.
pub struct HashAhead<T> {
    /// Asks the thread to stop before the next file.
    stop: Arc<AtomicBool>,
    /// Gives back the items, with the digest of each one hashed.
    thread: tokio::task::JoinHandle<(Vec<T>, Vec<Option<Md5Hex>>)>,
}

impl<T: Send + 'static> HashAhead<T> {
    /// Starts hashing `items`' files as `open` gives them (`None`: not this
    /// one); only files of at most [`WHOLE_MAX`] bytes are hashed, so that
    /// stopping never waits for a large one.
    pub fn start(
        items: Vec<T>,
        open: impl Fn(&T) -> Option<std::io::Result<(std::fs::File, u64)>> + Send + 'static,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = tokio::task::spawn_blocking(move || {
            let mut digests = vec![None; items.len()];
            // Once stopped, the rest of the chunk is left unread, so
            // stopping waits for one file and the batch already read.
            let small = |i: &mut usize| match stopped.load(Ordering::Relaxed) {
                true => None,
                false => match open(&items[*i]) {
                    Some(Ok((_, len))) if len > WHOLE_MAX => None,
                    opened => opened,
                },
            };
            let mut next = 0;
            while next < items.len() && !stopped.load(Ordering::Relaxed) {
                let end = items.len().min(next + HASH_CHUNK);
                for (i, md5) in hash_chunk((next..end).collect(), small) {
                    digests[i] = md5.and_then(Result::ok);
                }
                next = end;
            }
            (items, digests)
        });
        HashAhead { stop, thread }
    }

    /// Stops hashing; the items back, each with its digest if it was hashed.
    pub async fn finish(mut self) -> (Vec<T>, Vec<Option<Md5Hex>>) {
        self.stop.store(true, Ordering::Relaxed);
        (&mut self.thread).await.expect("hashing does not panic")
    }
}

impl<T> Drop for HashAhead<T> {
    /// A put -r that fails before its answers are in leaves no thread
    /// hashing the rest of the tree.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A body read for [`hash_chunk`], with its item's place in the results.
struct Placed(usize, Vec<u8>);

impl AsRef<[u8]> for Placed {
    fn as_ref(&self) -> &[u8] {
        &self.1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn par_map_keeps_the_order_and_does_every_item_once() {
        for n in [0, 1, PAR_MIN - 1, PAR_MIN, 1000] {
            let calls = std::sync::atomic::AtomicUsize::new(0);
            let out = par_map((0..n).collect(), |i: usize| {
                calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                i * 2
            });
            assert_eq!(out, (0..n).map(|i| i * 2).collect::<Vec<_>>());
            assert_eq!(calls.into_inner(), n);
        }
    }

    #[tokio::test]
    async fn hash_ahead_gives_every_item_back_with_true_digests_of_small_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let sizes = (0..300u64).map(|i| (i * 7919) % 40_000).chain([0, WHOLE_MAX, WHOLE_MAX + 1]);
        let mut items = Vec::new();
        for (i, size) in sizes.enumerate() {
            let body: Vec<u8> = (0..size).map(|b| (b as usize * 31 + i) as u8).collect();
            let path = dir.path().join(format!("f{i}"));
            std::fs::write(&path, &body).unwrap();
            let small = size <= WHOLE_MAX;
            items.push((path, size, small.then(|| crate::digest::file_digests(&[&body]).remove(0))));
        }
        items.push((dir.path().join("missing"), 1, None));
        let n = items.len();
        let open = |(path, size, _): &(std::path::PathBuf, u64, Option<Md5Hex>)| {
            Some(std::fs::File::open(path).map(|f| (f, *size)))
        };
        // Left to run to the end, and stopped at once.
        let whole = HashAhead::start(items.clone(), open);
        while !whole.thread.is_finished() {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        let (back, digests) = whole.finish().await;
        assert_eq!(back, items);
        assert_eq!(digests, items.iter().map(|i| i.2.clone()).collect::<Vec<_>>());
        let (back, digests) = HashAhead::start(items.clone(), open).finish().await;
        assert_eq!((back.len(), digests.len()), (n, n));
        for ((path, _, want), got) in items.iter().zip(digests) {
            assert!(got.is_none() || got == *want, "{}", path.display());
        }
    }

    #[test]
    fn par_hash_hashes_each_file_in_order_whatever_its_size() {
        let dir = tempfile::tempdir().unwrap();
        // Sizes around the whole-read limit, empty ones, and enough items
        // for several chunks and a flush on bytes within one.
        let mut sizes: Vec<u64> = (0..300).map(|i| (i * 7919) % 40_000).collect();
        sizes.extend([0, WHOLE_MAX, WHOLE_MAX + 1, 3 << 20]);
        sizes.extend([WHOLE_MAX; 3]);
        let mut items = Vec::new();
        for (i, &size) in sizes.iter().enumerate() {
            let body: Vec<u8> = (0..size).map(|b| (b as usize * 31 + i) as u8).collect();
            let path = dir.path().join(format!("f{i}"));
            std::fs::write(&path, &body).unwrap();
            items.push((path, size, Some(crate::digest::file_digests(&[&body]).remove(0))));
        }
        // Nothing to hash; a file shorter than asked; a missing one.
        items.push((dir.path().join("f0"), u64::MAX, None));
        items.push((dir.path().join("f1"), sizes[1] + 1, None));
        items.push((dir.path().join("missing"), 1, None));
        let n = items.len();
        let out = par_hash(items, |(path, size, _)| {
            (*size != u64::MAX).then(|| std::fs::File::open(&*path).map(|f| (f, *size)))
        });
        assert_eq!(out.len(), n);
        for ((path, _, want), got) in &out[..n - 3] {
            assert_eq!(got.as_ref().map(|r| r.as_ref().ok()), Some(want.as_ref()), "{}", path.display());
        }
        assert!(out[n - 3].1.is_none(), "nothing to hash");
        let short = out[n - 2].1.as_ref().unwrap().as_ref().unwrap_err();
        assert_eq!(short.kind(), std::io::ErrorKind::UnexpectedEof);
        assert!(out[n - 1].1.as_ref().unwrap().is_err(), "missing file");
    }
}
