//! Command-line interface: what users type.

use clap::{Args, CommandFactory, Parser, Subcommand};
use std::path::PathBuf;

/// Default address of `xfer serve`, and the one clients try.
pub const DEFAULT_ADDR: &str = "127.0.0.1:9909";

/// Move files and run commands between machines, every byte verified by MD5.
#[derive(Debug, Parser)]
#[command(name = "xfer", version, about, propagate_version = true)]
pub struct Cli {
    /// Server address, `host[:port]` (port 9909 if left out) [default:
    /// $XFER_SERVER, then 127.0.0.1:9909]. Clients only: `xfer serve`
    /// listens on --listen.
    #[arg(short, long, global = true, value_name = "HOST[:PORT]")]
    pub server: Option<String>,

    /// File holding the shared token [default: $XFER_TOKEN (the token
    /// itself), then $XDG_CONFIG_HOME/xfer/token or ~/.config/xfer/token].
    #[arg(long, global = true, value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// No progress bars or summaries; errors only.
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// Compress what crosses the network (zstd), both ways, where that
    /// makes it smaller: for slow links. Incompressible data is sent as it
    /// is, at almost no cost.
    #[arg(short = 'z', long, global = true)]
    pub compress: bool,

    /// One line per file a tree transfer copies, as rsync -v.
    #[arg(short, long, global = true)]
    pub verbose: bool,

