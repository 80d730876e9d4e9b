//! Every message of the protocol as a Rust type: one enum per direction,
//! tagged by `op`, each variant with exactly the fields that op carries, so
//! the compiler knows which op carries what.
//!
//! On the wire every header also carries `filename`, `md5` and
//! `total_size`. `total_size`, the length of the body that follows, belongs
//! to the frame ([`Frame`]), not the message; `filename` and `md5` belong to
//! the messages that use them, and the codec writes them (as `""` and
//! `null`) for the others. Fields left unset are left out of the JSON.

use super::fields::{EntryKind, ErrorCode, Md5Hex, StreamSummary};
pub use super::split::Split;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A decoded header: the message, and the length of the body after it.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame<M> {
    /// What the frame says.
    pub msg: M,
    /// Bytes of body that follow the header: always consumed as a body.
    pub total_size: u64,
}

/// What the codec needs of a direction's messages.
pub trait Message: Serialize + DeserializeOwned + Send + 'static {
    /// The wire name of the op, for logs and errors.
    fn op(&self) -> &'static str;
    /// The `filename` this message carries, or `""`.
    fn filename(&self) -> &str;
    /// The `md5` this message carries, if any.
    fn md5(&self) -> Option<&Md5Hex>;

    /// The message of op `op` read from the header `json`, straight into
    /// its variant's fields; `None` for an op this direction does not
    /// have. The derived, tag-first path buffers every field before it
    /// knows the variant: 0.66 µs for a tree's `entry` against 0.28 µs
    /// straight (examples/codec_cost.rs).
    fn from_op(op: &str, json: &str) -> Option<serde_json::Result<Split<Self>>>;

    /// Whether this is a `keepalive`: which says only that the peer is
    /// there, and may come between any two messages of an exchange that
    /// waits (see PROTOCOL.md).
    fn is_keepalive(&self) -> bool {
        self.op() == "keepalive"
    }

    /// A `zstd` envelope whose body unpacks to `size` bytes of frames.
    fn zstd(size: u64) -> Self;

    /// What this `zstd` envelope unpacks to, if it is one.
    fn as_zstd(&self) -> Option<u64>;
}

/// `json` read as a `T`, made a message by `f`.
fn read<T: DeserializeOwned, M>(json: &str, f: impl FnOnce(T) -> M) -> Option<serde_json::Result<Split<M>>> {
    Some(serde_json::from_str(json).map(|s: Split<T>| Split { msg: f(s.msg), total_size: s.total_size }))
}

/// A message without fields, whatever the header holds besides: the frame's
/// `total_size` still has to be read, and the core fields checked.
fn bare<M>(json: &str, msg: M) -> Option<serde_json::Result<Split<M>>> {
    read(json, |serde::de::IgnoredAny| msg)
}

/// The messages both directions send (a tree's manifest and its files go
/// either way), so one piece of code can send or receive a tree whichever
/// side it runs on.
pub trait Common: Message + From<Data> + From<Done> + From<Entry> + From<End> {
    /// The `done` frame, if this is one.
    fn into_done(self) -> Result<Done, Self>;
    /// The `data` frame, if this is one.
    fn into_data(self) -> Result<Data, Self>;
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// One part of a file body (either direction): the part's bytes follow
/// the header.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Data {
    /// Which file (a tree's `REL`, or the requested path).
    #[serde(default, skip_serializing)]
    pub filename: String,
    /// The MD5 of this part's bytes; `None` only from a broken peer.
    #[serde(default, skip_serializing)]
    pub md5: Option<Md5Hex>,
    /// Bytes of the file before this part: what a resumed transfer skips,
    /// and the parts before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// The size of the whole file (the first part of a `get`'s body).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Permission bits (trees).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    /// Modification time, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtime: Option<i64>,
}

/// Ends a body: the sender's digest of the whole file over its parts.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Done {
    /// Which file.
    #[serde(default, skip_serializing)]
    pub filename: String,
    /// The sender's digest over the parts; `None` only from a broken peer.
    #[serde(default, skip_serializing)]
    pub md5: Option<Md5Hex>,
    /// The plain MD5 of all the file's bytes, when it was asked for.
    #[serde(default, rename = "whole_md5", skip_serializing_if = "Option::is_none")]
    pub whole: Option<Md5Hex>,
}

