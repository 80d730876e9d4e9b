//! The client side: connect, greet, and one module per command.

mod exec;
mod get;
mod ls;
mod put;

pub use exec::{exec, session, ExecOptions};
pub use get::{get, GetTarget};
pub use ls::ls;
pub use put::put;

use crate::connection::Connection;
use crate::error::{plain_io, ConnError, Error, RequestError};
use crate::protocol::{ErrorCode, Header, Op, PROTOCOL_VERSION};
use crate::ui::Ui;
use tokio::net::TcpStream;

/// What every client command needs.
#[derive(Debug, Clone)]
pub struct Options {
    /// `host:port` of the server.
    pub server: String,
    /// Output settings.
    pub ui: Ui,
}

/// A greeted connection to a server.
pub struct Client {
    /// The connection, past the greeting.
    pub conn: Connection,
}

impl Client {
    /// Connects to `addr` and checks the server's greeting.
    pub async fn connect(addr: &str) -> Result<Client, Error> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| Error::Connect { addr: addr.to_string(), reason: plain_io(&e) })?;
        let mut conn = Connection::new(stream)
            .map_err(|e| Error::Connect { addr: addr.to_string(), reason: plain_io(&e) })?;
        let hello = conn.reader.expect_header().await?;
        if hello.op != Op::Hello {
            return Err(ConnError::Unexpected { got: hello.op, expected: "hello" }.into());
        }
        match hello.version {
            Some(PROTOCOL_VERSION) => Ok(Client { conn }),
            theirs => Err(Error::Version {
                addr: addr.to_string(),
                theirs: theirs.unwrap_or(0),
                ours: PROTOCOL_VERSION,
            }),
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
