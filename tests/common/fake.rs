//! A scripted, possibly malicious server: real TLS with a certificate of
//! its own, then it authenticates like the real one (or, asked to, fails
//! to prove the token), then runs a script against the client. For tests
//! of what the client refuses to do.

use super::raw;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread::JoinHandle;
use xfer::auth::{self, Challenge, Role};

/// How the fake server answers the client's proof.
#[derive(Clone, Copy, PartialEq)]
pub enum Proof {
    /// With a correct `welcome`.
    Genuine,
    /// With a `welcome` whose MAC is wrong: an impostor.
    Forged,
    /// With the right token's MAC, but bound to another certificate than
    /// the one this connection shows: what a relay between the client and
    /// a real server would have to offer.
    OtherChannel,
}

/// The server's TLS session.
type Tls = rustls::StreamOwned<rustls::ServerConnection, TcpStream>;

/// The client's connection as the script sees it: everything read through
/// it is kept, so the test can check what the client sent.
pub struct Tee {
    /// The connection.
    stream: Tls,
    /// Every byte read from it so far.
    seen: Vec<u8>,
}

impl Read for Tee {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.stream.read(buf)?;
        self.seen.extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

impl Write for Tee {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.stream.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.stream.flush()
    }
}

/// Serves one connection with `script`; the handle yields every byte the
/// client sent after authentication.
pub fn serve_once(
    proof: Proof,
    script: impl FnOnce(&mut Tee) + Send + 'static,
) -> (SocketAddr, JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        let (sock, _) = listener.accept().unwrap();
        let (session, id) = raw::server_session();
        let mut s = rustls::StreamOwned::new(session, sock);
        let ns = "ab".repeat(32);
        let version = xfer::protocol::PROTOCOL_VERSION;
        raw::send(&mut s, &format!(r#"{{"op":"hello","version":{version},"nonce":"{ns}"}}"#));
        let proof_frame = raw::recv(&mut s);
        let nc = raw::field(&proof_frame, "nonce").unwrap();
        let binding = match proof {
            Proof::OtherChannel => xfer::tls::Identity::generate().binding(),
            _ => id.binding(),
        };
        let challenge = Challenge { binding: &binding, server_nonce: &ns, client_nonce: &nc };
        let mac = match proof {
            Proof::Genuine | Proof::OtherChannel => auth::mac(&super::token(), Role::Server, challenge),
            Proof::Forged => "00".repeat(32),
        };
        raw::send(&mut s, &format!(r#"{{"op":"welcome","mac":"{mac}"}}"#));
        let mut tee = Tee { stream: s, seen: Vec::new() };
        script(&mut tee);
        // Then the rest, until the client hangs up.
        tee.stream.conn.send_close_notify();
        let _ = tee.stream.flush();
        let mut rest = Vec::new();
        let _ = tee.stream.read_to_end(&mut rest);
        tee.seen.extend_from_slice(&rest);
        tee.seen
    });
    (addr, handle)
}
