//! `exec`: run a shell command in its own process group and stream its
//! stdout and stderr back as they come, then its exit status and digests.
//!
//! Three things run at once: the output pump (both pipes drained
//! concurrently, so a command that fills one pipe never blocks on it), the
//! stdin forwarder (client frames to the command's stdin), and the wait for
//! the command (with its time limit). Whatever ends the exchange, the
//! command's whole process group is killed: no orphans.

use super::contain::{join_in_child, Contained};
use super::request::{refuse, Outcome};
use super::Session;
use crate::connection::{FrameWriter, Reader, ServerConnection};
use crate::digest::Md5;
use crate::error::{ConnError, RequestError};
use crate::protocol::{ClientMessage, ErrorCode, Exec, Message, ServerMessage, StreamSummary};
use rustix::process::Signal;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::oneshot;

/// Read size for the command's pipes. 64 KiB is the Linux pipe capacity, so
/// one read takes all a full pipe holds; each read becomes one frame.
const PIPE_CHUNK: usize = 64 * 1024;

/// Largest stdin chunk accepted from a client. The client sends 64 KiB; the
/// margin allows other implementations larger writes while bounding memory.
pub const MAX_STDIN_CHUNK: usize = 1024 * 1024;

/// After a command ends (or is killed), how long its pipes may still be
/// read for output already written: a process that escaped the kill (no
/// cgroup here) and holds a pipe open cannot keep the client waiting.
const DRAIN: Duration = Duration::from_millis(250);

/// How often a keepalive goes to a client whose command is silent, so it
/// can tell a quiet command from a dead connection.
const KEEPALIVE: Duration = Duration::from_secs(crate::protocol::KEEPALIVE_SECS);

pub(crate) async fn handle(
    conn: &mut ServerConnection,
    shared: &Arc<Session>,
    req: Exec,
) -> Result<Outcome, ConnError> {
    let command = req.command.clone();
    let mut outcome = Outcome::new(&command);
    if !shared.config.allow_exec {
        let err = RequestError::new(
            ErrorCode::ExecDisabled,
            "exec is disabled on this server (start it with --allow-exec)",
        );
        return refuse(conn, outcome, err).await;
    }
    if command.trim().is_empty() {
        return refuse(conn, outcome, RequestError::new(ErrorCode::BadRequest, "exec needs a command")).await;
    }
    let mut contained = Contained::prepare();
    let mut child = match spawn(&command, shared, req.stdin, &contained) {
        Ok(c) => c,
        Err(e) => {
            let err = RequestError::new(
                ErrorCode::Internal,
                format!("cannot start sh: {}", crate::error::plain_io(&e)),
            );
            return refuse(conn, outcome, err).await;
        }
    };
    contained.started(child.id());
    conn.writer.write(&ServerMessage::Started).await?;

    // A command may run silently for as long as it likes; the client's
    // disconnect, not its silence, is what ends it.
    conn.set_idle_timeout(None);
    let result = run(conn, &mut child, &mut contained, req.stdin, req.timeout).await;
    conn.set_idle_timeout(shared.config.idle_timeout);
    contained.kill();
    outcome.bytes = result?;
    Ok(outcome)
}

fn spawn(command: &str, shared: &Session, stdin: bool, contained: &Contained) -> std::io::Result<Child> {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(command)
        .current_dir(shared.root.path())
        .process_group(0)
        .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(procs) = contained.procs_file() {
        // SAFETY: join_in_child makes only async-signal-safe calls.
        unsafe {
            cmd.pre_exec(move || {
                join_in_child(&procs);
                Ok(())
            });
        }
    }
    cmd.spawn()
}

/// Runs the exchange until the command is over, its output drained and its
/// `exit` frame sent. Returns the output bytes sent.
async fn run(
    conn: &mut ServerConnection,
    child: &mut Child,
    contained: &mut Contained,
    stdin: bool,
    timeout: Option<u64>,
) -> Result<u64, ConnError> {
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let child_stdin = child.stdin.take();
    let ServerConnection { reader, writer, .. } = conn;
    let (finished_tx, finished_rx) = oneshot::channel::<()>();

    // The command is over when it has exited (or been killed) and both
    // pipes are at EOF. Killing the group at exit closes pipes that
    // background grandchildren still hold.
    let output = async {
        let (ended_tx, ended) = oneshot::channel::<()>();
        let waited = async {
            let limit = timeout.map(Duration::from_secs);
            let timed_out = match limit {
                Some(limit) => tokio::time::timeout(limit, child.wait()).await.is_err(),
                None => {
                    let _ = child.wait().await;
                    false
                }
            };
            contained.kill();
            let status = child.wait().await;
            let _ = ended_tx.send(());
            (status, timed_out)
        };
        let (pumped, (status, timed_out)) = tokio::join!(pump_output(writer, stdout, stderr, ended), waited);
        let (out, err) = pumped?;
        writer.write(&exit_frame(status, timed_out, &out, &err)).await?;
        let _ = finished_tx.send(());
        Ok::<u64, ConnError>(out.total_size + err.total_size)
    };

    // Meanwhile, forward stdin up to the client's EOF frame (which it sends
    // at the latest when it sees `exit`, so the next request starts in
    // step), then watch for the client going away until the command is over.
    let input = async {
        forward_stdin(reader, child_stdin, stdin).await?;
        tokio::select! {
            gone = watch_disconnect(reader) => Err(gone),
            _ = finished_rx => Ok(()),
        }
    };

    // A disconnect or protocol error on the input side ends everything at
    // once; the caller then kills the process group.
    let (bytes, ()) = tokio::try_join!(output, input)?;
    Ok(bytes)
}

