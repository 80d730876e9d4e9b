//! `xfer exec`: run a command on the server, its output streamed back live
//! to our own stdout and stderr, our stdin forwarded, its exit code ours.
//! Without a command: an interactive session, one command per line.

use super::{unexpected_reply, Client, Options};
use crate::connection::{Reader, Writer};
use crate::digest::{md5_many, PartsDigest};
use crate::error::{ConnError, Error};
use crate::protocol::{ClientMessage, Exec, Md5Hex, ServerMessage, StreamSummary, Tty};
use crate::ui::Ui;
use std::io::IsTerminal;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::oneshot;

/// Stdin is forwarded in chunks of this size: the Linux pipe capacity, so a
/// full pipe's worth becomes one frame.
const STDIN_CHUNK: usize = 64 * 1024;

/// How often we tell the server we are here while we wait.
const KEEPALIVE: Duration = Duration::from_secs(crate::protocol::KEEPALIVE_SECS);

/// A server silent for this long, though it sends a keepalive every
/// [`KEEPALIVE`], is gone: said then, not at the next line typed.
const GONE_AFTER: Duration = Duration::from_secs(4 * crate::protocol::KEEPALIVE_SECS);

/// What the user asked of one command.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExecOptions {
    /// Forward our stdin (`false` with `-n`).
    pub stdin: bool,
    /// Seconds before the server kills the command.
    pub timeout: Option<u64>,
    /// On a pseudo-terminal (`-t`, or a shell from a terminal).
    pub tty: bool,
    /// The server user's login shell, not a command.
    pub login: bool,
}

/// Runs `words` joined by spaces (as ssh does) and returns the exit code to
/// leave with.
pub async fn exec(opts: &Options, words: &[String], how: ExecOptions) -> Result<u8, Error> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut client = Client::connect(opts).await?;
    let command = words.join(" ");
    let conn = &mut client.conn;
    // The server's keepalives come while the command is silent: four
    // missed, and the connection is gone.
    conn.set_idle_timeout(Some(GONE_AFTER));
    let (mut stdout, mut stderr) = our_outputs();
    // Nothing to forward from /dev/null (cron jobs, `ssh`-style scripts):
    // the command gets it on the server as with -n, without our reading
    // thread (`xfer exec true </dev/null`: 4.73 -> 4.47 ms).
    let stdin = (how.stdin && !stdin_is_dev_null()).then(tokio::io::stdin);
    // On a terminal of ours, keys go to the remote program as they are
    // typed (raw mode), until the guard puts the terminal back, on every
    // way out: the end, an error, a lost connection, SIGTERM or SIGHUP.
    let sinks = (&mut stdout, &mut stderr);
    let ran = run_one(&mut conn.reader, &mut conn.writer, &command, (how, opts.ui), stdin, sinks);
    let Some(_raw) = how.tty.then(RawMode::enter).flatten() else {
        // Not raw: signals may end us as they would any program (setting
        // up handlers would cost every `xfer exec true` 0.4 ms).
        return ran.await;
    };
    let mut term = signal(SignalKind::terminate()).map_err(|e| Error::local("signals", e))?;
    let mut hup = signal(SignalKind::hangup()).map_err(|e| Error::local("signals", e))?;
    tokio::select! {
        ran = ran => ran,
        _ = term.recv() => Ok(128 + 15),
        _ = hup.recv() => Ok(128 + 1),
    }
}

/// Whether our stdin is `/dev/null`.
fn stdin_is_dev_null() -> bool {
    is_dev_null(&rustix::fs::fstat(std::io::stdin()))
}

/// Whether `stat` is of `/dev/null`: the character device 1:3, as Linux
/// numbers it.
fn is_dev_null(stat: &rustix::io::Result<rustix::fs::Stat>) -> bool {
    use rustix::fs::{major, minor, FileType};
    stat.as_ref().is_ok_and(|st| {
        FileType::from_raw_mode(st.st_mode) == FileType::CharacterDevice
            && (major(st.st_rdev), minor(st.st_rdev)) == (1, 3)
    })
}

