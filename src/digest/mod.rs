//! The MD5 used everywhere in xfer, behind one small type so the
//! implementation is chosen by measurement in one place.
//!
//! OpenSSL's MD5 is the fastest measured on this project's machines (610-635
//! MiB/s against 516 for the md-5 crate's assembly), and MD5 is the longest
//! stage of every transfer. But linking OpenSSL costs every process 1.5-2 ms
//! at start (`xfer --version`: 3.0-3.7 ms linked, 1.4-1.6 ms without), which
//! commands that hash nothing (`xfer exec true`, `xfer ls`) need not pay. So
//! libcrypto is loaded on the first bytes hashed, and where it cannot be
//! loaded (or the `libcrypto` feature, on by default, is off), the md-5
//! crate does the work: the digests are the same.

use crate::protocol::Md5Hex;
use std::io::{self, Read};

pub mod batch;
mod lanes;
pub mod parts;
pub use batch::HashBatch;
pub use lanes::{md5_many, md5_many_with, Width};
pub use parts::{file_digests, for_each_part, for_each_part_while, parts_of, PartsDigest};

/// An MD5 computation in progress. Nothing is set up until the first bytes.
#[derive(Clone)]
pub struct Md5(Option<Inner>);

#[derive(Clone)]
enum Inner {
    /// OpenSSL's, loaded at run time.
    Ssl(Box<SslCtx>),
    /// The md-5 crate's.
    Rust(md5::Md5),
}

impl Default for Md5 {
    fn default() -> Self {
        Md5::new()
    }
}

/// The MD5 of no bytes at all.
const EMPTY: [u8; 16] =
    [0xd4, 0x1d, 0x8c, 0xd9, 0x8f, 0x00, 0xb2, 0x04, 0xe9, 0x80, 0x09, 0x98, 0xec, 0xf8, 0x42, 0x7e];

/// OpenSSL's `MD5_CTX` (openssl/md5.h): plain data, so it can be cloned.
#[repr(C)]
#[derive(Clone)]
struct SslCtx {
    /// State words, bit count, pending block and its fill: see md5.h.
    words: [u32; 6 + 16 + 1],
}

type InitFn = unsafe extern "C" fn(*mut SslCtx) -> std::ffi::c_int;
type UpdateFn = unsafe extern "C" fn(*mut SslCtx, *const std::ffi::c_void, usize) -> std::ffi::c_int;
type FinalFn = unsafe extern "C" fn(*mut u8, *mut SslCtx) -> std::ffi::c_int;

/// libcrypto's MD5 functions, once loaded.
#[cfg_attr(not(feature = "libcrypto"), allow(dead_code))]
struct Ssl {
    /// Keeps the library mapped for the life of the process.
    #[cfg(feature = "libcrypto")]
    _lib: libloading::Library,
    /// `MD5_Init`.
    init: InitFn,
    /// `MD5_Update`.
    update: UpdateFn,
    /// `MD5_Final`.
    finish: FinalFn,
}

/// libcrypto, loaded on first use; `None` if it is not on this system.
#[cfg(not(feature = "libcrypto"))]
fn ssl() -> Option<&'static Ssl> {
    None
}

/// libcrypto, loaded on first use; `None` if it is not on this system.
#[cfg(feature = "libcrypto")]
fn ssl() -> Option<&'static Ssl> {
    use std::sync::OnceLock;
    static SSL: OnceLock<Option<Ssl>> = OnceLock::new();
    SSL.get_or_init(|| {
        if forced_rust() {
            return None;
        }
        // SAFETY: libcrypto's initialisers are safe to run in any process,
        // and the three functions have exactly these C signatures (md5.h,
        // exported since OpenSSL 0.9 and still in 3.x).
        unsafe {
            let lib = ["libcrypto.so.3", "libcrypto.so"]
                .into_iter()
                .find_map(|name| libloading::Library::new(name).ok())?;
            let init = *lib.get::<InitFn>(b"MD5_Init\0").ok()?;
            let update = *lib.get::<UpdateFn>(b"MD5_Update\0").ok()?;
            let finish = *lib.get::<FinalFn>(b"MD5_Final\0").ok()?;
            Some(Ssl { _lib: lib, init, update, finish })
        }
    })
    .as_ref()
}

