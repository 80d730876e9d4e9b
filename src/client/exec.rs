//! `xfer exec`: run a command on the server, its output streamed back live
//! to our own stdout and stderr, our stdin forwarded, its exit code ours.
//! Without a command: an interactive session, one command per line.

use super::{unexpected_reply, Client, Options};
use crate::connection::{Reader, Writer};
use crate::digest::Md5;
use crate::error::{ConnError, Error};
use crate::protocol::{ClientMessage, Exec, ServerMessage, StreamSummary, Tty};
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
    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();
    let stdin = how.stdin.then(tokio::io::stdin);
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
    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();
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

/// Writes `stdout` and `stderr` frames to ours as they arrive, hashing
/// each stream, until the `exit` frame; checks the digests it carries.
/// With `--json`, each chunk is an object on our stdout instead.
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
    let (mut out_md5, mut err_md5) = (Md5::new(), Md5::new());
    let (mut out_len, mut err_len) = (0u64, 0u64);
    let mut buf = Vec::new();
    loop {
        let h = reader.expect().await?;
        let (sink, md5, len, name): (&mut (dyn AsyncWrite + Unpin), _, _, _) = match h.msg {
            ServerMessage::Keepalive => {
                reader.skip_body(h.total_size).await?;
                continue;
            }
            ServerMessage::Stdout => (stdout, &mut out_md5, &mut out_len, "stdout"),
            ServerMessage::Stderr => (stderr, &mut err_md5, &mut err_len, "stderr"),
            ServerMessage::Exit { exit_code, signal, timed_out, stdout: sent_out, stderr: sent_err } => {
                reader.skip_body(h.total_size).await?;
                check_stream("stdout", sent_out.as_ref(), out_len, out_md5)?;
                check_stream("stderr", sent_err.as_ref(), err_len, err_md5)?;
                return Ok(Ended { exit_code, signal, timed_out });
            }
            reply => {
                reader.skip_body(h.total_size).await?;
                return Err(unexpected_reply(reply, "stdout, stderr or exit"));
            }
        };
        buf.clear();
        let n = reader.body(h.total_size).read_to_end(&mut buf).await.map_err(ConnError::Io)?;
        if (n as u64) < h.total_size {
            return Err(ConnError::Truncated("body").into());
        }
        md5.update(&buf);
        *len += n as u64;
        if ui.json {
            ui.output(name, &buf);
            continue;
        }
        // Flush each chunk: output must show up live, not when we exit.
        let written = async {
            sink.write_all(&buf).await?;
            sink.flush().await
        };
        written.await.map_err(|e| Error::local(name, e))?;
    }
}

/// Compares what we received on one stream with the server's account of it.
fn check_stream(name: &str, sent: Option<&StreamSummary>, len: u64, md5: Md5) -> Result<(), Error> {
    let received = md5.finish();
    match sent {
        Some(s) if s.total_size == len && s.md5 == received => Ok(()),
        Some(s) => Err(Error::md5_mismatch(
            format!("{name} ({} bytes sent, {len} received)", s.total_size),
            Some(&s.md5),
            Some(&received),
        )),
        None => Err(Error::md5_mismatch(name, None, Some(&received))),
    }
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
    use crate::protocol::Md5Hex;

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

    #[test]
    fn stream_check_catches_size_and_digest_differences() {
        let md5 = Md5Hex::try_from("d41d8cd98f00b204e9800998ecf8427e".to_string()).unwrap();
        let good = StreamSummary { total_size: 0, md5: md5.clone() };
        assert!(check_stream("stdout", Some(&good), 0, Md5::new()).is_ok());
        let longer = StreamSummary { total_size: 5, md5 };
        assert!(check_stream("stdout", Some(&longer), 0, Md5::new()).is_err());
        assert!(check_stream("stdout", None, 0, Md5::new()).is_err());
    }
}
