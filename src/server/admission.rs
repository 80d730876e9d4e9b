//! Bounds on connections that have not proven the token: a pool of their
//! own, outside `--max-connections`, and a share of it per source address,
//! so nobody without the token can hold the slots of those who have it.
//!
//! A connection over its source's share (or the pool's size) waits in a
//! queue, itself bounded, for a place; past the queue's bounds it is
//! closed at once. Waiting costs a socket and a small task, no TLS state.
//! A connection keeps its place until it is served: through its handshake,
//! and while it waits for a connection slot.

use crate::auth::source_of;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// Connections waiting for a place at most, in all; a waiting one costs a
/// socket and about a KiB.
const QUEUE_MAX: usize = 1024;
/// The same, from one source: a flood from one address fills its own
/// queue, not everyone's.
const QUEUE_PER_SOURCE: usize = 256;

/// Admits connections while there is room.
pub(crate) struct Admission {
    /// Places and queue, as taken now.
    counts: Mutex<Counts>,
    /// Wakes waiting connections when a place comes back.
    freed: Notify,
    /// At most this many places at once in all.
    total_max: usize,
    /// At most this many places at once for one source.
    per_source_max: usize,
}

/// The pool's occupancy.
#[derive(Default)]
struct Counts {
    /// Places taken, in all.
    total: usize,
    /// Places taken per source.
    by_source: HashMap<IpAddr, usize>,
    /// Connections waiting for a place, in all.
    queued: usize,
    /// Connections waiting per source.
    queued_by_source: HashMap<IpAddr, usize>,
}

/// A connection counted in the queue until it gets a place (or goes).
pub(crate) struct Ticket {
    /// The pool it waits for.
    pool: Arc<Admission>,
    /// Whose share it counts against.
    source: IpAddr,
}

/// A place in the pool; given back when dropped.
pub(crate) struct Pending {
    /// The pool it belongs to.
    pool: Arc<Admission>,
    /// Whose share it counts against.
    source: IpAddr,
}

fn add(map: &mut HashMap<IpAddr, usize>, key: IpAddr) {
    *map.entry(key).or_insert(0) += 1;
}

fn remove(map: &mut HashMap<IpAddr, usize>, key: IpAddr) {
    if let Some(n) = map.get_mut(&key) {
        *n -= 1;
        if *n == 0 {
            map.remove(&key);
        }
    }
}

impl Admission {
    /// A pool of `total_max` places, at most `per_source_max` per source.
    pub fn new(total_max: usize, per_source_max: usize) -> Arc<Admission> {
        Arc::new(Admission { counts: Mutex::default(), freed: Notify::new(), total_max, per_source_max })
    }

    /// Queues a connection from `ip` for a place, or `None` when the queue
    /// (or that source's part of it) is full: the connection is then
    /// closed at once.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Ticket> {
        let source = source_of(ip);
        let mut c = self.counts.lock().expect("no panics while holding the lock");
        let mine = c.queued_by_source.get(&source).copied().unwrap_or(0);
        if c.queued >= QUEUE_MAX || mine >= QUEUE_PER_SOURCE {
            return None;
        }
        c.queued += 1;
        add(&mut c.queued_by_source, source);
        Some(Ticket { pool: self.clone(), source })
    }

    fn try_take(&self, source: IpAddr) -> bool {
        let mut c = self.counts.lock().expect("no panics while holding the lock");
        let mine = c.by_source.get(&source).copied().unwrap_or(0);
        if c.total >= self.total_max || mine >= self.per_source_max {
            return false;
        }
        c.total += 1;
        add(&mut c.by_source, source);
        true
    }
}

impl Ticket {
    /// Waits for a place (the caller bounds the wait).
    pub async fn place(self) -> Pending {
        loop {
            // Registered before the check, so a place freed in between
            // still wakes us.
            let freed = self.pool.freed.notified();
            if self.pool.try_take(self.source) {
                return Pending { pool: self.pool.clone(), source: self.source };
            }
            freed.await;
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut c = self.pool.counts.lock().expect("no panics while holding the lock");
        c.queued -= 1;
        remove(&mut c.queued_by_source, self.source);
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut c = self.pool.counts.lock().expect("no panics while holding the lock");
        c.total -= 1;
        remove(&mut c.by_source, self.source);
        drop(c);
        self.pool.freed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn now(t: Ticket) -> Option<Pending> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        rt.block_on(async { tokio::time::timeout(Duration::from_millis(20), t.place()).await.ok() })
    }

    #[test]
    fn each_source_gets_its_share_and_places_come_back() {
        let pool = Admission::new(3, 2);
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let a1 = now(pool.admit(a).unwrap()).unwrap();
        let _a2 = now(pool.admit(a).unwrap()).unwrap();
        assert!(now(pool.admit(a).unwrap()).is_none(), "a's share is full: it waits");
        let b1 = now(pool.admit(b).unwrap()).unwrap();
        assert!(now(pool.admit("127.0.0.4".parse().unwrap()).unwrap()).is_none(), "the pool is full");
        drop(a1);
        assert!(now(pool.admit(a).unwrap()).is_some(), "a place came back");
        drop(b1);
        let c = pool.counts.lock().unwrap();
        assert_eq!(c.by_source.get(&b), None, "empty sources are forgotten");
        assert_eq!(c.queued, 0, "tickets that gave up left the queue");
    }

    #[test]
    fn a_waiting_connection_gets_the_place_given_back() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let pool = Admission::new(1, 1);
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        rt.block_on(async {
            let first = pool.admit(a).unwrap().place().await;
            let waiting = tokio::spawn(pool.admit(a).unwrap().place());
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert!(!waiting.is_finished());
            drop(first);
            tokio::time::timeout(Duration::from_secs(5), waiting).await.unwrap().unwrap();
        });
    }

    #[test]
    fn the_queue_of_one_source_is_bounded() {
        let pool = Admission::new(1, 1);
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let held: Vec<_> = (0..QUEUE_PER_SOURCE).map(|_| pool.admit(a).unwrap()).collect();
        assert!(pool.admit(a).is_none(), "one more from the same source is closed");
        assert!(pool.admit("127.0.0.3".parse().unwrap()).is_some(), "another source still queues");
        drop(held);
    }
}
