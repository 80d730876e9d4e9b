//! What every request handler shares: its outcome for the log line and
//! the refusal that ends it.

use crate::connection::ServerConnection;
use crate::error::{ConnError, RequestError};
use crate::local::RemotePath;
use crate::protocol::{ErrorCode, Md5Hex, Refusal, ServerMessage};

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
    /// Answered with what is there instead: a put onto an existing file,
    /// whose size and digest went back for the client to judge (identical:
    /// skipped, done; else in the way). Neither done nor refused here.
    pub existing: bool,
}

impl Outcome {
    /// A request on `path` that has moved nothing yet.
    pub fn new(path: &str) -> Self {
        Outcome { path: path.to_string(), bytes: 0, error: None, md5: None, existing: false }
    }
}

/// Sends `err` as an `error` frame and records it in the outcome.
pub(crate) async fn refuse(
    conn: &mut ServerConnection,
    mut outcome: Outcome,
    err: RequestError,
) -> Result<Outcome, ConnError> {
    conn.writer.write(&ServerMessage::error(err.code, err.message.clone())).await?;
    outcome.error = Some(err);
    Ok(outcome)
}

/// An `error` message about one item (`rel`) of a tree.
pub(crate) fn item_refusal(rel: &str, err: &RequestError) -> ServerMessage {
    ServerMessage::Error(Refusal { filename: rel.to_string(), code: err.code, message: err.message.clone() })
}

/// A path from the client, checked (see [`RemotePath::parse`]); refused
/// as `bad_path`.
pub(crate) fn checked_path(raw: &str) -> Result<RemotePath, RequestError> {
    RemotePath::parse(raw).map_err(|e| RequestError::new(ErrorCode::BadPath, e.to_string()))
}