/// One item of a listing or of a tree's manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Its name (`ls`) or `REL` within the tree.
    #[serde(default, skip_serializing)]
    pub filename: String,
    /// What it is; `other` in a manifest is an item the walk left out.
    pub kind: EntryKind,
    /// Its size (0 for directories and symlinks in trees).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Permission bits (trees).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    /// Modification time, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtime: Option<i64>,
    /// Where a symlink points (trees).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Why an item of kind `other` was left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Entry {
    /// An entry of `kind` named `filename`, every other field unset.
    pub fn new(filename: impl Into<String>, kind: EntryKind) -> Self {
        Entry {
            filename: filename.into(),
            kind,
            size: None,
            mode: None,
            mtime: None,
            target: None,
            message: None,
        }
    }
}

/// Ends a listing, a manifest, a list of wants or of replies.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct End {
    /// The tree's top's own permission bits (a manifest's end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    /// The tree's top's own modification time (a manifest's end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtime: Option<i64>,
}

/// A request failed, or (with a `filename` in a tree) one item of it did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refusal {
    /// The item concerned in a tree; `""` for the request as a whole.
    #[serde(default, skip_serializing)]
    pub filename: String,
    /// Machine-readable reason.
    #[serde(default)]
    pub code: ErrorCode,
    /// Human-readable reason naming the file concerned.
    #[serde(default)]
    pub message: String,
}

/// Store the `data` body that follows `ready` at `filename`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Put {
    /// The path concerned, relative to the root (or to the tree).
    #[serde(default, skip_serializing)]
    pub filename: String,
    /// The client may resume from a partial the server holds.
    #[serde(default, skip_serializing_if = "is_false")]
    pub resume: bool,
    /// Replace an existing destination.
    #[serde(default, skip_serializing_if = "is_false")]
    pub force: bool,
    /// Flush to disk before replying `ok`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub fsync: bool,
    /// The whole file's size, so a partial longer than it is not offered,
    /// and an identical file already there is told apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Permission bits to give the file (at most `0o777`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    /// Modification time to give the file, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtime: Option<i64>,
    /// Only say what a put would do (`have` for a file there, `ok` for
    /// none); no body follows and nothing changes.
    #[serde(default, skip_serializing_if = "is_false")]
    pub dry_run: bool,
}

/// Send the file at `filename`; `offset` and `md5` offer a partial.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Get {
    /// The path concerned, relative to the root (or to the tree).
    #[serde(default, skip_serializing)]
    pub filename: String,
    /// Bytes of the client's partial: a whole number of parts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// The digest of those parts; or, without `offset`, of the client's
    /// copy of `size` bytes, which the server says is identical or not
    /// instead of sending the file.
    #[serde(default, skip_serializing)]
    pub md5: Option<Md5Hex>,
    /// The size of the client's copy (with `md5`, without `offset`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Only say what a get would do (`ok` with the file's size); no body
    /// is sent.
    #[serde(default, skip_serializing_if = "is_false")]
    pub dry_run: bool,
    /// Send the plain MD5 of the whole file too, in `done`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub whole_md5: bool,
    /// Send the reply's frames packed in `zstd` envelopes where smaller
    /// (`-z`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub compress: bool,
}

/// List the directory at `filename`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Ls {
    /// The path concerned, relative to the root (or to the tree).
    #[serde(default, skip_serializing)]
    pub filename: String,
}

/// Say what `filename` itself is: one `entry` (a link is not followed).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Stat {
    /// The path concerned, relative to the root.
    #[serde(default, skip_serializing)]
    pub filename: String,
}

/// Remove `filename`: a file or link, or with `recursive` a directory and
/// everything in it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Rm {
    /// The path concerned, relative to the root.
    #[serde(default, skip_serializing)]
    pub filename: String,
    /// Directories too, with everything in them.
    #[serde(default, skip_serializing_if = "is_false")]
    pub recursive: bool,
}

/// Rename `filename` to `target` within the root (into `target` when that
/// is a directory).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Mv {
    /// The path concerned, relative to the root.
    #[serde(default, skip_serializing)]
    pub filename: String,
    /// The new path, relative to the root.
    #[serde(default)]
    pub target: String,
    /// Replace what is at `target`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub force: bool,
}

/// Make the directory `filename` (with `parents`, its missing parents too,
/// and no error if it is there).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Mkdir {
    /// The path concerned, relative to the root.
    #[serde(default, skip_serializing)]
    pub filename: String,
    /// As `mkdir -p`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub parents: bool,
}

