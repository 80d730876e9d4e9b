//! xfer: move files and run commands between machines over TCP, every body
//! described by a header and verified by MD5.
//!
//! # Layout
//!
//! From the bottom up; imports point down this list, never round.
//!
//! - [`plain`]: words for people: OS errors in plain words, escaped names.
//! - [`private_file`]: files only their owner may read (token, server key).
//! - [`protocol`]: every message as a Rust type, one enum per direction
//!   ([`ClientMessage`](protocol::ClientMessage),
//!   [`ServerMessage`](protocol::ServerMessage)), the pure frame codec
//!   and the `zstd` envelopes of `-z` (packing and unpacking; no I/O).
//! - [`digest`]: the one MD5 implementation, [`md5_many`](digest::md5_many)
//!   for many bodies at once in SIMD lanes (AVX-512, AVX2 or one at a
//!   time, chosen at run time), a file's digest over its 128 KiB parts
//!   ([`PartsDigest`](digest::PartsDigest)), and the one rule for batching
//!   small files ([`HashBatch`](digest::HashBatch)).
//! - [`tls`]: TLS 1.3 under every connection: the server's certificate,
//!   both sides' configurations, the channel binding.
//! - [`auth`]: the shared token and the challenge-response that proves it,
//!   bound to the TLS channel.
//! - [`error`]: error types per phase, their messages and exit codes.
//! - [`local`]: confined filesystem work for both sides: checked paths, the
//!   directory handle everything goes through, the partial file and its
//!   commit, small files written whole, modes and times.
//! - [`access`]: named tokens, their rights (read, write, exec) and the
//!   directory each is confined to; the tokens file.
//! - [`connection`]: the only code that reads or writes a connection; typed
//!   by direction, so the server cannot send a client's message; packs what
//!   it sends and unpacks what it reads when compressing.
//! - [`transfer`]: streaming bodies as parts, hashed and verified a batch
//!   at a time on threads beside the connection (reporting progress
//!   through a trait: it knows no progress bars), and the one receive →
//!   verify → commit path of every streamed file.
//! - [`tree`]: trees for both sides: the one walk into a manifest, its
//!   application beneath the destination, the files sent (small ones read
//!   and hashed a batch at a time), many files hashed at once, small files
//!   written on threads of their own.
//! - [`ui`]: progress bars and summary lines.
//! - [`server`]: listener, admission of unauthenticated connections,
//!   per-connection handler and the session (a token's rights and root),
//!   one module per request, and what exec needs: a pseudo-terminal, a
//!   cgroup per command, and the process started straight into it.
//! - [`client`]: connecting, one module per client command (the file
//!   management ones together in `manage`), and the config file of named
//!   servers.
//! - [`cli`]: the command line (clap).
//!
//! `PROTOCOL.md` describes the wire format for other implementations.

pub mod access;
pub mod auth;
pub mod cli;
pub mod client;
pub mod connection;
pub mod digest;
pub mod error;
pub mod local;
pub mod plain;
pub mod private_file;
pub mod protocol;
pub mod server;
pub mod tls;
pub mod transfer;
pub mod tree;
pub mod ui;

use cli::{Cli, Command, ServeArgs};
use client::Options;
use error::Error;
use std::time::Duration;

/// Runs a parsed command line; returns the process exit code.
pub fn run(cli: Cli) -> Result<u8, Error> {
    let token_file = cli.token_file.as_deref();
    let ui = ui::Ui { quiet: cli.quiet, verbose: cli.verbose, json: cli.json };
    match cli.command {
        Command::Serve(_) if cli.server.is_some() => {
            Err(Error::Usage("xfer serve listens where --listen says; -s/--server is for clients".into()))
        }
        Command::Serve(args) => serve(args, token_file),
        Command::Completions { shell } => {
            cli::completions(shell, &mut std::io::stdout().lock());
            Ok(0)
        }
        Command::Man { dir } => {
            let pages = cli::man_pages(&dir).map_err(|e| Error::local(&dir, e))?;
            eprintln!("xfer: wrote {} man pages to {}", pages.len(), dir.display());
            Ok(0)
        }
        Command::Token { new, rights, dir, list, revoke, tokens } => {
            token_command(token_file, TokenCommand { new, rights, dir, list, revoke, tokens })
        }
        // Files hashed here: no server to reach, so no token to need.
        Command::Md5sum { parts, local: true, paths } => client::md5sum_local(&ui, parts, &paths),
        // A client does one thing at a time: a single-threaded runtime starts
        // faster and the hashing thread comes from the blocking pool.
        command => {
            let server = cli.server.or_else(|| std::env::var("XFER_SERVER").ok());
            let server = server.as_deref().unwrap_or(cli::DEFAULT_ADDR);
            // A name from the config file, as ssh's Host aliases: its
            // address, and its token file unless --token-file says otherwise.
            let config =
                std::env::var_os("XFER_CONFIG").map(Into::into).or_else(client::config::default_path);
            let named = match config {
                Some(path) if !server.contains(':') => client::config::lookup(&path, server)?,
                _ => None,
            };
            let (server, token_file) = match &named {
                Some(n) => (n.address.clone(), token_file.or(n.token_file.as_deref())),
                None => (client::with_default_port(server), token_file),
            };
            let (token, _) = auth::load_token(token_file, false)?;
            let opts = Options { server, token, ui, compress: cli.compress };
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Error::local("tokio runtime", e))?;
            let code = rt.block_on(run_client(command, &opts));
            // A read of our stdin may still be pending on a blocking thread
            // (exec forwarding a terminal); do not wait for it.
            rt.shutdown_background();
            code
        }
    }
}

