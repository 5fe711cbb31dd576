//! `BytesCodec`: tokio-util's bytes codec tests re-expressed.

use adaptive_pool::codec::{BytesCodec, Decoder, Encoder, FramedRead};
use adaptive_pool::PooledBuf;
use bytes::{BufMut, Bytes, BytesMut};

use super::mock::{data, end, frame, Mock};

#[test]
fn decoder_takes_everything_buffered() {
    let mut codec = BytesCodec::new();
    let buf = &mut PooledBuf::with_capacity(64);
    buf.put_slice(b"abc");
    let frame: PooledBuf = codec.decode(buf).unwrap().unwrap();
    assert_eq!(frame, "abc");
    assert_eq!(codec.decode(buf).unwrap(), None);
    assert_eq!(codec.decode(buf).unwrap(), None);
    buf.put_slice(b"a");
    assert_eq!(codec.decode(buf).unwrap().unwrap(), "a");
}

#[test]
fn encoder_appends() {
    let mut codec = BytesCodec::new();
    let mut buf = PooledBuf::new();
    codec
        .encode(Bytes::from_static(b"line 1"), &mut buf)
        .unwrap();
    assert_eq!(buf, "line 1");
    codec
        .encode(BytesMut::from(&b"line 2"[..]), &mut buf)
        .unwrap();
    codec.encode(&b"!"[..], &mut buf).unwrap();
    codec.encode(PooledBuf::from("?"), &mut buf).unwrap();
    assert_eq!(buf, "line 1line 2!?");
}

#[test]
fn one_frame_per_read() {
    let mut r = FramedRead::new(Mock::new([data(b"one"), data(b"two")]), BytesCodec::new());
    assert_eq!(frame(&mut r), "one");
    assert_eq!(frame(&mut r), "two");
    end(&mut r);
}
