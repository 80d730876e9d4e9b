//! `df`: the size and free space of the filesystem the root is on.

use super::request::{refuse, Outcome};
use super::{blocking, Session};
use crate::connection::ServerConnection;
use crate::error::{ConnError, RequestError};
use crate::protocol::ServerMessage;
use std::sync::Arc;

pub(crate) async fn handle(conn: &mut ServerConnection, shared: &Arc<Session>) -> Result<Outcome, ConnError> {
    let outcome = Outcome::new("");
    match blocking(shared, |root| root.space()).await {
        Ok((total, free)) => {
            conn.writer.write(&ServerMessage::Space { total, free }).await?;
            Ok(outcome)
        }
        Err(e) => refuse(conn, outcome, RequestError::from_io(&e, ".")).await,
    }
}
