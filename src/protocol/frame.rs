//! The pure frame codec: bytes in, headers out, and back. No I/O here.
//!
//! A frame is a 4-byte big-endian length `N`, `N` bytes of UTF-8 JSON
//! (the header: a [`Message`] and its body's length), then `total_size`
//! bytes of body. The codec handles the
//! prefix and header; bodies are streamed by the connection so they never sit
//! whole in memory. A buffer that holds only part of a header is a normal
//! state ([`decode`] returns `Ok(None)`), not an error.

use super::message::{Frame, Message};
use super::split::Split;
use thiserror::Error;

/// Bytes in the length prefix.
pub const PREFIX_LEN: usize = 4;

/// Largest header accepted, checked before allocating. Real headers are under
/// 1 KiB (the longest field is a path, capped at 4 KiB where paths are checked), so
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

/// Decodes one header from the start of `buf` as a message of `M` (the
/// direction it travels).
///
/// Returns the frame and how many bytes it used (prefix included), or
/// `Ok(None)` when `buf` does not yet hold the whole header.
pub fn decode<M: Message>(buf: &[u8]) -> Result<Option<(Frame<M>, usize)>, FrameError> {
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
    let shape = |e: serde_json::Error| {
        if is_json() {
            FrameError::BadShape(e.to_string())
        } else {
            FrameError::NotJson(e.to_string())
        }
    };
    let Split { msg, total_size } = match leading_op(text).and_then(|op| M::from_op(op, text)) {
        Some(straight) => straight.map_err(shape)?,
        None => serde_json::from_str(text).map_err(shape)?,
    };
    Ok(Some((Frame { msg, total_size }, PREFIX_LEN + len)))
}

