//! Compression (`-z`): a `zstd` envelope holds a stretch of the byte
//! stream, whole frames, compressed; the receiver reads what it unpacks in
//! the envelope's place. A sender packs what it has queued when that makes
//! it smaller, so incompressible data costs one failed attempt now and
//! then, and every digest still covers the bytes as they were. Pure: no
//! I/O.

use super::frame::encode;
use super::message::Message;
use std::io;

/// Most bytes one envelope unpacks to, and most it may hold: a whole small
/// file of a tree (1 MiB) behind the 256 KiB of frames queued before it,
/// with room to spare. A receiver refuses more before reading the body.
pub const ENVELOPE_MAX: usize = 2 << 20;

/// The zstd level. Packing 256 KiB at a time here (examples/zstd_levels.rs),
/// level 3 makes a log-like text 3.9 times smaller at 245 MB/s and a tar of
/// /usr/include 5.3 times at 354 MB/s; level 1 is 25-35 % faster for 5 %
/// less on the tar, level 6 gains 11-16 % for a third of the speed, slower
/// than a gigabit link. Random bytes pass at 3.5 GB/s.
pub const LEVEL: i32 = 3;

/// Less than this is sent as it is: a control frame or two gain nothing
/// worth an envelope's header (about 70 bytes).
const PACK_MIN: usize = 512;

/// Most packings skipped after misses in a row: incompressible data (random,
/// media, archives) then costs one attempt in this many.
const MOST_SKIPPED: u32 = 32;

/// Why an envelope was refused.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// It announces more bytes than an envelope may hold or unpack to.
    #[error("a zstd envelope of {len} bytes unpacking to {size} (at most {ENVELOPE_MAX} each)")]
    TooLarge {
        /// Its body's length.
        len: u64,
        /// What it says it unpacks to.
        size: u64,
    },
    /// Its body is not a zstd frame of the size it announced.
    #[error("a zstd envelope that does not unpack to the {0} bytes it announced")]
    Corrupt(u64),
    /// An envelope inside an envelope.
    #[error("a zstd envelope inside another")]
    Nested,
    /// An envelope before the peer authenticated.
    #[error("a zstd envelope before authentication")]
    Early,
}

/// Packs what a writer sends into envelopes where that is smaller.
pub struct Packer {
    /// A reused compression context.
    zstd: zstd::bulk::Compressor<'static>,
    /// The last envelope, header and body, reused.
    frame: Vec<u8>,
    /// The compressed bytes, reused.
    packed: Vec<u8>,
    /// Packings still to skip after the last miss.
    skip: u32,
    /// Misses in a row: each doubles the packings skipped.
    misses: u32,
}

impl Packer {
    /// A packer at [`LEVEL`].
    pub fn new() -> io::Result<Packer> {
        let zstd = zstd::bulk::Compressor::new(LEVEL)?;
        Ok(Packer { zstd, frame: Vec::new(), packed: Vec::new(), skip: 0, misses: 0 })
    }

    /// The envelope frame (header and body) of message type `M` holding
    /// `bytes`, whole frames, when it is smaller than they are; `None` to
    /// send them as they are.
    pub fn pack<M: Message>(&mut self, bytes: &[u8]) -> Option<&[u8]> {
        if bytes.len() < PACK_MIN || bytes.len() > ENVELOPE_MAX {
            return None;
        }
        if self.skip > 0 {
            self.skip -= 1;
            return None;
        }
        // Room for the bytes less an envelope header's worth: what would
        // not come out smaller is sent as it is.
        let room = bytes.len() - 96;
        self.packed.clear();
        self.packed.reserve(room);
        let packed = matches!(self.zstd.compress_to_buffer(bytes, &mut self.packed), Ok(n) if n <= room);
        if !packed {
            self.misses += 1;
            self.skip = (1 << self.misses.min(5)).min(MOST_SKIPPED) - 1;
            return None;
        }
        self.misses = 0;
        self.frame.clear();
        encode(&M::zstd(bytes.len() as u64), self.packed.len() as u64, &mut self.frame).ok()?;
        self.frame.extend_from_slice(&self.packed);
        Some(&self.frame)
    }
}

