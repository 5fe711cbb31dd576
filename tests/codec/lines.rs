//! `LinesCodec`: tokio-util's lines tests re-expressed (lines come out as `String`, as in
//! tokio-util).

use std::io;

use adaptive_pool::codec::{Decoder, Encoder, FramedRead, LinesCodec, LinesCodecError};
use adaptive_pool::PooledBuf;
use bytes::BufMut;

use super::mock::{data, end, error, frame, Mock};

fn buf() -> PooledBuf {
    PooledBuf::with_capacity(200)
}

fn line(codec: &mut LinesCodec, buf: &mut PooledBuf) -> String {
    codec.decode(buf).unwrap().expect("a line")
}

#[test]
fn lines() {
    let mut codec = LinesCodec::new();
    let buf = &mut buf();
    buf.put_slice(b"line 1\nline 2\r\nline 3\n\r\n\r");
    assert_eq!(line(&mut codec, buf), "line 1");
    assert_eq!(line(&mut codec, buf), "line 2");
    assert_eq!(line(&mut codec, buf), "line 3");
    assert_eq!(line(&mut codec, buf), "");
    assert_eq!(codec.decode(buf).unwrap(), None);
    assert_eq!(codec.decode_eof(buf).unwrap(), None);
    buf.put_slice(b"k");
    assert_eq!(codec.decode(buf).unwrap(), None);
    assert_eq!(codec.decode_eof(buf).unwrap().unwrap(), "\rk");
    assert_eq!(codec.decode(buf).unwrap(), None);
    assert_eq!(codec.decode_eof(buf).unwrap(), None);
}

