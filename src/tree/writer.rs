//! A tree's small files, verified and written on a thread of their own.
//!
//! The side receiving a tree spends most of its time in filesystem calls
//! (create, write, chmod, utimes, rename) for thousands of small files.
//! Done in the connection's task, they stop it from reading the next
//! frames; here a dedicated thread checks each body against its MD5 and
//! writes it (see [`write_whole`](crate::local::write_whole)) while the task
//! goes on reading. Files are independent, so they need no ordering.
//!
//! Bodies are hashed before they are handed over, many at once on the
//! blocking pool (see
//! [`HashBatch`]): 3.5-6 times less CPU than one at a time on a thread.

use crate::digest::HashBatch;
use crate::local::{write_whole_beneath, CommitError, DirCache, RemotePath};
use crate::protocol::Md5Hex;
use crate::tree::WHOLE_MAX;
use cap_std::fs::Dir;
use std::io;
use std::sync::Arc;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

/// Small files waiting for each thread: more than enough to keep it busy
/// while the task reads.
const QUEUED: usize = 32;

/// Bytes of bodies handed over and not yet written, all threads together,
/// in KiB: bodies of up to [`WHOLE_MAX`] (1 MiB) would otherwise let the
/// queues hold 64 MiB. 8 MiB is far more than the files per thread
/// allowed take on /usr/include (64 of 16 KiB on average: 1 MiB).
const QUEUED_KIB: usize = 8 * 1024;

/// Writing threads: two keep both cores busy while the connection's task
/// reads. Each file goes to the one with the fewest waiting: giving each
/// thread whole directories (to spare the directory's lock) left one idle
/// while the other worked through a large directory (/usr/include/linux:
/// 539 files).
const THREADS: usize = 2;

/// One small file, its body read whole.
pub struct SmallFile {
    /// The name the peer used, for its reply.
    pub rel: String,
    /// Where to write it, beneath the writer's base directory.
    pub path: RemotePath,
    /// The whole body.
    pub body: Vec<u8>,
    /// The MD5 the sender gave; nothing is written unless the body has it.
    pub sent: Option<Md5Hex>,
    /// Permission bits and modification time to give the file.
    pub meta: (u32, i64),
}

impl AsRef<[u8]> for SmallFile {
    fn as_ref(&self) -> &[u8] {
        &self.body
    }
}

/// A small file and the MD5 of the body that arrived.
struct Hashed {
    /// The file.
    file: SmallFile,
    /// Its body's MD5, to compare with the sender's.
    received: Md5Hex,
    /// Its share of [`QUEUED_KIB`], given back once it is written.
    _budget: OwnedSemaphorePermit,
}

/// What became of one file.
#[derive(Debug)]
pub struct Written {
    /// The name the peer used.
    pub rel: String,
    /// Where it went, as shown in messages.
    pub path: RemotePath,
    /// Its size in bytes.
    pub size: u64,
    /// The MD5 of the committed body, or why nothing was committed.
    pub result: Result<Md5Hex, WriteError>,
}

/// Why a small file was not committed.
#[derive(Debug)]
pub enum WriteError {
    /// The body does not have the sender's MD5.
    Mismatch {
        /// What the sender said.
        sent: Option<Md5Hex>,
        /// What arrived.
        received: Md5Hex,
    },
    /// The destination exists and replacing was not asked.
    Exists,
    /// The filesystem refused.
    Io(io::Error),
}

/// The threads writing a tree's small files, and their results.
pub struct TreeWriter {
    /// Files not yet hashed.
    pending: HashBatch<SmallFile>,
    /// KiB of bodies the threads may still be handed (see [`QUEUED_KIB`]).
    budget: Arc<Semaphore>,
    /// Files for each thread; dropped to tell them no more are coming.
    jobs: Vec<mpsc::Sender<Hashed>>,
    /// What became of each file, in the order written.
    results: mpsc::UnboundedReceiver<Written>,
    /// The threads, joined when the tree is done.
    threads: Vec<tokio::task::JoinHandle<()>>,
}

impl TreeWriter {
    /// Starts a writer for files beneath `base`; `replace` lets a file
    /// replace an existing one.
    pub fn start(base: Dir, replace: bool) -> io::Result<TreeWriter> {
        let (tx, results) = mpsc::unbounded_channel();
        let (mut jobs, mut threads) = (Vec::new(), Vec::new());
        for _ in 0..THREADS {
            let (job_tx, rx) = mpsc::channel::<Hashed>(QUEUED);
            threads.push(tokio::task::spawn_blocking({
                let (base, tx) = (base.try_clone()?, tx.clone());
                move || write_all(rx, &base, replace, &tx)
            }));
            jobs.push(job_tx);
        }
        let budget = Arc::new(Semaphore::new(QUEUED_KIB));
        Ok(TreeWriter { pending: HashBatch::new(), budget, jobs, results, threads })
    }