/// Say the MD5 and size of the file `filename`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Md5sum {
    /// The path concerned, relative to the root.
    #[serde(default, skip_serializing)]
    pub filename: String,
    /// The digest over its parts, not the plain MD5.
    #[serde(default, skip_serializing_if = "is_false")]
    pub parts: bool,
}

/// Run `command` with `sh -c`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Exec {
    /// The command line.
    #[serde(default)]
    pub command: String,
    /// Seconds before the command's process group is killed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    /// Whether `stdin` frames follow.
    #[serde(default, skip_serializing_if = "is_false")]
    pub stdin: bool,
    /// Run it on a pseudo-terminal of this kind and size (`exec -t`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tty: Option<Tty>,
    /// Run the server user's login shell (`command` empty; with `tty`, a
    /// remote shell as `ssh host` gives).
    #[serde(default, skip_serializing_if = "is_false")]
    pub login: bool,
    /// Send the reply's frames packed in `zstd` envelopes where smaller
    /// (`-z`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub compress: bool,
}

/// The terminal a command runs on: its `TERM` and window size.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Tty {
    /// `TERM` for the command (`xterm-256color`, say).
    #[serde(default)]
    pub term: String,
    /// Window rows.
    #[serde(default)]
    pub rows: u16,
    /// Window columns.
    #[serde(default)]
    pub cols: u16,
}

/// Make the directory `filename` a copy of the manifest that follows.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PutTree {
    /// The path concerned, relative to the root (or to the tree).
    #[serde(default, skip_serializing)]
    pub filename: String,
    /// Replace differing files.
    #[serde(default, skip_serializing_if = "is_false")]
    pub force: bool,
    /// Flush to disk before the last `end`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub fsync: bool,
    /// Remove what is beneath the directory but not in the manifest (each
    /// told in a `deleted` reply).
    #[serde(default, skip_serializing_if = "is_false")]
    pub delete: bool,
    /// Only answer the manifest (`have`, `partial`, `error`, `deleted`);
    /// make, replace and delete nothing. The exchange ends with that `end`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub dry_run: bool,
}

/// Send the tree at `filename`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct GetTree {
    /// The path concerned, relative to the root (or to the tree).
    #[serde(default, skip_serializing)]
    pub filename: String,
    /// Send differing files.
    #[serde(default, skip_serializing_if = "is_false")]
    pub force: bool,
    /// Answer each `want` with `ok` (with the bytes it would send) instead
    /// of the file.
    #[serde(default, skip_serializing_if = "is_false")]
    pub dry_run: bool,
    /// Send the reply's frames packed in `zstd` envelopes where smaller
    /// (`-z`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub compress: bool,
}

/// A file the client wants of a get_tree manifest: `md5` of its copy of
/// the same size, or `offset` and `md5` of a partial to resume.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Want {
    /// The path concerned, relative to the root (or to the tree).
    #[serde(default, skip_serializing)]
    pub filename: String,
    /// MD5 of the client's copy, or of its partial.
    #[serde(default, skip_serializing)]
    pub md5: Option<Md5Hex>,
    /// Bytes of the client's partial, to resume after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
}

/// A file was stored, of digest `md5` (or, `skipped`, was identical):
/// the `ok` message.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Stored {
    /// The path concerned, relative to the root (or to the tree).
    #[serde(default, skip_serializing)]
    pub filename: String,
    /// The stored file's MD5.
    #[serde(default, skip_serializing)]
    pub md5: Option<Md5Hex>,
    /// The stored file's size (`put`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// The client's copy was identical and was not sent (get_tree).
    #[serde(default, skip_serializing_if = "is_false")]
    pub skipped: bool,
}

/// A file of a put_tree the server has already: its size, and MD5 when the
/// size is the entry's.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Have {
    /// The path concerned, relative to the tree.
    #[serde(default, skip_serializing)]
    pub filename: String,
    /// Its size.
    #[serde(default)]
    pub size: u64,
    /// Its MD5, when `size` is the entry's.
    #[serde(default, skip_serializing)]
    pub md5: Option<Md5Hex>,
}

/// A chunk of a command's output (the body): one part of its stream.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Chunk {
    /// The MD5 of this chunk's bytes; `None` only from a broken peer.
    #[serde(default, skip_serializing)]
    pub md5: Option<Md5Hex>,
}

