//! A file's digest over its parts: what every transfer verifies and every
//! comparison of two copies goes by.
//!
//! A file body travels as parts of [`PART`] bytes (the last shorter), each
//! with its own MD5, so both sides hash many parts at once in SIMD lanes
//! instead of one MD5 stream at 0.74 GB/s. The file's digest is the MD5 of
//! its parts' 16-byte digests one after another, written with the count of
//! parts (`…-8192`), as S3 writes a multipart upload's ETag; a file of one
//! part (or none) has its plain MD5, what `md5sum` prints.

use super::{md5_many, Md5};
use crate::protocol::{Md5Hex, PART};
use std::io::{self, Read};

/// Parts hashed together: 32 fill AVX-512's lanes (AVX2 takes them in two
/// rounds of 16) and hold 4 MiB.
pub const BATCH: usize = 32;

/// A file's digest over the parts seen so far, in order.
#[derive(Clone, Default)]
pub struct PartsDigest {
    /// MD5 of the parts' digests so far.
    of_digests: Md5,
    /// Parts seen.
    parts: u64,
    /// The first part's digest: the file's own digest if it stays alone.
    first: Option<[u8; 16]>,
}

impl PartsDigest {
    /// No parts yet: the digest of an empty file.
    pub fn new() -> Self {
        PartsDigest::default()
    }

    /// The digest over these parts' digests, in order.
    pub fn of(parts: &[[u8; 16]]) -> Self {
        let mut digest = PartsDigest::new();
        parts.iter().for_each(|p| digest.push(p));
        digest
    }

    /// Adds the next part's digest.
    pub fn push(&mut self, part: &[u8; 16]) {
        self.of_digests.update(part);
        self.parts += 1;
        self.first.get_or_insert(*part);
    }

    /// Parts seen so far.
    pub fn parts(&self) -> u64 {
        self.parts
    }

    /// The file's digest.
    pub fn finish(&self) -> Md5Hex {
        match (self.parts, self.first) {
            (1, Some(first)) => Md5Hex::from_digest(&first),
            (0, _) | (_, None) => Md5::new().finish(),
            (n, Some(_)) => Md5Hex::of_parts(&self.of_digests.clone().finish().to_digest(), n),
        }
    }
}

/// The digest over its parts of each of `bodies` (whole files in memory),
/// in order: all their parts hashed together, as many at once as the lanes
/// take. For bodies up to a part this is [`md5_many`].
pub fn file_digests(bodies: &[&[u8]]) -> Vec<Md5Hex> {
    if bodies.iter().all(|b| b.len() as u64 <= PART) {
        return md5_many(bodies);
    }
    let parts: Vec<&[u8]> = bodies.iter().flat_map(|b| b.chunks(PART as usize)).collect();
    let mut digests = md5_many(&parts).into_iter();
    bodies
        .iter()
        .map(|body| {
            let mut digest = PartsDigest::new();
            for _ in 0..(body.len() as u64).div_ceil(PART) {
                digest.push(&digests.next().expect("a digest per part").to_digest());
            }
            digest.finish()
        })
        .collect()
}

/// Reads `len` bytes of `file` from its position, a batch of parts at a
/// time, hashing each batch in lanes; calls `each` with every part's digest
/// in order. Fails with `UnexpectedEof` if the file is shorter. Blocking.
pub fn for_each_part(file: &mut impl Read, len: u64, mut each: impl FnMut(&[u8; 16])) -> io::Result<()> {
    for_each_part_while(file, len, |part| {
        each(part);
        true
    })
}

/// [`for_each_part`], until `each` returns false: nothing after that
/// part's batch is read or hashed.
pub fn for_each_part_while(
    file: &mut impl Read,
    len: u64,
    mut each: impl FnMut(&[u8; 16]) -> bool,
) -> io::Result<()> {
    // Sized to what is read: a tree re-run hashes thousands of small files.
    let mut buf = vec![0u8; len.min(PART * BATCH as u64) as usize];
    let mut left = len;
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        file.read_exact(&mut buf[..want])?;
        let parts: Vec<&[u8]> = buf[..want].chunks(PART as usize).collect();
        for digest in md5_many(&parts) {
            if !each(&digest.to_digest()) {
                return Ok(());
            }
        }
        left -= want as u64;
    }
    Ok(())
}

