//! One connection: TLS, the token handshake, a connection slot, then
//! requests dispatched until the peer leaves, breaks the protocol, or the
//! server shuts down.

use super::admission::Ticket;
use super::request::{refuse, Outcome};
use super::{df, exec, get, ls, md5sum, mkdir, mv, put, rm, tree, Session, Shared};
use crate::access::Right;
use crate::auth::{self, Challenge, Role};
use crate::connection::ServerConnection;
use crate::error::{ConnError, RequestError};
use crate::protocol::{ClientMessage, ErrorCode, Md5Hex, Message, ServerMessage, PROTOCOL_VERSION};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpStream;
use tokio::sync::broadcast;
use tracing::{debug, info, warn};

/// Serves one connection to the end. Never panics on peer input; every
/// failure is logged and ends only this connection. `ticket` queues it for
/// a place among the unauthenticated, which it holds until it is served.
pub(crate) async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    mut shutdown: broadcast::Receiver<()>,
    ticket: Ticket,
) {
    let limit = shared.config.handshake_timeout;
    let started = async {
        let pending = ticket.place().await;
        (handshake(stream, peer, &shared).await, pending)
    };
    let proven = match tokio::time::timeout(limit, started).await {
        Err(_) => return debug!(%peer, "no handshake within {} s; closed", limit.as_secs()),
        Ok((Err(e), _)) => return debug!(%peer, error = %e, "handshake failed"),
        Ok((Ok(Handshake::Refused(conn)), _pending)) => return refuse_auth(conn, &shared).await,
        Ok((Ok(Handshake::Proven(conn, which)), pending)) => (conn, which, pending),
    };
    let (mut conn, which, pending) = proven;
    let slot = tokio::select! {
        slot = shared.slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        _ = shutdown.recv() => return,
    };
    drop(pending);
    // The root as this token sees it.
    let grant = shared.grants[which].clone();
    let root = match &grant.dir {
        None => shared.root.clone(),
        Some(dir) => match shared.root.sub(dir) {
            Ok(root) => Arc::new(root),
            Err(e) => {
                warn!(%peer, token = %grant.name, error = %e, "cannot open the token's directory {dir}");
                let why =
                    format!("the server cannot open this token's directory: {}", crate::plain::plain_io(&e));
                let _ = conn.writer.write(&ServerMessage::error(ErrorCode::Internal, why)).await;
                return;
            }
        },
    };
    let session = Arc::new(Session { shared: shared.clone(), root, grant });
    if let Err(e) = serve_requests(&mut conn, &session, &mut shutdown).await {
        match e {
            ConnError::Frame(ref fe) => {
                warn!(%peer, error = %e, "closing connection");
                // Best effort: tell the peer why before closing.
                let reply = ServerMessage::error(ErrorCode::BadRequest, format!("malformed frame: {fe}"));
                let _ = conn.writer.write(&reply).await;
            }
            ConnError::Envelope(ref ee) => {
                warn!(%peer, error = %e, "closing connection");
                let reply = ServerMessage::error(ErrorCode::BadRequest, ee.to_string());
                let _ = conn.writer.write(&reply).await;
            }
            ConnError::Unexpected { .. } => warn!(%peer, error = %e, "closing connection"),
            _ => debug!(%peer, error = %e, "connection ended"),
        }
    }
    drop(slot);
}

/// How the handshake ended.
enum Handshake {
    /// The client proved a token (this one of the server's grants) and
    /// has our proof: serve it.
    Proven(ServerConnection, usize),
    /// It did not: refuse it, after the limiter's delay.
    Refused(ServerConnection),
}