/// Client to server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ClientMessage {
    /// The answer to `hello`: the client's nonce and proof of the token.
    Auth {
        /// 64 hex digits; `""` from a peer that sent none (refused).
        #[serde(default)]
        nonce: String,
        /// HMAC-SHA256 proof, 64 hex digits.
        #[serde(default)]
        mac: String,
    },
    /// Store the `data` body that follows `ready` at `filename`.
    Put(Put),
    /// Send the file at `filename`; `offset` and `md5` offer a partial.
    Get(Get),
    /// List the directory at `filename`.
    Ls(Ls),
    /// Run `command` with `sh -c`.
    Exec(Exec),
    /// Make the directory `filename` a copy of the manifest that follows.
    PutTree(PutTree),
    /// Send the tree at `filename`.
    GetTree(GetTree),
    /// A file the client wants of a get_tree manifest: `md5` of its copy of
    /// the same size, or `offset` and `md5` of a partial to resume.
    Want(Want),
    /// What a path itself is.
    Stat(Stat),
    /// Remove a file, link or (recursive) directory.
    Rm(Rm),
    /// Rename within the root.
    Mv(Mv),
    /// Make a directory.
    Mkdir(Mkdir),
    /// The MD5 of a file.
    Md5sum(Md5sum),
    /// The space where the root lives.
    Df,
    /// I am here: answered with `keepalive` between requests, dropped
    /// while a command runs.
    Keepalive,
    /// The client's terminal window has a new size (`exec` with `tty`).
    Resize {
        /// Rows.
        #[serde(default)]
        rows: u16,
        /// Columns.
        #[serde(default)]
        cols: u16,
    },
    /// A chunk of the command's stdin (the body); an empty one is EOF.
    Stdin,
    /// Compressed frames (the body), read in its place.
    Zstd {
        /// Bytes the body unpacks to.
        #[serde(default)]
        size: u64,
    },
    Data(Data),
    Done(Done),
    Entry(Entry),
    End(End),
}

/// Server to client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ServerMessage {
    /// The greeting: protocol version and the server's nonce.
    Hello {
        /// `0` from a peer that sent none.
        #[serde(default)]
        version: u32,
        /// 64 hex digits.
        #[serde(default)]
        nonce: String,
    },
    /// The server's proof of the token, after a good `auth`.
    Welcome {
        #[serde(default)]
        mac: String,
    },
    /// Send the body now (`put`, from `offset`: the partial held, of `md5`);
    /// or go on with the manifest (`put_tree`).
    Ready {
        /// The path concerned.
        #[serde(default, skip_serializing)]
        filename: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
        #[serde(default, skip_serializing)]
        md5: Option<Md5Hex>,
    },
    /// A file was stored, of digest `md5` (or, `skipped`, was identical).
    Ok(Stored),
    /// A file of a put_tree the server has already.
    Have(Have),
    /// Something beneath a put_tree's directory that the manifest lacks
    /// was removed (`delete`), or would be (`dry_run`).
    Deleted {
        /// The path concerned, relative to the tree.
        #[serde(default, skip_serializing)]
        filename: String,
    },
    /// A partial the server holds for a file of a put_tree: its first
    /// `offset` bytes, of MD5 `md5`.
    Partial {
        /// The path concerned.
        #[serde(default, skip_serializing)]
        filename: String,
        offset: u64,
        #[serde(skip_serializing)]
        md5: Md5Hex,
    },
    /// The space of the filesystem the root is on (`df`), in bytes.
    Space {
        /// Its size.
        #[serde(default)]
        total: u64,
        /// What is free for the server's user to write.
        #[serde(default)]
        free: u64,
    },
    /// I am here: the answer to a client's, and sent every few seconds
    /// while a command is silent.
    Keepalive,
    /// The command is running.
    Started,
    /// A chunk of the command's stdout (the body).
    Stdout(Chunk),
    /// A chunk of the command's stderr (the body).
    Stderr(Chunk),
    /// The command ended: how, and what each stream carried.
    Exit {
        /// Its exit code, if it exited.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_code: Option<i32>,
        /// The signal that killed it, if one did.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signal: Option<i32>,
        /// Its time ran out.
        #[serde(default, skip_serializing_if = "is_false")]
        timed_out: bool,
        /// Size and MD5 of everything sent on stdout.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stdout: Option<StreamSummary>,
        /// Size and MD5 of everything sent on stderr.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stderr: Option<StreamSummary>,
    },
    Error(Refusal),
    /// Compressed frames (the body), read in its place.
    Zstd {
        /// Bytes the body unpacks to.
        #[serde(default)]
        size: u64,
    },
    Data(Data),
    Done(Done),
    Entry(Entry),
    End(End),
}

