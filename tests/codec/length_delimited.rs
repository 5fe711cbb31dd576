//! `LengthDelimitedCodec`: tokio-util's length_delimited tests re-expressed.

use std::io;
use std::task::Poll;

use adaptive_pool::codec::{
    Decoder, Encoder, FramedRead, FramedWrite, LengthDelimitedCodec, LengthDelimitedCodecError,
};
use adaptive_pool::{PooledBuf, RecvPredictor};
use bytes::Bytes;

use super::mock::{data, end, error, flush, frame, next, pool, ready, send, Mock, Step};

fn reader(steps: impl IntoIterator<Item = Step>) -> FramedRead<Mock, LengthDelimitedCodec> {
    FramedRead::new(Mock::new(steps), LengthDelimitedCodec::new())
}

#[test]
fn empty_input_yields_nothing() {
    end(&mut reader([]));
}

#[test]
fn one_frame_in_one_read() {
    let mut r = reader([data(b"\0\0\0\x09abcdefghi")]);
    assert_eq!(frame(&mut r), "abcdefghi");
    end(&mut r);
}

#[test]
fn byte_orders() {
    let mut r = LengthDelimitedCodec::builder()
        .little_endian()
        .new_read(Mock::new([data(b"\x09\0\0\0abcdefghi")]));
    assert_eq!(frame(&mut r), "abcdefghi");
    end(&mut r);
    let native = if cfg!(target_endian = "big") {
        b"\0\0\0\x09abcdefghi"
    } else {
        b"\x09\0\0\0abcdefghi"
    };
    let mut r = LengthDelimitedCodec::builder()
        .native_endian()
        .new_read(Mock::new([data(native)]));
    assert_eq!(frame(&mut r), "abcdefghi");
    end(&mut r);
}

#[test]
fn several_frames_in_one_read() {
    let mut r = reader([data(
        b"\0\0\0\x09abcdefghi\0\0\0\x03123\0\0\0\x0bhello world",
    )]);
    assert_eq!(frame(&mut r), "abcdefghi");
    assert_eq!(frame(&mut r), "123");
    assert_eq!(frame(&mut r), "hello world");
    end(&mut r);
}

#[test]
fn one_frame_over_several_reads_with_waits() {
    let mut r = reader([
        data(b"\0\0"),
        Step::Pending,
        data(b"\0\x09abc"),
        Step::Pending,
        data(b"defghi"),
        Step::Pending,
    ]);
    // Each read that leaves the frame incomplete ends at the next wait.
    for _ in 0..2 {
        assert!(next(&mut r).is_pending());
    }
    assert_eq!(frame(&mut r), "abcdefghi");
    assert!(next(&mut r).is_pending());
    end(&mut r);
}

#[test]
fn several_frames_over_several_reads() {
    let mut r = reader([
        data(b"\0\0"),
        data(b"\0\x09abc"),
        data(b"defghi"),
        data(b"\0\0\0\x0312"),
        data(b"3\0\0\0\x0bhello world"),
    ]);
    assert_eq!(frame(&mut r), "abcdefghi");
    assert_eq!(frame(&mut r), "123");
    assert_eq!(frame(&mut r), "hello world");
    end(&mut r);
}

#[test]
fn an_incomplete_header_at_the_end_is_an_error() {
    let mut r = reader([data(b"\0\0"), data(b"\0")]);
    let e = error(&mut r);
    assert_eq!(e.kind(), io::ErrorKind::Other);
    assert_eq!(e.to_string(), "bytes remaining on stream");
    end(&mut r);
}

#[test]
fn an_incomplete_payload_at_the_end_is_an_error() {
    let mut r = reader([data(b"\0\0\0\x09ab"), Step::Pending, data(b"cdef")]);
    assert!(next(&mut r).is_pending());
    let e = error(&mut r);
    assert_eq!(e.kind(), io::ErrorKind::Other);
    assert_eq!(e.to_string(), "bytes remaining on stream");
    end(&mut r);
}

