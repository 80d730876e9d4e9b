//! The MD5 used everywhere in xfer, behind one small type so the
//! implementation is chosen by measurement in one place.
//!
//! With the `openssl` feature (the default) it is OpenSSL's MD5, measured
//! fastest on this project's machines (bench/run); without it, the md-5
//! crate's, which needs no system library.

use crate::protocol::Md5Hex;

/// An MD5 computation in progress. The implementation's state is made on
/// the first bytes: OpenSSL's set-up costs about 1.5 ms of a client's
/// start, which `xfer exec true` (nothing to hash) need not pay.
#[derive(Clone)]
pub struct Md5(Option<Inner>);

#[cfg(feature = "openssl")]
type Inner = openssl::hash::Hasher;
#[cfg(not(feature = "openssl"))]
type Inner = md5::Md5;

impl Default for Md5 {
    fn default() -> Self {
        Md5::new()
    }
}

/// The MD5 of no bytes at all.
const EMPTY: [u8; 16] =
    [0xd4, 0x1d, 0x8c, 0xd9, 0x8f, 0x00, 0xb2, 0x04, 0xe9, 0x80, 0x09, 0x98, 0xec, 0xf8, 0x42, 0x7e];

fn new_inner() -> Inner {
    #[cfg(feature = "openssl")]
    let inner =
        openssl::hash::Hasher::new(openssl::hash::MessageDigest::md5()).expect("OpenSSL provides MD5");
    #[cfg(not(feature = "openssl"))]
    let inner = <md5::Md5 as md5::Digest>::new();
    inner
}

impl Md5 {
    /// A fresh digest.
    pub fn new() -> Self {
        Md5(None)
    }

    /// Feeds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let inner = self.0.get_or_insert_with(new_inner);
        #[cfg(feature = "openssl")]
        inner.update(bytes).expect("MD5 update cannot fail");
        #[cfg(not(feature = "openssl"))]
        md5::Digest::update(inner, bytes);
    }

    /// The digest of everything fed so far.
    pub fn finish(self) -> Md5Hex {
        let Some(inner) = self.0 else { return Md5Hex::from_digest(&EMPTY) };
        #[cfg(feature = "openssl")]
        let digest: [u8; 16] = {
            let mut inner = inner;
            let bytes = inner.finish().expect("MD5 finish cannot fail");
            bytes.as_ref().try_into().expect("MD5 digests are 16 bytes")
        };
        #[cfg(not(feature = "openssl"))]
        let digest: [u8; 16] = md5::Digest::finalize(inner).into();
        Md5Hex::from_digest(&digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digests() {
        assert_eq!(Md5::new().finish().as_str(), "d41d8cd98f00b204e9800998ecf8427e");
        let mut m = Md5::new();
        m.update(b"The quick brown fox ");
        m.update(b"jumps over the lazy dog");
        assert_eq!(m.finish().as_str(), "9e107d9d372bb6826bd81d3542a419d6");
        let mut m = Md5::new();
        m.update(b"");
        assert_eq!(m.finish().as_str(), "d41d8cd98f00b204e9800998ecf8427e");
    }
}