/// Our stdout or stderr, for the command's output. A file or `/dev/null`
/// never keeps a writer waiting, so it is written straight from here; a
/// pipe or a terminal may, so through tokio's thread, which copies each
/// chunk and hands it over (1 GiB of `cat` to /dev/null: 1.69 -> 1.28 s,
/// the client's CPU 1.1 -> 0.6 s).
enum Output<S, T> {
    /// Written with `write(2)` on this thread.
    Direct(S),
    /// Written by tokio on a thread of its own.
    Handed(T),
}

/// Our stdout and stderr, each as [`Output`] decides.
fn our_outputs() -> (Output<std::io::Stdout, tokio::io::Stdout>, Output<std::io::Stderr, tokio::io::Stderr>) {
    (Output::new(std::io::stdout(), tokio::io::stdout()), Output::new(std::io::stderr(), tokio::io::stderr()))
}

impl<S: std::os::fd::AsFd, T> Output<S, T> {
    fn new(ours: S, tokio: T) -> Self {
        let stat = rustix::fs::fstat(&ours);
        let file = stat.as_ref().is_ok_and(|st| rustix::fs::FileType::from_raw_mode(st.st_mode).is_file());
        match file || is_dev_null(&stat) {
            true => Output::Direct(ours),
            false => Output::Handed(tokio),
        }
    }
}

impl<S: std::os::fd::AsFd + Unpin, T: AsyncWrite + Unpin> AsyncWrite for Output<S, T> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Output::Direct(fd) => std::task::Poll::Ready(loop {
                match rustix::io::write(&*fd, buf) {
                    Err(rustix::io::Errno::INTR) => continue,
                    written => break written.map_err(Into::into),
                }
            }),
            Output::Handed(w) => std::pin::Pin::new(w).poll_write(cx, buf),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Output::Direct(_) => std::task::Poll::Ready(Ok(())),
            Output::Handed(w) => std::pin::Pin::new(w).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Output::Direct(_) => std::task::Poll::Ready(Ok(())),
            Output::Handed(w) => std::pin::Pin::new(w).poll_shutdown(cx),
        }
    }
}

/// Our terminal in raw mode while it lives: every key (Ctrl-C, arrows,
/// Ctrl-D) goes to the remote program, which echoes what it likes. Put
/// back as it was when dropped.
struct RawMode(rustix::termios::Termios);