    /// Output for scripts: one JSON object per line on stdout for each
    /// result and each error, nothing else (see the README).
    #[arg(long, global = true)]
    pub json: bool,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve a directory to xfer clients.
    Serve(ServeArgs),
    /// Print the token, to copy to a client host (made if there is none);
    /// or make, list and revoke named tokens with rights of their own.
    Token {
        /// Without NAME: replace the server's token with a new random one.
        /// With NAME: add a named token to the tokens file, with --rights
        /// and --dir. A running server uses either once restarted.
        #[arg(long, value_name = "NAME", num_args = 0..=1, default_missing_value = "")]
        new: Option<String>,
        /// What a new named token may do: any of read, write, exec.
        #[arg(long, value_name = "RIGHTS", default_value = "read,write")]
        rights: String,
        /// The directory of the root a new named token is confined to
        /// [default: the whole root].
        #[arg(long, value_name = "DIR")]
        dir: Option<String>,
        /// List the named tokens: name, rights, directory (never values).
        #[arg(long, conflicts_with_all = ["new", "revoke"])]
        list: bool,
        /// Remove the named token NAME from the tokens file.
        #[arg(long, value_name = "NAME", conflicts_with = "new")]
        revoke: Option<String>,
        /// The tokens file [default: tokens beside the token file].
        #[arg(long, value_name = "FILE")]
        tokens: Option<PathBuf>,
    },
    /// Send local files (or, with -r, directory trees) to the server:
    /// `xfer put FILE [REMOTE]`, or `xfer put SRC... DIR` into a remote
    /// directory.
    Put {
        /// Send a whole directory tree.
        #[arg(short, long)]
        recursive: bool,
        #[command(flatten)]
        how: TransferArgs,
        /// Treat REMOTE as a file name even if a local file has that name
        /// (`xfer put -T a.txt b.txt` when b.txt also exists here).
        #[arg(short = 'T', long)]
        no_target_directory: bool,
        /// The local sources, then the remote destination (relative to the
        /// server's root; `.` or `/` is the root). One source goes to
        /// DEST (default: its own name; into DEST when DEST is a
        /// directory or ends in /); several go into the directory DEST.
        #[arg(required = true, value_name = "SOURCE... [DEST]")]
        paths: Vec<PathBuf>,
    },
    /// Fetch files (or, with -r, directory trees) from the server:
    /// `xfer get REMOTE [LOCAL]`, or `xfer get REMOTE... DIR`; `*`, `?` and
    /// `[...]` in a remote name's last part match on the server.
    Get {
        /// Fetch a whole directory tree.
        #[arg(short, long)]
        recursive: bool,
        #[command(flatten)]
        how: TransferArgs,
        /// The remote sources, then the local destination [default:
        /// each source's name here]; - writes one file to standard output.
        /// Several sources go into the directory DEST (made if it ends
        /// in /).
        #[arg(required = true, value_name = "SOURCE... [DEST]")]
        paths: Vec<String>,
    },
    /// List remote directories (a file lists itself), or the names
    /// matching a pattern.
    #[command(disable_help_flag = true)]
    Ls {
        /// Print help (-h is --human here, as in ls).
        #[arg(long, action = clap::ArgAction::Help)]
        help: Option<bool>,
        /// Long: mode, size, time, name, and where a link points.
        #[arg(short, long)]
        long: bool,
        /// What directories hold too, to any depth (by path).
        #[arg(short = 'R', long)]
        recursive: bool,
        /// Sizes with units (1.5K, 3.0M).
        #[arg(short = 'h', long = "human")]
        human: bool,
        /// Remote paths [default: the root]; `*`, `?` and `[...]` in a
        /// last part list the matching names.
        paths: Vec<String>,
    },
    /// Remove remote files (and, with -r, directories with all in them).
    Rm {
        /// Directories too, with everything in them.
        #[arg(short, long)]
        recursive: bool,
        /// Remote paths; patterns match on the server.
        #[arg(required = true)]
        paths: Vec<String>,
    },
    /// Rename a remote file or directory, atomically (into DST when it is
    /// a directory).
    Mv {
        /// Replace what is at DST.
        #[arg(short, long)]
        force: bool,
        /// The remote path to move.
        src: String,
        /// Its new path, or a directory to move it into.
        dst: String,
    },
    /// Make remote directories.
    Mkdir {
        /// Make missing parents too; a directory already there is fine.
        #[arg(short, long)]
        parents: bool,
        /// The directories.
        #[arg(required = true)]
        dirs: Vec<String>,
    },
    /// Write remote files to standard output, each verified by its MD5.
    Cat {
        /// Remote files; patterns match on the server.
        #[arg(required = true)]
        paths: Vec<String>,
    },
    /// Print the MD5 of remote files as md5sum does (`HASH  NAME`), from
    /// the server's remembered digests where it has them: nothing is
    /// downloaded.
    Md5sum {
        /// Print the digest over the file's parts that transfers verify
        /// (`HASH-N` for a file of N parts; a file of one part has its
        /// plain MD5), not the plain MD5.
        #[arg(long)]
        parts: bool,
        /// The paths are local files: hash them here, contacting no server.
        #[arg(long)]
        local: bool,
        /// Remote files (patterns match on the server), or local ones.
        #[arg(required = true)]
        paths: Vec<String>,
    },
    /// Show the size and free space of the filesystem the server's root is on.
    #[command(disable_help_flag = true)]
    Df {
        /// Print help (-h is --human here, as in df).
        #[arg(long, action = clap::ArgAction::Help)]
        help: Option<bool>,
        /// Sizes with units.
        #[arg(short = 'h', long = "human")]
        human: bool,
    },
    /// Print shell completions for xfer to standard output.
    Completions {
        /// The shell.
        shell: Shell,
    },
    /// Write xfer's man pages (xfer.1, xfer-put.1, ...) into DIR.
    Man {
        /// Where to write them (made if missing).
        dir: PathBuf,
    },
    /// Run a command on the server (which needs --allow-exec); without a
    /// command, a remote login shell on a terminal when ours is one, else
    /// commands read from stdin, one per line.
    Exec {
        /// Send no stdin: the command reads EOF at once.
        #[arg(short = 'n')]
        no_stdin: bool,
        /// Run it on a pseudo-terminal (as ssh -t): for vi, top, less,
        /// password prompts.
        #[arg(short = 't', conflicts_with = "no_tty")]
        tty: bool,
        /// Never a terminal, even for a shell (as ssh -T).
        #[arg(short = 'T')]
        no_tty: bool,
        /// Kill the command (and everything it started) after SECS seconds.
        #[arg(long, value_name = "SECS")]
        timeout: Option<u64>,
        /// The command; its words are joined by spaces and run by `sh -c`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
}

/// Options put and get share, each about the receiving side.
#[derive(Debug, Args)]
pub struct TransferArgs {
    /// Replace the destination where it exists and differs (atomically).
    #[arg(short, long)]
    pub force: bool,
    /// Start over instead of resuming an interrupted transfer.
    #[arg(long)]
    pub no_resume: bool,
    /// Flush what is saved to disk (on the receiving side) before saying so.
    #[arg(long)]
    pub fsync: bool,
    /// With -r: make the destination a mirror, removing what beneath it
    /// the source lacks.
    #[arg(long, requires = "recursive")]
    pub delete: bool,
    /// Print what would be copied, skipped, replaced and deleted; change
    /// nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Also compute the plain MD5 of each whole file (what md5sum prints)
    /// and show it beside the digest over its parts, which is always
    /// verified.
    #[arg(long)]
    pub md5: bool,
}

/// What `xfer completions` writes for.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Shell {
    /// bash: `xfer completions bash > /etc/bash_completion.d/xfer`.
    Bash,
    /// zsh: into a directory of `$fpath`, as `_xfer`.
    Zsh,
    /// fish: `~/.config/fish/completions/xfer.fish`.
    Fish,
    /// elvish.
    Elvish,
    /// PowerShell.
    Powershell,
}