/// The op of a header that starts `{"op":"NAME"`, as xfer writes them, and
/// names no other `op`: its message can be read straight into its
/// variant (see [`Message::from_op`]). Any other header (a second `op`, or
/// a name that merely contains `"op"`, or other spacing) takes the tagged
/// path, which reads every shape the protocol allows.
fn leading_op(text: &str) -> Option<&str> {
    let rest = text.strip_prefix(r#"{"op":""#)?;
    let (name, after) = rest.split_once('"')?;
    (!name.contains('\\') && !after.contains(r#""op""#)).then_some(name)
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

/// Appends the prefix and JSON header of a frame of `msg` with a body of
/// `total_size` bytes to `out`. The header starts with `op`, `filename`,
/// `md5` and `total_size`, in that order, then the fields `msg` has set.
pub fn encode<M: Message>(msg: &M, total_size: u64, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let start = out.len();
    out.extend_from_slice(&[0; PREFIX_LEN]);
    let json = out.len();
    serde_json::to_writer(&mut *out, msg).expect("a message always serializes");
    // The tag comes first (`{"op":"NAME"`, no comma in any NAME): the core
    // fields go right after it.
    let after_op = json + out[json..].iter().position(|&b| b == b',' || b == b'}').expect("a JSON object");
    // Written at the end, then rotated into place: no second buffer.
    let core = out.len();
    out.extend_from_slice(b",\"filename\":");
    serde_json::to_writer(&mut *out, msg.filename()).expect("a string always serializes");
    out.extend_from_slice(b",\"md5\":");
    serde_json::to_writer(&mut *out, &msg.md5()).expect("a digest always serializes");
    out.extend_from_slice(b",\"total_size\":");
    serde_json::to_writer(&mut *out, &total_size).expect("a number always serializes");
    let core_len = out.len() - core;
    out[after_op..].rotate_right(core_len);
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
    use crate::protocol::message::{ClientMessage, Data, Done, Get, Ls, Put, ServerMessage};
    use crate::protocol::{ErrorCode, Md5Hex};

    type Case = (&'static [u8], fn(&FrameError) -> bool);

    fn frame(json: &[u8]) -> Vec<u8> {
        let mut v = (json.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(json);
        v
    }

    fn encoded<M: Message>(msg: &M, total_size: u64) -> Vec<u8> {
        let mut out = Vec::new();
        encode(msg, total_size, &mut out).unwrap();
        out
    }

    fn client(bytes: &[u8]) -> Result<Option<(Frame<ClientMessage>, usize)>, FrameError> {
        decode(bytes)
    }

    fn md5(hex: &str) -> Md5Hex {
        Md5Hex::try_from(hex.to_string()).unwrap()
    }

    #[test]
    fn round_trip_keeps_every_field() {
        let put = ClientMessage::Put(Put {
            filename: "dir/ünï.bin".into(),
            size: Some(u64::MAX),
            resume: true,
            force: true,
            fsync: false,
            mode: Some(0o755),
            mtime: Some(-1),
            dry_run: true,
        });
        let bytes = encoded(&put, 5 * 1024 * 1024 * 1024 + 7);
        let (back, used) = client(&bytes).unwrap().unwrap();
        assert_eq!(back, Frame { msg: put, total_size: 5 * 1024 * 1024 * 1024 + 7 });
        assert_eq!(used, bytes.len());
        let ok = ServerMessage::Ok(crate::protocol::Stored {
            filename: "a".into(),
            md5: Some(md5("9e107d9d372bb6826bd81d3542a419d6")),
            size: Some(3),
            skipped: false,
        });
        let (back, _) = decode::<ServerMessage>(&encoded(&ok, 0)).unwrap().unwrap();
        assert_eq!(back.msg, ok);
    }

    /// The core fields come first and are always there, whatever the op;
    /// unset fields stay off the wire.
    #[test]
    fn core_fields_lead_every_header_and_unset_ones_stay_off() {
        let json = |bytes: Vec<u8>| String::from_utf8(bytes[PREFIX_LEN..].to_vec()).unwrap();
        let get = ClientMessage::Get(Get { filename: "a".into(), ..Default::default() });
        assert_eq!(json(encoded(&get, 0)), r#"{"op":"get","filename":"a","md5":null,"total_size":0}"#);
        assert_eq!(
            json(encoded(&ServerMessage::Started, 0)),
            r#"{"op":"started","filename":"","md5":null,"total_size":0}"#
        );
        let data = ClientMessage::Data(Data { filename: "b".into(), offset: Some(4), ..Data::default() });
        assert_eq!(
            json(encoded(&data, 9)),
            r#"{"op":"data","filename":"b","md5":null,"total_size":9,"offset":4}"#
        );
        let done = ServerMessage::Done(Done {
            filename: "\"q\"".into(),
            md5: Some(md5("d41d8cd98f00b204e9800998ecf8427e")),
            whole: None,
        });
        assert_eq!(
            json(encoded(&done, 0)),
            r#"{"op":"done","filename":"\"q\"","md5":"d41d8cd98f00b204e9800998ecf8427e","total_size":0}"#
        );
    }

    /// PROTOCOL.md's settled points on header shape.
    #[test]
    fn duplicate_keys_are_malformed_and_missing_core_fields_default() {
        assert!(client(&frame(br#"{"op":"ls","filename":"a","filename":"b"}"#)).is_err());
        assert!(client(&frame(br#"{"op":"ls","op":"get"}"#)).is_err());
        assert!(client(&frame(br#"{"op":"stdin","total_size":1,"total_size":2}"#)).is_err());
        let (h, _) = client(&frame(br#"{"op":"ls"}"#)).unwrap().unwrap();
        assert_eq!(h, Frame { msg: ClientMessage::Ls(Ls { filename: String::new() }), total_size: 0 });
        assert!(client(&frame(br#"{"filename":""}"#)).is_err(), "op is required");
    }

    #[test]
    fn each_direction_knows_only_its_own_ops() {
        assert!(client(&frame(br#"{"op":"hello","version":2}"#)).is_err());
        assert!(decode::<ServerMessage>(&frame(br#"{"op":"put"}"#)).is_err());
        assert!(decode::<ServerMessage>(&frame(br#"{"op":"data"}"#)).is_ok(), "data goes both ways");
    }

    /// Headers as xfer writes them (op first) are read straight into their
    /// variant; any other order takes the tagged path. Both must agree.
    #[test]
    fn op_first_or_not_decodes_the_same() {
        let msgs = [
            ClientMessage::Put(Put {
                filename: "a/b".into(),
                size: Some(5),
                resume: true,
                force: false,
                fsync: true,
                mode: Some(0o600),
                mtime: Some(1_700_000_000),
                dry_run: false,
            }),
            ClientMessage::Get(Get {
                filename: "op".into(),
                offset: Some(3),
                md5: Some(md5("d41d8cd98f00b204e9800998ecf8427e")),
                size: None,
                dry_run: true,
                whole_md5: true,
                compress: true,
            }),
            ClientMessage::Zstd { size: 7 },
            ClientMessage::Stdin,
            ClientMessage::Auth { nonce: "ab".into(), mac: "cd".into() },
            ClientMessage::Done(Done { filename: "\"op\"".into(), md5: None, whole: None }),
        ];
        for msg in msgs {
            let bytes = encoded(&msg, 7);
            let text = std::str::from_utf8(&bytes[PREFIX_LEN..]).unwrap();
            // The same object with `op` moved to the end.
            let mut object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text).unwrap();
            let op = object.remove("op").unwrap();
            let mut moved = serde_json::to_string(&object).unwrap();
            moved.pop();
            moved.push_str(&format!(",\"op\":{op}}}"));
            let straight = client(&bytes).unwrap().unwrap().0;
            let tagged = client(&frame(moved.as_bytes())).unwrap().unwrap().0;
            assert_eq!(straight, Frame { msg: msg.clone(), total_size: 7 }, "{text}");
            assert_eq!(tagged, straight, "{moved}");
        }
        // Checks that hold on both paths.
        for bad in [br#"{"op":"ls","md5":"XYZ"}"#.as_slice(), br#"{"md5":"XYZ","op":"ls"}"#] {
            assert!(client(&frame(bad)).is_err());
        }
        for dup in [
            br#"{"op":"stdin","total_size":1,"total_size":1}"#.as_slice(),
            br#"{"total_size":1,"op":"stdin","total_size":1}"#,
        ] {
            assert!(client(&frame(dup)).is_err());
        }
    }

    #[test]
    fn total_size_above_4_gib_survives() {
        let (back, _) = client(&encoded(&ClientMessage::Stdin, 1 << 40)).unwrap().unwrap();
        assert_eq!(back.total_size, 1 << 40);
    }

    #[test]
    fn every_prefix_of_a_frame_is_incomplete_not_an_error() {
        let bytes = encoded(&ClientMessage::Ls(Ls { filename: "a/b".into() }), 0);
        for cut in 0..bytes.len() {
            assert_eq!(client(&bytes[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn trailing_body_bytes_are_left_alone() {
        let mut bytes = encoded(&ClientMessage::Stdin, 3);
        let header_len = bytes.len();
        bytes.extend_from_slice(b"abc");
        let (_, used) = client(&bytes).unwrap().unwrap();
        assert_eq!(used, header_len);
    }

    #[test]
    fn oversized_length_is_refused_from_the_prefix_alone() {
        assert_eq!(client(&[0xff, 0xff, 0xff, 0xff]), Err(FrameError::TooLarge(0xffff_ffff)));
        let just_over = ((MAX_HEADER_LEN + 1) as u32).to_be_bytes();
        assert!(matches!(client(&just_over), Err(FrameError::TooLarge(_))));
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
            // Checked on every op, even those that carry no digest.
            (br#"{"op":"ls","md5":"XYZ"}"#, |e| matches!(e, FrameError::BadShape(_))),
            (br#"{"op":"put","filename":null}"#, |e| matches!(e, FrameError::BadShape(_))),
            (br#"{"op":"put","size":-5}"#, |e| matches!(e, FrameError::BadShape(_))),
            (br#"{"op":"entry","filename":"a"}"#, |e| matches!(e, FrameError::BadShape(_))),
            (br#"{"op":"put"} trailing"#, |e| matches!(e, FrameError::NotJson(_))),
        ];
        for (json, expected) in cases {
            let err = client(&frame(json)).expect_err(&String::from_utf8_lossy(json));
            assert!(expected(&err), "{:?} gave {err:?}", String::from_utf8_lossy(json));
        }
    }

    #[test]
    fn unknown_fields_are_ignored_for_forward_compatibility() {
        let (h, _) = client(&frame(br#"{"op":"ls","future":[1]}"#)).unwrap().unwrap();
        assert_eq!(h.msg, ClientMessage::Ls(Ls::default()));
    }

    #[test]
    fn error_frames_carry_code_and_message() {
        let h = ServerMessage::error(ErrorCode::NotFound, "remote file not found: a");
        let json = String::from_utf8(encoded(&h, 0)[PREFIX_LEN..].to_vec()).unwrap();
        assert!(json.contains(r#""code":"not_found""#), "{json}");
        assert!(json.contains(r#""message":"remote file not found: a""#), "{json}");
    }

    #[test]
    fn encoding_refuses_a_header_over_the_limit() {
        let h = ClientMessage::Ls(Ls { filename: "x".repeat(MAX_HEADER_LEN) });
        let mut out = b"keep".to_vec();
        assert!(matches!(encode(&h, 0, &mut out), Err(FrameError::TooLarge(_))));
        assert_eq!(out, b"keep");
    }

    mod fuzz {
        //! Property tests: a bounded fuzzing pass that runs with `cargo test`
        //! (256 cases each by default; `PROPTEST_CASES` raises it).
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
                let _ = client(&bytes);
                let _ = decode::<ServerMessage>(&bytes);
            }

            #[test]
            fn arbitrary_json_after_a_valid_prefix_never_panics(json in "\\PC{0,300}") {
                let _ = client(&frame(json.as_bytes()));
                let _ = decode::<ServerMessage>(&frame(json.as_bytes()));
            }

            #[test]
            fn arbitrary_headers_round_trip(
                filename in "\\PC{0,200}",
                total_size in any::<u64>(),
                size in proptest::option::of(any::<u64>()),
                force in any::<bool>(),
                md5 in proptest::option::of("[0-9a-f]{32}"),
            ) {
                let md5 = md5.map(|m| Md5Hex::try_from(m).unwrap());
                let msgs = [
                    ClientMessage::Put(Put { filename: filename.clone(), size, resume: !force, force, fsync: force, mode: None, mtime: size.map(|s| s as i64), dry_run: force }),
                    ClientMessage::Get(Get { filename: filename.clone(), offset: size, md5: md5.clone(), size, dry_run: !force, whole_md5: force, compress: force }),
                    ClientMessage::Done(Done { filename: filename.clone(), md5, whole: None }),
                    ClientMessage::Stdin,
                ];
                for msg in msgs {
                    let bytes = encoded(&msg, total_size);
                    let (back, used) = client(&bytes).unwrap().unwrap();
                    prop_assert_eq!(back, Frame { msg, total_size });
                    prop_assert_eq!(used, bytes.len());
                }
            }

            #[test]
            fn decoding_any_split_agrees_with_decoding_whole(cut in 0usize..200, name in "[a-z]{0,100}") {
                let bytes = encoded(&ClientMessage::Ls(Ls { filename: name }), 0);
                let cut = cut.min(bytes.len());
                let partial = client(&bytes[..cut]).unwrap();
                prop_assert_eq!(partial.is_some(), cut == bytes.len());
            }
        }
    }
}
