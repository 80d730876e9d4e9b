//! Shared test helpers: a real server on 127.0.0.1 port 0, started
//! in-process on its own runtime, and ways to drive the real binary at it.

#![allow(dead_code)] // each test binary uses a different subset

pub mod fake;
pub mod proxy;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tempfile::TempDir;
use xfer::auth::Token;
use xfer::server::Config;

/// The token every test server and client shares.
pub const TOKEN: &str = "test-token-not-secret-0123456789abcdef";

/// [`TOKEN`] as the library takes it.
pub fn token() -> Token {
    Token::new(TOKEN).unwrap()
}

/// A server running on its own thread; stopped when dropped.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its served root (deleted with the server).
    pub root: TempDir,
    /// Completing this stops the server.
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// The thread running the server's runtime.
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestServer {
    /// Starts a server with the default configuration.
    pub fn start() -> TestServer {
        Self::start_with(|_| {})
    }

    /// Starts a server after `tweak` has adjusted its configuration.
    pub fn start_with(tweak: impl FnOnce(&mut Config)) -> TestServer {
        let root = tempfile::tempdir().unwrap();
        Self::start_in(root, tweak)
    }

    /// Starts a server on an existing root.
    pub fn start_in(root: TempDir, tweak: impl FnOnce(&mut Config)) -> TestServer {
        let mut config = Config::new(root.path(), token());
        tweak(&mut config);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                xfer::server::run(listener, config, stopped).await.unwrap();
            });
        });
        TestServer { addr, root, stop: Some(stop), thread: Some(thread) }
    }

    /// A path inside the served root.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }

    /// Stops the server and waits for it.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The real `xfer` binary, pointed at `addr`, run in `cwd`.
pub fn xfer(addr: SocketAddr, cwd: &Path) -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::cargo_bin("xfer").unwrap();
    cmd.current_dir(cwd).env("XFER_SERVER", addr.to_string()).env("XFER_TOKEN", TOKEN).env_remove("RUST_LOG");
    cmd
}

/// The real binary as a plain process, for tests that must watch or kill
/// it while it runs.
pub fn xfer_process(addr: SocketAddr, cwd: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("xfer"));
    cmd.current_dir(cwd).env("XFER_SERVER", addr.to_string()).env("XFER_TOKEN", TOKEN).env_remove("RUST_LOG");
    cmd
}

/// Starts the real binary as a server on `root` with a `grace` period (in
/// seconds) for shutdown, for tests that signal or kill it.
pub fn spawn_server_process(root: &Path, grace: &str) -> (std::process::Child, SocketAddr) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let child = xfer_process(addr, root)
        .args(["serve", "--listen", &addr.to_string(), "--root", ".", "--grace", grace])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(eventually(Duration::from_secs(10), || std::net::TcpStream::connect(addr).is_ok()));
    (child, addr)
}

/// Waits for the process to exit, at most `limit`; its exit code (-1 if a
/// signal ended it), or `None` if it is still running.
pub fn exit_code_within(child: &mut std::process::Child, limit: Duration) -> Option<i32> {
    let mut code = None;
    eventually(limit, || {
        code = child.try_wait().unwrap().map(|s| s.code().unwrap_or(-1));
        code.is_some()
    });
    code
}