/// Builds the `exit` frame from how the command ended.
fn exit_frame(
    status: std::io::Result<ExitStatus>,
    timed_out: bool,
    out: &StreamSummary,
    err: &StreamSummary,
) -> ServerMessage {
    let (exit_code, signal) = match status {
        Ok(st) => (st.code(), st.signal()),
        // The child could not be waited for: report it as killed.
        Err(_) => (None, Some(Signal::KILL.as_raw())),
    };
    ServerMessage::Exit { exit_code, signal, timed_out, stdout: Some(out.clone()), stderr: Some(err.clone()) }
}

/// Drains both pipes concurrently into `stdout` and `stderr` frames, hashing
/// each stream, with a keepalive while both are silent; returns their
/// summaries once both are at EOF, or [`DRAIN`] after `ended` (the command
/// is over and killed) if something that escaped still holds one open.
async fn pump_output<W, A, B>(
    writer: &mut FrameWriter<W, ServerMessage>,
    mut stdout: A,
    mut stderr: B,
    mut ended: oneshot::Receiver<()>,
) -> Result<(StreamSummary, StreamSummary), ConnError>
where
    W: AsyncWrite + Unpin,
    A: AsyncRead + Unpin,
    B: AsyncRead + Unpin,
{
    let mut out = StreamState::new(ServerMessage::Stdout);
    let mut err = StreamState::new(ServerMessage::Stderr);
    let mut keepalive = tokio::time::interval_at(tokio::time::Instant::now() + KEEPALIVE, KEEPALIVE);
    let mut deadline = None;
    while out.open || err.open {
        let drained = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        // Both reads are cancel-safe: the one that loses the race has read
        // nothing.
        tokio::select! {
            n = stdout.read(&mut out.buf), if out.open => out.forward(n, writer).await?,
            n = stderr.read(&mut err.buf), if err.open => err.forward(n, writer).await?,
            _ = &mut ended, if deadline.is_none() => deadline = Some(tokio::time::Instant::now() + DRAIN),
            () = drained => break,
            _ = keepalive.tick() => writer.write(&ServerMessage::Keepalive).await?,
        }
    }
    Ok((out.summary(), err.summary()))
}

/// One output stream's progress.
struct StreamState {
    /// `stdout` or `stderr`: the message of this stream's frames.
    op: ServerMessage,
    /// Read buffer, reused for every chunk.
    buf: Vec<u8>,
    /// False once the pipe reached EOF.
    open: bool,
    /// Bytes sent so far.
    total: u64,
    /// MD5 of the bytes sent so far.
    md5: Md5,
}

impl StreamState {
    fn new(op: ServerMessage) -> Self {
        StreamState { op, buf: vec![0; PIPE_CHUNK], open: true, total: 0, md5: Md5::new() }
    }

    async fn forward<W: AsyncWrite + Unpin>(
        &mut self,
        read: std::io::Result<usize>,
        writer: &mut FrameWriter<W, ServerMessage>,
    ) -> Result<(), ConnError> {
        // A read error on our end of the pipe is treated as its end.
        let n = read.unwrap_or(0);
        if n == 0 {
            self.open = false;
            return Ok(());
        }
        let chunk = &self.buf[..n];
        self.md5.update(chunk);
        self.total += n as u64;
        writer.write_frame(&self.op, chunk).await
    }

    fn summary(&self) -> StreamSummary {
        StreamSummary { total_size: self.total, md5: self.md5.clone().finish() }
    }
}

/// Forwards `stdin` frames to the command until the client's EOF frame
/// (`total_size` 0). Keeps reading (and dropping) chunks once the command
/// stops taking them, so the connection stays in step.
async fn forward_stdin(
    reader: &mut Reader<ClientMessage>,
    mut sink: Option<ChildStdin>,
    expected: bool,
) -> Result<(), ConnError> {
    if !expected {
        return Ok(());
    }
    loop {
        let h = reader.expect().await?;
        if h.msg == ClientMessage::Keepalive {
            reader.skip_body(h.total_size).await?;
            continue;
        }
        if h.msg != ClientMessage::Stdin {
            return Err(ConnError::Unexpected { got: h.msg.op(), expected: "stdin" });
        }
        if h.total_size == 0 {
            // Dropping the pipe closes the command's stdin: it reads EOF.
            drop(sink.take());
            return Ok(());
        }
        let chunk = reader.read_small_body(h.total_size, MAX_STDIN_CHUNK).await?;
        if let Some(pipe) = sink.as_mut() {
            // A command that does not read its stdin blocks this write; keep
            // an ear on the socket meanwhile so a vanished client is noticed.
            tokio::select! {
                written = pipe.write_all(&chunk) => if written.is_err() {
                    // The command closed its stdin (or exited): drop the rest.
                    sink = None;
                },
                gone = reader.closed_while_buffering(MAX_STDIN_CHUNK) => return Err(gone),
            }
        }
    }
}

/// Completes when the client disconnects or sends anything but keepalives
/// while a command runs without stdin: both end the command.
async fn watch_disconnect(reader: &mut Reader<ClientMessage>) -> ConnError {
    loop {
        match reader.read().await {
            Ok(None) => return ConnError::Closed,
            Ok(Some(h)) if h.msg == ClientMessage::Keepalive => {
                if let Err(e) = reader.skip_body(h.total_size).await {
                    return e;
                }
            }
            Ok(Some(h)) => {
                return ConnError::Unexpected { got: h.msg.op(), expected: "nothing while the command runs" }
            }
            Err(e) => return e,
        }
    }
}
