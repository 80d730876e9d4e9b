//! Directory trees, the same on both sides: the walk of a tree into a
//! manifest (for whichever side sends), the receiving side's application
//! of it, and the rules both keep.
//!
//! A manifest lists directories before what they hold. Regular files,
//! directories and symlinks whose target stays inside the tree are kept;
//! anything else is skipped with a warning naming it.
//!
//! - [`mod@walk`]: the one walk, over a directory handle, sent as it goes.
//! - [`hash`]: many files hashed at once, on two threads, or ahead of
//!   need on one.
//! - [`receive`]: a manifest applied beneath the destination, and each
//!   file's place; its large files go through
//!   [`transfer::receive_file`](crate::transfer::receive_file).
//! - [`send`]: a tree's files sent, for whichever side sends: small ones
//!   hashed together and queued, large ones streamed.
//! - [`writer`]: a tree's small files verified and written on threads of
//!   their own.

pub mod hash;
pub mod receive;
pub mod send;
pub mod walk;
pub mod writer;

pub use crate::local::meta::{apply_meta, MODE_MASK};
pub use hash::{par_hash, par_map, HashAhead};
pub use walk::{send_walk, walk, walk_local, walk_local_in_batches, walk_root_in_batches, LeftOut};

use crate::error::ConnError;
use crate::protocol::{Entry, EntryKind, OFFER_MOST_PARTS};
use std::path::{Component, Path, PathBuf};

pub use crate::local::MAX_DEPTH;

/// Entries per batch of a manifest sent while the walk goes on: about
/// 30 KB of frames, one write each.
pub const BATCH: usize = 256;

/// Files of a tree up to this size are read whole, hashed many at once
/// and written by the tree writer's threads, instead of streamed through
/// a pipeline of threads of their own: /usr/include's 330 files over
/// 64 KiB (38 MB) took 0.32-0.34 s streamed, 1 ms each, a third of the
/// whole tree's time. Above this, a file is worth resuming.
pub const WHOLE_MAX: u64 = 1024 * 1024;

/// Batches a walk may run ahead of the socket.
pub const BATCHES_AHEAD: usize = 8;

/// Entries a manifest may hold, on either side: bounds the memory for one
/// tree (a few hundred bytes each) while allowing trees far larger than
/// /usr/include's 8,000 files.
pub const MAX_ENTRIES: usize = 1_000_000;

/// Bytes a manifest may make the receiving side hold, per connection:
/// names and link targets (a name is held twice, as a key and in its
/// entry) plus a fixed cost per entry (`ENTRY_COST`). 20,000 entries
/// with 4 KB names took a server from 5 to 160 MB before there was a cap.
pub const MANIFEST_BYTES_MAX: usize = 64 << 20;

/// What one entry costs besides its text: the entry and its map slot.
const ENTRY_COST: usize = 128;

/// What a peer that sends more than [`MANIFEST_BYTES_MAX`] is told.
pub const MANIFEST_LIMIT: &str = "a manifest of at most 64 MiB and a million entries";

/// Counts what a manifest being received costs, against the caps.
#[derive(Debug, Default)]
pub struct ManifestBudget {
    /// Bytes counted so far.
    bytes: usize,
    /// Entries counted so far.
    entries: usize,
    /// Notes (items left out, told to be printed) counted so far.
    notes: usize,
}

impl ManifestBudget {
    /// Counts a note of the manifest (an item the sender left out, with
    /// its reason): only printed, not held, but a peer may not send them
    /// forever; false once over the byte cap or a million notes.
    pub fn admit_note(&mut self, message: &str) -> bool {
        self.notes += 1;
        self.bytes += message.len();
        self.bytes <= MANIFEST_BYTES_MAX && self.notes <= MAX_ENTRIES
    }

    /// Counts `e`, which will be held; false once the manifest is over
    /// either cap.
    pub fn admit(&mut self, e: &TreeEntry) -> bool {
        self.entries += 1;
        self.bytes += ENTRY_COST + 2 * e.rel.len() + e.target.as_ref().map_or(0, String::len);
        self.bytes <= MANIFEST_BYTES_MAX && self.entries <= MAX_ENTRIES
    }
}

/// Part digests a tree's offers to resume carried so far, on the side
/// they are offered to: all the offers share what one may carry.
#[derive(Debug, Default)]
pub struct OfferedParts(usize);

impl OfferedParts {
    /// Counts an offer of `n` parts' digests; an error once the tree's
    /// offers carry more than [`OFFER_MOST_PARTS`].
    pub fn count(&mut self, n: usize) -> Result<(), ConnError> {
        self.0 += n;
        match self.0 <= OFFER_MOST_PARTS {
            true => Ok(()),
            false => Err(ConnError::BadOffer(n as u64 * 16)),
        }
    }
}

/// Partials a tree transfer holds open (locked) to resume; beyond this,
/// files start over. Each holds a file descriptor until its file comes.
pub const MAX_RESUMABLE: usize = 64;

/// What a tree transfer did, for its summary line and exit code.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TreeReport {
    /// Files sent and committed.
    pub sent: u64,
    /// Files skipped because the destination already had them, identical.
    pub skipped: u64,
    /// Files that failed (each reported on stderr).
    pub failed: u64,
    /// Body bytes moved (of files committed).
    pub bytes: u64,
    /// Of `sent`, files that replaced a differing one (`--force`).
    pub replaced: u64,
    /// Things removed from the destination (`--delete`).
    pub deleted: u64,
}