/// TLS, then the greeting and the client's proof of the token, bound to
/// this TLS channel; answers a good proof with our own.
async fn handshake(stream: TcpStream, peer: SocketAddr, shared: &Shared) -> Result<Handshake, ConnError> {
    // Small frames (headers, exec chunks) must not wait for Nagle.
    stream.set_nodelay(true)?;
    let nonce = auth::new_nonce();
    let hello = ServerMessage::Hello { version: PROTOCOL_VERSION, nonce: nonce.clone() };
    let mut greeting = Vec::new();
    crate::protocol::encode(&hello, 0, &mut greeting)?;
    // Queued before the handshake, so it leaves with our handshake flight
    // (see `tls::server_config`).
    let mut tls = shared
        .tls
        .accept_with(crate::tls::socket(stream), |session| {
            use std::io::Write;
            let _ = session.writer().write_all(&greeting);
        })
        .await?;
    tls.get_mut().1.set_buffer_limit(Some(crate::tls::SEND_BUFFER));
    let mut conn = ServerConnection::new(tokio_rustls::TlsStream::Server(tls), peer);
    conn.set_idle_timeout(shared.config.idle_timeout);

    let reply = conn.reader.expect().await?;
    let (ClientMessage::Auth { nonce: client_nonce, mac }, 0) = (&reply.msg, reply.total_size) else {
        return Ok(Handshake::Refused(conn));
    };
    let binding = shared.config.identity.binding();
    let challenge = Challenge { binding: &binding, server_nonce: &nonce, client_nonce };
    // Which of the tokens it proves, if any: each is tried (a few
    // microseconds each), the server's own first.
    let Some(which) = shared.grants.iter().position(|g| auth::verify(&g.token, Role::Client, challenge, mac))
    else {
        return Ok(Handshake::Refused(conn));
    };
    shared.limiter.succeeded(peer.ip());
    conn.reader.accept_envelopes();
    let welcome =
        ServerMessage::Welcome { mac: auth::mac(&shared.grants[which].token, Role::Server, challenge) };
    conn.writer.write(&welcome).await?;
    Ok(Handshake::Proven(conn, which))
}

/// Answers a failed proof after the limiter's delay, holding the
/// connection's place among the unauthenticated meanwhile, then closes.
async fn refuse_auth(mut conn: ServerConnection, shared: &Shared) {
    let failure = shared.limiter.failed(conn.peer.ip());
    if let Some(unlogged) = failure.log {
        let delay_ms = failure.delay.as_millis() as u64;
        if unlogged > 0 {
            warn!(peer = %conn.peer, delay_ms, "authentication failed ({unlogged} more since the last such line)");
        } else {
            warn!(peer = %conn.peer, delay_ms, "authentication failed");
        }
    }
    tokio::time::sleep(failure.delay).await;
    let refusal = ServerMessage::error(ErrorCode::AuthFailed, "authentication failed");
    let _ = conn.writer.write(&refusal).await;
    let _ = conn.writer.shutdown().await;
}