    /// Takes a file; once a batch has come, hashes it and hands it over.
    pub async fn write(&mut self, file: SmallFile) {
        if self.pending.push(file) {
            self.flush().await;
        }
    }

    /// Hashes the files waiting and hands each to the thread with the
    /// fewest waiting, waiting while even that one is `QUEUED` files
    /// behind or 8 MiB of bodies are handed over. Worth calling before a
    /// large file keeps the caller busy.
    pub async fn flush(&mut self) {
        for (file, received) in self.pending.hash_off_thread().await {
            // At most WHOLE_MAX, so at most 1,024 of the 8,192 permits.
            let kib = (file.body.len() as u64).min(WHOLE_MAX).div_ceil(1024) as u32;
            let budget = self.budget.clone().acquire_many_owned(kib).await.expect("never closed");
            let lane = self.jobs.iter().max_by_key(|j| j.capacity()).expect("at least one thread");
            // A thread only stops when its `jobs` is dropped or results are
            // no longer read, neither of which can happen while `self` lives.
            let _ = lane.send(Hashed { file, received, _budget: budget }).await;
        }
    }

    /// Results ready now, without waiting.
    pub fn ready(&mut self) -> Vec<Written> {
        let mut out = Vec::new();
        while let Ok(w) = self.results.try_recv() {
            out.push(w);
        }
        out
    }

    /// Waits for every file handed over; returns the results not yet taken.
    pub async fn finish(mut self) -> Vec<Written> {
        self.flush().await;
        let TreeWriter { jobs, mut results, threads, .. } = self;
        drop(jobs);
        for t in threads {
            t.await.expect("the tree writer does not panic");
        }
        let mut out = Vec::new();
        while let Ok(w) = results.try_recv() {
            out.push(w);
        }
        out
    }
}

/// One writing thread: verifies and writes each file it is given.
fn write_all(
    mut jobs: mpsc::Receiver<Hashed>,
    base: &Dir,
    replace: bool,
    results: &mpsc::UnboundedSender<Written>,
) {
    let mut dirs = DirCache::default();
    while let Some(Hashed { file: f, received, _budget }) = jobs.blocking_recv() {
        let result = if f.sent.as_ref() != Some(&received) {
            Err(WriteError::Mismatch { sent: f.sent, received })
        } else {
            match write_whole_beneath(base, &mut dirs, &f.path, &f.body, f.meta, replace) {
                Ok(()) => Ok(received),
                Err(CommitError::Exists) => Err(WriteError::Exists),
                Err(CommitError::Io(e)) => Err(WriteError::Io(e)),
            }
        };
        let size = f.body.len() as u64;
        if results.send(Written { rel: f.rel, path: f.path, size, result }).is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Md5;
    use cap_std::ambient_authority;

    fn small(rel: &str, body: &[u8], sent: Option<Md5Hex>) -> SmallFile {
        let path = RemotePath::parse(rel).unwrap();
        SmallFile { rel: rel.to_string(), path, body: body.to_vec(), sent, meta: (0o644, 0) }
    }

    fn md5_of(body: &[u8]) -> Md5Hex {
        let mut m = Md5::new();
        m.update(body);
        m.finish()
    }

    #[tokio::test]
    async fn only_bodies_with_their_md5_are_written() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("taken"), b"old").unwrap();
        let base = Dir::open_ambient_dir(tmp.path(), ambient_authority()).unwrap();
        let mut w = TreeWriter::start(base, false).unwrap();
        w.write(small("d/good", b"good", Some(md5_of(b"good")))).await;
        w.write(small("d/bad", b"bad", Some(md5_of(b"other")))).await;
        w.write(small("unsigned", b"x", None)).await;
        w.write(small("taken", b"new", Some(md5_of(b"new")))).await;
        let mut results = w.ready();
        results.extend(w.finish().await);
        results.sort_by(|a, b| a.rel.cmp(&b.rel));
        let outcome: Vec<_> = results
            .iter()
            .map(|r| match &r.result {
                Ok(_) => "ok",
                Err(WriteError::Mismatch { .. }) => "mismatch",
                Err(WriteError::Exists) => "exists",
                Err(WriteError::Io(_)) => "io",
            })
            .collect();
        // Sorted by name: d/bad, d/good, taken, unsigned.
        assert_eq!(outcome, ["mismatch", "ok", "exists", "mismatch"]);
        assert_eq!(std::fs::read(tmp.path().join("d/good")).unwrap(), b"good");
        assert!(!tmp.path().join("d/bad").exists());
        assert!(!tmp.path().join("unsigned").exists());
        assert_eq!(std::fs::read(tmp.path().join("taken")).unwrap(), b"old");
        let names: Vec<_> = std::fs::read_dir(tmp.path().join("d")).unwrap().collect();
        assert_eq!(names.len(), 1, "nothing but the good file in d/");
    }
}
