//! Men in the middle for tests. [`Proxy`] relays a TCP connection to the
//! server and damages one direction, or records both; with
//! [`Damage::FlipBodyByte`] it holds the token, so it can end TLS on both
//! sides and damage file bodies inside it, to prove that the digests catch
//! what TLS would not (a bug, a bad disk or memory on either end). [`Mitm`]
//! ends TLS on each side with a certificate of its own and relays what is
//! inside, without the token: what an attacker on the path can do.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Which way the damage goes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Direction {
    /// Client to server (put bodies).
    ToServer,
    /// Server to client (get bodies).
    ToClient,
}

/// What the proxy does to the chosen direction.
#[derive(Debug, Clone, Copy)]
pub enum Damage {
    /// Holding the token, flip one bit in the middle of every `data` body
    /// inside TLS, fixing nothing else up.
    FlipBodyByte,
    /// Flip one bit of the byte at this offset of the stream (past the
    /// handshake, inside a body), passing everything else as it is.
    FlipByteAt(u64),
    /// Close both sides after this many bytes have passed.
    CutAfter(u64),
    /// Pass this many bytes, then hold the rest back (reading and dropping
    /// it) while keeping the connection open: the transfer stands still at
    /// a known point until a test kills one side, whose closing then ends
    /// the relay.
    StallAfter(u64),
    /// Pass everything, keeping a copy of both directions.
    Record,
}

/// A running proxy; it stops with its thread's runtime when dropped.
pub struct Proxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    /// Every byte that crossed, both ways, with [`Damage::Record`].
    pub recorded: Arc<Mutex<Vec<u8>>>,
    /// Keeps the proxy's runtime alive.
    _rt: tokio::runtime::Runtime,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap()
}

impl Proxy {
    /// Relays every connection to `target`, damaging `dir` as `damage` says.
    pub fn start(target: SocketAddr, dir: Direction, damage: Damage) -> Proxy {
        let rt = runtime();
        let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let recorded = Arc::new(Mutex::new(Vec::new()));
        let rec = recorded.clone();
        rt.spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(relay(client, target, dir, damage, rec.clone()));
            }
        });
        Proxy { addr, recorded, _rt: rt }
    }

    /// Relays every connection to `target` as it is, recording both ways.
    pub fn recording(target: SocketAddr) -> Proxy {
        Self::start(target, Direction::ToServer, Damage::Record)
    }
}

/// Copies `r` to `w`, keeping a copy in `log`.
async fn copy_recorded(
    mut r: impl AsyncRead + Unpin,
    mut w: impl AsyncWrite + Unpin,
    log: Arc<Mutex<Vec<u8>>>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            break;
        }
        log.lock().unwrap().extend_from_slice(&buf[..n]);
        if w.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
    let _ = w.shutdown().await;
}

async fn relay(
    client: TcpStream,
    target: SocketAddr,
    dir: Direction,
    damage: Damage,
    log: Arc<Mutex<Vec<u8>>>,
) {
    let server = TcpStream::connect(target).await.unwrap();
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let (up_r, up_w, down_r, down_w) = (cr, sw, sr, cw);
    if let Damage::Record = damage {
        tokio::join!(copy_recorded(up_r, up_w, log.clone()), copy_recorded(down_r, down_w, log));
        return;
    }
    if let Damage::FlipBodyByte = damage {
        let (client, server) = (up_r.reunite(down_w).unwrap(), down_r.reunite(up_w).unwrap());
        return relay_inside_tls(client, server, dir).await;
    }
    let (bad_r, bad_w, mut good_r, mut good_w) = match dir {
        Direction::ToServer => (up_r, up_w, down_r, down_w),
        Direction::ToClient => (down_r, down_w, up_r, up_w),
    };
    let good = async move {
        let _ = tokio::io::copy(&mut good_r, &mut good_w).await;
        let _ = good_w.shutdown().await;
    };
    let bad = async move {
        let mut bad_r = bad_r;
        let mut bad_w = bad_w;
        match damage {
            Damage::FlipByteAt(at) => {
                let _ = tokio::io::copy(&mut (&mut bad_r).take(at), &mut bad_w).await;
                let mut one = [0u8; 1];
                if bad_r.read_exact(&mut one).await.is_ok() {
                    one[0] ^= 0x01;
                    let _ = bad_w.write_all(&one).await;
                    let _ = tokio::io::copy(&mut bad_r, &mut bad_w).await;
                }
                let _ = bad_w.shutdown().await;
            }
            Damage::CutAfter(n) => {
                let _ = tokio::io::copy(&mut (&mut bad_r).take(n), &mut bad_w).await;
                // Dropping both halves here closes the damaged direction;
                // returning from `relay` drops the rest.
            }
            Damage::StallAfter(n) => {
                let _ = tokio::io::copy(&mut (&mut bad_r).take(n), &mut bad_w).await;
                let _ = tokio::io::copy(&mut bad_r, &mut tokio::io::sink()).await;
            }
            Damage::Record | Damage::FlipBodyByte => unreachable!("handled above"),
        }
    };
    // Whichever side finishes first ends the relay; for a cut this drops
    // every half, as a vanished peer would.
    match damage {
        Damage::CutAfter(_) | Damage::StallAfter(_) => {
            tokio::select! { _ = good => {}, _ = bad => {} }
        }
        _ => {
            tokio::join!(good, bad);
        }
    }
}

