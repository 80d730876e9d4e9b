//! What hashing a large file as parts in SIMD lanes could gain, measured:
//! one MD5 stream over 256 MiB against `md5_many` over the same bytes cut
//! into parts of several sizes, sixteen at a time.
//!
//! `cargo run --release --example md5_lanes`

use std::time::Instant;
use xfer::digest::{md5_many, Md5};

fn main() {
    const TOTAL: usize = 256 << 20;
    let data: Vec<u8> = (0..TOTAL).map(|i| (i as u32).wrapping_mul(2654435761) as u8).collect();
    let mib = TOTAL as f64 / (1 << 20) as f64;

    let t = Instant::now();
    let mut one = Md5::new();
    one.update(&data);
    let _ = one.finish();
    let secs = t.elapsed().as_secs_f64();
    println!("one stream:          {:7.0} MiB/s", mib / secs);

    for part in [64 << 10, 256 << 10, 1 << 20, 4 << 20] {
        let t = Instant::now();
        for batch in data.chunks(16 * part) {
            let parts: Vec<&[u8]> = batch.chunks(part).collect();
            let _ = md5_many(&parts);
        }
        let secs = t.elapsed().as_secs_f64();
        println!("parts of {:>4} KiB x16: {:6.0} MiB/s", part >> 10, mib / secs);
    }
}