async fn run_client(command: Command, opts: &Options) -> Result<u8, Error> {
    match command {
        Command::Put { recursive, how, no_target_directory, paths } => {
            let sources = client::Sources { recursive, no_target_directory };
            client::put_many(opts, &paths, sources, client::Flags::from(&how)).await
        }
        Command::Get { recursive, how, paths } => {
            let sources = client::Sources { recursive, no_target_directory: false };
            client::get_many(opts, &paths, sources, client::Flags::from(&how)).await
        }
        Command::Ls { long, recursive, human, paths, .. } => {
            let how = client::LsOptions { long, recursive, human };
            client::ls(opts, &paths, how, &mut std::io::stdout().lock()).await?;
            Ok(0)
        }
        Command::Rm { recursive, paths } => client::rm(opts, &paths, recursive).await,
        Command::Mv { force, src, dst } => client::mv(opts, &src, &dst, force).await,
        Command::Mkdir { parents, dirs } => client::mkdir(opts, &dirs, parents).await,
        Command::Cat { paths } => client::cat(opts, &paths).await,
        // --local was answered in `run`, before any token.
        Command::Md5sum { parts, paths, .. } => client::md5sum(opts, parts, &paths).await,
        Command::Df { human, .. } => client::df(opts, human).await,
        Command::Exec { no_stdin, timeout, tty, no_tty, command } => {
            use std::io::IsTerminal;
            // As ssh: a shell gets a terminal when ours is one; -t forces
            // one, -T none.
            let terminal = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
            let tty = !no_tty && (tty || (command.is_empty() && terminal));
            let how = client::ExecOptions { stdin: !no_stdin, timeout, tty, login: command.is_empty() };
            match command.is_empty() && !tty {
                // A session reads its commands from stdin.
                true => client::session(opts, timeout).await,
                false => client::exec(opts, &command, how).await,
            }
        }
        Command::Serve(_) | Command::Token { .. } | Command::Completions { .. } | Command::Man { .. } => {
            unreachable!("handled by run")
        }
    }
}

/// What `xfer token` was asked.
struct TokenCommand {
    /// `--new [NAME]`: `""` for the server's own token.
    new: Option<String>,
    /// `--rights` of a new named token.
    rights: String,
    /// `--dir` of a new named token.
    dir: Option<String>,
    /// `--list`.
    list: bool,
    /// `--revoke NAME`.
    revoke: Option<String>,
    /// `--tokens FILE`.
    tokens: Option<std::path::PathBuf>,
}

/// `xfer token`: the server's token, or named tokens in the tokens file.
fn token_command(token_file: Option<&std::path::Path>, t: TokenCommand) -> Result<u8, Error> {
    let tokens_file = || -> Result<std::path::PathBuf, Error> {
        match &t.tokens {
            Some(p) => Ok(p.clone()),
            None => Ok(tokens_beside(token_file)?),
        }
    };
    if t.list {
        for g in access::load(&tokens_file()?)? {
            let dir = g.dir.as_ref().map_or(".".to_string(), |d| d.to_string());
            println!("{}\t{}\t{dir}", g.name, g.rights);
        }
        return Ok(0);
    }
    if let Some(name) = &t.revoke {
        let path = tokens_file()?;
        if !access::revoke(&path, name)? {
            return Err(Error::Usage(format!("no token named {name} in {}", path.display())));
        }
        eprintln!("xfer: revoked {name} in {} (restart xfer serve to drop it)", path.display());
        return Ok(0);
    }
    let token = match t.new.as_deref() {
        Some("") => {
            let (token, path) = auth::replace_token(token_file)?;
            eprintln!("xfer: wrote a new token to {} (restart xfer serve to use it)", path.display());
            token
        }
        Some(name) => {
            let rights = access::Rights::parse(&t.rights).ok_or_else(|| {
                Error::Usage(format!("--rights takes read, write, exec: not {:?}", t.rights))
            })?;
            let path = tokens_file()?;
            let g = access::add(&path, name, rights, t.dir.as_deref())?;
            let dir = g.dir.as_ref().map_or("the whole root".to_string(), |d| d.to_string());
            eprintln!(
                "xfer: added token {name} ({rights} in {dir}) to {} (restart xfer serve to use it)",
                path.display()
            );
            g.token
        }
        None => auth::load_token(token_file, true)?.0,
    };
    println!("{}", token.reveal());
    Ok(0)
}

