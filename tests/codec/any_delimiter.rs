//! `AnyDelimiterCodec`: tokio-util's any-delimiter tests re-expressed (chunks come out as
//! `Bytes`, as in tokio-util).

use adaptive_pool::codec::{
    AnyDelimiterCodec, AnyDelimiterCodecError, Decoder, Encoder, FramedRead,
};
use adaptive_pool::PooledBuf;
use bytes::{BufMut, Bytes};

use super::mock::{data, end, frame, Mock};

fn buf() -> PooledBuf {
    PooledBuf::with_capacity(200)
}

#[track_caller]
fn chunk(codec: &mut AnyDelimiterCodec, buf: &mut PooledBuf) -> Bytes {
    codec.decode(buf).unwrap().expect("a chunk")
}

#[test]
fn any_of_the_delimiters_ends_a_chunk() {
    let mut codec = AnyDelimiterCodec::new(b",;\n\r".to_vec(), b",".to_vec());
    let buf = &mut buf();
    buf.put_slice(b"chunk 1,chunk 2;chunk 3\n\r");
    assert_eq!(chunk(&mut codec, buf), "chunk 1");
    assert_eq!(chunk(&mut codec, buf), "chunk 2");
    assert_eq!(chunk(&mut codec, buf), "chunk 3");
    assert_eq!(chunk(&mut codec, buf), "");
    assert_eq!(codec.decode(buf).unwrap(), None);
    assert_eq!(codec.decode_eof(buf).unwrap(), None);
    buf.put_slice(b"k");
    assert_eq!(codec.decode(buf).unwrap(), None);
    assert_eq!(codec.decode_eof(buf).unwrap().unwrap(), "k");
    assert_eq!(codec.decode(buf).unwrap(), None);
    assert_eq!(codec.decode_eof(buf).unwrap(), None);
}

#[test]
fn maximum_length() {
    const MAX: usize = 7;
    let mut codec = AnyDelimiterCodec::new_with_max_length(b",;\n\r".to_vec(), b",".to_vec(), MAX);
    assert_eq!(codec.max_length(), MAX);
    let buf = &mut buf();
    buf.put_slice(b"chunk 1 is too long\nchunk 2\nchunk 3\r\nchunk 4\n\r\n");
    match codec.decode(buf) {
        Err(e @ AnyDelimiterCodecError::MaxChunkLengthExceeded) => {
            assert_eq!(e.to_string(), "max chunk length exceeded")
        }
        other => panic!("{other:?}"),
    }
    for expected in ["chunk 2", "chunk 3", "", "chunk 4", "", ""] {
        let c = chunk(&mut codec, buf);
        assert!(c.len() <= MAX);
        assert_eq!(c, expected);
    }
    assert_eq!(codec.decode(buf).unwrap(), None);
    assert_eq!(codec.decode_eof(buf).unwrap(), None);
    buf.put_slice(b"k");
    assert_eq!(codec.decode(buf).unwrap(), None);
    assert_eq!(codec.decode_eof(buf).unwrap().unwrap(), "k");
    assert_eq!(codec.decode(buf).unwrap(), None);
    assert_eq!(codec.decode_eof(buf).unwrap(), None);
    // One byte too long, without a delimiter yet.
    buf.put_slice(b"aaabbbcc");
    assert!(codec.decode(buf).is_err());
}

#[test]
fn maximum_length_reached_over_several_reads() {
    let mut codec = AnyDelimiterCodec::new_with_max_length(b",;\n\r".to_vec(), b",".to_vec(), 7);
    let buf = &mut buf();
    buf.put_slice(b"chunk ");
    assert_eq!(codec.decode(buf).unwrap(), None);
    buf.put_slice(b"too l");
    assert!(codec.decode(buf).is_err());
    buf.put_slice(b"ong\n");
    assert_eq!(codec.decode(buf).unwrap(), None);
    buf.put_slice(b"chunk 2");
    assert_eq!(codec.decode(buf).unwrap(), None);
    buf.put_slice(b",");
    assert_eq!(chunk(&mut codec, buf), "chunk 2");

    // Twice in a row.
    let mut codec = AnyDelimiterCodec::new_with_max_length(b",;\n\r".to_vec(), b",".to_vec(), 11);
    let buf = &mut PooledBuf::new();
    buf.put_slice(b"chunk ");
    assert_eq!(codec.decode(buf).unwrap(), None);
    buf.put_slice(b"too very l");
    assert!(codec.decode(buf).is_err());
    buf.put_slice(b"aaaaaaaaaaaaaaaaaaaaaaa");
    assert_eq!(codec.decode(buf).unwrap(), None);
    buf.put_slice(b"ong\nshort\n");
    assert_eq!(chunk(&mut codec, buf), "short");
}

