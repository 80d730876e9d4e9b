//! The MD5s of many bodies at once, side by side in SIMD lanes: 32 in two
//! AVX-512 registers, or 16 in two AVX2 ones, as the CPU has them (chosen
//! at run time; `XFER_MD5` forces a width, for tests and comparisons).
//!
//! MD5 is a chain of dependent steps, so one body cannot be hashed faster
//! than about 5 cycles a byte (libcrypto: 610-635 MiB/s here). Bodies that
//! do not depend on each other (a tree's small files, a large file's parts)
//! take the same steps side by side: in the 32-bit lanes of a register,
//! eight or sixteen of them for the price of one, and a second register's
//! steps fill the first's waits. Each lane takes the next body as soon as
//! it is done with one, longest bodies first so no lane is left with a long
//! one at the end. /usr/include's 7,581 files up to 64 KiB: 21-25 ms with
//! AVX2, against 129-140 ms one at a time; for the figures of each width on
//! parts of a large file, `cargo run --release --example md5_lanes`.

use crate::protocol::Md5Hex;

/// How many bodies are hashed side by side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Width {
    /// 32 lanes in two 512-bit registers (AVX-512F).
    Avx512,
    /// 16 lanes in two 256-bit registers (AVX2).
    Avx2,
    /// One body at a time, with the one-stream MD5.
    One,
}

impl Width {
    /// The widest this CPU has, unless `XFER_MD5` names a narrower one
    /// (`avx2`, `one`, or `rust`: the md-5 crate alone, one at a time).
    /// A width the CPU lacks is never chosen, whatever is asked.
    pub fn chosen() -> Width {
        use std::sync::OnceLock;
        static CHOSEN: OnceLock<Width> = OnceLock::new();
        *CHOSEN.get_or_init(|| {
            let asked = std::env::var("XFER_MD5").unwrap_or_default();
            let fits = |w: Width| Width::available().contains(&w);
            match asked.as_str() {
                "one" | "rust" => Width::One,
                "avx2" if fits(Width::Avx2) => Width::Avx2,
                _ => Width::available()[0],
            }
        })
    }

    /// Every width this CPU can run, widest first; `One` always.
    pub fn available() -> Vec<Width> {
        let mut widths = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                widths.push(Width::Avx512);
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                widths.push(Width::Avx2);
            }
        }
        widths.push(Width::One);
        widths
    }

    /// Bodies hashed side by side: what a batch should hold to fill them.
    pub fn lanes(self) -> usize {
        match self {
            Width::Avx512 => 32,
            Width::Avx2 => 16,
            Width::One => 1,
        }
    }

    /// The name `XFER_MD5` takes for it.
    pub fn name(self) -> &'static str {
        match self {
            Width::Avx512 => "avx512",
            Width::Avx2 => "avx2",
            Width::One => "one",
        }
    }
}

/// The MD5 of each body, in order, as many at once as the CPU allows.
pub fn md5_many(bodies: &[&[u8]]) -> Vec<Md5Hex> {
    md5_many_with(Width::chosen(), bodies)
}

/// [`md5_many`] with a given width, which must be one of
/// [`Width::available`] (else one at a time); fewer than four bodies are
/// hashed one at a time whatever the width.
pub fn md5_many_with(width: Width, bodies: &[&[u8]]) -> Vec<Md5Hex> {
    // Lanes pay from four bodies on: 128 KiB parts, two at a time, 418 MiB/s
    // with AVX-512 (AVX2: 429), three 698 (638), four 928 (844), against
    // 711-749 one at a time (examples/md5_lanes.rs).
    #[cfg(target_arch = "x86_64")]
    if bodies.len() >= 4 && Width::available().contains(&width) {
        let digests = match width {
            // SAFETY: the CPU has the features each needs (`available`).
            Width::Avx512 => Some(unsafe { x86::many_avx512(bodies) }),
            Width::Avx2 => Some(unsafe { x86::many_avx2(bodies) }),
            Width::One => None,
        };
        if let Some(digests) = digests {
            return digests.iter().map(Md5Hex::from_digest).collect();
        }
    }
    bodies
        .iter()
        .map(|body| {
            let mut md5 = super::Md5::new();
            md5.update(body);
            md5.finish()
        })
        .collect()
}

