//! The server: accepts connections, bounds how many run at once, and stops
//! cleanly when its shutdown future completes.
//!
//! One task per connection ([`handler`]); one module per request kind
//! ([`put`], [`get`], [`ls`]).

mod exec;
mod get;
mod handler;
mod ls;
mod put;

use crate::fs::Root;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc, Semaphore};
use tracing::{error, info, warn};

/// How a server is set up; built from `xfer serve`'s flags.
#[derive(Debug, Clone)]
pub struct Config {
    /// The directory served; created if missing.
    pub root: PathBuf,
    /// Whether `exec` requests are allowed.
    pub allow_exec: bool,
    /// Connections served at once; more wait in the accept queue.
    pub max_connections: usize,
    /// A connection silent for this long between frames is closed.
    pub idle_timeout: Option<Duration>,
}

impl Config {
    /// Defaults for serving `root`: no exec, 256 connections, 30 s idle.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Config {
            root: root.into(),
            allow_exec: false,
            max_connections: 256,
            idle_timeout: Some(Duration::from_secs(30)),
        }
    }
}

/// State every connection handler reads.
pub(crate) struct Shared {
    /// The served directory.
    pub root: Root,
    /// The configuration the server was started with.
    pub config: Config,
}

/// Serves on `listener` until `shutdown` completes, then waits for the
/// requests in flight to finish.
pub async fn run(listener: TcpListener, config: Config, shutdown: impl Future) -> io::Result<()> {
    let root = Root::open(&config.root)?;
    let removed = root.remove_stale_temps();
    if removed > 0 {
        info!(removed, "removed stale temporary files");
    }
    info!(root = %root.path().display(), addr = %listener.local_addr()?, "serving");
    let shared = Arc::new(Shared { root, config });
    let limit = Arc::new(Semaphore::new(shared.config.max_connections));
    let (notify_shutdown, _) = broadcast::channel::<()>(1);
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);

    tokio::select! {
        res = accept_loop(&listener, &shared, &limit, &notify_shutdown, &done_tx) => {
            if let Err(e) = res {
                error!(error = %e, "accept failed");
            }
        }
        _ = shutdown => info!("shutting down"),
    }

    // Handlers see the broadcast close and stop once their current request
    // is done; each holds a `done_tx` clone, so `recv` returns when all have.
    drop(notify_shutdown);
    drop(done_tx);
    let _ = done_rx.recv().await;
    Ok(())
}

async fn accept_loop(
    listener: &TcpListener,
    shared: &Arc<Shared>,
    limit: &Arc<Semaphore>,
    notify_shutdown: &broadcast::Sender<()>,
    done_tx: &mpsc::Sender<()>,
) -> io::Result<()> {
    loop {
        let permit = limit.clone().acquire_owned().await.expect("the semaphore is never closed");
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
        let shared = shared.clone();
        let shutdown = notify_shutdown.subscribe();
        let done = done_tx.clone();
        tokio::spawn(async move {
            handler::serve_connection(stream, peer, shared, shutdown).await;
            drop(permit);
            drop(done);
        });
    }
}