impl ClientMessage {
    /// Whether this request asks for its reply packed where smaller.
    pub fn wants_compression(&self) -> bool {
        match self {
            ClientMessage::Get(Get { compress, .. })
            | ClientMessage::GetTree(GetTree { compress, .. })
            | ClientMessage::Exec(Exec { compress, .. }) => *compress,
            _ => false,
        }
    }
}

impl ServerMessage {
    /// An `error` frame about the request as a whole.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        ServerMessage::Error(Refusal { filename: String::new(), code, message: message.into() })
    }
}

impl Message for ClientMessage {
    fn zstd(size: u64) -> Self {
        ClientMessage::Zstd { size }
    }

    fn as_zstd(&self) -> Option<u64> {
        match self {
            ClientMessage::Zstd { size } => Some(*size),
            _ => None,
        }
    }

    fn op(&self) -> &'static str {
        match self {
            ClientMessage::Auth { .. } => "auth",
            ClientMessage::Put(_) => "put",
            ClientMessage::Get(_) => "get",
            ClientMessage::Ls(_) => "ls",
            ClientMessage::Exec(_) => "exec",
            ClientMessage::PutTree(_) => "put_tree",
            ClientMessage::GetTree(_) => "get_tree",
            ClientMessage::Want(_) => "want",
            ClientMessage::Stat(_) => "stat",
            ClientMessage::Rm(_) => "rm",
            ClientMessage::Mv(_) => "mv",
            ClientMessage::Mkdir(_) => "mkdir",
            ClientMessage::Md5sum(_) => "md5sum",
            ClientMessage::Df => "df",
            ClientMessage::Keepalive => "keepalive",
            ClientMessage::Resize { .. } => "resize",
            ClientMessage::Stdin => "stdin",
            ClientMessage::Zstd { .. } => "zstd",
            ClientMessage::Data(_) => "data",
            ClientMessage::Done(_) => "done",
            ClientMessage::Entry(_) => "entry",
            ClientMessage::End(_) => "end",
        }
    }

    fn filename(&self) -> &str {
        match self {
            ClientMessage::Put(Put { filename, .. })
            | ClientMessage::Get(Get { filename, .. })
            | ClientMessage::Ls(Ls { filename })
            | ClientMessage::PutTree(PutTree { filename, .. })
            | ClientMessage::GetTree(GetTree { filename, .. })
            | ClientMessage::Want(Want { filename, .. })
            | ClientMessage::Stat(Stat { filename })
            | ClientMessage::Rm(Rm { filename, .. })
            | ClientMessage::Mv(Mv { filename, .. })
            | ClientMessage::Mkdir(Mkdir { filename, .. })
            | ClientMessage::Md5sum(Md5sum { filename, .. })
            | ClientMessage::Data(Data { filename, .. })
            | ClientMessage::Done(Done { filename, .. })
            | ClientMessage::Entry(Entry { filename, .. }) => filename,
            ClientMessage::Auth { .. }
            | ClientMessage::Exec(_)
            | ClientMessage::Stdin
            | ClientMessage::Zstd { .. }
            | ClientMessage::Df
            | ClientMessage::Keepalive
            | ClientMessage::Resize { .. }
            | ClientMessage::End(_) => "",
        }
    }

    fn from_op(op: &str, json: &str) -> Option<serde_json::Result<Split<Self>>> {
        match op {
            "put" => read(json, ClientMessage::Put),
            "get" => read(json, ClientMessage::Get),
            "ls" => read(json, ClientMessage::Ls),
            "exec" => read(json, ClientMessage::Exec),
            "put_tree" => read(json, ClientMessage::PutTree),
            "get_tree" => read(json, ClientMessage::GetTree),
            "want" => read(json, ClientMessage::Want),
            "stdin" => bare(json, ClientMessage::Stdin),
            "data" => read(json, ClientMessage::Data),
            "done" => read(json, ClientMessage::Done),
            "entry" => read(json, ClientMessage::Entry),
            "end" => read(json, ClientMessage::End),
            // `auth`, whose fields are inline, takes the tagged path.
            _ => None,
        }
    }

    fn md5(&self) -> Option<&Md5Hex> {
        match self {
            ClientMessage::Get(Get { md5, .. })
            | ClientMessage::Want(Want { md5, .. })
            | ClientMessage::Data(Data { md5, .. })
            | ClientMessage::Done(Done { md5, .. }) => md5.as_ref(),
            _ => None,
        }
    }
}

