//! The client side: connect, greet, and one module per command.

pub mod config;
mod exec;
mod get;
mod ls;
mod manage;
mod many;
mod put;
mod tree;

pub use crate::tree::TreeReport;
pub use exec::{exec, session, ExecOptions};
pub use get::{get, GetTarget};
pub use ls::{ls, LsOptions};
pub use manage::{cat, df, md5sum, md5sum_local, mkdir, mv, rm};
pub use many::{get_many, put_many};
pub use put::put;
pub use tree::{get_tree, put_tree};

use crate::auth::{self, Challenge, Role, Token};
use crate::connection::ClientConnection;
use crate::error::{plain_io, ConnError, Error, RequestError};
use crate::protocol::{ClientMessage, ErrorCode, Message, Refusal, ServerMessage, PROTOCOL_VERSION};
use crate::ui::Ui;
use std::time::Duration;
use tokio::net::TcpStream;

/// A server that makes no progress for this long is given up on (except
/// while an exec command runs, which may be silent for as long as it likes).
/// Twice the server's default idle timeout, so the server gives up first.
pub const CLIENT_IDLE: Duration = Duration::from_secs(60);

/// How long the TLS handshake and the server's greeting may take before
/// the peer is called not an xfer server: a loopback handshake takes about
/// a millisecond and one across the world a few hundred, so a peer silent
/// for this long is something else (the user is told within 5 s).
pub const GREETING_WAIT: Duration = Duration::from_secs(4);

/// What every client command needs.
#[derive(Debug, Clone)]
pub struct Options {
    /// `host:port` of the server.
    pub server: String,
    /// The shared secret to prove.
    pub token: Token,
    /// Output settings.
    pub ui: Ui,
    /// Pack what is sent, and ask for replies packed, in `zstd` envelopes
    /// where smaller (`-z`).
    pub compress: bool,
}

/// How a transfer treats what is already there.
#[derive(Debug, Clone, Copy, Default)]
pub struct Flags {
    /// Replace an existing destination.
    pub force: bool,
    /// Continue from the partial an interrupted run left (`--no-resume`
    /// turns this off).
    pub resume: bool,
    /// Flush committed files to disk before reporting success: ours on a
    /// get, the server's on a put.
    pub fsync: bool,
    /// Trees: remove what the destination holds beneath it that the
    /// source lacks.
    pub delete: bool,
    /// Say what would be done; change nothing.
    pub dry_run: bool,
    /// Also compute and report the plain MD5 of each whole file, as
    /// md5sum prints it (`--md5`).
    pub md5: bool,
}

impl From<&crate::cli::TransferArgs> for Flags {
    fn from(a: &crate::cli::TransferArgs) -> Flags {
        Flags {
            force: a.force,
            resume: !a.no_resume,
            fsync: a.fsync,
            delete: a.delete,
            dry_run: a.dry_run,
            md5: a.md5,
        }
    }
}

/// How the sources of a put or get are taken.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sources {
    /// Directories are sent as whole trees (`-r`).
    pub recursive: bool,
    /// The destination of a single source is a file name, even where a
    /// local file has that name (`-T`).
    pub no_target_directory: bool,
}

/// `host:port` for a server named `host` or `host:port` (the port is 9909
/// when left out; an IPv6 address goes in brackets, `[::1]:9909`).
pub fn with_default_port(server: &str) -> String {
    let port = crate::cli::DEFAULT_ADDR.rsplit(':').next().expect("the default has a port");
    let has_port = match server.strip_prefix('[') {
        Some(v6) => v6.contains("]:"),
        None => server.contains(':'),
    };
    if has_port {
        server.to_string()
    } else {
        format!("{server}:{port}")
    }
}

/// A greeted connection to a server.
pub struct Client {
    /// The connection, past the greeting.
    pub conn: ClientConnection,
}

