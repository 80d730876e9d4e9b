//! A man-in-the-middle for tests: relays a TCP connection to the server and
//! damages one direction, to prove that xfer notices.

use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use xfer::connection::{FrameReader, FrameWriter};
use xfer::protocol::Op;

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
    /// Flip one bit in the middle of every `data` body.
    FlipBodyByte,
    /// Close both sides after this many bytes have passed.
    CutAfter(u64),
    /// Pass this many bytes, then hold the rest back (reading and dropping
    /// it) while keeping the connection open: the transfer stands still at
    /// a known point until a test kills one side, whose closing then ends
    /// the relay.
    StallAfter(u64),
}

/// A running proxy; it stops with its thread's runtime when dropped.
pub struct Proxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    /// Keeps the proxy's runtime alive.
    _rt: tokio::runtime::Runtime,
}

impl Proxy {
    /// Relays every connection to `target`, damaging `dir` as `damage` says.
    pub fn start(target: SocketAddr, dir: Direction, damage: Damage) -> Proxy {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        rt.spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(relay(client, target, dir, damage));
            }
        });
        Proxy { addr, _rt: rt }
    }
}

async fn relay(client: TcpStream, target: SocketAddr, dir: Direction, damage: Damage) {
    let server = TcpStream::connect(target).await.unwrap();
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let (up_r, up_w, down_r, down_w) = (cr, sw, sr, cw);
    let (bad_r, bad_w, mut good_r, mut good_w) = match dir {
        Direction::ToServer => (up_r, up_w, down_r, down_w),
        Direction::ToClient => (down_r, down_w, up_r, up_w),
    };
    let good = async move {
        let _ = tokio::io::copy(&mut good_r, &mut good_w).await;
        let _ = good_w.shutdown().await;
    };
    let bad = async move {
        match damage {
            Damage::FlipBodyByte => flip(bad_r, bad_w).await,
            Damage::CutAfter(n) => {
                let mut bad_r = bad_r;
                let mut bad_w = bad_w;
                let _ = tokio::io::copy(&mut (&mut bad_r).take(n), &mut bad_w).await;
                // Dropping both halves here closes the damaged direction;
                // returning from `relay` drops the rest.
            }
            Damage::StallAfter(n) => {
                let mut bad_r = bad_r;
                let mut bad_w = bad_w;
                let _ = tokio::io::copy(&mut (&mut bad_r).take(n), &mut bad_w).await;
                let _ = tokio::io::copy(&mut bad_r, &mut tokio::io::sink()).await;
            }
        }
    };
    // Whichever side finishes first ends the relay; for a cut this drops
    // every half, as a vanished peer would.
    match damage {
        Damage::CutAfter(_) | Damage::StallAfter(_) => {
            tokio::select! { _ = good => {}, _ = bad => {} }
        }
        Damage::FlipBodyByte => {
            tokio::join!(good, bad);
        }
    }
}

async fn flip(r: tokio::net::tcp::OwnedReadHalf, w: tokio::net::tcp::OwnedWriteHalf) {
    let mut reader = FrameReader::new(r);
    let mut writer = FrameWriter::new(w);
    while let Ok(Some(h)) = reader.read_header().await {
        if writer.write_header(&h).await.is_err() {
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
            if h.op == Op::Data && (offset..offset + n as u64).contains(&target) {
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