impl Message for ServerMessage {
    fn zstd(size: u64) -> Self {
        ServerMessage::Zstd { size }
    }

    fn as_zstd(&self) -> Option<u64> {
        match self {
            ServerMessage::Zstd { size } => Some(*size),
            _ => None,
        }
    }

    fn op(&self) -> &'static str {
        match self {
            ServerMessage::Hello { .. } => "hello",
            ServerMessage::Welcome { .. } => "welcome",
            ServerMessage::Ready { .. } => "ready",
            ServerMessage::Ok(_) => "ok",
            ServerMessage::Have(_) => "have",
            ServerMessage::Deleted { .. } => "deleted",
            ServerMessage::Partial { .. } => "partial",
            ServerMessage::Space { .. } => "space",
            ServerMessage::Keepalive => "keepalive",
            ServerMessage::Started => "started",
            ServerMessage::Stdout(_) => "stdout",
            ServerMessage::Stderr(_) => "stderr",
            ServerMessage::Exit { .. } => "exit",
            ServerMessage::Error(_) => "error",
            ServerMessage::Zstd { .. } => "zstd",
            ServerMessage::Data(_) => "data",
            ServerMessage::Done(_) => "done",
            ServerMessage::Entry(_) => "entry",
            ServerMessage::End(_) => "end",
        }
    }

    fn filename(&self) -> &str {
        match self {
            ServerMessage::Ready { filename, .. }
            | ServerMessage::Ok(Stored { filename, .. })
            | ServerMessage::Have(Have { filename, .. })
            | ServerMessage::Deleted { filename }
            | ServerMessage::Partial { filename, .. }
            | ServerMessage::Error(Refusal { filename, .. })
            | ServerMessage::Data(Data { filename, .. })
            | ServerMessage::Done(Done { filename, .. })
            | ServerMessage::Entry(Entry { filename, .. }) => filename,
            ServerMessage::Hello { .. }
            | ServerMessage::Welcome { .. }
            | ServerMessage::Space { .. }
            | ServerMessage::Keepalive
            | ServerMessage::Started
            | ServerMessage::Stdout(_)
            | ServerMessage::Stderr(_)
            | ServerMessage::Exit { .. }
            | ServerMessage::Zstd { .. }
            | ServerMessage::End(_) => "",
        }
    }

    fn from_op(op: &str, json: &str) -> Option<serde_json::Result<Split<Self>>> {
        match op {
            "ok" => read(json, ServerMessage::Ok),
            "have" => read(json, ServerMessage::Have),
            "started" => bare(json, ServerMessage::Started),
            "stdout" => read(json, ServerMessage::Stdout),
            "stderr" => read(json, ServerMessage::Stderr),
            "error" => read(json, ServerMessage::Error),
            "data" => read(json, ServerMessage::Data),
            "done" => read(json, ServerMessage::Done),
            "entry" => read(json, ServerMessage::Entry),
            "end" => read(json, ServerMessage::End),
            // The rest, once per connection or request, take the tagged path.
            _ => None,
        }
    }

    fn md5(&self) -> Option<&Md5Hex> {
        match self {
            ServerMessage::Ready { md5, .. }
            | ServerMessage::Ok(Stored { md5, .. })
            | ServerMessage::Have(Have { md5, .. })
            | ServerMessage::Data(Data { md5, .. })
            | ServerMessage::Stdout(Chunk { md5 })
            | ServerMessage::Stderr(Chunk { md5 })
            | ServerMessage::Done(Done { md5, .. }) => md5.as_ref(),
            ServerMessage::Partial { md5, .. } => Some(md5),
            _ => None,
        }
    }
}

/// `From` for each shared message, into both directions' enums.
macro_rules! common {
    ($($shared:ident),*) => {$(
        impl From<$shared> for ClientMessage {
            fn from(m: $shared) -> Self {
                ClientMessage::$shared(m)
            }
        }
        impl From<$shared> for ServerMessage {
            fn from(m: $shared) -> Self {
                ServerMessage::$shared(m)
            }
        }
    )*};
}
common!(Data, Done, Entry, End);

