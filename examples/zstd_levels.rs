//! What each zstd level costs and saves on what `-z` packs: 256 KiB
//! stretches (a queue's worth) of a log-like text and of random bytes.
//!
//!     cargo run --release --example zstd_levels -- FILE...

use std::time::Instant;

fn main() {
    for path in std::env::args().skip(1) {
        let data = std::fs::read(&path).expect("a readable file");
        for level in [1, 3, 6, 9] {
            let mut zstd = zstd::bulk::Compressor::new(level).unwrap();
            let started = Instant::now();
            let packed: usize = data.chunks(256 * 1024).map(|c| zstd.compress(c).unwrap().len()).sum();
            let secs = started.elapsed().as_secs_f64();
            let mb = data.len() as f64 / 1e6;
            println!(
                "{path}: level {level}: {:.0} MB/s, {:.2} x smaller",
                mb / secs,
                data.len() as f64 / packed as f64
            );
        }
    }
}
