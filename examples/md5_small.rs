//! What hashing a tree's small files in SIMD lanes costs, measured: every
//! file up to one part (128 KiB) under a directory (default /usr/include)
//! read into memory, then hashed in batches of `HashBatch::FILES` as a tree
//! transfer does, best of 5, for every width this CPU has.
//!
//! `cargo run --release --example md5_small [DIR]`

use std::path::Path;
use std::time::Instant;
use xfer::digest::{md5_many_with, HashBatch, Width};
use xfer::protocol::PART;

fn walk(dir: &Path, out: &mut Vec<Vec<u8>>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else { continue };
        if kind.is_dir() {
            walk(&entry.path(), out);
        } else if kind.is_file() {
            match std::fs::read(entry.path()) {
                Ok(bytes) if bytes.len() as u64 <= PART => out.push(bytes),
                _ => {}
            }
        }
    }
}

fn main() {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "/usr/include".into());
    let mut files = Vec::new();
    walk(Path::new(&dir), &mut files);
    let mib = files.iter().map(Vec::len).sum::<usize>() as f64 / (1 << 20) as f64;
    for width in Width::available() {
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            for batch in files.chunks(HashBatch::<Vec<u8>>::FILES) {
                let bodies: Vec<&[u8]> = batch.iter().map(|b| &b[..]).collect();
                std::hint::black_box(md5_many_with(width, &bodies));
            }
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!(
            "{:>6}: {} files, {mib:.1} MiB: {:.1} ms, {:.0} MiB/s",
            width.name(),
            files.len(),
            best * 1e3,
            mib / best
        );
    }
}
