//! The client side: connect, greet, and one module per command.

mod exec;
mod get;
mod ls;
mod put;
mod tree;

pub use exec::{exec, session, ExecOptions};
pub use get::{get, GetTarget};
pub use ls::ls;
pub use put::put;
pub use tree::{get_tree, put_tree, TreeReport};

use crate::auth::{self, Role, Token};
use crate::connection::Connection;
use crate::error::{plain_io, ConnError, Error, RequestError};
use crate::protocol::{ErrorCode, Header, Op, PROTOCOL_VERSION};
use crate::ui::Ui;
use std::time::Duration;
use tokio::net::TcpStream;

/// A server that makes no progress for this long is given up on (except
/// while an exec command runs, which may be silent for as long as it likes).
/// Twice the server's default idle timeout, so the server gives up first.
pub const CLIENT_IDLE: Duration = Duration::from_secs(60);

/// What every client command needs.
#[derive(Debug, Clone)]
pub struct Options {
    /// `host:port` of the server.
    pub server: String,
    /// The shared secret to prove.
    pub token: Token,
    /// Output settings.
    pub ui: Ui,
}

/// How a transfer treats what is already there.
#[derive(Debug, Clone, Copy)]
pub struct Flags {
    /// Replace an existing destination.
    pub force: bool,
    /// Continue from the partial an interrupted run left (`--no-resume`
    /// turns this off).
    pub resume: bool,
    /// Flush committed files to disk before reporting success: ours on a
    /// get, the server's on a put.
    pub fsync: bool,
}

/// A greeted connection to a server.
pub struct Client {
    /// The connection, past the greeting.
    pub conn: Connection,
}

impl Client {
    /// Connects to `opts.server`, and proves the token to it and it to us.
    pub async fn connect(opts: &Options) -> Result<Client, Error> {
        let addr = opts.server.as_str();
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| Error::Connect { addr: addr.to_string(), reason: plain_io(&e) })?;
        let mut conn = Connection::new(stream)
            .map_err(|e| Error::Connect { addr: addr.to_string(), reason: plain_io(&e) })?;
        conn.set_idle_timeout(Some(CLIENT_IDLE));
        let hello = conn.reader.expect_header().await?;
        if hello.op != Op::Hello {
            return Err(ConnError::Unexpected { got: hello.op, expected: "hello" }.into());
        }
        if hello.version != Some(PROTOCOL_VERSION) {
            let theirs = hello.version.unwrap_or(0);
            return Err(Error::Version { addr: addr.to_string(), theirs, ours: PROTOCOL_VERSION });
        }
        let server_nonce = hello.nonce.unwrap_or_default();
        let client_nonce = auth::new_nonce();
        let mut proof = Header::new(Op::Auth);
        proof.mac = Some(auth::mac(&opts.token, Role::Client, &server_nonce, &client_nonce));
        proof.nonce = Some(client_nonce.clone());
        conn.writer.write_header(&proof).await?;
        let reply = conn.reader.expect_header().await?;
        let token = &opts.token;
        match (reply.op, &reply.mac) {
            (Op::Welcome, Some(mac))
                if auth::verify(token, Role::Server, &server_nonce, &client_nonce, mac) =>
            {
                Ok(Client { conn })
            }
            // A server that cannot prove the token may be an impostor.
            (Op::Welcome, _) => Err(Error::AuthFailed),
            (Op::Error, _) if reply.code == Some(ErrorCode::AuthFailed) => Err(Error::AuthFailed),
            _ => Err(unexpected_reply(reply, "welcome")),
        }
    }
}

/// Turns a server reply that is not what the exchange expected into an
/// error: an `error` frame becomes its message, anything else a protocol error.
pub(crate) fn unexpected_reply(reply: Header, expected: &'static str) -> Error {
    if reply.op != Op::Error {
        return ConnError::Unexpected { got: reply.op, expected }.into();
    }
    let code = reply.code.unwrap_or(ErrorCode::Internal);
    if code == ErrorCode::ExecDisabled {
        return Error::ExecDisabled;
    }
    let message = crate::fs::escape(reply.message.as_deref().unwrap_or("the server gave no reason"));
    Error::Remote(RequestError::new(code, message))
}
