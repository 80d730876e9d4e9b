//! A tree's manifest from the other side, applied beneath a real
//! directory as a receiver does (either side: one engine): whatever the
//! names, kinds and link targets, nothing is made or changed outside the
//! served root, and no link left in it resolves outside it.
#![no_main]

use cap_std::fs::Dir;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use std::path::{Component, Path, PathBuf};
use xfer::local::{RemotePath, Root};
use xfer::protocol::EntryKind;
use xfer::tree::receive::Receiver;
use xfer::tree::TreeEntry;

/// A piece of a name: the few that matter to confinement, and plain ones.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Part {
    Dot,
    DotDot,
    Empty,
    /// The root's sibling, which must stay untouched.
    Outside,
    /// The root's own name, seen from its parent.
    Root,
    Name(u8),
}

impl Part {
    fn text(self) -> String {
        match self {
            Part::Dot => ".".into(),
            Part::DotDot => "..".into(),
            Part::Empty => String::new(),
            Part::Outside => "outside".into(),
            Part::Root => "root".into(),
            Part::Name(n) => format!("n{}", n % 4),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Item {
    rel: Vec<Part>,
    kind: u8,
    /// For links: where it points, absolute or not.
    target: Vec<Part>,
    absolute: bool,
    mode: u16,
}

#[derive(Arbitrary, Debug)]
struct Manifest {
    /// Beneath a directory of the root, or the root itself.
    in_dir: bool,
    force: bool,
    delete: bool,
    /// Applied in batches, as entries arrive.
    batches: Vec<Batch>,
}

#[derive(Arbitrary, Debug)]
struct Batch {
    /// The first batch of another request on the same root: what one
    /// request left (a dangling link, say) meets what the next makes.
    new_request: bool,
    items: Vec<Item>,
}

fn joined(parts: &[Part]) -> String {
    parts.iter().map(|p| p.text()).collect::<Vec<_>>().join("/")
}

fuzz_target!(|m: Manifest| {
    static RUN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let base = std::env::temp_dir().join(format!("xfer-fuzz-tree-{}-{n}", std::process::id()));
    let (root_dir, outside) = (base.join("root"), base.join("outside"));
    std::fs::create_dir_all(&root_dir).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret"), b"x").unwrap();

    let root = Root::open(&root_dir).unwrap();
    let top = RemotePath::parse(if m.in_dir { "t" } else { "" }).unwrap();
    let fresh = !top.is_root() && root.make_dir(&top).unwrap();
    let start = |fresh| Receiver::new(top.clone(), fresh, m.force, true).deleting(m.delete);
    let finish = |mut receiver: Receiver| {
        let _ = receiver.check_links(&root);
        if m.delete {
            let _ = receiver.prune(&root);
        }
        receiver.finish_dirs(&root, None);
    };
    let mut receiver = start(fresh);
    // At most 8 batches of 32 entries: a run stays near a millisecond
    // (about 900 runs a second here, on a tmpfs).
    for batch in m.batches.iter().take(8) {
        if batch.new_request {
            finish(std::mem::replace(&mut receiver, start(false)));
        }
        let entries = batch
            .items
            .iter()
            .take(32)
            .map(|i| TreeEntry {
                rel: joined(&i.rel),
                kind: [EntryKind::File, EntryKind::Dir, EntryKind::Symlink, EntryKind::Other]
                    [i.kind as usize % 4],
                size: 0,
                mode: i.mode as u32 & 0o7777,
                mtime: 1_700_000_000,
                target: Some(format!("{}{}", if i.absolute { "/" } else { "" }, joined(&i.target))),
            })
            .collect();
        let _ = receiver.apply(&root, entries);
    }
    finish(receiver);

    // Outside the root: exactly what was there.
    let mut names: Vec<_> = std::fs::read_dir(&base).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    assert_eq!(names, ["outside", "root"], "made beside the root: {m:?}");
    let inside: Vec<_> = std::fs::read_dir(&outside).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(inside, ["secret"], "outside changed: {m:?}");
    assert!(std::fs::symlink_metadata(&outside).unwrap().is_dir());
    // Every link left in the root leads inside it, by name and resolved.
    let dir = Dir::open_ambient_dir(&root_dir, cap_std::ambient_authority()).unwrap();
    let roots = Roots {
        real: std::fs::canonicalize(&root_dir).unwrap(),
        path: root_dir,
        dir: dir.try_clone().unwrap(),
    };
    check_links(&dir, Path::new(""), &roots, &m);
    std::fs::remove_dir_all(&base).unwrap();
});

/// Walks through directory handles: links through links can make a
/// directory's path longer than the kernel takes (PATH_MAX, 4096 bytes).
fn check_links(dir: &Dir, rel: &Path, root: &Roots, m: &Manifest) {
    for entry in dir.entries().unwrap() {
        let entry = entry.unwrap();
        let (name, kind) = (entry.file_name(), entry.file_type().unwrap());
        let here = rel.join(&name);
        if kind.is_dir() {
            check_links(&dir.open_dir(&name).unwrap(), &here, root, m);
        } else if kind.is_symlink() {
            let target = dir.read_link_contents(&name).unwrap();
            assert!(within(rel, &target), "{here:?} -> {target:?}: {m:?}");
            // Resolved by the kernel where the path is short enough, else
            // by cap-std's confined resolution, which says an escape.
            match std::fs::canonicalize(root.path.join(&here)) {
                Ok(real) => assert!(real.starts_with(&root.real), "{here:?} resolves to {real:?}: {m:?}"),
                Err(e) if e.raw_os_error() == Some(36) => {
                    let escaped = root.dir.canonicalize(&here).is_err_and(|e| {
                        e.kind() == std::io::ErrorKind::PermissionDenied && e.raw_os_error().is_none()
                    });
                    assert!(!escaped, "{here:?} resolves outside: {m:?}");
                }
                Err(_) => {}
            }
        }
    }
}

/// The root three ways: its path, its real path, and a handle on it.
struct Roots {
    path: PathBuf,
    real: PathBuf,
    dir: Dir,
}

/// Whether `target`, read from directory `dir` (relative to the root),
/// stays beneath the root by name.
fn within(dir: &Path, target: &Path) -> bool {
    let mut at: Vec<PathBuf> = dir.components().map(|c| PathBuf::from(c.as_os_str())).collect();
    for c in target.components() {
        match c {
            Component::Normal(n) => at.push(n.into()),
            Component::CurDir => {}
            Component::ParentDir => {
                if at.pop().is_none() {
                    return false;
                }
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}