impl Common for ClientMessage {
    fn into_done(self) -> Result<Done, Self> {
        match self {
            ClientMessage::Done(done) => Ok(done),
            other => Err(other),
        }
    }

    fn into_data(self) -> Result<Data, Self> {
        match self {
            ClientMessage::Data(data) => Ok(data),
            other => Err(other),
        }
    }
}

impl Common for ServerMessage {
    fn into_done(self) -> Result<Done, Self> {
        match self {
            ServerMessage::Done(done) => Ok(done),
            other => Err(other),
        }
    }

    fn into_data(self) -> Result<Data, Self> {
        match self {
            ServerMessage::Data(data) => Ok(data),
            other => Err(other),
        }
    }
}

impl From<Refusal> for ServerMessage {
    fn from(r: Refusal) -> Self {
        ServerMessage::Error(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame::{decode, encode};

    /// The byte dumps of PROTOCOL.md's "A real exchange": each block of
    /// one direction, as (from the client?, bytes).
    fn captured() -> Vec<(bool, Vec<u8>)> {
        let doc = include_str!("../../PROTOCOL.md");
        let section = &doc[doc.find("## A real exchange").expect("the section")..];
        let mut blocks: Vec<(bool, Vec<u8>)> = Vec::new();
        for line in section.lines() {
            if let Some(dir) = ["C->S", "S->C"].iter().position(|d| line.starts_with(d)) {
                blocks.push((dir == 0, Vec::new()));
            } else if let (Some(hex), Some((_, bytes))) = (line.strip_prefix("  "), blocks.last_mut()) {
                // "  0010  22 66 ...  text": the offset, then up to 16 bytes.
                let hex = hex.get(6..).unwrap_or("");
                bytes.extend(
                    hex.split(' ')
                        .take_while(|w| w.len() == 2)
                        .map(|w| u8::from_str_radix(w, 16).expect("hex byte")),
                );
            }
        }
        blocks
    }

    /// Decodes every frame of `bytes` as messages `M`, checks that encoding
    /// each gives back its header byte for byte, and returns their ops.
    fn replay<M: Message + std::fmt::Debug>(mut bytes: &[u8]) -> Vec<&'static str> {
        let mut ops = Vec::new();
        while !bytes.is_empty() {
            let (frame, used) = decode::<M>(bytes).expect("a valid header").expect("a whole header");
            let mut again = Vec::new();
            encode(&frame.msg, frame.total_size, &mut again).unwrap();
            assert_eq!(
                String::from_utf8_lossy(&again),
                String::from_utf8_lossy(&bytes[..used]),
                "{:?} encodes differently",
                frame.msg
            );
            ops.push(frame.msg.op());
            bytes = &bytes[used + frame.total_size as usize..];
        }
        ops
    }

    #[test]
    fn protocol_md_exchanges_decode_and_encode_byte_for_byte() {
        let mut ops = Vec::new();
        for (from_client, bytes) in captured() {
            let sent =
                if from_client { replay::<ClientMessage>(&bytes) } else { replay::<ServerMessage>(&bytes) };
            ops.extend(sent);
        }
        let expected = [
            "put", "ready", "data", "done", "ok", "get", "data", "done", "get", "error", "exec", "started",
            "stdin", "stdin", "stdout", "stderr", "exit",
        ];
        assert_eq!(ops, expected);
    }
}

#[cfg(test)]
mod examples {
    use super::*;
    use crate::protocol::frame::{decode, encode};

    /// The header of `msg` (no body) as the codec writes it, without its
    /// length prefix.
    fn header<M: Message>(msg: &M) -> String {
        let mut out = Vec::new();
        encode(msg, 0, &mut out).unwrap();
        String::from_utf8(out[4..].to_vec()).unwrap()
    }

    /// The lines of PROTOCOL.md's "Header examples": (from the client?, JSON).
    fn documented() -> Vec<(bool, String)> {
        let doc = include_str!("../../PROTOCOL.md");
        let start = doc.find("## Header examples").expect("the section");
        let section = &doc[start..];
        let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
        section
            .lines()
            .filter_map(|l| {
                let (dir, json) = l.split_once(": ")?;
                match dir {
                    "C" => Some((true, json.to_string())),
                    "S" => Some((false, json.to_string())),
                    _ => None,
                }
            })
            .collect()
    }