/// A header over the maximum is an error from the header alone: no memory is reserved for
/// the frame it announces.
#[test]
fn a_frame_over_the_maximum_is_an_error_not_an_allocation() {
    let pool = pool();
    let codec = LengthDelimitedCodec::builder()
        .max_frame_length(10)
        .new_codec();
    let mut r = FramedRead::with_pool(
        Mock::new([data(b"\0\0\0\x09abcdefghi\0\0\0\x0babcdefghijk")]),
        codec,
        pool.clone(),
        RecvPredictor::new(),
    );
    assert_eq!(frame(&mut r), "abcdefghi");
    let e = error(&mut r);
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    assert!(e.get_ref().unwrap().is::<LengthDelimitedCodecError>());
    assert_eq!(e.to_string(), "frame size too big");

    // A header claiming 4 GiB under the default maximum (8 MiB): refused before any room is
    // made for it.
    let mut codec = LengthDelimitedCodec::new();
    let mut buf = pool.allocate(16);
    buf.extend_from_slice(b"\xff\xff\xff\xff");
    let before = pool.stats();
    let e = codec.decode(&mut buf).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    assert_eq!(pool.stats().allocated_bytes, before.allocated_bytes);
    assert_eq!(buf.capacity(), pool.allocate(16).capacity());
}

#[test]
fn maximum_changed_between_frames_and_within_one() {
    let mut r = reader([data(b"\0\0\0\x09abcdefghi"), data(b"\0\0\0\x09abcdefghi")]);
    assert_eq!(frame(&mut r), "abcdefghi");
    r.decoder_mut().set_max_frame_length(5);
    assert_eq!(r.decoder().max_frame_length(), 5);
    assert_eq!(error(&mut r).kind(), io::ErrorKind::InvalidData);

    // Lowered after the header was read: the frame in flight still completes.
    let mut r = reader([data(b"\0\0\0\x09abcd"), Step::Pending, data(b"efghi")]);
    assert!(next(&mut r).is_pending());
    r.decoder_mut().set_max_frame_length(5);
    assert_eq!(frame(&mut r), "abcdefghi");
    end(&mut r);
}

#[test]
fn a_one_byte_length_field() {
    let mut r = LengthDelimitedCodec::builder()
        .length_field_length(1)
        .new_read(Mock::new([data(b"\x09abcdefghi")]));
    assert_eq!(frame(&mut r), "abcdefghi");
    end(&mut r);
}

#[test]
fn a_header_offset() {
    let mut r = LengthDelimitedCodec::builder()
        .length_field_length(3)
        .length_field_offset(2)
        .new_read(Mock::new([data(b"**\0\0\x09abcdefghi")]));
    assert_eq!(frame(&mut r), "abcdefghi");
    end(&mut r);
}

#[test]
fn no_skip_with_an_adjustment_keeps_the_header() {
    let mut r = LengthDelimitedCodec::builder()
        .length_field_length(3)
        .length_field_offset(2)
        .num_skip(0)
        .length_adjustment(5)
        .new_read(Mock::new([data(
            b"xx\0\0\x09abcdefghixx\0\0\x03123xx\0\0\x0bhello world",
        )]));
    assert_eq!(frame(&mut r), "xx\0\0\x09abcdefghi");
    assert_eq!(frame(&mut r), "xx\0\0\x03123");
    assert_eq!(frame(&mut r), "xx\0\0\x0bhello world");
    end(&mut r);
}

#[test]
fn a_length_that_counts_the_header() {
    // The length field counts its own 4 bytes.
    let mut r = LengthDelimitedCodec::builder()
        .length_adjustment(-4)
        .new_read(Mock::new([data(b"\0\0\0\x0dabcdefghi\0\0\0\x07123")]));
    assert_eq!(frame(&mut r), "abcdefghi");
    assert_eq!(frame(&mut r), "123");
    end(&mut r);
    // A length smaller than the adjustment is an error.
    let mut r = LengthDelimitedCodec::builder()
        .length_adjustment(-4)
        .new_read(Mock::new([data(b"\0\0\0\x02")]));
    assert_eq!(error(&mut r).kind(), io::ErrorKind::InvalidInput);
}

