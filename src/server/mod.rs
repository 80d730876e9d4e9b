//! The server: accepts connections, bounds how many run at once, and stops
//! cleanly when its shutdown future completes.
//!
//! One task per connection (`handler`, which also runs TLS and
//! authenticates); `admission` bounds the connections not yet
//! authenticated; one module per request kind (`put`, `get`, `ls`, `exec`,
//! `tree`), with what they share in `request`.

mod admission;
mod contain;
mod df;
mod digests;
mod exec;
mod get;
mod handler;
mod ls;
mod md5sum;
mod mkdir;
mod mv;
mod pty;
mod put;
mod request;
mod rm;
mod spawn;
mod tree;

use crate::access::Grant;
use crate::auth::{FailureLimiter, Token};
use crate::local::Root;
use crate::tls::Identity;
use admission::Admission;
use digests::Digests;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc, Semaphore};
use tracing::{debug, error, info, warn};

/// How a server is set up; built from `xfer serve`'s flags.
#[derive(Debug, Clone)]
pub struct Config {
    /// The directory served; created if missing.
    pub root: PathBuf,
    /// The shared secret every client must prove it holds (or one of
    /// `grants`): every right, the whole root.
    pub token: Token,
    /// Further named tokens, each with its rights and directory (the
    /// tokens file).
    pub grants: Vec<Grant>,
    /// The TLS certificate and key the server presents.
    pub identity: Identity,
    /// Whether `exec` requests are allowed.
    pub allow_exec: bool,
    /// Authenticated connections served at once; more wait for a slot.
    pub max_connections: usize,
    /// How long a connection has to finish TLS and prove the token.
    pub handshake_timeout: Duration,
    /// Connections not yet served (in their handshake, or waiting for a
    /// slot) held at once, outside `max_connections`; more wait, in a
    /// bounded queue, for a place (see `admission`).
    pub pending_max: usize,
    /// The same, from one source address (an IPv6 /64).
    pub pending_per_source: usize,
    /// A connection that makes no progress for this long is closed.
    pub idle_timeout: Option<Duration>,
    /// After shutdown is asked, how long requests in flight may take to
    /// finish before they are aborted.
    pub grace: Duration,
    /// Partial files of interrupted transfers older than this are removed
    /// (at start and every hour) instead of waiting to be resumed.
    pub partial_max_age: Duration,
    /// Whether every commit is flushed to disk before it is reported, for
    /// every client (clients can also ask for it per request).
    pub fsync: bool,
    /// How many digests of files read whole are remembered (see
    /// `digests`); 0 hashes every file every time it is sent.
    pub digest_cache: usize,
}

/// Files whose digests are remembered unless told otherwise: as many as
/// one table of 32,768 slots holds (7/8 of it), 4.5 MiB, about 3.5 times
/// /usr/include. At 50,000 the table doubled to 65,536 slots (9 MiB) on
/// its way, the old one alive while it was copied: a get -r that crossed
/// 28,672 files took the server's peak from 31 to 37.7 MiB.
pub const DIGEST_CACHE: usize = 28_000;

impl Config {
    /// Defaults for serving `root` to holders of `token` with a new TLS
    /// identity (see [`serving`](Self::serving)).
    pub fn new(root: impl Into<PathBuf>, token: Token) -> Self {
        Self::serving(root, token, Identity::generate())
    }

    /// Defaults for serving `root` to holders of `token` as `identity`: no
    /// exec, 256 connections, 30 s idle, 10 s grace at shutdown, 10 s for a
    /// handshake.
    pub fn serving(root: impl Into<PathBuf>, token: Token, identity: Identity) -> Self {
        Config {
            root: root.into(),
            token,
            grants: Vec::new(),
            identity,
            allow_exec: false,
            max_connections: 256,
            handshake_timeout: Duration::from_secs(10),
            // 32 from one address lets a user run that many clients at
            // once, as `parallel -j32` would; the pool bounds what TLS
            // sessions (each with a 256 KiB socket buffer) strangers can
            // make the server hold.
            pending_max: 256,
            pending_per_source: 32,
            idle_timeout: Some(Duration::from_secs(30)),
            grace: Duration::from_secs(10),
            partial_max_age: Duration::from_secs(24 * 3600),
            digest_cache: DIGEST_CACHE,
            fsync: false,
        }
    }
}