#[test]
fn maximum_length_in_bursts() {
    let mut codec = AnyDelimiterCodec::new_with_max_length(b",;\n\r".to_vec(), b",".to_vec(), 11);
    let buf = &mut buf();
    buf.put_slice(b"chunk ");
    assert_eq!(codec.decode(buf).unwrap(), None);
    buf.put_slice(b"too l");
    assert_eq!(codec.decode(buf).unwrap(), None);
    buf.put_slice(b"ong\n");
    assert!(codec.decode(buf).is_err());

    let mut codec = AnyDelimiterCodec::new_with_max_length(b",;\n\r".to_vec(), b",".to_vec(), 11);
    let buf = &mut PooledBuf::new();
    buf.put_slice(b"chunk ");
    assert_eq!(codec.decode(buf).unwrap(), None);
    buf.put_slice(b"too long!\n");
    assert!(codec.decode(buf).is_err());
}

#[test]
fn delimiter_arriving_between_decodes() {
    let mut codec = AnyDelimiterCodec::new_with_max_length(b",;\n\r".to_vec(), b",".to_vec(), 5);
    let buf = &mut buf();
    buf.put_slice(b"hello");
    assert_eq!(codec.decode(buf).unwrap(), None);
    buf.put_slice(b"\nworld");
    assert_eq!(chunk(&mut codec, buf), "hello");
}

#[test]
fn discarding_repeatedly_terminates() {
    let mut codec = AnyDelimiterCodec::new_with_max_length(b",;\n\r".to_vec(), b",".to_vec(), 1);
    let buf = &mut buf();
    buf.put_slice(b"a");
    assert_eq!(codec.decode(buf).unwrap(), None);
    buf.put_slice(b"b");
    assert!(codec.decode(buf).is_err());
    buf.put_slice(b"c");
    assert_eq!(codec.decode(buf).unwrap(), None);
}

#[test]
fn encoding_appends_the_sequence_writer() {
    let mut codec = AnyDelimiterCodec::new(b",".to_vec(), b";--;".to_vec());
    let mut buf = PooledBuf::new();
    codec.encode("chunk 1", &mut buf).unwrap();
    assert_eq!(buf, "chunk 1;--;");
    codec.encode(String::from("chunk 2"), &mut buf).unwrap();
    assert_eq!(buf, "chunk 1;--;chunk 2;--;");
}

#[test]
fn the_defaults_are_tokio_utils() {
    let mut codec = AnyDelimiterCodec::default();
    assert_eq!(codec.max_length(), usize::MAX);
    let buf = &mut PooledBuf::from("a,b;c\nd\re");
    for expected in ["a", "b", "c", "d"] {
        assert_eq!(chunk(&mut codec, buf), expected);
    }
    assert_eq!(codec.decode_eof(buf).unwrap().unwrap(), "e");
    let mut out = PooledBuf::new();
    codec.encode("x", &mut out).unwrap();
    assert_eq!(out, "x,");
}

#[test]
fn chunks_through_framed_read() {
    let mock = Mock::new([data(b"key=1;ke"), data(b"y=2;last")]);
    let mut r = FramedRead::new(mock, AnyDelimiterCodec::default());
    let first: Bytes = frame(&mut r);
    assert_eq!(first, "key=1");
    assert_eq!(frame(&mut r), "key=2");
    assert_eq!(frame(&mut r), "last");
    end(&mut r);
}
