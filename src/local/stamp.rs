//! Which version of a file was read: what a remembered digest is kept by.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One version of a file: which file it is, its size, and its modification
/// and change times to the nanosecond. Writing, truncating or renaming a
/// file sets its change time to the present, and no user can set it back,
/// so bytes that change give a new stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Stamp {
    /// The device and inode: which file this is.
    pub file: (u64, u64),
    /// Its size in bytes.
    size: u64,
    /// Modification time (seconds, nanoseconds).
    mtime: (i64, i64),
    /// Change time (seconds, nanoseconds).
    ctime: (i64, i64),
}

/// How long ago a file must have last changed for its stamp to be trusted.
/// Filesystems with coarse timestamps (a clock tick, at most 10 ms on
/// Linux) give two writes within one tick the same change time: a stamp
/// read in the tick of a write could match the file after a second one.
/// A second is far beyond any tick.
const SETTLED: Duration = Duration::from_secs(1);

impl Stamp {
    /// The stamp of a file with metadata `meta`, read at `now`; `None`
    /// if it last changed less than a second before (see `SETTLED`).
    pub fn of(meta: &std::fs::Metadata, now: SystemTime) -> Option<Stamp> {
        use std::os::unix::fs::MetadataExt;
        let changed = UNIX_EPOCH.checked_add(Duration::new(
            u64::try_from(meta.ctime()).ok()?,
            u32::try_from(meta.ctime_nsec()).ok()?,
        ))?;
        if now.duration_since(changed).map_or(true, |ago| ago < SETTLED) {
            return None;
        }
        Some(Stamp {
            file: (meta.dev(), meta.ino()),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        })
    }
}
