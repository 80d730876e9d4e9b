//! What encoding and decoding one header costs: `cargo run --release
//! --example codec_cost`. A tree's `entry` is the most frequent header.
use serde::Deserialize;
use std::time::Instant;
use xfer::protocol::*;

fn per_call(n: u32, mut f: impl FnMut()) -> f64 {
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    t.elapsed().as_secs_f64() * 1e6 / f64::from(n)
}

fn main() {
    let e = Entry {
        size: Some(14_000),
        mode: Some(0o644),
        mtime: Some(1_700_000_000),
        ..Entry::new("linux/some/header_file.h", EntryKind::File)
    };
    let msg = ClientMessage::Entry(e);
    let mut buf = Vec::new();
    encode(&msg, 0, &mut buf).unwrap();
    let text = std::str::from_utf8(&buf[PREFIX_LEN..]).unwrap().to_string();
    #[derive(Deserialize)]
    struct Size {
        #[serde(default)]
        #[allow(dead_code)]
        total_size: u64,
    }
    let n = 300_000;
    for round in 0..3 {
        let enc = per_call(n, || {
            let mut b = Vec::with_capacity(256);
            encode(&msg, 0, &mut b).unwrap();
            std::hint::black_box(b);
        });
        let dec = per_call(n, || {
            std::hint::black_box(decode::<ClientMessage>(&buf).unwrap());
        });
        let tagged = per_call(n, || {
            std::hint::black_box(serde_json::from_str::<ClientMessage>(&text).unwrap());
        });
        let straight = per_call(n, || {
            std::hint::black_box(serde_json::from_str::<Entry>(&text).unwrap());
        });
        let size = per_call(n, || {
            std::hint::black_box(serde_json::from_str::<Size>(&text).unwrap());
        });
        println!(
            "round {round}: encode {enc:.2} µs, decode {dec:.2} µs (tagged parse {tagged:.2}, straight {straight:.2}, total_size alone {size:.2})"
        );
    }
}
