//! Compression (`-z`): a `zstd` envelope holds a stretch of the byte
//! stream, whole frames, compressed; the receiver reads what it unpacks in
//! the envelope's place. The envelopes of one direction are pieces of one
//! zstd stream, each flushed whole, so later stretches find matches in
//! earlier ones. A sender packs what it has queued when that makes it
//! smaller, so incompressible data costs one failed attempt now and then,
//! and every digest still covers the bytes as they were. Pure: no I/O.

use super::frame::encode;
use super::message::Message;
use std::io;
use zstd::stream::raw::{CParameter, DParameter, Decoder, Encoder, InBuffer, Operation, OutBuffer};

/// Most bytes one envelope unpacks to, and most it may hold: a whole small
/// file of a tree (1 MiB) behind the 256 KiB of frames queued before it,
/// with room to spare. A receiver refuses more before reading the body.
pub const ENVELOPE_MAX: usize = 2 << 20;

/// The zstd level. Packing 768 KiB stretches into one stream with an
/// 8 MiB window here (examples/zstd_levels.rs), level 4 makes bench/link.py's
/// 256 MiB log 8.86 times smaller at 358 MB/s and a tar of /usr/include
/// 9.03 times at 293 MB/s; level 3 7.51 and 9.02 times, level 6 8.43 and
/// 10.40 at a third of the speed, slower than a gigabit link. The same
/// stretches packed as frames of their own came 5.8 and 5.5 times smaller.
pub const LEVEL: i32 = 4;

/// The stream's window: 2^23 bytes (8 MiB) of what was sent before, where
/// later stretches find matches (2^21 made the log 6.72 times smaller at
/// level 4, 2^23 8.86). A receiver refuses a stream that needs a larger
/// one, so its memory stays bounded: the window, and a block or two.
pub const WINDOW_LOG: u32 = 23;

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
    /// Its body does not unpack to the size it announced.
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
    /// The stream's compression context: its window holds what was packed.
    zstd: Encoder<'static>,
    /// Whether a zstd frame has begun (and so must be ended).
    started: bool,
    /// The last envelope's header, reused (its body goes out from
    /// `packed`, uncopied: a copy would cost another 768 KiB).
    frame: Vec<u8>,
    /// The compressed bytes, reused.
    packed: Vec<u8>,
    /// Packings still to skip after the last miss.
    skip: u32,
    /// Misses in a row: each doubles the packings skipped.
    misses: u32,
}

impl Packer {
    /// A packer at [`LEVEL`], with a window of 2^[`WINDOW_LOG`].
    pub fn new() -> io::Result<Packer> {
        let mut zstd = Encoder::new(LEVEL)?;
        zstd.set_parameter(CParameter::WindowLog(WINDOW_LOG))?;
        Ok(Packer { zstd, started: false, frame: Vec::new(), packed: Vec::new(), skip: 0, misses: 0 })
    }

    /// The envelope (header, then body) of message type `M` holding
    /// `bytes`, whole frames, packed into the stream; `None` to send them as
    /// they are (too few, too many, or skipped after a stretch that did
    /// not shrink). A stretch packed is sent packed even when it did not
    /// shrink (by a few bytes a block), since the stream now holds it.
    pub fn pack<M: Message>(&mut self, bytes: &[u8]) -> io::Result<Option<(&[u8], &[u8])>> {
        if bytes.len() < PACK_MIN || bytes.len() > ENVELOPE_MAX {
            return Ok(None);
        }
        if self.skip > 0 {
            self.skip -= 1;
            return Ok(None);
        }
        stream_into(&mut self.zstd, bytes, false, &mut self.packed)?;
        self.started = true;
        // An envelope's header costs about 70 bytes.
        if self.packed.len() + 96 > bytes.len() {
            self.misses += 1;
            self.skip = (1 << self.misses.min(5)).min(MOST_SKIPPED) - 1;
        } else {
            self.misses = 0;
        }
        self.frame.clear();
        encode(&M::zstd(bytes.len() as u64), self.packed.len() as u64, &mut self.frame)
            .map_err(io::Error::other)?;
        Ok(Some((&self.frame, &self.packed)))
    }

    /// Appends to `out` the envelope (of message type `M`, unpacking to
    /// nothing) that ends the stream's frame, for a receiver to start the
    /// next one afresh; nothing when nothing was packed.
    pub fn end<M: Message>(mut self, out: &mut Vec<u8>) -> io::Result<()> {
        if !self.started {
            return Ok(());
        }
        stream_into(&mut self.zstd, &[], true, &mut self.packed)?;
        encode(&M::zstd(0), self.packed.len() as u64, out).map_err(io::Error::other)?;
        out.extend_from_slice(&self.packed);
        Ok(())
    }
}