/// What one authenticated connection may do, and where: the state every
/// request handler reads. It derefs to [`Shared`], with its own root.
pub(crate) struct Session {
    /// The server's state.
    pub shared: Arc<Shared>,
    /// The root as this token sees it: the served root, or the directory
    /// of it the token is confined to.
    pub root: Arc<Root>,
    /// The token proven, by name, with its rights.
    pub grant: Grant,
}

impl std::ops::Deref for Session {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.shared
    }
}

/// State every connection handler reads.
pub(crate) struct Shared {
    /// The served directory.
    pub root: Arc<Root>,
    /// The configuration the server was started with.
    pub config: Config,
    /// Slows down clients that keep failing authentication.
    pub limiter: FailureLimiter,
    /// Digests of unchanged files, so sending them again does not hash them.
    pub digests: Digests,
    /// Runs the server's side of TLS with its identity.
    pub tls: tokio_rustls::TlsAcceptor,
    /// Connections not yet authenticated and served.
    pub admission: Arc<Admission>,
    /// Slots for authenticated connections (`max_connections`).
    pub slots: Arc<Semaphore>,
    /// Every token a client may prove: the server's own first, then the
    /// named ones.
    pub grants: Vec<Grant>,
}

/// Serves on `listener` until `shutdown` completes, then stops accepting and
/// waits up to the grace period for the requests in flight to finish.
/// Returning drops what is still running: the caller's runtime cancels those
/// tasks, whose temporaries are removed and process groups killed on drop.
pub async fn run(listener: TcpListener, config: Config, shutdown: impl Future) -> io::Result<()> {
    let tls = crate::tls::server_config(&config.identity).map_err(io::Error::other)?;
    let root = Root::open(&config.root)?;
    let removed = root.remove_stale_temps(config.partial_max_age);
    if removed > 0 {
        info!(removed, "removed stale partial files");
    }
    info!(root = %root.path().display(), addr = %listener.local_addr()?, "serving");
    if config.allow_exec {
        info!("commands are held by {}", contain::describe());
    }
    let digests = Digests::new(config.digest_cache);
    let mut grants = vec![Grant::default_for(config.token.clone())];
    grants.extend(config.grants.iter().cloned());
    for g in &grants[1..] {
        let dir = g.dir.as_ref().map_or(".".to_string(), |d| d.to_string());
        info!(token = %g.name, rights = %g.rights, %dir, "token");
    }
    let shared = Arc::new(Shared {
        grants,
        root: Arc::new(root),
        limiter: FailureLimiter::default(),
        digests,
        tls: tokio_rustls::TlsAcceptor::from(tls),
        admission: Admission::new(config.pending_max.max(1), config.pending_per_source.max(1)),
        slots: Arc::new(Semaphore::new(config.max_connections.max(1))),
        config,
    });
    let sweeper = tokio::spawn(sweep_partials(shared.clone()));
    let (notify_shutdown, _) = broadcast::channel::<()>(1);
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);

    tokio::select! {
        res = accept_loop(&listener, &shared, &notify_shutdown, &done_tx) => {
            if let Err(e) = res {
                error!(error = %e, "accept failed");
            }
        }
        _ = shutdown => info!("shutting down"),
    }

    // Handlers see the broadcast close and stop once their current request
    // is done; each holds a `done_tx` clone, so `recv` returns when all have.
    sweeper.abort();
    drop(listener);
    drop(notify_shutdown);
    drop(done_tx);
    if tokio::time::timeout(shared.config.grace, done_rx.recv()).await.is_err() {
        warn!(
            grace_s = shared.config.grace.as_secs(),
            "requests still running after the grace period; aborting them"
        );
    }
    Ok(())
}