#[test]
fn invalid_utf8_is_an_error_then_decoding_goes_on() {
    let mut codec = LinesCodec::new();
    let buf = &mut buf();
    buf.put_slice(b"line 1\xc3\x28");
    assert_eq!(codec.decode(buf).unwrap(), None);
    match codec.decode_eof(buf) {
        Err(LinesCodecError::Io(e)) => {
            // tokio-util's kind and message.
            assert_eq!(e.kind(), io::ErrorKind::InvalidData);
            assert_eq!(e.to_string(), "Unable to decode input as UTF8");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(codec.decode_eof(buf).unwrap(), None);
    buf.put_slice(b"line 22222222222222\n");
    assert_eq!(line(&mut codec, buf), "line 22222222222222");
    // In the middle of the stream too.
    buf.put_slice(b"\xff\nok\n");
    assert!(codec.decode(buf).is_err());
    assert_eq!(line(&mut codec, buf), "ok");
}

#[test]
fn maximum_length() {
    const MAX: usize = 6;
    let mut codec = LinesCodec::new_with_max_length(MAX);
    assert_eq!(codec.max_length(), MAX);
    let buf = &mut buf();
    buf.put_slice(b"line 1 is too long\nline 2\nline 3\r\nline 4\n\r\n\r");
    match codec.decode(buf) {
        Err(e @ LinesCodecError::MaxLineLengthExceeded) => {
            assert_eq!(e.to_string(), "max line length exceeded")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(line(&mut codec, buf), "line 2");
    // The `\r` counts: "line 3\r" is 7 bytes.
    assert!(codec.decode(buf).is_err());
    assert_eq!(line(&mut codec, buf), "line 4");
    assert_eq!(line(&mut codec, buf), "");
    assert_eq!(codec.decode(buf).unwrap(), None);
    assert_eq!(codec.decode_eof(buf).unwrap(), None);
    buf.put_slice(b"k");
    assert_eq!(codec.decode(buf).unwrap(), None);
    assert_eq!(codec.decode_eof(buf).unwrap().unwrap(), "\rk");
    assert_eq!(codec.decode(buf).unwrap(), None);
    assert_eq!(codec.decode_eof(buf).unwrap(), None);
    // One byte too long, without a newline yet.
    buf.put_slice(b"aaabbbc");
    assert!(codec.decode(buf).is_err());
}

#[test]
fn maximum_length_reached_over_several_reads() {
    let mut codec = LinesCodec::new_with_max_length(6);
    let buf = &mut buf();
    buf.put_slice(b"line ");
    assert_eq!(codec.decode(buf).unwrap(), None);
    buf.put_slice(b"too l");
    assert!(codec.decode(buf).is_err());
    buf.put_slice(b"ong\n");
    assert_eq!(codec.decode(buf).unwrap(), None);
    buf.put_slice(b"line 2");
    assert_eq!(codec.decode(buf).unwrap(), None);
    buf.put_slice(b"\n");
    assert_eq!(line(&mut codec, buf), "line 2");

    // Twice in a row.
    let mut codec = LinesCodec::new_with_max_length(6);
    let buf = &mut PooledBuf::new();
    buf.put_slice(b"line ");
    assert_eq!(codec.decode(buf).unwrap(), None);
    buf.put_slice(b"too very l");
    assert!(codec.decode(buf).is_err());
    buf.put_slice(b"aaaaaaaaaaaaaaaaaaaaaaa");
    assert_eq!(codec.decode(buf).unwrap(), None);
    buf.put_slice(b"ong\nshort\n");
    assert_eq!(line(&mut codec, buf), "short");
}

#[test]
fn maximum_length_in_bursts() {
    let mut codec = LinesCodec::new_with_max_length(10);
    let buf = &mut buf();
    buf.put_slice(b"line ");
    assert_eq!(codec.decode(buf).unwrap(), None);
    buf.put_slice(b"too l");
    assert_eq!(codec.decode(buf).unwrap(), None);
    buf.put_slice(b"ong\n");
    assert!(codec.decode(buf).is_err());

    let mut codec = LinesCodec::new_with_max_length(10);
    let buf = &mut PooledBuf::new();
    buf.put_slice(b"line ");
    assert_eq!(codec.decode(buf).unwrap(), None);
    buf.put_slice(b"too long!\n");
    assert!(codec.decode(buf).is_err());
}

#[test]
fn newline_arriving_between_decodes() {
    let mut codec = LinesCodec::new_with_max_length(5);
    let buf = &mut buf();
    buf.put_slice(b"hello");
    assert_eq!(codec.decode(buf).unwrap(), None);
    buf.put_slice(b"\nworld");
    assert_eq!(line(&mut codec, buf), "hello");
}

#[test]
fn discarding_repeatedly_terminates() {
    let mut codec = LinesCodec::new_with_max_length(1);
    let buf = &mut buf();
    buf.put_slice(b"a");
    assert_eq!(codec.decode(buf).unwrap(), None);
    buf.put_slice(b"b");
    assert!(codec.decode(buf).is_err());
    buf.put_slice(b"c");
    assert_eq!(codec.decode(buf).unwrap(), None);
}

#[test]
fn encoding_appends_a_newline() {
    let mut codec = LinesCodec::new();
    let mut buf = PooledBuf::new();
    codec.encode("line 1", &mut buf).unwrap();
    assert_eq!(buf, "line 1\n");
    codec.encode(String::from("line 2"), &mut buf).unwrap();
    assert_eq!(buf, "line 1\nline 2\n");
}

#[test]
fn lines_through_framed_read() {
    let mock = Mock::new([data(b"GET / HTTP/1.1\r\nHost: "), data(b"x\r\n\xff\nlast")]);
    let mut r = FramedRead::new(mock, LinesCodec::new_with_max_length(64));
    let request_line: String = frame(&mut r);
    assert_eq!(request_line, "GET / HTTP/1.1");
    assert_eq!(frame(&mut r), "Host: x");
    assert!(matches!(error(&mut r), LinesCodecError::Io(_)));
    end(&mut r);
    assert_eq!(frame(&mut r), "last");
    end(&mut r);
}
