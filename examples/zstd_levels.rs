//! What each zstd level and window costs and saves on what `-z` packs:
//! 768 KiB stretches (a packed queue's worth), each flushed into one
//! stream as the sender's envelopes are, against the same stretches
//! packed as frames of their own.
//!
//!     cargo run --release --example zstd_levels -- FILE...

use std::time::Instant;
use zstd::stream::raw::{CParameter, InBuffer, Operation, OutBuffer};

const STRETCH: usize = 768 * 1024;

/// Bytes out of one stream over `data`, flushed every stretch.
fn streamed(data: &[u8], level: i32, window_log: u32) -> usize {
    let mut zstd = zstd::stream::raw::Encoder::new(level).unwrap();
    zstd.set_parameter(CParameter::WindowLog(window_log)).unwrap();
    let mut out = Vec::with_capacity(zstd::zstd_safe::compress_bound(STRETCH) + 1024);
    let mut total = 0;
    for stretch in data.chunks(STRETCH) {
        out.clear();
        let mut input = InBuffer::around(stretch);
        let mut output = OutBuffer::around(&mut out);
        while input.pos() < stretch.len() {
            zstd.run(&mut input, &mut output).unwrap();
        }
        while zstd.flush(&mut output).unwrap() > 0 {}
        total += output.pos();
    }
    total
}

fn main() {
    for path in std::env::args().skip(1) {
        let data = std::fs::read(&path).expect("a readable file");
        let mb = data.len() as f64 / 1e6;
        let report = |what: &str, started: Instant, packed: usize| {
            let secs = started.elapsed().as_secs_f64();
            let smaller = data.len() as f64 / packed as f64;
            println!("{path}: {what}: {:.0} MB/s, {smaller:.2} x smaller", mb / secs);
        };
        for level in [1, 3, 4, 6] {
            let mut zstd = zstd::bulk::Compressor::new(level).unwrap();
            let started = Instant::now();
            let packed: usize = data.chunks(STRETCH).map(|c| zstd.compress(c).unwrap().len()).sum();
            report(&format!("level {level}, a frame a stretch"), started, packed);
            for window_log in [21, 23] {
                let started = Instant::now();
                let packed = streamed(&data, level, window_log);
                report(&format!("level {level}, one stream, window 2^{window_log}"), started, packed);
            }
        }
    }
}