/// The digest of the first `len` bytes of `file` over their parts, read
/// from the start, leaving the file positioned after them. Blocking.
pub fn parts_of(file: &mut std::fs::File, len: u64) -> io::Result<PartsDigest> {
    io::Seek::rewind(file)?;
    let mut digest = PartsDigest::new();
    for_each_part(file, len, |part| digest.push(part))?;
    Ok(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rule written out by hand: MD5 of the concatenated part digests.
    fn independent(data: &[u8]) -> String {
        let digests: Vec<[u8; 16]> =
            data.chunks(PART as usize).map(|part| <md5::Md5 as md5::Digest>::digest(part).into()).collect();
        match digests.len() {
            0 => crate::protocol::hex(&<md5::Md5 as md5::Digest>::digest(b"")),
            1 => crate::protocol::hex(&digests[0]),
            n => {
                format!("{}-{n}", crate::protocol::hex(&<md5::Md5 as md5::Digest>::digest(digests.concat())))
            }
        }
    }

    #[test]
    fn every_size_edge_agrees_with_the_rule_computed_independently() {
        let p = PART as usize;
        let data: Vec<u8> = (0..p * 40 + 99).map(|i| (i as u32).wrapping_mul(2_654_435_761) as u8).collect();
        for len in [0, 1, p - 1, p, p + 1, 2 * p, 33 * p - 1, 33 * p + 7, data.len()] {
            let mut file = tempfile::tempfile().unwrap();
            std::io::Write::write_all(&mut file, &data[..len]).unwrap();
            let got = parts_of(&mut file, len as u64).unwrap();
            assert_eq!(got.finish().as_str(), independent(&data[..len]), "{len} bytes");
            assert_eq!(got.parts(), (len as u64).div_ceil(PART), "{len} bytes");
        }
        // Whole bodies in memory, hashed together, agree.
        let bodies: Vec<&[u8]> = [0, 1, p, p + 1, 3 * p + 5].iter().map(|&n| &data[..n]).collect();
        let want: Vec<String> = bodies.iter().map(|b| independent(b)).collect();
        let got: Vec<String> = file_digests(&bodies).iter().map(|m| m.to_string()).collect();
        assert_eq!(got, want);
        // A file of one part has what md5sum prints.
        let mut file = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut file, b"abc").unwrap();
        assert_eq!(parts_of(&mut file, 3).unwrap().finish().as_str(), "900150983cd24fb0d6963f7d28e17f72");
        assert!(parts_of(&mut file, 4).is_err(), "shorter than asked");
    }

    /// PROTOCOL.md's test vector: each line of its "Parts" block is what
    /// the rule computed independently, and what xfer computes, gives.
    #[test]
    fn protocol_md_parts_test_vector() {
        let doc = include_str!("../../PROTOCOL.md");
        let section = &doc[doc.find("\n## Parts").expect("the section")..];
        let block = section.split("```").nth(1).expect("the vector's block");
        let vector: Vec<(&str, &str)> =
            block.lines().filter_map(|l| l.rsplit_once(' ')).map(|(k, v)| (k.trim(), v)).collect();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut file = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut file, &data).unwrap();
        let mut want = Vec::new();
        for (i, part) in data.chunks(PART as usize).enumerate() {
            want.push((format!("part {i}"), independent(part)));
        }
        want.push(("digest".to_string(), independent(&data)));
        want.push(("whole_md5".to_string(), crate::protocol::hex(&<md5::Md5 as md5::Digest>::digest(&data))));
        let got: Vec<(String, String)> = vector.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert_eq!(got, want);
        assert_eq!(parts_of(&mut file, data.len() as u64).unwrap().finish().as_str(), want[3].1);
        assert_eq!(file_digests(&[&data]).remove(0).as_str(), want[3].1);
    }
}