impl RawMode {
    /// Raw mode on our stdin, if it is a terminal.
    fn enter() -> Option<RawMode> {
        use rustix::termios::{tcgetattr, tcsetattr, OptionalActions};
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        raw.make_raw();
        tcsetattr(&stdin, OptionalActions::Now, &raw).ok()?;
        Some(RawMode(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        use rustix::termios::{tcsetattr, OptionalActions};
        let _ = tcsetattr(std::io::stdin(), OptionalActions::Now, &self.0);
    }
}

/// Our terminal's `TERM` and window size, for the remote one.
fn our_terminal() -> Tty {
    let size = rustix::termios::tcgetwinsize(std::io::stdout())
        .or_else(|_| rustix::termios::tcgetwinsize(std::io::stdin()))
        .ok()
        .filter(|w| w.ws_row > 0 && w.ws_col > 0);
    let (rows, cols) = size.map_or((24, 80), |w| (w.ws_row, w.ws_col));
    let term = std::env::var("TERM").ok().filter(|t| !t.is_empty()).unwrap_or_else(|| "dumb".into());
    Tty { term, rows, cols }
}

/// Reads commands from stdin, one per line, and runs each in turn on one
/// connection until EOF or `exit`. A failing command does not end the
/// session; the exit code is the last command's.
pub async fn session(opts: &Options, timeout: Option<u64>) -> Result<u8, Error> {
    let mut client = Client::connect(opts).await?;
    let conn = &mut client.conn;
    conn.set_idle_timeout(Some(GONE_AFTER));
    let interactive = std::io::stdin().is_terminal();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let (mut stdout, mut stderr) = our_outputs();
    let how = ExecOptions { timeout, ..ExecOptions::default() };
    let mut last = 0;
    loop {
        if interactive {
            stderr.write_all(b"xfer> ").await.map_err(|e| Error::local("stderr", e))?;
            stderr.flush().await.map_err(|e| Error::local("stderr", e))?;
        }
        // While the user thinks, a keepalive every few seconds keeps the
        // connection, and finds out at once if it is gone.
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + KEEPALIVE, KEEPALIVE);
        let line = loop {
            tokio::select! {
                // Cancel-safe: a line half typed stays buffered.
                line = lines.next_line() => break line.map_err(|e| Error::local("stdin", e))?,
                _ = ticks.tick() => {
                    conn.writer.write(&ClientMessage::Keepalive).await?;
                    let frame = conn.reader.expect().await?;
                    conn.reader.skip_body(frame.total_size).await?;
                    if frame.msg != ServerMessage::Keepalive {
                        return Err(unexpected_reply(frame.msg, "keepalive"));
                    }
                }
            }
        };
        let Some(line) = line else { break };
        let command = line.trim();
        if command.is_empty() {
            continue;
        }
        if command == "exit" {
            break;
        }
        let none: Option<tokio::io::Stdin> = None;
        let sinks = (&mut stdout, &mut stderr);
        last = match run_one(&mut conn.reader, &mut conn.writer, command, (how, opts.ui), none, sinks).await {
            Ok(code) => code,
            // The command's own failure (timeout, say) is reported and the
            // session goes on; a broken connection ends it.
            Err(e @ (Error::Timeout(_) | Error::Remote(_))) => {
                opts.ui.error(&e);
                e.exit_code()
            }
            Err(e) => return Err(e),
        };
    }
    Ok(last)
}

/// One command on an open connection: request, stream, verify, exit code.
async fn run_one<I, O, E>(
    reader: &mut Reader<ServerMessage>,
    writer: &mut Writer<ClientMessage>,
    command: &str,
    (how, ui): (ExecOptions, Ui),
    stdin: Option<I>,
    (stdout, stderr): (&mut O, &mut E),
) -> Result<u8, Error>
where
    I: AsyncRead + Unpin,
    O: AsyncWrite + Unpin,
    E: AsyncWrite + Unpin,
{
    let req = Exec {
        command: command.to_string(),
        timeout: how.timeout,
        stdin: stdin.is_some(),
        tty: how.tty.then(our_terminal),
        login: how.login,
        compress: writer.compressing(),
    };
    writer.write(&ClientMessage::Exec(req)).await?;
    let reply = reader.expect_control().await?;
    if reply != ServerMessage::Started {
        // The command never ran: exec disabled, or refused.
        return Err(match unexpected_reply(reply, "started") {
            Error::Remote(e) => Error::NotRun(e.message),
            other => other,
        });
    }

    // Forward stdin while receiving output. When `exit` arrives, the
    // forwarder stops at its next read and sends the EOF frame, so the
    // server knows no more stdin follows; frames are never cut in half.
    let (exited_tx, exited_rx) = oneshot::channel::<()>();
    let output = async {
        let exit = receive_output(reader, stdout, stderr, ui).await?;
        let _ = exited_tx.send(());
        Ok::<_, Error>(exit)
    };
    // A terminal's new size goes over as the user resizes the window.
    let resized = match how.tty {
        true => Some(
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
                .map_err(|e| Error::local("signals", e))?,
        ),
        false => None,
    };
    let input = forward_stdin(stdin, writer, exited_rx, resized);
    let (exit, ()) = tokio::try_join!(output, input)?;
    ui.exited(exit.exit_code, exit.signal, exit.timed_out);
    exit_code(&exit, how.timeout)
}

/// Sends our stdin (if any) as `stdin` frames until it ends or `stop`
/// fires, then the EOF frame (`total_size` 0); and a keepalive every few
/// seconds until `stop`, so the server knows we are here.
async fn forward_stdin<I: AsyncRead + Unpin>(
    mut stdin: Option<I>,
    writer: &mut Writer<ClientMessage>,
    mut stop: oneshot::Receiver<()>,
    mut resized: Option<tokio::signal::unix::Signal>,
) -> Result<(), Error> {
    let mut buf = vec![0u8; STDIN_CHUNK];
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + KEEPALIVE, KEEPALIVE);
    loop {
        let winch = async {
            match resized.as_mut() {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            }
        };
        let reading = async {
            match stdin.as_mut() {
                Some(s) => s.read(&mut buf).await,
                None => std::future::pending().await,
            }
        };
        // Only reads and waits are raced: they are cancel-safe, while a
        // frame half written would break the stream.
        let n = tokio::select! {
            n = reading => n.map_err(|e| Error::local("stdin", e))?,
            _ = &mut stop => {
                if stdin.is_some() {
                    writer.write_frame(&ClientMessage::Stdin, &[]).await?;
                }
                return Ok(());
            }
            _ = ticks.tick() => {
                writer.write(&ClientMessage::Keepalive).await?;
                continue;
            }
            _ = winch => {
                let Tty { rows, cols, .. } = our_terminal();
                writer.write(&ClientMessage::Resize { rows, cols }).await?;
                continue;
            }
        };
        writer.write_frame(&ClientMessage::Stdin, &buf[..n]).await?;
        if n == 0 {
            stdin = None;
        }
    }
}