/// One body on its way through a lane: its whole 64-byte blocks, read
/// where they are, then its tail.
struct Job<'a> {
    /// Where its digest goes in the output.
    index: usize,
    /// The body's whole blocks.
    body: &'a [u8],
    /// The bytes after the last whole block, MD5's padding and the bit
    /// length: one or two blocks.
    tail: [u8; 128],
    /// The tail's length: 64 or 128.
    tail_len: usize,
    /// Whether the body's blocks are done and the tail's are being hashed.
    in_tail: bool,
    /// Bytes done of the body's blocks, or of the tail's.
    at: usize,
}

impl<'a> Job<'a> {
    fn new(index: usize, body: &'a [u8]) -> Self {
        let whole = body.len() / 64 * 64;
        let rest = &body[whole..];
        let mut tail = [0u8; 128];
        tail[..rest.len()].copy_from_slice(rest);
        tail[rest.len()] = 0x80;
        // The length needs the last 8 bytes of a block: a second one when
        // the rest and its 0x80 leave fewer.
        let tail_len = if rest.len() < 56 { 64 } else { 128 };
        let bits = (body.len() as u64).wrapping_mul(8);
        tail[tail_len - 8..tail_len].copy_from_slice(&bits.to_le_bytes());
        Job { index, body: &body[..whole], tail, tail_len, in_tail: whole == 0, at: 0 }
    }

    /// The blocks left before the lane's next turn: of its body, or of its
    /// tail.
    fn stretch(&self) -> &[u8] {
        match self.in_tail {
            false => &self.body[self.at..],
            true => &self.tail[self.at..self.tail_len],
        }
    }

    /// Goes on `bytes` into the stretch; returns whether the body is done.
    fn advance(&mut self, bytes: usize) -> bool {
        self.at += bytes;
        if !self.stretch().is_empty() {
            return false;
        }
        if self.in_tail {
            return true;
        }
        (self.in_tail, self.at) = (true, 0);
        false
    }
}

/// What a lane without a body hashes, and throws away.
const IDLE: [u8; 64] = [0; 64];

/// MD5's starting state: A, B, C, D.
const INIT: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];

/// Each step's constant: the integer part of 2^32 × |sin(step + 1)|.
const K: [u32; 64] = [
    0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501,
    0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821,
    0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
    0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a,
    0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70,
    0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
    0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
    0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391,
];

/// Each step's left rotation.
const SHIFT: [i32; 64] = [
    7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, //
    5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20, //
    4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, //
    6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
];

/// The message word each step adds.
const WORD: [usize; 64] = [
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, //
    1, 6, 11, 0, 5, 10, 15, 4, 9, 14, 3, 8, 13, 2, 7, 12, //
    5, 8, 11, 14, 1, 4, 7, 10, 13, 0, 3, 6, 9, 12, 15, 2, //
    0, 7, 14, 5, 12, 3, 10, 1, 8, 15, 6, 13, 4, 11, 2, 9,
];