/// Unpacks the envelopes a reader receives.
pub struct Unpacker {
    /// A reused decompression context.
    zstd: zstd::bulk::Decompressor<'static>,
}

impl Unpacker {
    /// An unpacker.
    pub fn new() -> io::Result<Unpacker> {
        Ok(Unpacker { zstd: zstd::bulk::Decompressor::new()? })
    }

    /// Checks an envelope's header before its body is read: a body of
    /// `len` bytes that says it unpacks to `size`.
    pub fn check(len: u64, size: u64) -> Result<(), EnvelopeError> {
        match len <= ENVELOPE_MAX as u64 && (1..=ENVELOPE_MAX as u64).contains(&size) {
            true => Ok(()),
            false => Err(EnvelopeError::TooLarge { len, size }),
        }
    }

    /// The `size` bytes `body` unpacks to (checked with [`check`](Self::check)
    /// first); at most that many are ever allocated.
    pub fn unpack(&mut self, body: &[u8], size: u64) -> Result<Vec<u8>, EnvelopeError> {
        let mut out = Vec::with_capacity(size as usize);
        match self.zstd.decompress_to_buffer(body, &mut out) {
            Ok(n) if n as u64 == size => Ok(out),
            _ => Err(EnvelopeError::Corrupt(size)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{decode, ClientMessage};

    #[test]
    fn packs_what_shrinks_unpacks_it_whole_and_skips_after_misses() {
        let text: Vec<u8> =
            (0..100_000u32).flat_map(|i| format!("line {} of the log\n", i % 97).into_bytes()).collect();
        let mut packer = Packer::new().unwrap();
        let frame = packer.pack::<ClientMessage>(&text).expect("text shrinks").to_vec();
        let (head, used) = decode::<ClientMessage>(&frame).unwrap().unwrap();
        assert_eq!(head.msg, ClientMessage::Zstd { size: text.len() as u64 });
        assert_eq!(used as u64 + head.total_size, frame.len() as u64);
        assert!(frame.len() < text.len() / 10);
        Unpacker::check(head.total_size, text.len() as u64).unwrap();
        let mut unpacker = Unpacker::new().unwrap();
        assert_eq!(unpacker.unpack(&frame[used..], text.len() as u64).unwrap(), text);
        assert!(matches!(unpacker.unpack(&frame[used..], 100), Err(EnvelopeError::Corrupt(100))));
        assert!(matches!(unpacker.unpack(b"not zstd", 8), Err(EnvelopeError::Corrupt(8))));

        // Random bytes: a miss, then 1, 3, 7... packings skipped.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let random: Vec<u8> = (0..200_000)
            .map(|_| {
                // xorshift64*: bytes zstd cannot shrink.
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
            })
            .collect();
        let mut tried = Vec::new();
        for _ in 0..12 {
            let before = packer.misses;
            assert!(packer.pack::<ClientMessage>(&random).is_none());
            tried.push(packer.misses > before);
        }
        let want = [true, false, true, false, false, false, true, false, false, false, false, false];
        assert_eq!(tried, want);
        assert!(packer.pack::<ClientMessage>(&text[..100]).is_none(), "too small to pack");
        // A hit ends the skipping.
        packer.skip = 0;
        assert!(packer.pack::<ClientMessage>(&text).is_some());
        assert_eq!(packer.misses, 0);
    }

    #[test]
    fn sizes_beyond_an_envelope_are_refused_before_reading() {
        let most = ENVELOPE_MAX as u64;
        Unpacker::check(most, most).unwrap();
        for (len, size) in [(most + 1, 10), (10, most + 1), (10, 0)] {
            assert!(
                matches!(Unpacker::check(len, size), Err(EnvelopeError::TooLarge { .. })),
                "{len} {size}"
            );
        }
    }
}
