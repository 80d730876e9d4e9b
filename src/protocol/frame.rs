//! The pure frame codec: bytes in, headers out, and back. No I/O here.
//!
//! A frame is a 4-byte big-endian length `N`, `N` bytes of UTF-8 JSON
//! (the [`Header`]), then `total_size` bytes of body. The codec handles the
//! prefix and header; bodies are streamed by the connection so they never sit
//! whole in memory. A buffer that holds only part of a header is a normal
//! state ([`decode_header`] returns `Ok(None)`), not an error.

use super::header::Header;
use thiserror::Error;

/// Bytes in the length prefix.
pub const PREFIX_LEN: usize = 4;

/// Largest header accepted, checked before allocating. Real headers are under
/// 1 KiB (the longest field is a path, capped at 4 KiB by [`crate::fs`]), so
/// 64 KiB leaves room for growth while bounding what a hostile peer can make
/// us buffer.
pub const MAX_HEADER_LEN: usize = 64 * 1024;

/// Why bytes could not be decoded into a header.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    /// The length prefix announces more than [`MAX_HEADER_LEN`].
    #[error("header length {0} exceeds the limit of {MAX_HEADER_LEN} bytes")]
    TooLarge(u64),
    /// The header bytes are not UTF-8.
    #[error("header is not valid UTF-8")]
    NotUtf8,
    /// The header is not JSON at all.
    #[error("header is not valid JSON: {0}")]
    NotJson(String),
    /// The header is JSON of the wrong shape (unknown op, wrong field type...).
    #[error("header has the wrong shape: {0}")]
    BadShape(String),
}

/// Decodes one header from the start of `buf`.
///
/// Returns the header and how many bytes it used (prefix included), or
/// `Ok(None)` when `buf` does not yet hold the whole header.
pub fn decode_header(buf: &[u8]) -> Result<Option<(Header, usize)>, FrameError> {
    let Some(len) = header_len(buf)? else {
        return Ok(None);
    };
    let Some(json) = buf.get(PREFIX_LEN..PREFIX_LEN + len) else {
        return Ok(None);
    };
    let text = std::str::from_utf8(json).map_err(|_| FrameError::NotUtf8)?;
    // Valid JSON that does not fit is a shape error; tell it apart from
    // bytes that are not JSON at all, so the peer learns which it sent.
    let is_json = || serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok();
    if !text.trim_start().starts_with('{') {
        // serde would accept a struct written as an array; the protocol
        // does not.
        return Err(if is_json() {
            FrameError::BadShape("header must be a JSON object".to_string())
        } else {
            FrameError::NotJson(text.chars().take(40).collect::<String>().escape_debug().to_string())
        });
    }
    let header = serde_json::from_str(text).map_err(|e| {
        if is_json() {
            FrameError::BadShape(e.to_string())
        } else {
            FrameError::NotJson(e.to_string())
        }
    })?;
    Ok(Some((header, PREFIX_LEN + len)))
}

/// Reads the length prefix, checking it against the limit as soon as the four
/// bytes are there, so an oversized frame is refused before any allocation.
pub fn header_len(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    let Some(prefix) = buf.get(..PREFIX_LEN) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(prefix.try_into().expect("four bytes")) as usize;
    if len > MAX_HEADER_LEN {
        return Err(FrameError::TooLarge(len as u64));
    }
    Ok(Some(len))
}