/// Deterministic pseudo-random bytes (no two runs differ, no RNG crate).
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The MD5 of `data` as lowercase hex.
pub fn md5_hex(data: &[u8]) -> String {
    use md5::{Digest, Md5};
    Md5::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

/// The digest over its parts of `data`, as PROTOCOL.md defines it: the
/// plain MD5 for one part (128 KiB) or none, else the MD5 of the parts'
/// 16-byte MD5s one after another, and `-N`.
pub fn parts_md5_hex(data: &[u8]) -> String {
    use md5::{Digest, Md5};
    const PART: usize = 128 * 1024;
    if data.len() <= PART {
        return md5_hex(data);
    }
    let digests: Vec<u8> = data.chunks(PART).flat_map(|p| Md5::digest(p).to_vec()).collect();
    format!("{}-{}", md5_hex(&digests), data.len().div_ceil(PART))
}

/// Names of everything under `dir`, recursively, relative to it, sorted.
pub fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            out.push(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
            if e.file_type().unwrap().is_dir() {
                walk(base, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Polls `cond` until it holds or `limit` passes; returns whether it held.
pub fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// Peak resident memory of this process (test servers run in it), in KiB.
pub fn vm_hwm_kib() -> u64 {
    vm_hwm_kib_of("self")
}

/// Peak resident memory of process `pid` ("self", or a number), in KiB,
/// since it started or was reset (`clear_refs`).
pub fn vm_hwm_kib_of(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The path to a file in `fixtures/`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(name)
}

/// Raw frames written and read by hand, independent of xfer's own codec,
/// for tests that speak the protocol as another implementation would. The
/// TLS under them is real (rustls' blocking API, with xfer's client
/// configuration).
pub mod raw {
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpStream};
    use std::sync::Arc;
    use xfer::auth::{Challenge, Role, Token};

    /// A client's TLS connection.
    pub type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

    /// Writes one frame with JSON header `json` and no body.
    pub fn send(s: &mut impl Write, json: &str) {
        s.write_all(&(json.len() as u32).to_be_bytes()).unwrap();
        s.write_all(json.as_bytes()).unwrap();
        s.flush().unwrap();
    }

    /// Writes one part of a file body: its `data` header with the part's
    /// MD5, then its bytes.
    pub fn send_part(s: &mut impl Write, filename: &str, offset: u64, part: &[u8]) {
        let md5 = super::md5_hex(part);
        let len = part.len();
        send(
            s,
            &format!(
                r#"{{"op":"data","filename":"{filename}","md5":"{md5}","total_size":{len},"offset":{offset}}}"#
            ),
        );
        s.write_all(part).unwrap();
    }

    /// Reads one frame's JSON header.
    pub fn recv(s: &mut impl Read) -> String {
        try_recv(s).expect("a frame")
    }

    /// Reads one frame's JSON header; `None` if the connection ended.
    pub fn try_recv(s: &mut impl Read) -> Option<String> {
        let mut len = [0u8; 4];
        s.read_exact(&mut len).ok()?;
        let mut json = vec![0u8; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut json).ok()?;
        Some(String::from_utf8(json).unwrap())
    }

    /// The value of a string field in a header, crudely but sufficiently.
    pub fn field(json: &str, name: &str) -> Option<String> {
        let v: serde_json::Value = serde_json::from_str(json).ok()?;
        v.get(name)?.as_str().map(str::to_string)
    }

    /// Connects and completes TLS; the server's `hello` is next.
    pub fn tls_connect(addr: SocketAddr) -> Tls {
        let sock = TcpStream::connect(addr).unwrap();
        let conn =
            rustls::ClientConnection::new(xfer::tls::client_config(), xfer::tls::server_name()).unwrap();
        let mut s = rustls::StreamOwned::new(conn, sock);
        while s.conn.is_handshaking() {
            s.conn.complete_io(&mut s.sock).unwrap();
        }
        s
    }

    /// The channel binding of a client connection.
    pub fn binding(s: &Tls) -> [u8; 32] {
        xfer::tls::peer_binding(&s.conn).unwrap()
    }

    /// Connects and authenticates with `token`; returns the server's reply
    /// to the proof (`welcome` or `error`).
    pub fn connect_with(addr: SocketAddr, token: &str) -> (Tls, String) {
        let mut s = tls_connect(addr);
        let hello = recv(&mut s);
        let nonce = field(&hello, "nonce").expect("hello carries a nonce");
        let mine = "00".repeat(32);
        let binding = binding(&s);
        let challenge = Challenge { binding: &binding, server_nonce: &nonce, client_nonce: &mine };
        let token = Token::new(&format!("{token:-<32}")).unwrap();
        let mac = xfer::auth::mac(&token, Role::Client, challenge);
        send(&mut s, &format!(r#"{{"op":"auth","nonce":"{mine}","mac":"{mac}"}}"#));
        let reply = recv(&mut s);
        (s, reply)
    }

    /// Connects and authenticates with the test token.
    pub fn connect(addr: SocketAddr) -> Tls {
        let (s, reply) = connect_with(addr, super::TOKEN);
        assert!(reply.contains(r#""op":"welcome""#), "{reply}");
        s
    }

    /// Ends the sending direction (TLS close_notify, then TCP), as a
    /// client that has said all it will.
    pub fn shutdown_write(s: &mut Tls) {
        s.conn.send_close_notify();
        let _ = s.conn.complete_io(&mut s.sock);
        let _ = s.sock.shutdown(std::net::Shutdown::Write);
    }

    /// A server-side TLS session for fake servers, with a new identity.
    pub fn server_session() -> (rustls::ServerConnection, xfer::tls::Identity) {
        let id = xfer::tls::Identity::generate();
        let config: Arc<rustls::ServerConfig> = xfer::tls::server_config(&id).unwrap();
        (rustls::ServerConnection::new(config).unwrap(), id)
    }
}