    /// Every documented header decodes in its direction and encodes back
    /// to the same bytes; and the document shows each of these messages.
    #[test]
    fn protocol_md_header_examples_are_what_the_codec_reads_and_writes() {
        let lines = documented();
        assert!(lines.len() >= 15, "{lines:?}");
        for (from_client, json) in &lines {
            let mut frame = (json.len() as u32).to_be_bytes().to_vec();
            frame.extend_from_slice(json.as_bytes());
            let again = match from_client {
                true => header(&decode::<ClientMessage>(&frame).unwrap().unwrap().0.msg),
                false => header(&decode::<ServerMessage>(&frame).unwrap().unwrap().0.msg),
            };
            assert_eq!(&again, json);
        }
        let md5 = Md5Hex::try_from("b1946ac92492d2347c6235b4d2611184".to_string()).unwrap();
        let parts = Md5Hex::try_from("e7e2c1041ab5286f57a5ad533c4e230f-3".to_string()).unwrap();
        let whole = Md5Hex::try_from("34fadf2975834e9a357ec41d3e6df067".to_string()).unwrap();
        let shown: Vec<(bool, String)> = vec![
            (
                true,
                header(&ClientMessage::Put(Put {
                    filename: "a.txt".into(),
                    size: Some(6),
                    dry_run: true,
                    ..Put::default()
                })),
            ),
            (
                true,
                header(&ClientMessage::PutTree(PutTree {
                    filename: "dst".into(),
                    delete: true,
                    dry_run: true,
                    ..PutTree::default()
                })),
            ),
            (true, header(&ClientMessage::Stat(Stat { filename: "d".into() }))),
            (true, header(&ClientMessage::Rm(Rm { filename: "logs/old".into(), recursive: true }))),
            (
                true,
                header(&ClientMessage::Mv(Mv {
                    filename: "a.txt".into(),
                    target: "dir".into(),
                    force: true,
                })),
            ),
            (true, header(&ClientMessage::Mkdir(Mkdir { filename: "a/b".into(), parents: true }))),
            (true, header(&ClientMessage::Md5sum(Md5sum { filename: "big.bin".into(), parts: false }))),
            (true, header(&ClientMessage::Md5sum(Md5sum { filename: "big.bin".into(), parts: true }))),
            (
                true,
                header(&ClientMessage::Get(Get {
                    filename: "big.bin".into(),
                    offset: Some(262144),
                    md5: Some(Md5Hex::try_from("76441ebf02217bf432160d60f6862db1-2".to_string()).unwrap()),
                    whole_md5: true,
                    ..Get::default()
                })),
            ),
            (
                true,
                header(&ClientMessage::Data(Data {
                    filename: "empty".into(),
                    md5: Some(Md5Hex::try_from("d41d8cd98f00b204e9800998ecf8427e".to_string()).unwrap()),
                    offset: Some(0),
                    ..Data::default()
                })),
            ),
            (
                true,
                header(&ClientMessage::Done(Done {
                    filename: "big.bin".into(),
                    md5: Some(parts.clone()),
                    whole: Some(whole.clone()),
                })),
            ),
            (false, header(&ServerMessage::Stdout(Chunk { md5: Some(md5.clone()) }))),
            (true, header(&ClientMessage::Df)),
            (true, header(&ClientMessage::Keepalive)),
            (true, header(&ClientMessage::Resize { rows: 40, cols: 120 })),
            (
                true,
                header(&ClientMessage::Exec(Exec {
                    tty: Some(Tty { term: "xterm-256color".into(), rows: 24, cols: 80 }),
                    login: true,
                    stdin: true,
                    ..Exec::default()
                })),
            ),
            (false, header(&ServerMessage::Deleted { filename: "old.txt".into() })),
            (false, header(&ServerMessage::Space { total: 270553174016, free: 80037376000 })),
            (false, header(&ServerMessage::Keepalive)),
            (
                false,
                header(&ServerMessage::Ok(Stored {
                    filename: "big.bin".into(),
                    md5: Some(parts),
                    size: Some(300000),
                    skipped: false,
                })),
            ),
            (
                false,
                header(&ServerMessage::error(ErrorCode::Forbidden, "this token may not write on the server")),
            ),
        ];
        let lacking: Vec<String> = shown
            .iter()
            .filter(|s| !lines.contains(s))
            .map(|(c, json)| format!("{}: {json}", if *c { "C" } else { "S" }))
            .collect();
        assert!(lacking.is_empty(), "PROTOCOL.md's header examples lack:\n{}", lacking.join("\n"));
    }
}