/// Writes `stdout` and `stderr` frames to ours as they arrive, checking
/// each chunk's MD5 (many at once, behind the output) and each stream's
/// digest over its chunks when the `exit` frame comes. With `--json`, each
/// chunk is an object on our stdout instead.
async fn receive_output<O, E>(
    reader: &mut Reader<ServerMessage>,
    stdout: &mut O,
    stderr: &mut E,
    ui: Ui,
) -> Result<Ended, Error>
where
    O: AsyncWrite + Unpin,
    E: AsyncWrite + Unpin,
{
    let (mut out, mut err) = (Verifier::new("stdout"), Verifier::new("stderr"));
    // The stream written to last and not yet flushed. A write starts at
    // once (tokio hands it to a thread) and the next chunk is read while it
    // runs, where waiting for each cost a thread's wake-up per chunk (1 GiB
    // of `cat` to /dev/null: 3.4 -> 1.6 s); waiting only when the other
    // stream is written next keeps the two in the order they came.
    let mut unflushed = None;
    loop {
        let h = reader.expect().await?;
        let (sink, other, verifier, claimed): (
            &mut (dyn AsyncWrite + Unpin),
            &mut (dyn AsyncWrite + Unpin),
            _,
            _,
        ) = match h.msg {
            ServerMessage::Keepalive => {
                reader.skip_body(h.total_size).await?;
                continue;
            }
            ServerMessage::Stdout(chunk) => (stdout, stderr, &mut out, chunk.md5),
            ServerMessage::Stderr(chunk) => (stderr, stdout, &mut err, chunk.md5),
            ServerMessage::Exit { exit_code, signal, timed_out, stdout: sent_out, stderr: sent_err } => {
                reader.skip_body(h.total_size).await?;
                stdout.flush().await.map_err(|e| Error::local("stdout", e))?;
                stderr.flush().await.map_err(|e| Error::local("stderr", e))?;
                out.finish(sent_out.as_ref()).await?;
                err.finish(sent_err.as_ref()).await?;
                return Ok(Ended { exit_code, signal, timed_out });
            }
            reply => {
                reader.skip_body(h.total_size).await?;
                return Err(unexpected_reply(reply, "stdout, stderr or exit"));
            }
        };
        let mut buf = verifier.buffer(h.total_size.min(1 << 20) as usize);
        let n = reader.body(h.total_size).read_to_end(&mut buf).await.map_err(ConnError::Io)?;
        if (n as u64) < h.total_size {
            return Err(ConnError::Truncated("body").into());
        }
        if ui.json {
            ui.output(verifier.name, &buf);
        } else {
            if unflushed.is_some_and(|name| name != verifier.name) {
                other.flush().await.map_err(|e| Error::local(unflushed.unwrap_or_default(), e))?;
            }
            sink.write_all(&buf).await.map_err(|e| Error::local(verifier.name, e))?;
            unflushed = Some(verifier.name);
        }
        verifier.push(buf, claimed).await?;
    }
}