/// Feeds `bytes` into the stream and flushes it, or ends its frame (`end`),
/// into `out`, given zstd's bound for them: running out of that room is an
/// error, never a loop waiting for room.
fn stream_into(zstd: &mut Encoder<'static>, bytes: &[u8], end: bool, out: &mut Vec<u8>) -> io::Result<()> {
    out.clear();
    out.reserve(zstd::zstd_safe::compress_bound(bytes.len()) + 64);
    let mut input = InBuffer::around(bytes);
    let mut output = OutBuffer::around(out);
    loop {
        let left = match (input.pos() < bytes.len(), end) {
            (true, _) => zstd.run(&mut input, &mut output).map(|_| 1)?,
            (false, false) => zstd.flush(&mut output)?,
            (false, true) => zstd.finish(&mut output, true)?,
        };
        if left == 0 {
            return Ok(());
        }
        if output.pos() == output.capacity() {
            return Err(io::Error::other("zstd needed more room than its bound"));
        }
    }
}

/// Unpacks the envelopes a reader receives.
pub struct Unpacker {
    /// The stream's decompression context, its window what was unpacked.
    zstd: Decoder<'static>,
}

impl Unpacker {
    /// An unpacker that refuses windows over 2^[`WINDOW_LOG`].
    pub fn new() -> io::Result<Unpacker> {
        let mut zstd = Decoder::new()?;
        zstd.set_parameter(DParameter::WindowLogMax(WINDOW_LOG))?;
        Ok(Unpacker { zstd })
    }

    /// Checks an envelope's header before its body is read: a body of
    /// `len` bytes that says it unpacks to `size`.
    pub fn check(len: u64, size: u64) -> Result<(), EnvelopeError> {
        match len <= ENVELOPE_MAX as u64 && size <= ENVELOPE_MAX as u64 {
            true => Ok(()),
            false => Err(EnvelopeError::TooLarge { len, size }),
        }
    }