/// Whether `XFER_MD5=rust` asks for the md-5 crate alone (to compare, or
/// where the faster paths are in doubt).
fn forced_rust() -> bool {
    std::env::var_os("XFER_MD5").is_some_and(|v| v == "rust")
}

fn new_inner() -> Inner {
    match ssl() {
        Some(ssl) => {
            let mut ctx = Box::new(SslCtx { words: [0; 23] });
            // SAFETY: `ctx` is a valid, writable MD5_CTX.
            unsafe { (ssl.init)(&mut *ctx) };
            Inner::Ssl(ctx)
        }
        None => Inner::Rust(<md5::Md5 as md5::Digest>::new()),
    }
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
        match self.0.get_or_insert_with(new_inner) {
            Inner::Ssl(ctx) => {
                let ssl = ssl().expect("loaded before the context was made");
                // SAFETY: `ctx` was initialised by MD5_Init and `bytes` is a
                // valid slice for the length given.
                unsafe { (ssl.update)(&mut **ctx, bytes.as_ptr().cast(), bytes.len()) };
            }
            Inner::Rust(md5) => md5::Digest::update(md5, bytes),
        }
    }

    /// The digest of everything fed so far.
    pub fn finish(self) -> Md5Hex {
        let digest: [u8; 16] = match self.0 {
            None => EMPTY,
            Some(Inner::Ssl(mut ctx)) => {
                let ssl = ssl().expect("loaded before the context was made");
                let mut out = [0u8; 16];
                // SAFETY: `out` has room for the 16-byte digest; `ctx` is initialised.
                unsafe { (ssl.finish)(out.as_mut_ptr(), &mut *ctx) };
                out
            }
            Some(Inner::Rust(md5)) => md5::Digest::finalize(md5).into(),
        };
        Md5Hex::from_digest(&digest)
    }
}

/// Hashes the first `len` bytes of `file` (a partial being resumed, or the
/// source's matching prefix), leaving the file positioned after them.
/// Fails with `UnexpectedEof` if the file is shorter.
pub fn hash_prefix(file: &mut std::fs::File, len: u64) -> io::Result<Md5> {
    io::Seek::rewind(file)?;
    let mut md5 = Md5::new();
    // Sized to the file: a tree re-run hashes thousands of small files, and
    // a zeroed 1 MiB buffer for each cost more than the hashing (1.6 s for
    // /usr/include). 256 KiB reads of a large file are as fast as 1 MiB
    // ones (dd, page cache warm) and stay in the L2 cache for the hash.
    let step = len.min(256 * 1024) as usize;
    let mut buf = vec![0u8; step];
    let mut left = len;
    while left > 0 {
        let want = left.min(step as u64) as usize;
        file.read_exact(&mut buf[..want])?;
        md5.update(&buf[..want]);
        left -= want as u64;
    }
    Ok(md5)
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

    #[test]
    fn both_implementations_agree_at_every_length_and_split() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 31 % 251) as u8).collect();
        for len in [1, 55, 56, 63, 64, 65, 127, 128, 1000, 4999, 5000] {
            for split in [0, 1, len / 3, len / 2, len - 1] {
                let (a, b) = data[..len].split_at(split);
                let mut ours = Md5::new();
                ours.update(a);
                let cloned = ours.clone();
                ours.update(b);
                let mut rust = <md5::Md5 as md5::Digest>::new();
                md5::Digest::update(&mut rust, &data[..len]);
                let want: [u8; 16] = md5::Digest::finalize(rust).into();
                assert_eq!(ours.finish(), Md5Hex::from_digest(&want), "len {len} split {split}");
                let mut resumed = cloned;
                resumed.update(b);
                assert_eq!(resumed.finish(), Md5Hex::from_digest(&want), "clone, len {len}");
            }
        }
        #[cfg(feature = "libcrypto")]
        assert!(ssl().is_some(), "libcrypto is on this project's machines; without it md-5 is used");
    }
}