/// Checks one output stream's chunks against their MD5s, a batch at a time
/// on the blocking pool, after they were written out: output is never held
/// back for it, and a mismatch is reported at the latest when the command
/// ends.
struct Verifier {
    /// `stdout` or `stderr`.
    name: &'static str,
    /// Chunks written out and not yet checked, with the MD5 each claimed.
    waiting: Vec<(Vec<u8>, Option<Md5Hex>)>,
    /// Their bytes.
    waiting_bytes: usize,
    /// A batch being checked; it returns each chunk's digest and the
    /// buffers, or the offset in the stream of the first that differs.
    checking: Option<tokio::task::JoinHandle<Result<Checked, u64>>>,
    /// Buffers of chunks checked, to be read into again: a fresh 64 KiB
    /// each time costs its page faults (1 GiB of `cat`: 58,000 -> 1,500,
    /// which were 9 % of the client's time).
    spare: Vec<Vec<u8>>,
    /// Bytes handed to checking so far.
    total: u64,
    /// The stream's digest over the chunks checked so far.
    digest: PartsDigest,
}

/// Bytes of chunks checked together: 32 of a full pipe's 64 KiB, as many
/// as AVX-512's lanes take.
const VERIFY_BATCH: usize = 2 << 20;

impl Verifier {
    fn new(name: &'static str) -> Self {
        Verifier {
            name,
            waiting: Vec::new(),
            waiting_bytes: 0,
            checking: None,
            spare: Vec::new(),
            total: 0,
            digest: PartsDigest::new(),
        }
    }

    /// An empty buffer for a chunk of `len` bytes.
    fn buffer(&mut self, len: usize) -> Vec<u8> {
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.clear();
        buf.reserve(len);
        buf
    }

    /// Adds a chunk written out; checks a batch once enough wait.
    async fn push(&mut self, chunk: Vec<u8>, claimed: Option<Md5Hex>) -> Result<(), Error> {
        self.waiting_bytes += chunk.len();
        self.waiting.push((chunk, claimed));
        if self.waiting_bytes >= VERIFY_BATCH {
            self.check().await?;
        }
        Ok(())
    }

    /// Waits for the batch being checked, then starts checking what waits.
    async fn check(&mut self) -> Result<(), Error> {
        self.collect().await?;
        if self.waiting.is_empty() {
            // Nothing to check: no thread to start (exec true's latency).
            return Ok(());
        }
        let batch = std::mem::take(&mut self.waiting);
        let at = self.total;
        self.total += self.waiting_bytes as u64;
        self.waiting_bytes = 0;
        self.checking = Some(tokio::task::spawn_blocking(move || {
            let bodies: Vec<&[u8]> = batch.iter().map(|(b, _)| b.as_slice()).collect();
            let mut at = at;
            let mut digests = Vec::with_capacity(batch.len());
            for ((body, claimed), got) in batch.iter().zip(md5_many(&bodies)) {
                if claimed.as_ref() != Some(&got) {
                    return Err(at);
                }
                digests.push(got.to_digest());
                at += body.len() as u64;
            }
            Ok(Checked { digests, buffers: batch.into_iter().map(|(b, _)| b).collect() })
        }));
        Ok(())
    }

    /// The result of the batch being checked, if one is.
    async fn collect(&mut self) -> Result<(), Error> {
        let Some(checking) = self.checking.take() else { return Ok(()) };
        match checking.await.expect("hashing does not panic") {
            Ok(Checked { digests, buffers }) => {
                digests.iter().for_each(|d| self.digest.push(d));
                self.spare = buffers;
            }
            Err(at) => {
                let received = format!("other bytes in the chunk at byte {at}");
                return Err(Error::md5_mismatch(self.name, None, received));
            }
        }
        Ok(())
    }