/// Runs blocking filesystem work on the served root on the blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    session: &Arc<Session>,
    f: impl FnOnce(&Root) -> T + Send + 'static,
) -> T {
    let root = session.root.clone();
    tokio::task::spawn_blocking(move || f(&root)).await.expect("filesystem work does not panic")
}

/// Removes stale partials every hour (or every `partial_max_age`, if shorter).
async fn sweep_partials(shared: Arc<Shared>) {
    let every = shared.config.partial_max_age.clamp(Duration::from_secs(1), Duration::from_secs(3600));
    loop {
        tokio::time::sleep(every).await;
        let max_age = shared.config.partial_max_age;
        let root = shared.root.clone();
        let removed = tokio::task::spawn_blocking(move || root.remove_stale_temps(max_age))
            .await
            .expect("sweeping does not panic");
        if removed > 0 {
            info!(removed, "removed stale partial files");
        }
    }
}

async fn accept_loop(
    listener: &TcpListener,
    shared: &Arc<Shared>,
    notify_shutdown: &broadcast::Sender<()>,
    done_tx: &mpsc::Sender<()>,
) -> io::Result<()> {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Per-connection failures (the peer reset before accept, or
                // we ran out of descriptors): back off briefly and go on.
                warn!(error = %e, "accept error");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // No room even to wait among the unauthenticated: closed at once,
        // costing nothing more than the accept.
        let Some(ticket) = shared.admission.admit(peer.ip()) else {
            debug!(%peer, "too many connections not yet authenticated; closed");
            continue;
        };
        let shared = shared.clone();
        let shutdown = notify_shutdown.subscribe();
        let done = done_tx.clone();
        tokio::spawn(async move {
            handler::serve_connection(stream, peer, shared, shutdown, ticket).await;
            release_memory().await;
            drop(done);
        });
    }
}

/// Gives back to the OS what a finished connection freed, when what is
/// resident has grown past [`TRIM_ABOVE`]. glibc keeps the free chunks of
/// its threads' arenas resident: a server that had moved a tree and a large
/// file both ways held 27-36 MiB between transfers (6 MiB fresh), which
/// every later transfer's peak stood on.
async fn release_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if resident_bytes().is_some_and(|rss| rss > TRIM_ABOVE) {
        // SAFETY: malloc_trim only walks and trims the allocator's own arenas.
        let _ = tokio::task::spawn_blocking(|| unsafe { libc::malloc_trim(0) }).await;
    }
}

/// Trimming after every connection handed back pages the next one faulted
/// straight in again: 3,000-4,000 minor faults on the server per `put -r`
/// of /usr/include, against 300-1,000 untrimmed, and 8-10% longer puts
/// with a full page cache. Below this the memory is kept for reuse; above
/// it, trimming keeps every later transfer's peak under 32 MiB (30.1 MiB
/// at most in the bench).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_ABOVE: u64 = 24 << 20;

/// This process's resident set, from `/proc/self/statm` (in pages).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * rustix::param::page_size() as u64)
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::resident_bytes;

    /// The resident set, not the mapped size (statm's first field), is what
    /// the trim is decided on: it matches VmRSS, far below VmSize.
    #[test]
    fn resident_bytes_is_the_resident_set() {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let kib = |key: &str| -> u64 {
            let line = status.lines().find(|l| l.starts_with(key)).unwrap();
            line.split_whitespace().nth(1).unwrap().parse().unwrap()
        };
        let rss = resident_bytes().unwrap();
        let (vm_rss, vm_size) = (kib("VmRSS:") << 10, kib("VmSize:") << 10);
        // Other tests allocate meanwhile: a few MiB either way.
        assert!(rss.abs_diff(vm_rss) < 8 << 20, "statm {rss}, VmRSS {vm_rss}");
        assert!(rss < vm_size, "statm {rss}, VmSize {vm_size}");
    }
}
