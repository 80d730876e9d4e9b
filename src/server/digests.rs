//! Digests of files the server has read whole, remembered while the files
//! stay unchanged, so that sending a file again does not hash it again:
//! its digest over its parts, each part's digest (what a `get` sends in
//! each part's header), and its plain MD5 once `md5sum` asked for it.
//!
//! A remembered digest is only ever sent as the claim the client checks
//! the bytes against: should a file change without its [`Stamp`] showing
//! it, the client reports a mismatch and commits nothing. It never decides
//! that two files are identical; those comparisons hash the bytes.

use crate::digest::parts_of;
use crate::local::{RemotePath, Root, Stamp};
use crate::protocol::Md5Hex;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Bytes of part digests remembered in all: 16 a part, so 4 MiB covers
/// 32 GiB of files at 128 KiB parts. Past it, files keep their digests but
/// not their parts' (a get of them hashes the parts again, at lane speed).
const PARTS_BYTES: usize = 4 << 20;

/// Most parts of one file whose digests are worth keeping: as many as
/// can be remembered at all. Beyond it they are not even collected (a
/// file of 32 GiB would otherwise cost 4 MiB of them while it is sent).
pub(crate) const MOST_PARTS: usize = PARTS_BYTES / 16;

/// Digests remembered by the server, at most a set number of them.
#[derive(Debug)]
pub(crate) struct Digests {
    /// Most files held (0: none). When full, all are forgotten. A slot
    /// takes 145 bytes (and its parts' digests their own): the default,
    /// `server::DIGEST_CACHE`, fits in 32,768 slots, 4.5 MiB;
    /// /usr/include's 7,911 in 16,384, 2.3 MiB.
    limit: usize,
    /// What is known of each file.
    known: Mutex<Table>,
}

/// What is known of each file, and what its part digests cost.
#[derive(Debug, Default)]
struct Table {
    /// By device and inode.
    files: HashMap<(u64, u64), Remembered>,
    /// Bytes of part digests held, within [`PARTS_BYTES`].
    part_bytes: usize,
}

/// What is remembered of one version of a file.
#[derive(Debug)]
struct Remembered {
    /// The version of the file it is the digest of.
    stamp: Stamp,
    /// Its digest over its parts: raw, and the count of parts.
    digest: Option<([u8; 16], u64)>,
    /// Every part's digest, in order (within [`PARTS_BYTES`]).
    parts: Option<Arc<[[u8; 16]]>>,
    /// Its plain MD5.
    whole: Option<[u8; 16]>,
}

impl Digests {
    /// Remembers up to `limit` files.
    pub fn new(limit: usize) -> Self {
        Digests { limit, known: Mutex::new(Table::default()) }
    }

    /// The size of the file at `p`, and its digest over its parts if its
    /// size is `size`: hashed from its bytes, since the answer decides
    /// whether a copy is identical (then remembered). Blocking.
    pub fn compare(
        &self,
        root: &Root,
        p: &RemotePath,
        size: Option<u64>,
    ) -> std::io::Result<(u64, Option<Md5Hex>)> {
        let mut opened = root.open_read(p)?;
        if Some(opened.size) != size {
            return Ok((opened.size, None));
        }
        let md5 = parts_of(&mut opened.file, opened.size)?.finish();
        self.remember(opened.stamp, &md5);
        Ok((opened.size, Some(md5)))
    }

    /// Looks at what is remembered of the file version `stamp`.
    fn with<T>(&self, stamp: Option<&Stamp>, f: impl FnOnce(&Remembered) -> Option<T>) -> Option<T> {
        let stamp = stamp?;
        let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        known.files.get(&stamp.file).filter(|r| r.stamp == *stamp).and_then(f)
    }

    /// The digest over its parts of the file version `stamp`, if remembered.
    pub fn get(&self, stamp: Option<&Stamp>) -> Option<Md5Hex> {
        self.with(stamp, |r| r.digest.map(|(d, n)| Md5Hex::of_parts(&d, n)))
    }

    /// Every part's digest of the file version `stamp`, if remembered.
    pub fn parts(&self, stamp: Option<&Stamp>) -> Option<Arc<[[u8; 16]]>> {
        self.with(stamp, |r| r.parts.clone())
    }

    /// The plain MD5 of the file version `stamp`, if remembered.
    pub fn whole(&self, stamp: Option<&Stamp>) -> Option<Md5Hex> {
        self.with(stamp, |r| r.whole.map(|d| Md5Hex::from_digest(&d)))
    }

    /// Updates what is remembered of the file version `stamp`, all of whose
    /// bytes were hashed: a different version is forgotten first.
    fn update(&self, stamp: Option<Stamp>, f: impl FnOnce(&mut Remembered, &mut usize)) {
        let Some(stamp) = stamp.filter(|_| self.limit > 0) else { return };
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        let Table { files: table, part_bytes } = &mut *known;
        if table.len() >= self.limit && !table.contains_key(&stamp.file) {
            table.clear();
            *part_bytes = 0;
        }
        let entry =
            table.entry(stamp.file).or_insert(Remembered { stamp, digest: None, parts: None, whole: None });
        if entry.stamp != stamp {
            *part_bytes -= entry.parts.as_ref().map_or(0, |p| p.len() * 16);
            *entry = Remembered { stamp, digest: None, parts: None, whole: None };
        }
        f(entry, part_bytes);
    }

