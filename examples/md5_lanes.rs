//! What hashing a large file as parts in SIMD lanes gains, measured: one
//! MD5 stream over 256 MiB against `md5_many` over the same bytes cut into
//! parts of several sizes, a batch of as many as the width has lanes at a
//! time, for every width this CPU has.
//!
//! `cargo run --release --example md5_lanes`

use std::time::Instant;
use xfer::digest::{md5_many_with, Md5, Width};

fn main() {
    const TOTAL: usize = 256 << 20;
    let data: Vec<u8> = (0..TOTAL).map(|i| (i as u32).wrapping_mul(2654435761) as u8).collect();
    let mib = TOTAL as f64 / (1 << 20) as f64;

    let t = Instant::now();
    let mut one = Md5::new();
    one.update(&data);
    let _ = one.finish();
    let secs = t.elapsed().as_secs_f64();
    println!("one stream:                  {:7.0} MiB/s", mib / secs);

    // A few bodies at a time: where lanes stop paying for themselves.
    for width in Width::available() {
        for batch in [1, 2, 3, 4, 6] {
            let t = Instant::now();
            for chunk in data.chunks(batch * (128 << 10)) {
                let parts: Vec<&[u8]> = chunk.chunks(128 << 10).collect();
                let _ = md5_many_with(width, &parts);
            }
            let secs = t.elapsed().as_secs_f64();
            println!("{:>6} {batch} parts of  128 KiB: {:6.0} MiB/s", width.name(), mib / secs);
        }
    }

    for width in Width::available().into_iter().filter(|&w| w != Width::One) {
        for batch in [width.lanes() / 2, width.lanes()] {
            for part in [64 << 10, 256 << 10, 1 << 20] {
                let t = Instant::now();
                for chunk in data.chunks(batch * part) {
                    let parts: Vec<&[u8]> = chunk.chunks(part).collect();
                    let _ = md5_many_with(width, &parts);
                }
                let secs = t.elapsed().as_secs_f64();
                println!(
                    "{:>6} {:>2} parts of {:>4} KiB: {:6.0} MiB/s",
                    width.name(),
                    batch,
                    part >> 10,
                    mib / secs
                );
            }
        }
    }
}