#[test]
fn a_positive_adjustment() {
    let mut r = LengthDelimitedCodec::builder()
        .length_adjustment(2)
        .new_read(Mock::new([data(b"\0\0\0\x07abcdefghi")]));
    assert_eq!(frame(&mut r), "abcdefghi");
    end(&mut r);
}

fn writer(steps: impl IntoIterator<Item = Step>) -> FramedWrite<Mock, LengthDelimitedCodec> {
    FramedWrite::new(Mock::new(steps), LengthDelimitedCodec::new())
}

#[test]
fn writing_nothing_writes_nothing() {
    let mut w = writer([]);
    assert!(flush::<Bytes, _>(&mut w).is_ready());
    assert!(w.get_ref().written.is_empty());
}

#[test]
fn one_frame_written() {
    let mut w = writer([data(b"\0\0\0\x09abcdefghi")]);
    assert!(ready::<Bytes, _>(&mut w).is_ready());
    send(&mut w, Bytes::from_static(b"abcdefghi")).unwrap();
    assert!(flush::<Bytes, _>(&mut w).is_ready());
    assert!(w.get_ref().steps.is_empty());
    // From a slice too.
    let mut w = writer([]);
    send(&mut w, &b"abc"[..]).unwrap();
    assert!(flush::<&[u8], _>(&mut w).is_ready());
    assert_eq!(w.get_ref().written, b"\0\0\0\x03abc");
}

#[test]
fn several_frames_written_in_one_or_several_writes() {
    let mut w = writer([data(b"\0\0\0\x09abcdefghi\0\0\0\x03123")]);
    send(&mut w, Bytes::from_static(b"abcdefghi")).unwrap();
    send(&mut w, Bytes::from_static(b"123")).unwrap();
    assert!(flush::<Bytes, _>(&mut w).is_ready());
    assert!(w.get_ref().steps.is_empty());

    let mut w = writer([
        data(b"\0\0\0\x09"),
        data(b"abcdefghi"),
        data(b"\0\0\0\x03123"),
    ]);
    send(&mut w, Bytes::from_static(b"abcdefghi")).unwrap();
    send(&mut w, Bytes::from_static(b"123")).unwrap();
    assert!(flush::<Bytes, _>(&mut w).is_ready());
    assert!(w.get_ref().steps.is_empty());
}

#[test]
fn a_write_that_would_block() {
    let mut w = writer([
        Step::Pending,
        data(b"\0\0"),
        Step::Pending,
        data(b"\0\x09"),
        data(b"abcdefghi"),
    ]);
    send(&mut w, Bytes::from_static(b"abcdefghi")).unwrap();
    assert!(flush::<Bytes, _>(&mut w).is_pending());
    assert!(flush::<Bytes, _>(&mut w).is_pending());
    assert!(flush::<Bytes, _>(&mut w).is_ready());
    assert!(w.get_ref().steps.is_empty());
}

#[test]
fn written_little_endian_and_short_and_adjusted() {
    let mut w = LengthDelimitedCodec::builder()
        .little_endian()
        .new_write(Mock::default());
    send(&mut w, Bytes::from_static(b"abcdefghi")).unwrap();
    assert!(flush::<Bytes, _>(&mut w).is_ready());
    assert_eq!(w.get_ref().written, b"\x09\0\0\0abcdefghi");

    let mut w = LengthDelimitedCodec::builder()
        .length_field_length(2)
        .new_write(Mock::default());
    send(&mut w, Bytes::from_static(b"abcdefghi")).unwrap();
    assert!(flush::<Bytes, _>(&mut w).is_ready());
    assert_eq!(w.get_ref().written, b"\0\x09abcdefghi");

    let mut w = LengthDelimitedCodec::builder()
        .length_adjustment(-2)
        .new_write(Mock::default());
    send(&mut w, Bytes::from_static(b"abcdefghi")).unwrap();
    assert!(flush::<Bytes, _>(&mut w).is_ready());
    assert_eq!(w.get_ref().written, b"\0\0\0\x0babcdefghi");
}