    /// Remembers `md5` as the digest over its parts of the file version
    /// `stamp`.
    pub fn remember(&self, stamp: Option<Stamp>, md5: &Md5Hex) {
        self.update(stamp, |r, _| r.digest = Some((md5.to_digest(), md5.parts())));
    }

    /// Remembers every part's digest of the file version `stamp` (and so
    /// its digest over them), within [`PARTS_BYTES`] in all.
    pub fn remember_parts(&self, stamp: Option<Stamp>, parts: Vec<[u8; 16]>) {
        let md5 = crate::digest::PartsDigest::of(&parts).finish();
        self.update(stamp, |r, part_bytes| {
            r.digest = Some((md5.to_digest(), md5.parts()));
            let bytes = parts.len() * 16;
            if r.parts.is_none() && *part_bytes + bytes <= PARTS_BYTES {
                *part_bytes += bytes;
                r.parts = Some(parts.into());
            }
        });
    }

    /// Remembers `md5` as the plain MD5 of the file version `stamp`.
    pub fn remember_whole(&self, stamp: Option<Stamp>, md5: &Md5Hex) {
        self.update(stamp, |r, _| r.whole = Some(md5.to_digest()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    const MD5_ABC: &str = "900150983cd24fb0d6963f7d28e17f72";

    fn md5(s: &str) -> Md5Hex {
        Md5Hex::try_from(s.to_string()).unwrap()
    }

    /// The stamp of `path` as if read `later` after its last change.
    fn stamp(path: &std::path::Path, later: Duration) -> Option<Stamp> {
        Stamp::of(&std::fs::metadata(path).unwrap(), SystemTime::now() + later)
    }

    #[test]
    fn a_digest_is_found_only_for_the_same_version_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, b"abc").unwrap();
        std::fs::write(&b, b"abc").unwrap();
        let digests = Digests::new(10);
        let old = stamp(&a, Duration::from_secs(5));
        digests.remember(old, &md5(MD5_ABC));
        assert_eq!(digests.get(old.as_ref()), Some(md5(MD5_ABC)));
        assert_eq!(digests.get(stamp(&b, Duration::from_secs(5)).as_ref()), None, "another file");
        // Same size, mtime set back: the change time still moves.
        let mtime = std::fs::metadata(&a).unwrap().modified().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&a, b"abd").unwrap();
        std::fs::File::options().write(true).open(&a).unwrap().set_modified(mtime).unwrap();
        let new = stamp(&a, Duration::from_secs(5));
        assert_ne!(new, old);
        assert_eq!(digests.get(new.as_ref()), None, "the file changed");
    }

    #[test]
    fn a_file_changed_within_the_last_second_has_no_stamp() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::write(&a, b"abc").unwrap();
        assert_eq!(stamp(&a, Duration::ZERO), None);
        assert!(stamp(&a, Duration::from_millis(1100)).is_some());
        let digests = Digests::new(10);
        digests.remember(None, &md5(MD5_ABC));
        assert_eq!(digests.known.lock().unwrap().files.len(), 0);
    }

    #[test]
    fn parts_and_the_plain_md5_are_kept_with_their_version_and_within_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::write(&a, b"abc").unwrap();
        let digests = Digests::new(10);
        let old = stamp(&a, Duration::from_secs(5));
        digests.remember_parts(old, vec![[1; 16], [2; 16]]);
        digests.remember_whole(old, &md5(MD5_ABC));
        assert_eq!(digests.parts(old.as_ref()).as_deref(), Some(&[[1u8; 16], [2; 16]][..]));
        assert_eq!(digests.get(old.as_ref()).unwrap().parts(), 2);
        assert_eq!(digests.whole(old.as_ref()), Some(md5(MD5_ABC)));
        // Another version of the file forgets all of it.
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&a, b"abd").unwrap();
        let new = stamp(&a, Duration::from_secs(5));
        digests.remember(new, &md5(MD5_ABC));
        assert_eq!((digests.parts(new.as_ref()), digests.whole(new.as_ref())), (None, None));
        assert_eq!(digests.known.lock().unwrap().part_bytes, 0, "the old parts' bytes are given back");
        // Parts beyond the budget are not kept; the digest is.
        digests.remember_parts(new, vec![[3; 16]; PARTS_BYTES / 16 + 1]);
        assert!(digests.parts(new.as_ref()).is_none());
        assert!(digests.get(new.as_ref()).is_some());
    }

    #[test]
    fn memory_is_bounded_and_zero_remembers_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let stamps: Vec<_> = (0..5)
            .map(|i| {
                let p = dir.path().join(i.to_string());
                std::fs::write(&p, b"abc").unwrap();
                stamp(&p, Duration::from_secs(5))
            })
            .collect();
        let digests = Digests::new(3);
        for s in &stamps {
            digests.remember(*s, &md5(MD5_ABC));
            assert!(digests.known.lock().unwrap().files.len() <= 3);
        }
        assert_eq!(digests.get(stamps[4].as_ref()), Some(md5(MD5_ABC)), "the newest is kept");
        let none = Digests::new(0);
        none.remember(stamps[0], &md5(MD5_ABC));
        assert_eq!(none.get(stamps[0].as_ref()), None);
    }
}