    /// Checks what is left, then the stream's size and digest against the
    /// server's account of it.
    async fn finish(&mut self, sent: Option<&StreamSummary>) -> Result<(), Error> {
        self.check().await?;
        self.collect().await?;
        let (name, len, received) = (self.name, self.total, self.digest.finish());
        match sent {
            Some(s) if s.total_size == len && s.md5 == received => Ok(()),
            Some(s) => Err(Error::md5_mismatch(
                format!("{name} ({} bytes sent, {len} received)", s.total_size),
                Some(&s.md5),
                received.to_string(),
            )),
            None => Err(Error::md5_mismatch(name, None, received.to_string())),
        }
    }
}

/// A batch of chunks that matched their MD5s.
struct Checked {
    /// Each chunk's digest, in order.
    digests: Vec<[u8; 16]>,
    /// Their buffers, for the next chunks.
    buffers: Vec<Vec<u8>>,
}

/// How a command ended, from its `exit` frame.
#[derive(Debug, Default)]
struct Ended {
    /// Its exit code, if it exited.
    exit_code: Option<i32>,
    /// The signal that killed it, if one did.
    signal: Option<i32>,
    /// Its time ran out.
    timed_out: bool,
}

/// The exit code to leave with, as ssh: the command's own, 128+N for a
/// signal, and a timeout error when the limit ran out.
fn exit_code(exit: &Ended, timeout: Option<u64>) -> Result<u8, Error> {
    if exit.timed_out {
        return Err(Error::Timeout(timeout.unwrap_or(0)));
    }
    match (exit.exit_code, exit.signal) {
        (Some(code), _) => Ok(code.clamp(0, 255) as u8),
        (None, Some(sig)) => Ok((128 + sig).clamp(0, 255) as u8),
        (None, None) => Ok(crate::error::EXIT_CONNECT),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_ssh() {
        let mut h = Ended { exit_code: Some(3), ..Ended::default() };
        assert_eq!(exit_code(&h, None).unwrap(), 3);
        h.exit_code = None;
        h.signal = Some(9);
        assert_eq!(exit_code(&h, None).unwrap(), 137);
        h.timed_out = true;
        assert!(matches!(exit_code(&h, Some(2)), Err(Error::Timeout(2))));
        assert_eq!(Error::Timeout(2).exit_code(), crate::error::EXIT_TIMEOUT);
    }

    #[tokio::test]
    async fn stream_check_catches_chunk_size_and_digest_differences() {
        let md5 = |b: &[u8]| md5_many(&[b]).remove(0);
        let empty = StreamSummary { total_size: 0, md5: md5(b"") };
        assert!(Verifier::new("stdout").finish(Some(&empty)).await.is_ok());
        let longer = StreamSummary { total_size: 5, md5: md5(b"") };
        assert!(Verifier::new("stdout").finish(Some(&longer)).await.is_err());
        assert!(Verifier::new("stdout").finish(None).await.is_err());
        // Many chunks, more than a batch: the stream's digest is over them.
        let chunks: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 64 * 1024]).collect();
        let mut digest = PartsDigest::new();
        chunks.iter().for_each(|c| digest.push(&md5(c).to_digest()));
        let whole = StreamSummary { total_size: 40 * 64 * 1024, md5: digest.finish() };
        let mut v = Verifier::new("stdout");
        for c in &chunks {
            v.push(c.clone(), Some(md5(c))).await.unwrap();
        }
        assert!(v.finish(Some(&whole)).await.is_ok());
        // One chunk whose bytes are not what its MD5 says.
        let mut v = Verifier::new("stdout");
        v.push(b"abc".to_vec(), Some(md5(b"abd"))).await.unwrap();
        let err = v.finish(Some(&whole)).await.unwrap_err().to_string();
        assert!(err.contains("chunk at byte 0"), "{err}");
    }
}