/// MD5's 64 steps, unrolled: `$step!(a b c d, i)` for each step `i`, the
/// four words trading roles one place a step (RFC 1321's own rotation), so
/// that each step's shift, constant, word and mixing are known when it is
/// compiled and no value moves between steps. As a loop, a step of 16 lanes
/// cost about 12 cycles (AVX-512, `--example md5_lanes`: 4,900 MiB/s).
macro_rules! md5_steps {
    ($step:ident, $a:ident $b:ident $c:ident $d:ident) => {
        md5_steps!(@four $step, $a $b $c $d, 0 1 2 3);
        md5_steps!(@four $step, $a $b $c $d, 4 5 6 7);
        md5_steps!(@four $step, $a $b $c $d, 8 9 10 11);
        md5_steps!(@four $step, $a $b $c $d, 12 13 14 15);
        md5_steps!(@four $step, $a $b $c $d, 16 17 18 19);
        md5_steps!(@four $step, $a $b $c $d, 20 21 22 23);
        md5_steps!(@four $step, $a $b $c $d, 24 25 26 27);
        md5_steps!(@four $step, $a $b $c $d, 28 29 30 31);
        md5_steps!(@four $step, $a $b $c $d, 32 33 34 35);
        md5_steps!(@four $step, $a $b $c $d, 36 37 38 39);
        md5_steps!(@four $step, $a $b $c $d, 40 41 42 43);
        md5_steps!(@four $step, $a $b $c $d, 44 45 46 47);
        md5_steps!(@four $step, $a $b $c $d, 48 49 50 51);
        md5_steps!(@four $step, $a $b $c $d, 52 53 54 55);
        md5_steps!(@four $step, $a $b $c $d, 56 57 58 59);
        md5_steps!(@four $step, $a $b $c $d, 60 61 62 63);
    };
    (@four $step:ident, $a:ident $b:ident $c:ident $d:ident, $i:literal $j:literal $k:literal $l:literal) => {
        $step!($a $b $c $d, $i);
        $step!($d $a $b $c, $j);
        $step!($c $d $a $b, $k);
        $step!($b $c $d $a, $l);
    };
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Job, IDLE, INIT, K, SHIFT, WORD};
    use std::arch::x86_64::*;

    /// The digests of `bodies`, in order, 16 at a time.
    ///
    /// # Safety
    /// The CPU must have AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn many_avx2(bodies: &[&[u8]]) -> Vec<[u8; 16]> {
        // The closure has this function's target features. The state goes
        // through memory between blocks: kept in registers across a run, as
        // AVX-512 does, it was slower here (16 parts, 3,360 -> 3,133 MiB/s),
        // 16 ymm registers being too few for it and the message words.
        drive::<16>(bodies, |state, lanes, blocks, both| {
            let used = if both { 16 } else { 8 };
            for at in (0..blocks * 64).step_by(64) {
                let block: [&[u8; 64]; 16] = std::array::from_fn(|l| match l < used {
                    true => lanes[l][at..at + 64].try_into().expect("64 bytes"),
                    false => &IDLE,
                });
                match both {
                    true => compress_avx2::<2>(state, &block),
                    false => compress_avx2::<1>(state, &block),
                }
            }
        })
    }

    /// The digests of `bodies`, in order, 32 at a time.
    ///
    /// # Safety
    /// The CPU must have AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn many_avx512(bodies: &[&[u8]]) -> Vec<[u8; 16]> {
        drive::<32>(bodies, |state, lanes, blocks, both| match both {
            true => compress_avx512::<2>(state, lanes, blocks),
            false => compress_avx512::<1>(state, lanes, blocks),
        })
    }

    /// Feeds `L` lanes of two registers from `bodies` through `compress`:
    /// given each lane's next `blocks` blocks, back to back, and told
    /// whether the second register has work (when not, it does half, and
    /// its lanes are not read). Returns the digests in order.
    ///
    /// Each call takes as many blocks as every lane has before its next
    /// turn (the end of its body's whole blocks, or of its tail), so the
    /// bookkeeping between calls is paid once a turn, not once a block.
    /// (/usr/include's files up to a part, 128 at a time as a tree hashes
    /// them, `--example md5_small`, medians of 8 alternating, against
    /// single blocks while any lane was in its tail or idle: AVX-512 3,447
    /// -> 3,979 MiB/s, AVX2 3,252 -> 3,302.)
    #[inline(always)]
    fn drive<const L: usize>(
        bodies: &[&[u8]],
        mut compress: impl FnMut(&mut [[u32; L]; 4], &[&[u8]; L], usize, bool),
    ) -> Vec<[u8; 16]> {
        let half = L / 2;
        let mut order: Vec<usize> = (0..bodies.len()).collect();
        order.sort_unstable_by_key(|&i| std::cmp::Reverse(bodies[i].len()));
        let mut queue = order.into_iter();
        let mut out = vec![[0u8; 16]; bodies.len()];
        let mut lanes: [Option<Job>; L] = std::array::from_fn(|_| None);
        // A, B, C, D of each lane.
        let mut state = [[0u32; L]; 4];
        loop {
            for (lane, job) in lanes.iter_mut().enumerate() {
                if job.is_none() {
                    if let Some(i) = queue.next() {
                        *job = Some(Job::new(i, bodies[i]));
                        for (word, init) in state.iter_mut().zip(INIT) {
                            word[lane] = init;
                        }
                    }
                }
            }
            // Once nothing is queued, move the bodies left into the first
            // register's lanes as those free up.
            for from in half..L {
                let Some(to) = lanes[..half].iter().position(Option::is_none) else { break };
                if lanes[from].is_some() {
                    lanes[to] = lanes[from].take();
                    for word in state.iter_mut() {
                        word[to] = word[from];
                    }
                }
            }
            // The last few bodies: one register does, at half the work.
            let both = lanes[half..].iter().any(Option::is_some);
            let used = if both { L } else { half };
            let Some(run) = lanes[..used].iter().flatten().map(|job| job.stretch().len() / 64).min() else {
                return out;
            };
            // A lane in use without a body hashes another's blocks, and
            // its result is never read.
            let spare = lanes[..used].iter().flatten().next().map_or(&IDLE[..], Job::stretch);
            let stretches: [&[u8]; L] = std::array::from_fn(|l| match (&lanes[l], l < used) {
                (Some(job), true) => job.stretch(),
                (None, true) => spare,
                (_, false) => &IDLE[..],
            });
            compress(&mut state, &stretches, run, both);
            for (lane, slot) in lanes[..used].iter_mut().enumerate() {
                let Some(job) = slot else { continue };
                if job.advance(run * 64) {
                    let digest = &mut out[job.index];
                    for (w, word) in state.iter().enumerate() {
                        digest[w * 4..w * 4 + 4].copy_from_slice(&word[lane].to_le_bytes());
                    }
                    *slot = None;
                }
            }
        }
    }

    /// Words `half * 8 .. half * 8 + 8` of the eight blocks, word `i` of
    /// every lane in register `i`: an 8 × 8 transpose.
    #[target_feature(enable = "avx2")]
    fn transpose8(blocks: &[&[u8; 64]], half: usize) -> [__m256i; 8] {
        // SAFETY: each block has 64 bytes, so 32 from offset 0 or 32 are in it.
        let r: [__m256i; 8] =
            std::array::from_fn(|l| unsafe { _mm256_loadu_si256(blocks[l].as_ptr().add(half * 32).cast()) });
        let t0 = _mm256_unpacklo_epi32(r[0], r[1]);
        let t1 = _mm256_unpackhi_epi32(r[0], r[1]);
        let t2 = _mm256_unpacklo_epi32(r[2], r[3]);
        let t3 = _mm256_unpackhi_epi32(r[2], r[3]);
        let t4 = _mm256_unpacklo_epi32(r[4], r[5]);
        let t5 = _mm256_unpackhi_epi32(r[4], r[5]);
        let t6 = _mm256_unpacklo_epi32(r[6], r[7]);
        let t7 = _mm256_unpackhi_epi32(r[6], r[7]);
        let u0 = _mm256_unpacklo_epi64(t0, t2);
        let u1 = _mm256_unpackhi_epi64(t0, t2);
        let u2 = _mm256_unpacklo_epi64(t1, t3);
        let u3 = _mm256_unpackhi_epi64(t1, t3);
        let u4 = _mm256_unpacklo_epi64(t4, t6);
        let u5 = _mm256_unpackhi_epi64(t4, t6);
        let u6 = _mm256_unpacklo_epi64(t5, t7);
        let u7 = _mm256_unpackhi_epi64(t5, t7);
        [
            _mm256_permute2x128_si256(u0, u4, 0x20),
            _mm256_permute2x128_si256(u1, u5, 0x20),
            _mm256_permute2x128_si256(u2, u6, 0x20),
            _mm256_permute2x128_si256(u3, u7, 0x20),
            _mm256_permute2x128_si256(u0, u4, 0x31),
            _mm256_permute2x128_si256(u1, u5, 0x31),
            _mm256_permute2x128_si256(u2, u6, 0x31),
            _mm256_permute2x128_si256(u3, u7, 0x31),
        ]
    }

    /// One 64-byte block of each lane of the first `G` registers through
    /// MD5's 64 steps (RFC 1321). With two, their steps are interleaved:
    /// each step waits on the one before it, and the other register's step
    /// fills that wait (2.0 → 3.0 GB/s on /usr/include's small files).
    #[target_feature(enable = "avx2")]
    fn compress_avx2<const G: usize>(state: &mut [[u32; 16]; 4], blocks: &[&[u8; 64]; 16]) {
        const { assert!(G == 1 || G == 2, "one or two registers of the 16 lanes") };
        let m: [[[__m256i; 8]; 2]; G] = std::array::from_fn(|g| {
            let group = &blocks[g * 8..g * 8 + 8];
            [transpose8(group, 0), transpose8(group, 1)]
        });
        let m = |g: usize, i: usize| m[g][i / 8][i % 8];
        // SAFETY: each row of `state` is 16 u32s, 64 bytes, and g < G ≤ 2.
        let load = |row: &[u32; 16], g: usize| unsafe { _mm256_loadu_si256(row.as_ptr().add(g * 8).cast()) };
        let mut a: [__m256i; G] = std::array::from_fn(|g| load(&state[0], g));
        let mut b: [__m256i; G] = std::array::from_fn(|g| load(&state[1], g));
        let mut c: [__m256i; G] = std::array::from_fn(|g| load(&state[2], g));
        let mut d: [__m256i; G] = std::array::from_fn(|g| load(&state[3], g));
        let (a0, b0, c0, d0) = (a, b, c, d);
        let ones = _mm256_set1_epi32(-1);

        // Step `i`: A = B + ((A + mix(B, C, D) + word + K[i]) <<< SHIFT[i]).
        macro_rules! step {
            ($a:ident $b:ident $c:ident $d:ident, $i:literal) => {
                for g in 0..G {
                    let (x, y, z) = ($b[g], $c[g], $d[g]);
                    let mixed = match $i / 16 {
                        // F = (x & y) | (!x & z), written z ^ (x & (y ^ z)).
                        0 => _mm256_xor_si256(z, _mm256_and_si256(x, _mm256_xor_si256(y, z))),
                        // G = (x & z) | (y & !z), written y ^ (z & (x ^ y)).
                        1 => _mm256_xor_si256(y, _mm256_and_si256(z, _mm256_xor_si256(x, y))),
                        // H = x ^ y ^ z.
                        2 => _mm256_xor_si256(x, _mm256_xor_si256(y, z)),
                        // I = y ^ (x | !z).
                        _ => _mm256_xor_si256(y, _mm256_or_si256(x, _mm256_xor_si256(z, ones))),
                    };
                    // A and the word are known steps ahead; only the mixing
                    // waits on the step before.
                    let ahead = _mm256_add_epi32(
                        $a[g],
                        _mm256_add_epi32(m(g, WORD[$i]), _mm256_set1_epi32(K[$i] as i32)),
                    );
                    let sum = _mm256_add_epi32(mixed, ahead);
                    let rotated = _mm256_or_si256(
                        _mm256_slli_epi32::<{ SHIFT[$i] }>(sum),
                        _mm256_srli_epi32::<{ 32 - SHIFT[$i] }>(sum),
                    );
                    $a[g] = _mm256_add_epi32(x, rotated);
                }
            };
        }
        md5_steps!(step, a b c d);

        for (row, (now, before)) in state.iter_mut().zip([(a, a0), (b, b0), (c, c0), (d, d0)]) {
            for g in 0..G {
                // SAFETY: each row is 16 u32s, 64 bytes.
                unsafe {
                    _mm256_storeu_si256(
                        row.as_mut_ptr().add(g * 8).cast(),
                        _mm256_add_epi32(now[g], before[g]),
                    )
                };
            }
        }
    }

    /// Sixteen lanes' blocks, a register each, turned into word `i` of every
    /// lane in register `i`: a 16 × 16 transpose of 32-bit words in four
    /// rounds of sixteen shuffles.
    #[target_feature(enable = "avx512f")]
    fn transpose16(r: [__m512i; 16]) -> [__m512i; 16] {
        // Pairs of rows interleaved by word, then by pairs of words: in each
        // 128-bit quarter q of u[4k + w], word 4q + w of rows 4k..4k+4.
        let t: [__m512i; 16] = std::array::from_fn(|i| match i % 2 {
            0 => _mm512_unpacklo_epi32(r[i], r[i + 1]),
            _ => _mm512_unpackhi_epi32(r[i - 1], r[i]),
        });
        let u: [__m512i; 16] = std::array::from_fn(|i| {
            let (k, w) = (i / 4, i % 4);
            let (lo, hi) = (t[4 * k + w / 2], t[4 * k + 2 + w / 2]);
            match w % 2 {
                0 => _mm512_unpacklo_epi64(lo, hi),
                _ => _mm512_unpackhi_epi64(lo, hi),
            }
        });
        // Then the quarters: word 4q + w takes quarter q of u[w], u[4 + w],
        // u[8 + w], u[12 + w], in that order.
        let mut out = [_mm512_setzero_si512(); 16];
        for w in 0..4 {
            let (a, b, c, d) = (u[w], u[4 + w], u[8 + w], u[12 + w]);
            let ab_low = _mm512_shuffle_i32x4::<0x44>(a, b);
            let ab_high = _mm512_shuffle_i32x4::<0xee>(a, b);
            let cd_low = _mm512_shuffle_i32x4::<0x44>(c, d);
            let cd_high = _mm512_shuffle_i32x4::<0xee>(c, d);
            out[w] = _mm512_shuffle_i32x4::<0x88>(ab_low, cd_low);
            out[4 + w] = _mm512_shuffle_i32x4::<0xdd>(ab_low, cd_low);
            out[8 + w] = _mm512_shuffle_i32x4::<0x88>(ab_high, cd_high);
            out[12 + w] = _mm512_shuffle_i32x4::<0xdd>(ab_high, cd_high);
        }
        out
    }

    /// [`compress_avx2`] in 512-bit registers of 16 lanes, where one
    /// instruction does each of MD5's mixing functions (a three-input truth
    /// table) and its rotations; `blocks` blocks of each lane, back to
    /// back, the state kept in registers from one to the next (`--example
    /// md5_lanes`, best of 3, MiB/s: 32 parts of 256 KiB 6,172 -> 6,935, 16
    /// parts 5,396 -> 6,595, against storing it after every block).
    #[target_feature(enable = "avx512f")]
    fn compress_avx512<const G: usize>(state: &mut [[u32; 32]; 4], lanes: &[&[u8]; 32], blocks: usize) {
        const { assert!(G == 1 || G == 2, "one or two registers of the 32 lanes") };
        // Checked once here, so that the loads below stay inside the lanes.
        assert!(
            lanes[..G * 16].iter().all(|lane| lane.len() >= blocks * 64),
            "a lane shorter than its blocks"
        );
        // SAFETY: each row of `state` is 32 u32s, 128 bytes, and g < G ≤ 2.
        let load = |row: &[u32; 32], g: usize| unsafe { _mm512_loadu_si512(row.as_ptr().add(g * 16).cast()) };
        let mut a: [__m512i; G] = std::array::from_fn(|g| load(&state[0], g));
        let mut b: [__m512i; G] = std::array::from_fn(|g| load(&state[1], g));
        let mut c: [__m512i; G] = std::array::from_fn(|g| load(&state[2], g));
        let mut d: [__m512i; G] = std::array::from_fn(|g| load(&state[3], g));
        for at in (0..blocks * 64).step_by(64) {
            // SAFETY: lane g * 16 + l holds `blocks` blocks (checked above), so
            // the 64 bytes at `at` are in it.
            let m: [[__m512i; 16]; G] = std::array::from_fn(|g| {
                transpose16(std::array::from_fn(|l| unsafe {
                    _mm512_loadu_si512(lanes[g * 16 + l].as_ptr().add(at).cast())
                }))
            });
            (a, b, c, d) = steps_avx512((a, b, c, d), &m);
        }
        for (row, now) in state.iter_mut().zip([a, b, c, d]) {
            for (g, register) in now.into_iter().enumerate() {
                // SAFETY: each row is 32 u32s, 128 bytes, and g < G ≤ 2.
                unsafe { _mm512_storeu_si512(row.as_mut_ptr().add(g * 16).cast(), register) };
            }
        }
    }

    /// The truth tables of F, G, H and I for `_mm512_ternarylogic_epi32`.
    const MIX: [i32; 4] = [0xca, 0xe4, 0x96, 0x39];

    /// One of A, B, C, D: a register for each 16 lanes in use.
    type Regs<const G: usize> = [__m512i; G];

    /// The state after one block: MD5's 64 steps over the message words `m`
    /// of each register's lanes, added to the state before them.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn steps_avx512<const G: usize>(
        (mut a, mut b, mut c, mut d): (Regs<G>, Regs<G>, Regs<G>, Regs<G>),
        m: &[[__m512i; 16]; G],
    ) -> (Regs<G>, Regs<G>, Regs<G>, Regs<G>) {
        let (a0, b0, c0, d0) = (a, b, c, d);
        // Step `i`: A = B + ((A + mix(B, C, D) + word + K[i]) <<< SHIFT[i]),
        // the mixing one three-input truth table, indexed by (B, C, D) as
        // bits 2, 1, 0: F = B ? C : D, G = D ? B : C, H = B ^ C ^ D and
        // I = C ^ (B | !D).
        macro_rules! step {
            ($a:ident $b:ident $c:ident $d:ident, $i:literal) => {
                for g in 0..G {
                    let mixed = _mm512_ternarylogic_epi32::<{ MIX[$i / 16] }>($b[g], $c[g], $d[g]);
                    // A and the word are known steps ahead; only the mixing
                    // waits on the step before.
                    let ahead = _mm512_add_epi32(
                        $a[g],
                        _mm512_add_epi32(m[g][WORD[$i]], _mm512_set1_epi32(K[$i] as i32)),
                    );
                    let rotated = _mm512_rol_epi32::<{ SHIFT[$i] }>(_mm512_add_epi32(mixed, ahead));
                    $a[g] = _mm512_add_epi32($b[g], rotated);
                }
            };
        }
        md5_steps!(step, a b c d);
        let add =
            |now: Regs<G>, before: Regs<G>| std::array::from_fn(|g| _mm512_add_epi32(now[g], before[g]));
        (add(a, a0), add(b, b0), add(c, c0), add(d, d0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_at_a_time(body: &[u8]) -> Md5Hex {
        let mut md5 = super::super::Md5::new();
        md5.update(body);
        md5.finish()
    }

    #[test]
    fn agrees_with_one_at_a_time_at_every_length_around_the_block_edges() {
        let data: Vec<u8> = (0..70_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        // Every length up to three blocks (padding in one block or two),
        // then some long ones so lanes finish at different times.
        let mut lens: Vec<usize> = (0..=200).collect();
        lens.extend([1000, 4095, 4096, 4097, 65_535, 65_536, 70_000]);
        let bodies: Vec<&[u8]> =
            lens.iter().enumerate().map(|(i, &n)| &data[i..i + n.min(data.len() - i)]).collect();
        let want: Vec<Md5Hex> = bodies.iter().map(|b| one_at_a_time(b)).collect();
        let widths = Width::available();
        #[cfg(target_arch = "x86_64")]
        assert!(widths.contains(&Width::Avx2), "this project's machines have AVX2 at least");
        for width in widths {
            let name = width.name();
            assert_eq!(md5_many_with(width, &bodies), want, "{name}");
            // Fewer bodies than a register's lanes, more than one's, and a single one.
            assert_eq!(md5_many_with(width, &bodies[60..65]), want[60..65], "{name}");
            assert_eq!(md5_many_with(width, &bodies[40..60]), want[40..60], "{name}");
            assert_eq!(md5_many_with(width, &bodies[..1]), want[..1], "{name}");
            assert!(md5_many_with(width, &[]).is_empty());
        }
        // Long bodies of unequal lengths: the lanes go many blocks together
        // between refills, and the last few in one register.
        let long: Vec<&[u8]> = (0..40).map(|i| &data[i * 7..i * 7 + 3000 + i * 577]).collect();
        let want: Vec<Md5Hex> = long.iter().map(|b| one_at_a_time(b)).collect();
        for width in Width::available() {
            assert_eq!(md5_many_with(width, &long), want, "{}", width.name());
        }
    }

    #[test]
    fn known_digests_side_by_side() {
        let fox: &[u8] = b"The quick brown fox jumps over the lazy dog";
        let got = md5_many(&[b"", fox, b"", fox]);
        let want = ["d41d8cd98f00b204e9800998ecf8427e", "9e107d9d372bb6826bd81d3542a419d6"];
        assert_eq!(got.iter().map(Md5Hex::as_str).collect::<Vec<_>>(), [want[0], want[1], want[0], want[1]]);
    }
}
