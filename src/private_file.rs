//! Files only their owner may read: the token and the server's key. They
//! are made with mode 0600 in a 0700 directory, replaced atomically, and
//! refused when group or others may read them, as ssh refuses a loose key.

use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The permission bits of the file at `path` (following a symlink).
pub fn mode(path: &Path) -> io::Result<u32> {
    Ok(std::fs::metadata(path)?.permissions().mode() & 0o7777)
}

/// Whether `mode` lets anyone but the owner in.
pub fn is_loose(mode: u32) -> bool {
    mode & 0o077 != 0
}

/// Writes a new private file; fails with `AlreadyExists` if there is one,
/// so that of two processes making it at once, the first one's stays. It
/// appears whole (written aside, then linked in): a second server
/// starting at the same moment never reads it half written.
pub fn write_new(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let temp = written_aside(path, bytes)?;
    let linked = std::fs::hard_link(&temp, path);
    let _ = std::fs::remove_file(&temp);
    linked
}

/// Replaces (or makes) a private file atomically: readers see the old
/// contents or the new, never a mix.
pub fn replace(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let temp = written_aside(path, bytes)?;
    let renamed = std::fs::rename(&temp, path);
    if renamed.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    renamed
}

/// `bytes` in a new private file beside `path`, flushed, named for this
/// process and moment.
fn written_aside(path: &Path, bytes: &[u8]) -> io::Result<PathBuf> {
    make_parent(path)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let unique = format!("{}-{}", std::process::id(), rand::random::<u64>());
    let temp = path.with_file_name(format!(".{name}.new-{unique}"));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()));
    match written {
        Ok(()) => Ok(temp),
        Err(e) => {
            let _ = std::fs::remove_file(&temp);
            Err(e)
        }
    }
}

fn make_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_files_are_private_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/secret");
        write_new(&path, b"one").unwrap();
        assert_eq!(mode(&path).unwrap(), 0o600);
        assert_eq!(mode(path.parent().unwrap()).unwrap(), 0o700);
        assert_eq!(write_new(&path, b"two").unwrap_err().kind(), io::ErrorKind::AlreadyExists);
        replace(&path, b"three").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"three");
        assert_eq!(mode(&path).unwrap(), 0o600);
        assert_eq!(std::fs::read_dir(path.parent().unwrap()).unwrap().count(), 1, "no temporary left");
    }

    #[test]
    fn of_two_made_at_once_one_wins_and_neither_reads_half() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        let threads: Vec<_> = (0..8u8)
            .map(|i| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let mine = vec![b'a' + i; 4096];
                    match write_new(&path, &mine) {
                        Ok(()) => true,
                        Err(e) => {
                            assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
                            let theirs = std::fs::read(&path).unwrap();
                            assert_eq!(theirs.len(), 4096, "read a file half written");
                            false
                        }
                    }
                })
            })
            .collect();
        let won = threads.into_iter().map(|t| t.join().unwrap()).filter(|w| *w).count();
        assert_eq!(won, 1);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary left");
    }

    #[test]
    fn any_group_or_other_bit_is_loose() {
        assert!(!is_loose(0o600));
        assert!(!is_loose(0o400));
        assert!(is_loose(0o640));
        assert!(is_loose(0o604));
        assert!(is_loose(0o602));
    }
}
