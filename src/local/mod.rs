//! Confined filesystem work, for both sides: paths from the other side
//! checked, every access through a directory handle (cap-std) beneath its
//! root, bytes staged in a partial beside their destination and renamed
//! into place only once verified.
//!
//! Every path a peer names is checked by [`RemotePath::parse`] and then
//! opened through a `cap_std` directory handle, which resolves beneath it
//! (symlinks that lead outside fail) without a check-then-use race. Writes
//! go to a hidden [`Partial`] beside the destination; only a verified body
//! is renamed into place. An interrupted transfer leaves its partial (a
//! prefix of the file) for a later run to resume; a bad one (digest
//! mismatch, full disk) is removed.
//!
//! - [`path`]: the checks on a path from the other side.
//! - [`root`]: the directory handle everything goes through.
//! - [`partial`]: the partial file, its lock, its commit.
//! - [`whole`]: small files written in one step.
//! - [`meta`]: permission bits and modification times.
//! - [`stamp`]: which version of a file was read.
//! - [`sync`]: flushing to disk.

pub mod meta;
pub mod partial;
pub mod path;
pub mod root;
pub mod stamp;
pub mod sync;
pub mod whole;

pub use partial::{CommitError, Partial};
pub use path::{escape, PathError, RemotePath};
pub use root::{ListEntry, Opened, Place, Removal, Root};
pub use stamp::Stamp;
pub use sync::sync_filesystem;
pub use whole::{write_whole, write_whole_beneath, DirCache};

/// How deep xfer goes into a directory, on either side (walks, removals):
/// deeper directories are left out with a warning rather than risking the
/// stack on a hostile layout.
pub const MAX_DEPTH: usize = 256;

/// Suffix of every temporary xfer writes. Names ending in it are reserved:
/// peers cannot create them, listings hide them, and the server removes
/// leftovers when it starts.
pub const TEMP_SUFFIX: &str = ".xfer-part";