/// One item of a tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeEntry {
    /// Path relative to the tree's top, `/`-separated.
    pub rel: String,
    /// What it is: `File`, `Dir` or `Symlink`.
    pub kind: EntryKind,
    /// Size in bytes (files).
    pub size: u64,
    /// Permission bits, masked with [`MODE_MASK`].
    pub mode: u32,
    /// Modification time, seconds since the Unix epoch.
    pub mtime: i64,
    /// Where a symlink points, as stored in it.
    pub target: Option<String>,
}

impl TreeEntry {
    /// The `entry` message describing this item.
    pub fn to_entry(&self) -> Entry {
        Entry {
            size: Some(self.size),
            mode: Some(self.mode),
            mtime: Some(self.mtime),
            target: self.target.clone(),
            ..Entry::new(&self.rel, self.kind)
        }
    }

    /// The item an `entry` message describes; `None` if it is not one.
    pub fn from_entry(h: Entry) -> Option<TreeEntry> {
        let kind = h.kind;
        if !matches!(kind, EntryKind::File | EntryKind::Dir | EntryKind::Symlink) {
            return None;
        }
        Some(TreeEntry {
            rel: h.filename,
            kind,
            size: h.size.unwrap_or(0),
            mode: h.mode.unwrap_or(0o644) & MODE_MASK,
            mtime: h.mtime.unwrap_or(0),
            target: h.target,
        })
    }
}

/// Why a symlink at `rel` (inside a tree) to `target` is not kept as a
/// link of the tree, judged on the names alone; `None` if it is. A kept
/// target is relative and climbs (`..`) only before its first name, never
/// above the tree's top: standing where its name says, it leads inside
/// whatever other links the tree holds, now or later. A `..` after a name
/// (`x/..`) climbs out of wherever `x` leads, which a later link at `x`
/// decides; none of the 7,440 links on this machine's disk has one.
pub fn link_fault(rel: &str, target: &str) -> Option<LinkFault> {
    let target = Path::new(target);
    if target.is_absolute() || target.as_os_str().is_empty() {
        return Some(LinkFault::LeadsOut);
    }
    // Depth of the link's directory below the top, as a path reads `rel`.
    let mut depth = rel.split('/').filter(|part| !part.is_empty() && *part != ".").count() as i64 - 1;
    let mut named = false;
    for c in target.components() {
        match c {
            Component::Normal(_) => named = true,
            Component::CurDir => {}
            Component::ParentDir if named => return Some(LinkFault::BackOutOfName),
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return Some(LinkFault::LeadsOut);
                }
            }
            Component::RootDir | Component::Prefix(_) => return Some(LinkFault::LeadsOut),
        }
    }
    None
}

/// What is wrong with a link's target (see [`link_fault`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkFault {
    /// Absolute, empty, or climbing above the top.
    LeadsOut,
    /// A `..` after a name.
    BackOutOfName,
}

impl LinkFault {
    /// A tree's words for leaving out a link to `shown` (its target as it
    /// is to be printed).
    pub fn skipped(self, shown: impl std::fmt::Display) -> String {
        format!("symlink to {shown} {}, skipped", self.words())
    }

    /// What the target does, in words that follow "symlink to TARGET".
    pub fn words(self) -> &'static str {
        match self {
            LinkFault::LeadsOut => "leads out of the tree",
            LinkFault::BackOutOfName => "climbs back out of a name ('..' after a name)",
        }
    }
}

/// `top` joined with a `/`-separated relative path.
pub fn local_path(top: &Path, rel: &str) -> PathBuf {
    rel.split('/').fold(top.to_path_buf(), |p, part| p.join(part))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_and_entries_of_a_manifest_are_counted_apart() {
        let mut budget = ManifestBudget::default();
        for _ in 0..MAX_ENTRIES {
            assert!(budget.admit_note(""));
        }
        assert!(!budget.admit_note(""), "a million notes at most");
        let e = TreeEntry {
            rel: "f".into(),
            kind: EntryKind::File,
            size: 1,
            mode: 0o644,
            mtime: 0,
            target: None,
        };
        assert!(budget.admit(&e), "notes do not use up the entries' allowance");
    }

    #[test]
    fn links_inside_the_tree_are_told_from_links_out_of_it() {
        for (rel, target) in
            [("a", "b"), ("d/a", "../b"), ("d/e/a", "../../b/c"), ("a", "./b"), ("d/a", "./.././b/./c")]
        {
            assert_eq!(link_fault(rel, target), None, "{rel} -> {target}");
        }
        let out = [("a", "../b"), ("d/a", "../../b"), ("a", "/etc/passwd"), ("a", ""), ("l//.", "../b")];
        for (rel, target) in out {
            assert_eq!(link_fault(rel, target), Some(LinkFault::LeadsOut), "{rel} -> {target}");
        }
        // Back out of a name: even where it would lead inside today.
        for (rel, target) in [("a", "b/../../c"), ("d/a", "x/.."), ("d/a", "../x/../y"), ("a", "b/c/..")] {
            assert_eq!(link_fault(rel, target), Some(LinkFault::BackOutOfName), "{rel} -> {target}");
        }
    }
}