/// Appends the prefix and JSON of `header` to `out`.
pub fn encode_header(header: &Header, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let start = out.len();
    out.extend_from_slice(&[0; PREFIX_LEN]);
    serde_json::to_writer(&mut *out, header).expect("a Header always serializes");
    let len = out.len() - start - PREFIX_LEN;
    if len > MAX_HEADER_LEN {
        out.truncate(start);
        return Err(FrameError::TooLarge(len as u64));
    }
    out[start..start + PREFIX_LEN].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    type Case = (&'static [u8], fn(&FrameError) -> bool);
    use crate::protocol::header::{ErrorCode, Md5Hex, Op};

    fn frame(json: &[u8]) -> Vec<u8> {
        let mut v = (json.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(json);
        v
    }

    fn encoded(h: &Header) -> Vec<u8> {
        let mut out = Vec::new();
        encode_header(h, &mut out).unwrap();
        out
    }

    #[test]
    fn round_trip_keeps_every_field() {
        let mut h = Header::new(Op::Put)
            .with_filename("dir/ünï.bin")
            .with_body(5 * 1024 * 1024 * 1024 + 7)
            .with_md5(Md5Hex::try_from("9e107d9d372bb6826bd81d3542a419d6".to_string()).unwrap());
        h.force = true;
        h.size = Some(u64::MAX);
        let bytes = encoded(&h);
        let (back, used) = decode_header(&bytes).unwrap().unwrap();
        assert_eq!(back, h);
        assert_eq!(used, bytes.len());
    }

    /// PROTOCOL.md's settled points on header shape.
    #[test]
    fn duplicate_keys_are_malformed_and_missing_core_fields_default() {
        assert!(decode_header(&frame(br#"{"op":"ls","filename":"a","filename":"b"}"#)).is_err());
        assert!(decode_header(&frame(br#"{"op":"ls","op":"get"}"#)).is_err());
        let (h, _) = decode_header(&frame(br#"{"op":"ls"}"#)).unwrap().unwrap();
        assert_eq!((h.op, h.filename.as_str(), h.md5, h.total_size), (Op::Ls, "", None, 0));
        assert!(decode_header(&frame(br#"{"filename":""}"#)).is_err(), "op is required");
    }

    #[test]
    fn total_size_above_4_gib_survives() {
        let h = Header::new(Op::Data).with_body(1 << 40);
        let (back, _) = decode_header(&encoded(&h)).unwrap().unwrap();
        assert_eq!(back.total_size, 1 << 40);
    }

    #[test]
    fn every_prefix_of_a_frame_is_incomplete_not_an_error() {
        let bytes = encoded(&Header::new(Op::Get).with_filename("a/b"));
        for cut in 0..bytes.len() {
            assert_eq!(decode_header(&bytes[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn trailing_body_bytes_are_left_alone() {
        let mut bytes = encoded(&Header::new(Op::Data).with_body(3));
        let header_len = bytes.len();
        bytes.extend_from_slice(b"abc");
        let (_, used) = decode_header(&bytes).unwrap().unwrap();
        assert_eq!(used, header_len);
    }

    #[test]
    fn oversized_length_is_refused_from_the_prefix_alone() {
        assert_eq!(decode_header(&[0xff, 0xff, 0xff, 0xff]), Err(FrameError::TooLarge(0xffff_ffff)));
        let just_over = ((MAX_HEADER_LEN + 1) as u32).to_be_bytes();
        assert!(matches!(decode_header(&just_over), Err(FrameError::TooLarge(_))));
    }

    #[test]
    fn malformed_headers_are_errors() {
        let cases: &[Case] = &[
            (b"", |e| matches!(e, FrameError::NotJson(_))),
            (b"\xff\xfe{}", |e| matches!(e, FrameError::NotUtf8)),
            (b"{not json", |e| matches!(e, FrameError::NotJson(_))),
            (b"GET / HTTP/1.1", |e| matches!(e, FrameError::NotJson(_))),
            (b"[1,2,3]", |e| matches!(e, FrameError::BadShape(_))),
            (br#"["put","a",null,5]"#, |e| matches!(e, FrameError::BadShape(_))),
            (b"\"put\"", |e| matches!(e, FrameError::BadShape(_))),
            (b"{}", |e| matches!(e, FrameError::BadShape(_))),
            (br#"{"op":"launch"}"#, |e| matches!(e, FrameError::BadShape(_))),
            (br#"{"op":7}"#, |e| matches!(e, FrameError::BadShape(_))),
            (br#"{"op":"put","total_size":-1}"#, |e| matches!(e, FrameError::BadShape(_))),
            (br#"{"op":"put","total_size":1e30}"#, |e| matches!(e, FrameError::BadShape(_))),
            (br#"{"op":"put","total_size":"12"}"#, |e| matches!(e, FrameError::BadShape(_))),
            (br#"{"op":"put","total_size":18446744073709551616}"#, |e| {
                matches!(e, FrameError::BadShape(_) | FrameError::NotJson(_))
            }),
            (br#"{"op":"done","md5":"xyz"}"#, |e| matches!(e, FrameError::BadShape(_))),
            (br#"{"op":"put","filename":null}"#, |e| matches!(e, FrameError::BadShape(_))),
            (br#"{"op":"put"} trailing"#, |e| matches!(e, FrameError::NotJson(_))),
        ];
        for (json, expected) in cases {
            let err = decode_header(&frame(json)).expect_err(&String::from_utf8_lossy(json));
            assert!(expected(&err), "{:?} gave {err:?}", String::from_utf8_lossy(json));
        }
    }

    #[test]
    fn missing_optional_fields_take_defaults() {
        let (h, _) = decode_header(&frame(br#"{"op":"ls"}"#)).unwrap().unwrap();
        assert_eq!(h, Header::new(Op::Ls));
    }

    #[test]
    fn unknown_fields_are_ignored_for_forward_compatibility() {
        let (h, _) = decode_header(&frame(br#"{"op":"ls","future":[1]}"#)).unwrap().unwrap();
        assert_eq!(h.op, Op::Ls);
    }

    #[test]
    fn error_frames_carry_code_and_message() {
        let h = Header::error(ErrorCode::NotFound, "remote file not found: a");
        let json = String::from_utf8(encoded(&h)[PREFIX_LEN..].to_vec()).unwrap();
        assert!(json.contains(r#""code":"not_found""#), "{json}");
    }

    #[test]
    fn encoding_refuses_a_header_over_the_limit() {
        let h = Header::new(Op::Put).with_filename("x".repeat(MAX_HEADER_LEN));
        let mut out = b"keep".to_vec();
        assert!(matches!(encode_header(&h, &mut out), Err(FrameError::TooLarge(_))));
        assert_eq!(out, b"keep");
    }

    mod fuzz {
        //! Property tests: a bounded fuzzing pass that runs with `cargo test`
        //! (256 cases each by default; `PROPTEST_CASES` raises it).
        use super::*;
        use proptest::prelude::*;

        fn any_op() -> impl Strategy<Value = Op> {
            prop::sample::select(vec![
                Op::Hello,
                Op::Auth,
                Op::Welcome,
                Op::Put,
                Op::Ready,
                Op::Get,
                Op::Data,
                Op::Done,
                Op::Ok,
                Op::Ls,
                Op::Entry,
                Op::End,
                Op::Exec,
                Op::Started,
                Op::Stdin,
                Op::Stdout,
                Op::Stderr,
                Op::Exit,
                Op::Error,
                Op::PutTree,
                Op::GetTree,
                Op::Have,
                Op::Want,
                Op::Partial,
            ])
        }

        proptest! {
            #[test]
            fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
                let _ = decode_header(&bytes);
            }

            #[test]
            fn arbitrary_json_after_a_valid_prefix_never_panics(json in "\\PC{0,300}") {
                let _ = decode_header(&frame(json.as_bytes()));
            }

            #[test]
            fn arbitrary_headers_round_trip(
                op in any_op(),
                filename in "\\PC{0,200}",
                total_size in any::<u64>(),
                size in proptest::option::of(any::<u64>()),
                force in any::<bool>(),
                md5 in proptest::option::of("[0-9a-f]{32}"),
            ) {
                let mut h = Header::new(op).with_filename(filename).with_body(total_size);
                h.size = size;
                h.force = force;
                h.md5 = md5.map(|m| Md5Hex::try_from(m).unwrap());
                let bytes = encoded(&h);
                let (back, used) = decode_header(&bytes).unwrap().unwrap();
                prop_assert_eq!(back, h);
                prop_assert_eq!(used, bytes.len());
            }

            #[test]
            fn decoding_any_split_agrees_with_decoding_whole(cut in 0usize..200, name in "[a-z]{0,100}") {
                let bytes = encoded(&Header::new(Op::Get).with_filename(name));
                let cut = cut.min(bytes.len());
                let partial = decode_header(&bytes[..cut]).unwrap();
                prop_assert_eq!(partial.is_some(), cut == bytes.len());
            }
        }
    }
}
