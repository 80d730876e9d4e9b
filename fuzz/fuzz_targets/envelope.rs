//! zstd envelopes from the other side (`-z`): a stream of them, each
//! checked and unpacked as a reader does. Never a panic, never more than
//! the announced size.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xfer::protocol::envelope::Unpacker;

fuzz_target!(|data: &[u8]| {
    let mut unpacker = Unpacker::new().expect("a decoder");
    let mut rest = data;
    // Each envelope: a 2-byte body length and a 2-byte unpacked size
    // (small enough to explore), then the body.
    while let [a, b, c, d, tail @ ..] = rest {
        let len = u16::from_be_bytes([*a, *b]) as usize;
        let size = u16::from_be_bytes([*c, *d]) as u64;
        let Some(body) = tail.get(..len) else { return };
        if Unpacker::check(len as u64, size).is_err() {
            return;
        }
        match unpacker.unpack(body, size) {
            Ok(out) => assert_eq!(out.len() as u64, size),
            Err(_) => return, // the stream is lost: the connection ends
        }
        rest = &tail[len..];
    }
});
