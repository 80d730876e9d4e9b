//! One connection: greet, then read requests and dispatch them until the
//! peer leaves, breaks the protocol, or the server shuts down.

use super::{exec, get, ls, put, tree, Shared};
use crate::auth::{self, Role};
use crate::connection::Connection;
use crate::error::{ConnError, RequestError};
use crate::protocol::{ErrorCode, Header, Md5Hex, Op, PROTOCOL_VERSION};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpStream;
use tokio::sync::broadcast;
use tracing::{debug, info, warn};

/// What one request did, for its log line.
pub(crate) struct Outcome {
    /// The path the request named, as sent.
    pub path: String,
    /// Body bytes moved.
    pub bytes: u64,
    /// Why it failed, if it did (already sent to the client).
    pub error: Option<RequestError>,
    /// The verified MD5 of the file moved, so the log names it too.
    pub md5: Option<Md5Hex>,
}

impl Outcome {
    /// A request on `path` that has moved nothing yet.
    pub fn new(path: &str) -> Self {
        Outcome { path: path.to_string(), bytes: 0, error: None, md5: None }
    }
}

/// Sends `err` as an `error` frame and records it in the outcome.
pub(crate) async fn refuse(
    conn: &mut Connection,
    mut outcome: Outcome,
    err: RequestError,
) -> Result<Outcome, ConnError> {
    conn.writer.write_header(&Header::error(err.code, err.message.clone())).await?;
    outcome.error = Some(err);
    Ok(outcome)
}

/// Reads the `done` frame that ends a body and returns the sender's digest.
pub(crate) async fn expect_done(conn: &mut Connection) -> Result<Option<Md5Hex>, ConnError> {
    let done = conn.reader.expect_header().await?;
    if done.op != Op::Done {
        return Err(ConnError::Unexpected { got: done.op, expected: "done" });
    }
    conn.reader.skip_body(done.total_size).await?;
    Ok(done.md5)
}

/// Serves one connection to the end. Never panics on peer input; every
/// failure is logged and ends only this connection.
pub(crate) async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    mut shutdown: broadcast::Receiver<()>,
) {
    let mut conn = match Connection::new(stream) {
        Ok(c) => c,
        Err(e) => return debug!(%peer, error = %e, "connection lost before greeting"),
    };
    conn.set_idle_timeout(shared.config.idle_timeout);
    if let Err(e) = serve_requests(&mut conn, &shared, &mut shutdown).await {
        match e {
            ConnError::Frame(ref fe) => {
                warn!(%peer, error = %e, "closing connection");
                // Best effort: tell the peer why before closing.
                let reply = Header::error(ErrorCode::BadRequest, format!("malformed frame: {fe}"));
                let _ = conn.writer.write_header(&reply).await;
            }
            ConnError::Unexpected { .. } => warn!(%peer, error = %e, "closing connection"),
            _ => debug!(%peer, error = %e, "connection ended"),
        }
    }
}

/// Greets the client and checks its proof of the token. Returns false (after
/// telling the client) when it failed; nothing else is read from it.
async fn authenticate(conn: &mut Connection, shared: &Shared) -> Result<bool, ConnError> {
    let nonce = auth::new_nonce();
    let mut hello = Header::new(Op::Hello);
    hello.version = Some(PROTOCOL_VERSION);
    hello.nonce = Some(nonce.clone());
    conn.writer.write_header(&hello).await?;

    let reply = conn.reader.expect_header().await?;
    let token = &shared.config.token;
    let proven = reply.op == Op::Auth
        && match (&reply.nonce, &reply.mac) {
            (Some(client_nonce), Some(mac)) => auth::verify(token, Role::Client, &nonce, client_nonce, mac),
            _ => false,
        };
    if !proven {
        let delay = shared.limiter.failed(conn.peer.ip());
        warn!(peer = %conn.peer, op = %reply.op, delay_ms = delay.as_millis() as u64, "authentication failed");
        tokio::time::sleep(delay).await;
        conn.writer.write_header(&Header::error(ErrorCode::AuthFailed, "authentication failed")).await?;
        return Ok(false);
    }
    shared.limiter.succeeded(conn.peer.ip());
    let client_nonce = reply.nonce.unwrap_or_default();
    let mut welcome = Header::new(Op::Welcome);
    welcome.mac = Some(auth::mac(token, Role::Server, &nonce, &client_nonce));
    conn.writer.write_header(&welcome).await?;
    Ok(true)
}

async fn serve_requests(
    conn: &mut Connection,
    shared: &Arc<Shared>,
    shutdown: &mut broadcast::Receiver<()>,
) -> Result<(), ConnError> {
    if !authenticate(conn, shared).await? {
        return Ok(());
    }
    loop {
        let req = tokio::select! {
            req = conn.reader.read_header() => req?,
            _ = shutdown.recv() => return Ok(()),
        };
        let Some(req) = req else { return Ok(()) };
        let started = Instant::now();
        let op = req.op;
        let outcome = match op {
            Op::Put => put::handle(conn, shared, req).await?,
            Op::Get => get::handle(conn, shared, req).await?,
            Op::Ls => ls::handle(conn, shared, req).await?,
            Op::Exec => exec::handle(conn, shared, req).await?,
            Op::PutTree => tree::put_tree(conn, shared, req).await?,
            Op::GetTree => tree::get_tree(conn, shared, req).await?,
            _ => {
                // Every frame announces its body, so a stray one can be
                // skipped and the connection stays in step.
                conn.reader.skip_body(req.total_size).await?;
                let err = RequestError::new(ErrorCode::BadRequest, format!("{op} is not a request"));
                refuse(conn, Outcome::new(&req.filename), err).await?
            }
        };
        let ms = started.elapsed().as_millis() as u64;
        let path = crate::fs::escape(&outcome.path);
        match &outcome.error {
            None => {
                let md5 = outcome.md5.as_ref().map_or("-", Md5Hex::as_str);
                info!(peer = %conn.peer, %op, %path, bytes = outcome.bytes, ms, %md5, "ok")
            }
            Some(e) => {
                info!(peer = %conn.peer, %op, %path, bytes = outcome.bytes, ms, code = ?e.code, "refused: {}", e.message)
            }
        }
    }
}
