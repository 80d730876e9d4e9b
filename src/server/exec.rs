//! `exec`: run a shell command in its own process group and stream its
//! stdout and stderr back as they come, then its exit status and digests.
//!
//! Three things run at once: the output pump (both pipes drained
//! concurrently, so a command that fills one pipe never blocks on it), the
//! stdin forwarder (client frames to the command's stdin), and the wait for
//! the command (with its time limit). Whatever ends the exchange, the
//! command's whole process group is killed: no orphans.

use super::contain::{Contained, MARK_VAR};
use super::pty::{self, Master, Program, Terminal};
use super::request::{refuse, Outcome};
use super::spawn::{self, Launch, Leader, Process};
use super::Session;
use crate::connection::{FrameWriter, Reader, ServerConnection};
use crate::digest::{md5_many, PartsDigest};
use crate::error::{ConnError, RequestError};
use crate::protocol::{Chunk, ClientMessage, ErrorCode, Exec, Message, ServerMessage, StreamSummary};
use rustix::pipe::PipeFlags;
use rustix::process::Signal;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::oneshot;

/// Read size for the command's pipes, each read one frame: 64 KiB, the
/// Linux pipe's default capacity (and PROTOCOL.md's bound on a chunk).
const PIPE_CHUNK: usize = 64 * 1024;

/// Largest stdin chunk accepted from a client. The client sends 64 KiB; the
/// margin allows other implementations larger writes while bounding memory.
pub const MAX_STDIN_CHUNK: usize = 1024 * 1024;

/// What a terminal takes as the end of input (VEOF).
const CTRL_D: u8 = 4;

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
    if command.trim().is_empty() != req.login {
        let why = if req.login { "a login shell takes no command" } else { "exec needs a command" };
        return refuse(conn, outcome, RequestError::new(ErrorCode::BadRequest, why)).await;
    }
    let mut contained = Contained::prepare();
    let started = match &req.tty {
        Some(tty) => {
            let terminal = Terminal { term: tty.term.clone(), rows: tty.rows.max(1), cols: tty.cols.max(1) };
            let program = if req.login { Program::LoginShell } else { Program::Command(&command) };
            pty::spawn(program, &terminal, shared.root.path(), &contained).map(|(child, master)| {
                let streams = Streams {
                    out: Box::new(master.clone()),
                    err: Box::new(tokio::io::empty()),
                    sink: Some(Box::new(master.clone())),
                    master: Some(master),
                };
                (child, streams)
            })
        }
        None if req.login => Err(std::io::Error::other("a login shell needs a terminal (tty)")),
        None => spawn(&command, shared, req.stdin, &contained),
    };
    let (mut child, streams) = match started {
        Ok(c) => c,
        Err(e) => {
            let err = RequestError::new(
                ErrorCode::Internal,
                format!("cannot start the command: {}", crate::error::plain_io(&e)),
            );
            return refuse(conn, outcome, err).await;
        }
    };
    contained.started(child.id());
    conn.writer.write(&ServerMessage::Started).await?;

    // A command may run silently for as long as it likes; the client's
    // disconnect, not its silence, is what ends it.
    conn.set_idle_timeout(None);
    let expects_stdin = req.stdin;
    let result = run(conn, &mut child, &mut contained, streams, (expects_stdin, req.timeout)).await;
    conn.set_idle_timeout(shared.config.idle_timeout);
    contained.kill();
    outcome.bytes = result?;
    Ok(outcome)
}

/// Starts `sh -c COMMAND` in the root on pipes (stdin on /dev/null unless
/// the client sends some).
fn spawn(
    command: &str,
    shared: &Session,
    stdin: bool,
    contained: &Contained,
) -> io::Result<(Process, Streams)> {
    let pipe = || rustix::pipe::pipe_with(PipeFlags::CLOEXEC);
    // Room for a whole batch, so a fast writer's output is hashed in lanes:
    // in 64 KiB, a pipe's default, the pump found one chunk at a time and
    // hashed 1 GiB of `cat` one MD5 after another (the server's CPU 1.9 ->
    // 1.1 s). Pages are taken only as output waits in it; where the kernel
    // refuses (a user over fs.pipe-user-pages-soft), batches are smaller.
    let output = || {
        let (r, w) = pipe()?;
        let _ = rustix::pipe::fcntl_setpipe_size(&r, PIPE_CHUNK * CHUNKS_AT_ONCE);
        io::Result::Ok((r, w))
    };
    let (out_r, out_w) = output()?;
    let (err_r, err_w) = output()?;
    let (input, sink) = match stdin {
        true => pipe().map(|(r, w)| (r, Some(w)))?,
        false => (OwnedFd::from(std::fs::File::open("/dev/null")?), None),
    };
    let (program, args) = spawn::shell(command);
    let process = spawn::start(&Launch {
        program,
        args,
        env: vec![(MARK_VAR, contained.mark())],
        dir: shared.root.path(),
        stdio: [input.as_fd(), out_w.as_fd(), err_w.as_fd()],
        leader: Leader::Group,
        cgroup: contained.cgroup(),
    })?;
    let sink = match sink {
        Some(w) => Some(Box::new(pipe::Sender::from_owned_fd(w)?) as Box<dyn AsyncWrite + Unpin + Send>),
        None => None,
    };
    let streams = Streams {
        out: Box::new(pipe::Receiver::from_owned_fd(out_r)?),
        err: Box::new(pipe::Receiver::from_owned_fd(err_r)?),
        sink,
        master: None,
    };
    Ok((process, streams))
}