/// Ends the client's TLS with its own certificate, opens TLS of its own to
/// the server, and relays the plaintext between them: everything an
/// attacker on the path could do without the token.
pub struct Mitm {
    /// Where clients connect.
    pub addr: SocketAddr,
    /// Plaintext bytes relayed from the client to the server.
    pub to_server: Arc<Mutex<Vec<u8>>>,
    /// Keeps the relay's runtime alive.
    _rt: tokio::runtime::Runtime,
}

impl Mitm {
    /// Relays every connection to `target`.
    pub fn start(target: SocketAddr) -> Mitm {
        let rt = runtime();
        let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let to_server = Arc::new(Mutex::new(Vec::new()));
        let log = to_server.clone();
        let id = xfer::tls::Identity::generate();
        let acceptor = tokio_rustls::TlsAcceptor::from(xfer::tls::server_config(&id).unwrap());
        rt.spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let log = log.clone();
                tokio::spawn(async move {
                    let Ok(client) = acceptor.accept(client).await else { return };
                    let server = TcpStream::connect(target).await.unwrap();
                    let connector = tokio_rustls::TlsConnector::from(xfer::tls::client_config());
                    let Ok(server) = connector.connect(xfer::tls::server_name(), server).await else {
                        return;
                    };
                    let (cr, cw) = tokio::io::split(client);
                    let (sr, sw) = tokio::io::split(server);
                    let discard = Arc::new(Mutex::new(Vec::new()));
                    tokio::join!(copy_recorded(cr, sw, log), copy_recorded(sr, cw, discard));
                });
            }
        });
        Mitm { addr, to_server, _rt: rt }
    }
}

/// Ends TLS on both sides, proves the token to each (bound to each
/// channel), then relays frames, flipping a bit in `dir`'s data bodies.
async fn relay_inside_tls(client: TcpStream, server: TcpStream, dir: Direction) {
    use xfer::auth::{self, Challenge, Role};
    use xfer::connection::{FrameReader, FrameWriter};
    use xfer::protocol::{ClientMessage, ServerMessage};
    let id = xfer::tls::Identity::generate();
    let acceptor = tokio_rustls::TlsAcceptor::from(xfer::tls::server_config(&id).unwrap());
    let connector = tokio_rustls::TlsConnector::from(xfer::tls::client_config());
    let Ok(client) = acceptor.accept(client).await else { return };
    let Ok(server) = connector.connect(xfer::tls::server_name(), server).await else { return };
    let server_binding = xfer::tls::peer_binding(server.get_ref().1).unwrap();
    let (cr, cw) = tokio::io::split(client);
    let (sr, sw) = tokio::io::split(server);
    let (mut cr, mut cw) =
        (FrameReader::<_, ClientMessage>::new(cr), FrameWriter::<_, ServerMessage>::new(cw));
    let (mut sr, mut sw) =
        (FrameReader::<_, ServerMessage>::new(sr), FrameWriter::<_, ClientMessage>::new(sw));
    let token = super::token();
    // The server's side of the handshake, to the client.
    let ns = auth::new_nonce();
    let hello = ServerMessage::Hello { version: xfer::protocol::PROTOCOL_VERSION, nonce: ns.clone() };
    cw.write(&hello).await.unwrap();
    let Ok(ClientMessage::Auth { nonce: nc, mac }) = cr.expect_control().await else { return };
    let mine = id.binding();
    let to_client = Challenge { binding: &mine, server_nonce: &ns, client_nonce: &nc };
    assert!(auth::verify(&token, Role::Client, to_client, &mac));
    let welcome = ServerMessage::Welcome { mac: auth::mac(&token, Role::Server, to_client) };
    cw.write(&welcome).await.unwrap();
    // The client's side, to the server.
    let Ok(ServerMessage::Hello { nonce: ns, .. }) = sr.expect_control().await else { return };
    let nc = auth::new_nonce();
    let to_server = Challenge { binding: &server_binding, server_nonce: &ns, client_nonce: &nc };
    let proof = ClientMessage::Auth { nonce: nc.clone(), mac: auth::mac(&token, Role::Client, to_server) };
    sw.write(&proof).await.unwrap();
    let Ok(_welcome) = sr.expect_control().await else { return };
    match dir {
        Direction::ToServer => {
            tokio::join!(flip(&mut cr, &mut sw, true), flip(&mut sr, &mut cw, false));
        }
        Direction::ToClient => {
            tokio::join!(flip(&mut cr, &mut sw, false), flip(&mut sr, &mut cw, true));
        }
    }
}

/// Relays frames from `reader` to `writer`, flipping the middle byte of
/// every `data` body when `damage` is set.
async fn flip<R: AsyncRead + Unpin, W: AsyncWrite + Unpin, M: xfer::protocol::Message>(
    reader: &mut xfer::connection::FrameReader<R, M>,
    writer: &mut xfer::connection::FrameWriter<W, M>,
    damage: bool,
) {
    while let Ok(Some(h)) = reader.read().await {
        if writer.write_head(&h.msg, h.total_size).await.is_err() {
            return;
        }
        let mut body = reader.body(h.total_size);
        let mut buf = vec![0u8; 64 * 1024];
        let mut offset = 0u64;
        let target = h.total_size / 2;
        loop {
            let n = match body.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if damage && h.msg.op() == "data" && (offset..offset + n as u64).contains(&target) {
                buf[(target - offset) as usize] ^= 0x01;
            }
            offset += n as u64;
            if writer.body_writer().write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    }
    let _ = writer.shutdown().await;
}