#[test]
fn writing_over_the_maximum_is_an_error() {
    let mut w = LengthDelimitedCodec::builder()
        .max_frame_length(5)
        .new_write(Mock::default());
    let e = send(&mut w, Bytes::from_static(b"abcdefghi")).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    assert!(e.get_ref().unwrap().is::<LengthDelimitedCodecError>());
    // Raised between frames: earlier frames are written.
    let mut w = writer([]);
    send(&mut w, Bytes::from_static(b"abc")).unwrap();
    w.encoder_mut().set_max_frame_length(2);
    assert!(send(&mut w, Bytes::from_static(b"abc")).is_err());
    assert!(flush::<Bytes, _>(&mut w).is_ready());
    assert_eq!(w.get_ref().written, b"\0\0\0\x03abc");
}

#[test]
fn a_writer_that_takes_nothing() {
    let mut w = writer([data(b"")]);
    send(&mut w, Bytes::from_static(b"abcdefghi")).unwrap();
    match flush::<Bytes, _>(&mut w) {
        Poll::Ready(Err(e)) => assert_eq!(e.kind(), io::ErrorKind::WriteZero),
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_adjustment_that_overflows_is_an_error() {
    let mut codec = LengthDelimitedCodec::builder()
        .length_adjustment(1)
        .new_codec();
    let mut buf = PooledBuf::new();
    assert!(codec.encode(&b""[..], &mut buf).is_err());
}

#[test]
fn frames_that_the_length_field_cannot_express() {
    // A 1-byte field holds up to 255.
    let mut codec = LengthDelimitedCodec::builder()
        .length_field_length(1)
        .new_codec();
    assert_eq!(codec.max_frame_length(), 255);
    let mut buf = PooledBuf::new();
    assert!(codec.encode(&[0u8; 256][..], &mut buf).is_err());
    assert!(codec.encode(&[0u8; 255][..], &mut buf).is_ok());
    assert_eq!(buf[0], 255);
    // Raising the maximum at run time is still capped by the field.
    codec.set_max_frame_length(1000);
    assert_eq!(codec.max_frame_length(), 255);
    // An adjustment moves the cap: a field of 255 means 255 - 1 bytes here...
    let codec = LengthDelimitedCodec::builder()
        .length_field_length(1)
        .length_adjustment(-1)
        .new_codec();
    assert_eq!(codec.max_frame_length(), 254);
    // ...and 255 + 1 there.
    let mut codec = LengthDelimitedCodec::builder()
        .length_field_length(1)
        .length_adjustment(1)
        .new_codec();
    assert_eq!(codec.max_frame_length(), 256);
    let mut buf = PooledBuf::new();
    assert!(codec.encode(&[0u8; 256][..], &mut buf).is_ok());
    assert_eq!(buf[0], 255);
    // Smaller maxima are kept as they are; an 8-byte field expresses anything.
    let codec = LengthDelimitedCodec::builder()
        .length_field_length(1)
        .max_frame_length(100)
        .new_codec();
    assert_eq!(codec.max_frame_length(), 100);
    let codec = LengthDelimitedCodec::builder()
        .length_field_type::<u64>()
        .max_frame_length(usize::MAX)
        .new_codec();
    assert_eq!(codec.max_frame_length(), usize::MAX);
}

#[test]
#[should_panic(expected = "invalid length field length")]
fn a_length_field_of_nine_bytes_is_refused() {
    LengthDelimitedCodec::builder().length_field_length(9);
}

#[test]
fn round_trip_over_a_framed_pair() {
    let mut w = writer([]);
    let payloads: Vec<Vec<u8>> = (0..50).map(|i| vec![i as u8; i * 37 % 300]).collect();
    for p in &payloads {
        assert!(ready::<Bytes, _>(&mut w).is_ready());
        send(&mut w, Bytes::copy_from_slice(p)).unwrap();
    }
    assert!(flush::<Bytes, _>(&mut w).is_ready());
    let wire = std::mem::take(&mut w.get_mut().written);
    let mut r = reader(wire.chunks(61).map(data).collect::<Vec<_>>());
    for p in &payloads {
        assert_eq!(frame(&mut r), &p[..]);
    }
    end(&mut r);
}