/// A running command's ends: its output (a pty's master twice over, or its
/// two pipes), where its input goes, and its terminal, if it has one.
struct Streams {
    /// Its stdout (or the terminal's output).
    out: Box<dyn AsyncRead + Unpin + Send>,
    /// Its stderr (empty on a terminal: the terminal merges them).
    err: Box<dyn AsyncRead + Unpin + Send>,
    /// Where the client's stdin goes, if anywhere.
    sink: Option<Box<dyn AsyncWrite + Unpin + Send>>,
    /// The terminal, for `resize`.
    master: Option<Master>,
}

/// Runs the exchange until the command is over, its output drained and its
/// `exit` frame sent. Returns the output bytes sent.
async fn run(
    conn: &mut ServerConnection,
    child: &mut Process,
    contained: &mut Contained,
    streams: Streams,
    (stdin, timeout): (bool, Option<u64>),
) -> Result<u64, ConnError> {
    let Streams { out: stdout, err: stderr, sink: child_stdin, master } = streams;
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
            // Out of time: everything, now. Ended: its group, which closes
            // the pipes of all but escapees; those (and the rest of the
            // cgroup, or what carries the mark) go after `exit` is sent,
            // off the answer's path: 0.5 ms of /proc or cgroup work saved
            // on every `xfer exec true`.
            match timed_out {
                true => contained.kill(),
                false => contained.kill_group(),
            }
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
        forward_stdin(reader, child_stdin, stdin, master.as_ref()).await?;
        tokio::select! {
            gone = watch_disconnect(reader, master.as_ref()) => Err(gone),
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
    op: fn(Chunk) -> ServerMessage,
    /// Read buffer, reused: one chunk at first, room for [`CHUNKS_AT_ONCE`]
    /// once a read fills it.
    buf: Vec<u8>,
    /// False once the pipe reached EOF.
    open: bool,
    /// Bytes sent so far.
    total: u64,
    /// The stream's digest over its chunks so far.
    digest: PartsDigest,
}

/// Most chunks taken in one read, hashed together in SIMD lanes and sent
/// as one batch: a command that writes fast (`cat` of a large file) fills
/// the pipe faster than one MD5 stream hashes it (0.74 GB/s), while one
/// that writes a line at a time has its line sent at once, alone. Not 32,
/// though AVX-512 has the lanes: a 2 MiB pipe and buffer no longer fit in
/// a core's 2 MiB L2, and 1 GiB of `cat` took 2.44 s instead of 1.15.
const CHUNKS_AT_ONCE: usize = 16;

impl StreamState {
    /// Starts with room for one chunk: zeroing both streams' full 1 MiB
    /// buffers for every command was the server's largest single cost of
    /// `xfer exec true` (memset, 7.7 % of its samples; 0.95-1.05 ms of CPU
    /// a command, 0.80-0.90 without it).
    fn new(op: fn(Chunk) -> ServerMessage) -> Self {
        StreamState { op, buf: vec![0; PIPE_CHUNK], open: true, total: 0, digest: PartsDigest::new() }
    }

    /// Sends what was just `read` into the buffer (all the pipe held, up to
    /// [`CHUNKS_AT_ONCE`] chunks), each chunk behind its header with its MD5.
    async fn forward<W>(
        &mut self,
        read: std::io::Result<usize>,
        writer: &mut FrameWriter<W, ServerMessage>,
    ) -> Result<(), ConnError>
    where
        W: AsyncWrite + Unpin,
    {
        // A read error on our end of the pipe is treated as its end.
        let n = read.unwrap_or(0);
        if n == 0 {
            self.open = false;
            return Ok(());
        }
        // Over a chunk's worth, hashing would hold up this thread (and every
        // connection on it) for over 0.1 ms: on the blocking pool, the
        // buffer lent to it rather than copied.
        let digests = match n <= PIPE_CHUNK {
            true => md5_many(&chunks_in(&self.buf[..n])),
            false => {
                let buf = std::mem::take(&mut self.buf);
                let (buf, digests) = tokio::task::spawn_blocking(move || {
                    let digests = md5_many(&chunks_in(&buf[..n]));
                    (buf, digests)
                })
                .await
                .expect("hashing does not panic");
                self.buf = buf;
                digests
            }
        };
        for (chunk, md5) in chunks_in(&self.buf[..n]).into_iter().zip(digests) {
            self.digest.push(&md5.to_digest());
            self.total += chunk.len() as u64;
            writer.write_frame(&(self.op)(Chunk { md5: Some(md5) }), chunk).await?;
        }
        // A full read says the command writes faster than we read: take the
        // whole pipe at once from now on.
        if n == self.buf.len() {
            self.buf.resize(PIPE_CHUNK * CHUNKS_AT_ONCE, 0);
        }
        Ok(())
    }

    fn summary(&self) -> StreamSummary {
        StreamSummary { total_size: self.total, md5: self.digest.finish() }
    }
}

/// `bytes` cut into chunks of [`PIPE_CHUNK`], the last one shorter.
fn chunks_in(bytes: &[u8]) -> Vec<&[u8]> {
    bytes.chunks(PIPE_CHUNK).collect()
}

/// Forwards `stdin` frames to the command until the client's EOF frame
/// (`total_size` 0). Keeps reading (and dropping) chunks once the command
/// stops taking them, so the connection stays in step.
async fn forward_stdin(
    reader: &mut Reader<ClientMessage>,
    mut sink: Option<Box<dyn AsyncWrite + Unpin + Send>>,
    expected: bool,
    terminal: Option<&Master>,
) -> Result<(), ConnError> {
    if !expected {
        return Ok(());
    }
    loop {
        let h = reader.expect().await?;
        match (&h.msg, terminal) {
            (ClientMessage::Keepalive, _) => {
                reader.skip_body(h.total_size).await?;
                continue;
            }
            (ClientMessage::Resize { rows, cols }, Some(master)) => {
                reader.skip_body(h.total_size).await?;
                master.resize((*rows).max(1), (*cols).max(1));
                continue;
            }
            (ClientMessage::Stdin, _) => {}
            (other, _) => return Err(ConnError::Unexpected { got: other.op(), expected: "stdin" }),
        }
        if h.total_size == 0 {
            // Dropping the pipe closes the command's stdin: it reads EOF.
            // A terminal is not closed: it is told the end of input, as
            // Ctrl-D at the start of a line tells it.
            if let (Some(pty), Some(_)) = (sink.as_mut(), terminal) {
                let _ = pty.write_all(&[CTRL_D]).await;
            }
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
async fn watch_disconnect(reader: &mut Reader<ClientMessage>, terminal: Option<&Master>) -> ConnError {
    loop {
        match reader.read().await {
            Ok(None) => return ConnError::Closed,
            Ok(Some(h))
                if h.msg == ClientMessage::Keepalive || matches!(h.msg, ClientMessage::Resize { .. }) =>
            {
                if let (ClientMessage::Resize { rows, cols }, Some(master)) = (&h.msg, terminal) {
                    master.resize((*rows).max(1), (*cols).max(1));
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stream_reads_a_chunk_at_a_time_until_a_read_fills_it() {
        let (a, _b) = tokio::io::duplex(8 << 20);
        let mut writer = FrameWriter::new(a);
        let mut out = StreamState::new(ServerMessage::Stdout);
        assert_eq!(out.buf.len(), PIPE_CHUNK, "a command that prints a line costs one chunk");
        let mut sent = PartsDigest::new();
        let mut send = async |out: &mut StreamState, n: usize, byte: u8| {
            out.buf[..n].fill(byte);
            for chunk in chunks_in(&out.buf[..n]) {
                sent.push(&md5_many(&[chunk])[0].to_digest());
            }
            out.forward(Ok(n), &mut writer).await.unwrap();
        };
        send(&mut out, 100, 1).await;
        assert_eq!(out.buf.len(), PIPE_CHUNK, "a short read leaves it as it was");
        send(&mut out, PIPE_CHUNK, 2).await;
        assert_eq!(
            out.buf.len(),
            PIPE_CHUNK * CHUNKS_AT_ONCE,
            "a full read: the whole pipe at once from now on"
        );
        send(&mut out, 3 * PIPE_CHUNK + 5, 3).await;
        let summary = out.summary();
        assert_eq!(summary.total_size, 100 + 4 * PIPE_CHUNK as u64 + 5);
        assert_eq!(summary.md5, sent.finish(), "every chunk hashed once, in order");
    }
}