/// `xfer serve` options.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = DEFAULT_ADDR)]
    pub listen: String,
    /// Directory to serve (created if missing).
    #[arg(long, default_value = "xfer-root")]
    pub root: PathBuf,
    /// The TLS private key and certificate, made on first start [default:
    /// server-key.pem beside the token file].
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// Authenticated connections served at once; further ones wait their turn.
    #[arg(long, default_value_t = 256)]
    pub max_connections: usize,
    /// Named tokens with their rights and directories, one per line
    /// (`xfer token --new NAME` writes it) [default: tokens beside the
    /// token file; none if missing].
    #[arg(long, value_name = "FILE")]
    pub tokens: Option<PathBuf>,
    /// Allow clients to run commands (`xfer exec`) in the root directory.
    #[arg(long)]
    pub allow_exec: bool,
    /// Seconds a connection may make no progress before it is closed (0: never).
    #[arg(long, default_value_t = 30)]
    pub idle_timeout: u64,
    /// Hours after which partial files of interrupted transfers are removed.
    #[arg(long, default_value_t = 24, value_name = "HOURS")]
    pub partial_max_age: u64,
    /// Flush every file received to disk before reporting it saved, as if
    /// every client asked with --fsync.
    #[arg(long)]
    pub fsync: bool,
    /// Digests of files read whole that are remembered, so that sending an
    /// unchanged file again does not hash it again (0: hash every time).
    #[arg(long, default_value_t = crate::server::DIGEST_CACHE, value_name = "FILES")]
    pub digest_cache: usize,
    /// Seconds requests in flight may take to finish after SIGINT or SIGTERM.
    #[arg(long, default_value_t = 10)]
    pub grace: u64,
}

/// Writes completions for `shell` to `out`.
pub fn completions(shell: Shell, out: &mut dyn std::io::Write) {
    use clap_complete::Shell as S;
    let shell = match shell {
        Shell::Bash => S::Bash,
        Shell::Zsh => S::Zsh,
        Shell::Fish => S::Fish,
        Shell::Elvish => S::Elvish,
        Shell::Powershell => S::PowerShell,
    };
    clap_complete::generate(shell, &mut Cli::command(), "xfer", out);
}

/// Writes a man page for xfer and one for each subcommand into `dir`;
/// returns the files written.
pub fn man_pages(dir: &std::path::Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut cmd = Cli::command();
    cmd.build();
    let mut written = Vec::new();
    let mut page = |cmd: &clap::Command, name: String| -> std::io::Result<()> {
        let mut bytes = Vec::new();
        clap_mangen::Man::new(cmd.clone()).title(name.to_uppercase()).render(&mut bytes)?;
        let path = dir.join(format!("{name}.1"));
        std::fs::write(&path, bytes)?;
        written.push(path);
        Ok(())
    };
    page(&cmd, "xfer".to_string())?;
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        page(sub, format!("xfer-{}", sub.get_name()))?;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn completions_and_man_pages_cover_every_command() {
        let mut bash = Vec::new();
        completions(Shell::Bash, &mut bash);
        let bash = String::from_utf8(bash).unwrap();
        for word in ["put", "get", "ls", "rm", "mv", "mkdir", "md5sum", "--dry-run", "--delete", "--json"] {
            assert!(bash.contains(word), "{word}");
        }
        let d = tempfile::tempdir().unwrap();
        let pages = man_pages(d.path()).unwrap();
        assert!(pages.iter().any(|p| p.ends_with("xfer-put.1")));
        let put = std::fs::read_to_string(d.path().join("xfer-put.1")).unwrap();
        assert!(put.starts_with(".ie") || put.contains(".TH"), "roff");
        assert!(put.contains("dry"), "options are documented");
    }

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_options_work_after_the_subcommand() {
        let cli = Cli::try_parse_from(["xfer", "put", "a", "-q", "-s", "h:1"]).unwrap();
        assert!(cli.quiet);
        assert_eq!(cli.server.as_deref(), Some("h:1"));
    }
}