    /// The `size` bytes `body` unpacks to, as the next piece of the
    /// stream (checked with [`check`](Self::check) first); at most one
    /// byte more than that is ever allocated. After an error the stream
    /// is lost: the connection must end.
    pub fn unpack(&mut self, body: &[u8], size: u64) -> Result<Vec<u8>, EnvelopeError> {
        let corrupt = || EnvelopeError::Corrupt(size);
        // One byte of room beyond `size` shows a body that unpacks to more.
        let mut out = Vec::with_capacity(size as usize + 1);
        let mut input = InBuffer::around(body);
        let mut output = OutBuffer::around(&mut out);
        loop {
            let before = (input.pos(), output.pos());
            self.zstd.run(&mut input, &mut output).map_err(|_| corrupt())?;
            let stuck = (input.pos(), output.pos()) == before;
            if stuck || output.pos() as u64 > size {
                break;
            }
        }
        match input.pos() == body.len() && output.pos() as u64 == size {
            true => Ok(out),
            false => Err(corrupt()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{decode, ClientMessage};

    fn text(lines: u32, offset: u32) -> Vec<u8> {
        (0..lines).flat_map(|i| format!("line {} of the log\n", (i + offset) % 97).into_bytes()).collect()
    }

    /// An envelope's header and body as one frame.
    fn joined((head, body): (&[u8], &[u8])) -> Vec<u8> {
        [head, body].concat()
    }

    /// The body of an envelope frame, checking its header says `size`.
    fn body(frame: &[u8], size: usize) -> Vec<u8> {
        let (head, used) = decode::<ClientMessage>(frame).unwrap().unwrap();
        assert_eq!(head.msg, ClientMessage::Zstd { size: size as u64 });
        assert_eq!(used as u64 + head.total_size, frame.len() as u64);
        Unpacker::check(head.total_size, size as u64).unwrap();
        frame[used..].to_vec()
    }

    #[test]
    fn stretches_are_pieces_of_one_stream_and_unpack_whole() {
        let (first, second) = (text(100_000, 0), text(100_000, 13));
        let mut packer = Packer::new().unwrap();
        let a =
            body(&joined(packer.pack::<ClientMessage>(&first).unwrap().expect("text shrinks")), first.len());
        let b = body(
            &joined(packer.pack::<ClientMessage>(&second).unwrap().expect("text shrinks")),
            second.len(),
        );
        assert!(a.len() < first.len() / 10);
        // The second stretch is all matches into the first.
        assert!(b.len() < a.len(), "{} {}", b.len(), a.len());
        let mut end = Vec::new();
        packer.end::<ClientMessage>(&mut end).unwrap();
        let end = body(&end, 0);

        let mut unpacker = Unpacker::new().unwrap();
        assert_eq!(unpacker.unpack(&a, first.len() as u64).unwrap(), first);
        assert_eq!(unpacker.unpack(&b, second.len() as u64).unwrap(), second);
        assert_eq!(unpacker.unpack(&end, 0).unwrap(), b"");
        // After the end, a new frame: one a peer packed on its own.
        let own = zstd::bulk::compress(&first, 3).unwrap();
        assert_eq!(unpacker.unpack(&own, first.len() as u64).unwrap(), first);

        // The second piece cannot be read without the first.
        assert!(matches!(
            Unpacker::new().unwrap().unpack(&b, second.len() as u64),
            Err(EnvelopeError::Corrupt(_))
        ));
        // A size that lies either way, and bytes that are not zstd.
        for size in [first.len() as u64 - 1, first.len() as u64 + 1] {
            let got = Unpacker::new().unwrap().unpack(&a, size);
            assert!(matches!(got, Err(EnvelopeError::Corrupt(n)) if n == size), "{size}");
        }
        assert!(matches!(Unpacker::new().unwrap().unpack(b"not zstd", 8), Err(EnvelopeError::Corrupt(8))));
        // Nothing packed, nothing to end.
        let mut end = Vec::new();
        Packer::new().unwrap().end::<ClientMessage>(&mut end).unwrap();
        assert!(end.is_empty());
    }

    #[test]
    fn a_window_beyond_the_limit_is_refused() {
        let data = text(1000, 0);
        let mut zstd = Encoder::new(3).unwrap();
        zstd.set_parameter(CParameter::WindowLog(WINDOW_LOG + 1)).unwrap();
        zstd.set_parameter(CParameter::ContentSizeFlag(false)).unwrap();
        let mut packed = Vec::with_capacity(1 << 16);
        let mut input = InBuffer::around(&data);
        let mut output = OutBuffer::around(&mut packed);
        while input.pos() < data.len() {
            zstd.run(&mut input, &mut output).unwrap();
        }
        while zstd.finish(&mut output, true).unwrap() > 0 {}
        let got = Unpacker::new().unwrap().unpack(&packed, data.len() as u64);
        assert!(matches!(got, Err(EnvelopeError::Corrupt(_))), "a 16 MiB window was accepted");
    }

    #[test]
    fn misses_skip_1_3_7_packings_and_a_hit_ends_it() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        // Fresh bytes each time (a stretch seen before packs to nothing).
        let mut random = || -> Vec<u8> {
            (0..200_000)
                .map(|_| {
                    // xorshift64*: bytes zstd cannot shrink.
                    x ^= x >> 12;
                    x ^= x << 25;
                    x ^= x >> 27;
                    (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
                })
                .collect()
        };
        let mut packer = Packer::new().unwrap();
        let mut unpacker = Unpacker::new().unwrap();
        let mut tried = Vec::new();
        for _ in 0..12 {
            let random = random();
            // A stretch packed is sent packed, grown by a few bytes.
            let packed =
                packer.pack::<ClientMessage>(&random).unwrap().map(|f| body(&joined(f), random.len()));
            if let Some(b) = &packed {
                assert!(b.len() < random.len() + 100);
                assert_eq!(unpacker.unpack(b, random.len() as u64).unwrap(), random);
            }
            tried.push(packed.is_some());
        }
        let want = [true, false, true, false, false, false, true, false, false, false, false, false];
        assert_eq!(tried, want);
        assert!(packer.pack::<ClientMessage>(&random()[..100]).unwrap().is_none(), "too small to pack");
        // A hit ends the skipping.
        packer.skip = 0;
        let text = text(100_000, 0);
        assert!(packer.pack::<ClientMessage>(&text).unwrap().is_some());
        assert_eq!(packer.misses, 0);
    }

    #[test]
    fn sizes_beyond_an_envelope_are_refused_before_reading() {
        let most = ENVELOPE_MAX as u64;
        Unpacker::check(most, most).unwrap();
        Unpacker::check(3, 0).unwrap();
        for (len, size) in [(most + 1, 10), (10, most + 1)] {
            assert!(
                matches!(Unpacker::check(len, size), Err(EnvelopeError::TooLarge { .. })),
                "{len} {size}"
            );
        }
    }
}