impl Client {
    /// Connects to `opts.server`, runs TLS, and proves the token to it and
    /// it to us, both bound to this TLS channel. Nothing is sent to a
    /// server that has not proven the token.
    pub async fn connect(opts: &Options) -> Result<Client, Error> {
        let addr = opts.server.as_str();
        let connect_err = |e: std::io::Error| Error::Connect { addr: addr.to_string(), reason: plain_io(&e) };
        let not_xfer = |reason: String| Error::NotXfer { addr: addr.to_string(), reason };
        let stream = TcpStream::connect(addr).await.map_err(connect_err)?;
        // Small frames (headers, exec chunks) must not wait for Nagle.
        stream.set_nodelay(true).map_err(connect_err)?;
        let peer = stream.peer_addr().map_err(connect_err)?;
        let connector = tokio_rustls::TlsConnector::from(crate::tls::client_config());
        let handshake = connector.connect(crate::tls::server_name(), crate::tls::socket(stream));
        let mut tls = tokio::time::timeout(GREETING_WAIT, handshake)
            .await
            .map_err(|_| not_xfer(format!("no TLS handshake within {} s", GREETING_WAIT.as_secs())))?
            .map_err(|e| not_xfer(tls_failure(&e)))?;
        tls.get_mut().1.set_buffer_limit(Some(crate::tls::SEND_BUFFER));
        let session = tls.get_ref().1;
        if session.alpn_protocol() != Some(crate::tls::ALPN) {
            return Err(not_xfer("its TLS does not offer the xfer protocol".to_string()));
        }
        let binding =
            crate::tls::peer_binding(session).ok_or_else(|| not_xfer("it showed no certificate".into()))?;
        let mut conn = ClientConnection::new(tokio_rustls::TlsStream::Client(tls), peer);
        conn.set_idle_timeout(Some(CLIENT_IDLE));
        let hello = tokio::time::timeout(GREETING_WAIT, conn.reader.expect_control())
            .await
            .map_err(|_| not_xfer(format!("no greeting within {} s", GREETING_WAIT.as_secs())))?
            .map_err(|e| not_xfer(format!("no greeting: {e}")))?;
        let ServerMessage::Hello { version, nonce: server_nonce } = hello else {
            return Err(not_xfer(format!("it sent {} instead of hello", hello.op())));
        };
        if version != PROTOCOL_VERSION {
            return Err(Error::Version { addr: addr.to_string(), theirs: version, ours: PROTOCOL_VERSION });
        }
        let client_nonce = auth::new_nonce();
        let challenge =
            Challenge { binding: &binding, server_nonce: &server_nonce, client_nonce: &client_nonce };
        let mac = auth::mac(&opts.token, Role::Client, challenge);
        conn.writer.write(&ClientMessage::Auth { nonce: client_nonce.clone(), mac }).await?;
        match conn.reader.expect_control().await? {
            ServerMessage::Welcome { mac } if auth::verify(&opts.token, Role::Server, challenge, &mac) => {
                let zstd = |e| Error::local("zstd", e);
                conn.reader.accept_envelopes();
                conn.writer.set_compress(opts.compress).map_err(zstd)?;
                Ok(Client { conn })
            }
            // A server that cannot prove the token on this channel may be
            // an impostor, or a relay between us and the real one.
            ServerMessage::Welcome { .. } => Err(Error::ServerNotProven),
            ServerMessage::Error(Refusal { code: ErrorCode::AuthFailed, .. }) => Err(Error::AuthFailed),
            reply => Err(unexpected_reply(reply, "welcome")),
        }
    }
}

/// Plain words for a failed TLS handshake.
fn tls_failure(e: &std::io::Error) -> String {
    use rustls::{AlertDescription, Error as Tls};
    match e.get_ref().and_then(|inner| inner.downcast_ref::<Tls>()) {
        Some(Tls::InvalidMessage(_)) => {
            "it does not speak TLS, as xfer servers of protocol 2 and later do".to_string()
        }
        Some(Tls::AlertReceived(AlertDescription::NoApplicationProtocol)) => {
            "its TLS does not offer the xfer protocol".to_string()
        }
        Some(Tls::AlertReceived(AlertDescription::ProtocolVersion)) => {
            "it does not offer TLS 1.3".to_string()
        }
        Some(other) => format!("TLS failed: {other}"),
        None => match e.kind() {
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset => {
                "it closed the connection during the TLS handshake; an xfer server does so when too many \
                 connections from this address are not yet authenticated, so try again"
                    .to_string()
            }
            _ => plain_io(e),
        },
    }
}

/// Turns a server reply that is not what the exchange expected into an
/// error: an `error` frame becomes its message, anything else a protocol error.
pub(crate) fn unexpected_reply(reply: ServerMessage, expected: &'static str) -> Error {
    let ServerMessage::Error(Refusal { code, message, .. }) = reply else {
        return ConnError::Unexpected { got: reply.op(), expected }.into();
    };
    if code == ErrorCode::ExecDisabled {
        return Error::ExecDisabled;
    }
    Error::Remote(RequestError::new(code, reason(&message)))
}

/// A server's reason for refusing, escaped for the terminal.
pub(crate) fn reason(message: &str) -> String {
    crate::local::escape(if message.is_empty() { "the server gave no reason" } else { message })
}