/// The tokens file beside the token file `load_token` would find.
fn tokens_beside(token_file: Option<&std::path::Path>) -> Result<std::path::PathBuf, Error> {
    let source = match token_file {
        Some(p) => auth::TokenSource::File(p.to_path_buf()),
        None => auth::TokenSource::Default(auth::default_token_path().ok_or(auth::TokenError::NoHome)?),
    };
    Ok(source.beside(access::TOKENS_FILE).ok_or(auth::TokenError::NoHome)?)
}

fn serve(args: ServeArgs, token_file: Option<&std::path::Path>) -> Result<u8, Error> {
    init_logging();
    let (token, source) = auth::load_token(token_file, true)?;
    match &source {
        auth::TokenSource::Created(path) => tracing::info!(
            path = %path.display(),
            "created a new token; `xfer token` prints it to copy to client hosts"
        ),
        auth::TokenSource::Default(path) | auth::TokenSource::File(path) => {
            tracing::info!(path = %path.display(), "using token file")
        }
        auth::TokenSource::Env => tracing::info!("using token from {}", auth::TOKEN_ENV),
    }
    let key_path = args.key_file.clone().or_else(|| source.key_path()).ok_or(auth::TokenError::NoHome)?;
    let (identity, made) = tls::Identity::load_or_create(&key_path)?;
    let fingerprint = identity.fingerprint();
    let key = key_path.display();
    if made {
        tracing::info!(key = %key, "made a new TLS key; certificate SHA-256 fingerprint {fingerprint}");
    } else {
        tracing::info!(key = %key, "TLS certificate SHA-256 fingerprint {fingerprint}");
    }
    // Named tokens: from --tokens (which must be readable), or beside the
    // token file. Not reading the default one can only refuse tokens, never
    // let more in: a warning, not a stop.
    let (tokens_path, grants) = match (&args.tokens, source.beside(access::TOKENS_FILE)) {
        (Some(p), _) => (p.clone(), access::load(p)?),
        (None, Some(p)) => match access::load(&p) {
            Ok(grants) => (p, grants),
            Err(access::GrantError::Read(_, e)) => {
                tracing::warn!(path = %p.display(), "no named tokens: cannot read the tokens file: {}", error::plain_io(&e));
                (p, Vec::new())
            }
            Err(e) => return Err(e.into()),
        },
        (None, None) => (std::path::PathBuf::new(), Vec::new()),
    };
    if !grants.is_empty() {
        tracing::info!(path = %tokens_path.display(), count = grants.len(), "named tokens");
    }
    let mut config = server::Config::serving(&args.root, token, identity);
    config.grants = grants;
    config.allow_exec = args.allow_exec;
    config.max_connections = args.max_connections.max(1);
    config.grace = Duration::from_secs(args.grace);
    config.partial_max_age = Duration::from_secs(args.partial_max_age.saturating_mul(3600));
    config.digest_cache = args.digest_cache;
    config.fsync = args.fsync;
    config.idle_timeout = (args.idle_timeout > 0).then(|| Duration::from_secs(args.idle_timeout));
    let serve_err = |reason: String| Error::Serve { addr: args.listen.clone(), reason };
    limit_malloc_arenas();
    // Blocking threads hash and write files; 64 keeps far more transfers
    // moving than 2 cores can feed, while each idle thread's stack and heap
    // stay bounded (tokio's default allows 512).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(64)
        .build()
        .map_err(|e| serve_err(error::plain_io(&e)))?;
    let served = rt.block_on(async {
        let listener =
            tokio::net::TcpListener::bind(&args.listen).await.map_err(|e| serve_err(error::plain_io(&e)))?;
        server::run(listener, config, shutdown_signal())
            .await
            .map_err(|e| serve_err(format!("{}: {}", args.root.display(), error::plain_io(&e))))
    });
    // Whatever is still running after the grace period is dropped here:
    // temporaries are removed and process groups killed as their tasks end.
    rt.shutdown_timeout(Duration::from_secs(1));
    served?;
    Ok(0)
}

/// glibc gives each thread that allocates its own heap arena and keeps
/// freed chunks there, so a server whose blocking threads each once held
/// 1 MiB buffers kept tens of MiB resident after a tree transfer (measured
/// 32 MiB peak for a 1 GiB put that follows one, against 18 MiB fresh).
/// Two arenas are enough for two cores.
///
/// Buffers up to 4 MiB (parts, batches, the bodies of small files) come
/// from the arenas, and an arena keeps up to 4 MiB free at its top. With a
/// 128 KiB threshold each such buffer was mapped and unmapped on its own,
/// and each arena shrank as soon as 128 KiB at its top were free: 3,000
/// and more page faults on the server per `put -r` of /usr/include (its
/// 1 MiB buffers alone 256 each), which made the put 8-10% slower with a
/// full page cache; with both at 4 MiB (and the server's trim only above
/// 24 MiB resident), 0-600. glibc's default moves both thresholds up to
/// the largest buffer freed, which let a server reach 35 MiB in the bench;
/// fixed at 4 MiB, its peak over a sequence of puts, gets, trees and exec
/// was 26.8 MiB.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; it is called before any
    // thread of ours exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 4 << 20);
    }
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Server logs go to stderr, one line per request; `RUST_LOG` adjusts them.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