async fn serve_requests(
    conn: &mut ServerConnection,
    shared: &Arc<Session>,
    shutdown: &mut broadcast::Receiver<()>,
) -> Result<(), ConnError> {
    loop {
        let req = tokio::select! {
            req = conn.reader.read() => req?,
            _ = shutdown.recv() => return Ok(()),
        };
        let Some(req) = req else { return Ok(()) };
        let started = Instant::now();
        let op = req.msg.op();
        // Only a get carries a body of its own (its offer's part digests;
        // a put's bytes follow in `data` frames): whatever another request
        // announces is read and dropped here, never parsed as the next frame.
        let offered_parts = match &req.msg {
            ClientMessage::Get(_) => conn.reader.read_parts(req.total_size).await?,
            _ => {
                conn.reader.skip_body(req.total_size).await?;
                Vec::new()
            }
        };
        if req.msg == ClientMessage::Keepalive {
            // A client between requests (an idle session) keeps the
            // connection, and learns that we are still here.
            conn.writer.write(&ServerMessage::Keepalive).await?;
            continue;
        }
        let token = shared.grant.name.as_str();
        if let Some(right) = needs(&req.msg).filter(|r| !shared.grant.rights.allow(*r)) {
            let err =
                RequestError::new(ErrorCode::Forbidden, format!("this token may not {right} on the server"));
            let outcome = refuse(conn, Outcome::new(req.msg.filename()), err).await?;
            let path = crate::local::escape(&outcome.path);
            info!(peer = %conn.peer, %token, %op, %path, "forbidden");
            continue;
        }
        // A reply packed where smaller, when asked for and the server is
        // not busy packing others' (see `Packing`).
        let packing = req.msg.wants_compression().then(Packing::start).flatten();
        conn.writer.set_compress(packing.is_some())?;
        let outcome = match req.msg {
            ClientMessage::Put(req) => put::handle(conn, shared, req).await?,
            ClientMessage::Get(req) => get::handle(conn, shared, req, offered_parts).await?,
            ClientMessage::Ls(req) => ls::handle(conn, shared, req).await?,
            ClientMessage::Exec(req) => exec::handle(conn, shared, req).await?,
            ClientMessage::PutTree(req) => tree::put_tree(conn, shared, req).await?,
            ClientMessage::GetTree(req) => tree::get_tree(conn, shared, req).await?,
            ClientMessage::Stat(req) => ls::stat(conn, shared, req).await?,
            ClientMessage::Rm(req) => rm::handle(conn, shared, req).await?,
            ClientMessage::Mv(req) => mv::handle(conn, shared, req).await?,
            ClientMessage::Mkdir(req) => mkdir::handle(conn, shared, req).await?,
            ClientMessage::Md5sum(req) => md5sum::handle(conn, shared, req).await?,
            ClientMessage::Df => df::handle(conn, shared).await?,
            other => {
                let err = RequestError::new(ErrorCode::BadRequest, format!("{op} is not a request"));
                refuse(conn, Outcome::new(other.filename()), err).await?
            }
        };
        // The packer (its window is 8 MiB) goes with the request's place
        // among those packed; its frame's end leads the next reply.
        conn.writer.set_compress(false)?;
        drop(packing);
        let ms = started.elapsed().as_millis() as u64;
        let path = crate::local::escape(&outcome.path);
        match &outcome.error {
            None if outcome.existing => {
                info!(peer = %conn.peer, %token, %op, %path, ms, "exists: sent its size and digest for the client to compare")
            }
            None => {
                let md5 = outcome.md5.as_ref().map_or("-", Md5Hex::as_str);
                info!(peer = %conn.peer, %token, %op, %path, bytes = outcome.bytes, ms, %md5, "ok")
            }
            Some(e) => {
                info!(peer = %conn.peer, %token, %op, %path, bytes = outcome.bytes, ms, code = ?e.code, "refused: {}", e.message)
            }
        }
    }
}

/// Most replies packed at once: one per core. Packing costs 3-4 CPU-ms per
/// MiB of text (see `protocol::envelope::LEVEL`); past this, requests that
/// ask for it are answered as they are (PROTOCOL.md, Compression).
fn most_packing() -> usize {
    // Asked once: it reads the affinity mask and cgroup quota each time.
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// A reply being packed, counted while it lasts.
struct Packing;

/// Replies being packed now.
static PACKING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl Packing {
    /// Counts one more, unless as many as there are cores are packing.
    fn start() -> Option<Packing> {
        use std::sync::atomic::Ordering;
        PACKING
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < most_packing()).then_some(n + 1))
            .ok()
            .map(|_| Packing)
    }
}

impl Drop for Packing {
    fn drop(&mut self) {
        PACKING.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// The right a request needs; `None` for what is not a request (refused
/// as such below).
fn needs(msg: &ClientMessage) -> Option<Right> {
    match msg {
        ClientMessage::Get(_)
        | ClientMessage::GetTree(_)
        | ClientMessage::Ls(_)
        | ClientMessage::Stat(_)
        | ClientMessage::Md5sum(_)
        | ClientMessage::Df => Some(Right::Read),
        ClientMessage::Put(_)
        | ClientMessage::PutTree(_)
        | ClientMessage::Rm(_)
        | ClientMessage::Mv(_)
        | ClientMessage::Mkdir(_) => Some(Right::Write),
        ClientMessage::Exec(_) => Some(Right::Exec),
        ClientMessage::Auth { .. }
        | ClientMessage::Want(_)
        | ClientMessage::Stdin
        | ClientMessage::Zstd { .. }
        | ClientMessage::Keepalive
        | ClientMessage::Resize { .. }
        | ClientMessage::Data(_)
        | ClientMessage::Done(_)
        | ClientMessage::Entry(_)
        | ClientMessage::End(_) => None,
    }
}
