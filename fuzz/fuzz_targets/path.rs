//! Paths from the other side: a path that parses holds only normal
//! components, prints as a path that parses back to itself, and joins
//! only to paths as clean as itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xfer::local::RemotePath;
use xfer::protocol::parts_of_body;

fuzz_target!(|data: &[u8]| {
    if let Some(parts) = parts_of_body(data) {
        assert_eq!(parts.len() * 16, data.len());
        assert_eq!(parts.concat(), data);
    }
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (raw, rel) = text.split_once('\u{1}').map_or((text, None), |(a, b)| (a, Some(b)));
    let Ok(path) = RemotePath::parse(raw) else { return };
    clean(&path);
    assert_eq!(RemotePath::parse(&path.to_string()).as_ref(), Ok(&path));
    if let Some((parent, name)) = path.split_last() {
        clean(&parent);
        clean(&name);
    }
    if let Some(Ok(joined)) = rel.map(|r| path.join(r)) {
        clean(&joined);
    }
});

/// No component that could lead out of the root or hide a partial.
fn clean(path: &RemotePath) {
    let shown = path.to_string();
    assert!(!shown.starts_with('/'), "{shown:?}");
    for part in path.to_path().components() {
        assert!(matches!(part, std::path::Component::Normal(_) | std::path::Component::CurDir), "{shown:?}");
    }
    for part in shown.split('/').filter(|p| !p.is_empty()) {
        assert!(part != "." && part != ".." && !part.contains('\\'), "{shown:?}");
        assert!(!part.chars().any(char::is_control), "{shown:?}");
    }
}
