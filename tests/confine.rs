//! Every write a tree makes stays beneath its destination, on both sides,
//! whatever links the other side's manifest builds first; and modes from
//! the other side never weaken what was there.

mod common;

use common::fake::{self, Proof};
use common::{raw, xfer, TestServer};
use serde_json::json;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Every path under `dir` with its mode and contents (or link target), so
/// a test can tell that nothing there changed.
fn snapshot(dir: &Path) -> BTreeMap<String, (u32, Vec<u8>)> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, (u32, Vec<u8>)>) {
        let mut names: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        names.sort();
        for p in names {
            let meta = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
            let body = if meta.file_type().is_symlink() {
                fs::read_link(&p).unwrap().into_os_string().into_encoded_bytes()
            } else if meta.is_file() {
                fs::read(&p).unwrap()
            } else {
                Vec::new()
            };
            out.insert(rel, (meta.permissions().mode() & 0o7777, body));
            if meta.is_dir() {
                walk(base, &p, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    let meta = fs::metadata(dir).unwrap();
    out.insert(".".to_string(), (meta.permissions().mode() & 0o7777, Vec::new()));
    walk(dir, dir, &mut out);
    out
}

/// A neighbour of the destination holding things an escape would touch.
fn plant_outside(outside: &Path) {
    fs::create_dir_all(outside.join("private")).unwrap();
    fs::set_permissions(outside.join("private"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::write(outside.join("victim.txt"), b"keep me").unwrap();
}

/// The destination owner's own link out of it, to `outside` beside it.
fn plant_theirs(dest: &Path) {
    std::os::unix::fs::symlink("../outside", dest.join("theirs")).unwrap();
}

const BIG: usize = 1024 * 1024 + 10;

/// Ten steps down through `d`, ten up: inside by name, `..` of the top in
/// fact.
fn deep() -> String {
    format!("{}{}", "d/".repeat(10), "../".repeat(9)) + ".."
}

/// The manifest a hostile peer sends: `d -> .` (harmless alone), then
/// links through it that resolve above the tree though their names stay
/// inside, one through the destination owner's own link out of it, an
/// absolute link, and files, directories and links placed through each of
/// them.
fn hostile_entries() -> Vec<serde_json::Value> {
    let mut v = vec![
        // Through a link that was there (see `plant_theirs`): only a look
        // at where it resolves tells that `g` leads out.
        json!({"op": "entry", "filename": "g", "kind": "symlink", "target": "theirs"}),
        json!({"op": "entry", "filename": "d", "kind": "symlink", "target": "."}),
        json!({"op": "entry", "filename": "h", "kind": "symlink", "target": "."}),
        json!({"op": "entry", "filename": "e", "kind": "symlink", "target": deep()}),
        json!({"op": "entry", "filename": "f", "kind": "symlink", "target": "d/.."}),
        json!({"op": "entry", "filename": "abs", "kind": "symlink", "target": "/tmp"}),
    ];
    for via in ["e", "f", "g", "abs", "d/e", "d/d/f", "h/g"] {
        v.push(json!({"op": "entry", "filename": format!("{via}/outside/private"), "kind": "dir", "mode": 0o777, "mtime": 0}));
        v.push(json!({"op": "entry", "filename": format!("{via}/outside/newdir"), "kind": "dir", "mode": 0o777, "mtime": 0}));
        v.push(json!({"op": "entry", "filename": format!("{via}/outside/victim.txt"), "kind": "file", "size": 5, "mode": 0o755, "mtime": 0}));
        v.push(json!({"op": "entry", "filename": format!("{via}/outside/big.bin"), "kind": "file", "size": BIG, "mode": 0o755, "mtime": 0}));
        v.push(json!({"op": "entry", "filename": format!("{via}/outside/lnk"), "kind": "symlink", "target": "victim.txt"}));
    }
    // Named another way than the disk reads it (`up//.` stands at the
    // top), and made through a link (`d -> .`: `d/d/sneak` is `sneak`).
    v.push(json!({"op": "entry", "filename": "up//.", "kind": "symlink", "target": "n/../../x"}));
    v.push(json!({"op": "entry", "filename": "d/d/sneak", "kind": "symlink", "target": "../../x"}));
    // A link replacing a directory made just before.
    v.push(json!({"op": "entry", "filename": "sub", "kind": "dir", "mode": 0o755, "mtime": 0}));
    v.push(json!({"op": "entry", "filename": "sub", "kind": "symlink", "target": "e"}));
    v.push(json!({"op": "entry", "filename": "sub/outside/victim.txt", "kind": "file", "size": 5, "mode": 0o644, "mtime": 0}));
    v
}

/// The bodies a hostile peer pushes for whatever was asked, or not.
fn hostile_files() -> Vec<(String, Vec<u8>)> {
    let mut v = Vec::new();
    for via in ["e", "f", "g", "abs", "d/e", "d/d/f", "h/g", "sub"] {
        v.push((format!("{via}/outside/victim.txt"), b"evil\n".to_vec()));
        v.push((format!("{via}/outside/big.bin"), vec![b'x'; BIG]));
    }
    v
}

/// Sends a file of a tree as PROTOCOL.md says: whole up to 1 MiB, else as
/// parts of 128 KiB, each with its offset and MD5; then its `done`.
fn send_file(s: &mut impl std::io::Write, rel: &str, body: &[u8]) {
    const PART: usize = 128 * 1024;
    if body.len() <= 1024 * 1024 {
        let head =
            json!({"op": "data", "filename": rel, "total_size": body.len(), "mode": 0o755, "mtime": 0});
        raw::send(s, &head.to_string());
        s.write_all(body).unwrap();
    } else {
        for (i, part) in body.chunks(PART).enumerate() {
            let head = json!({
                "op": "data", "filename": rel, "total_size": part.len(), "offset": i * PART,
                "md5": common::md5_hex(part), "mode": 0o755, "mtime": 0,
            });
            raw::send(s, &head.to_string());
            s.write_all(part).unwrap();
        }
    }
    raw::send(s, &json!({"op": "done", "filename": rel, "md5": common::parts_md5_hex(body)}).to_string());
}

#[test]
fn a_hostile_server_cannot_write_outside_the_destination_through_links() {
    let (addr, _) = fake::serve_once(Proof::Genuine, |s| {
        raw::recv(s); // get_tree
        for e in hostile_entries() {
            raw::send(s, &e.to_string());
        }
        raw::send(s, r#"{"op":"end","mode":511,"mtime":0}"#);
        while let Some(h) = raw::try_recv(s) {
            if h.contains(r#""op":"end""#) {
                break;
            }
        }
        for (rel, body) in hostile_files() {
            send_file(s, &rel, &body);
        }
        raw::send(s, r#"{"op":"end"}"#);
    });
    let work = tempfile::tempdir().unwrap();
    plant_outside(&work.path().join("outside"));
    fs::create_dir(work.path().join("dst")).unwrap();
    fs::set_permissions(work.path().join("dst"), fs::Permissions::from_mode(0o700)).unwrap();
    plant_theirs(&work.path().join("dst"));
    let before = snapshot(&work.path().join("outside"));
    let out = xfer(addr, work.path()).args(["get", "-r", "-f", "t/", "dst"]).assert().code(255);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert_eq!(snapshot(&work.path().join("outside")), before, "something outside changed: {stderr}");
    assert!(stderr.contains(&format!("e: symlink to {} climbs back out of a name", deep())), "{stderr}");
    assert!(stderr.contains("f: symlink to d/.. climbs back out of a name"), "{stderr}");
    assert!(stderr.contains("g: symlink resolves outside the tree, skipped"), "{stderr}");
    assert!(stderr.contains("abs: symlink to /tmp leads out of the tree, skipped"), "{stderr}");
    assert!(stderr.contains("up//.: unsafe name, skipped (empty and '.' parts"), "{stderr}");
    assert!(stderr.contains("d/d/sneak: symlink beneath another link, skipped"), "{stderr}");
    for made in ["dst/sneak", "dst/up"] {
        assert!(fs::symlink_metadata(work.path().join(made)).is_err(), "{made} was made");
    }
    assert!(
        fs::symlink_metadata(work.path().join("dst/g")).is_err(),
        "the link resolving outside was removed"
    );
    let names: Vec<_> = fs::read_dir(work.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 2, "nothing new beside the destination: {names:?}");
    // The user's own destination keeps its mode, whatever the server says.
    assert_eq!(fs::metadata(work.path().join("dst")).unwrap().permissions().mode() & 0o777, 0o700);
}

#[test]
fn a_hostile_client_cannot_write_outside_the_served_root_through_links() {
    let outer = tempfile::tempdir().unwrap();
    plant_outside(&outer.path().join("outside"));
    let root = tempfile::Builder::new().prefix("root").tempdir_in(outer.path()).unwrap();
    let root_name = root.path().file_name().unwrap().to_owned();
    plant_theirs(root.path());
    let before = snapshot(&outer.path().join("outside"));
    let server = TestServer::start_in(root, |_| {});
    let mut s = raw::connect(server.addr);
    raw::send(&mut s, r#"{"op":"put_tree","filename":"","force":true}"#);
    assert!(raw::recv(&mut s).contains(r#""op":"ready""#));
    for e in hostile_entries() {
        raw::send(&mut s, &e.to_string());
    }
    raw::send(&mut s, r#"{"op":"end","mode":511,"mtime":0}"#);
    let mut refused = Vec::new();
    loop {
        let h = raw::recv(&mut s);
        if h.contains(r#""op":"end""#) {
            break;
        }
        refused.push(h);
    }
    for (rel, body) in hostile_files() {
        send_file(&mut s, &rel, &body);
    }
    raw::send(&mut s, r#"{"op":"end"}"#);
    while let Some(h) = raw::try_recv(&mut s) {
        if h.contains(r#""op":"end""#) {
            break;
        }
    }
    assert_eq!(snapshot(&outer.path().join("outside")), before, "something outside the root changed");
    let names: Vec<_> = fs::read_dir(outer.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 2, "nothing new beside the root: {names:?}");
    let said = |rel: &str, what: &str| {
        refused.iter().any(|r| r.contains(&format!(r#""filename":"{rel}""#)) && r.contains(what))
    };
    assert!(said("e", "climbs back out of a name"), "{refused:?}");
    assert!(said("f", "climbs back out of a name"), "{refused:?}");
    assert!(said("g", "resolves outside the tree"), "{refused:?}");
    assert!(said("up//.", "empty and '.' parts"), "{refused:?}");
    assert!(said("d/d/sneak", "beneath another link"), "{refused:?}");
    for made in ["sneak", "up"] {
        assert!(fs::symlink_metadata(server.path(made)).is_err(), "{made} was made");
    }
    assert!(fs::symlink_metadata(server.path("g")).is_err(), "g was removed");
    drop(root_name);
}

#[test]
fn made_directories_keep_owner_access_and_existing_ones_keep_their_mode() {
    let server = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir_all(src.join("locked/inner")).unwrap();
    fs::write(src.join("locked/inner/f"), b"x").unwrap();
    fs::create_dir_all(src.join("open")).unwrap();
    fs::set_permissions(src.join("open"), fs::Permissions::from_mode(0o777)).unwrap();
    fs::set_permissions(src.join("locked"), fs::Permissions::from_mode(0o000)).unwrap();
    // Root reads a mode-000 directory anyway; for the copy, what counts is
    // the mode the server gives what it makes.
    xfer(server.addr, work.path()).args(["put", "-r", "src"]).assert().success();
    fs::set_permissions(src.join("locked"), fs::Permissions::from_mode(0o755)).unwrap();
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&server.path("src/locked")), 0o700, "made with owner rwx, nothing more");
    assert_eq!(mode(&server.path("src/open")), 0o777, "the source's own bits are kept");
    // Both ways: an existing directory keeps its mode.
    fs::create_dir(work.path().join("mine")).unwrap();
    fs::set_permissions(work.path().join("mine"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::set_permissions(server.path("src"), fs::Permissions::from_mode(0o777)).unwrap();
    xfer(server.addr, work.path()).args(["get", "-r", "src/", "mine/"]).assert().success();
    assert_eq!(mode(&work.path().join("mine")), 0o700);
    assert_eq!(mode(&work.path().join("mine/locked")), 0o700);
    assert_eq!(fs::read(work.path().join("mine/locked/inner/f")).unwrap(), b"x");
}

#[test]
fn a_chain_of_links_inside_the_tree_is_kept_both_ways() {
    let server = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("real.h"), b"r").unwrap();
    // As ncursesw/ncurses.h -> ../ncurses.h -> curses.h in /usr/include.
    std::os::unix::fs::symlink("real.h", src.join("b.h")).unwrap();
    std::os::unix::fs::symlink("../b.h", src.join("sub/c.h")).unwrap();
    xfer(server.addr, work.path()).args(["put", "-r", "src"]).assert().success();
    xfer(server.addr, work.path()).args(["get", "-r", "src", "back"]).assert().success();
    for top in [server.path("src"), work.path().join("back")] {
        assert_eq!(fs::read_link(top.join("sub/c.h")).unwrap().to_str(), Some("../b.h"));
        assert_eq!(fs::read(top.join("sub/c.h")).unwrap(), b"r");
    }
}
