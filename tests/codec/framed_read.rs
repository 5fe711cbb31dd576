//! `FramedRead`: tokio-util's framed_read tests re-expressed, and the pooled read path.

use std::io;
use std::task::Poll;

use adaptive_pool::codec::{BytesCodec, Decoder, FramedRead, LengthDelimitedCodec};
use adaptive_pool::{AdaptiveAllocator, PooledBuf, RecvPredictor};
use bytes::{Buf, BufMut, Bytes};

use super::mock::{data, end, error, frame, next, pool, Mock, Step};

/// Big-endian `u32`s, one per frame.
struct U32Decoder;

impl Decoder for U32Decoder {
    type Item = u32;
    type Error = io::Error;

    fn decode(&mut self, buf: &mut PooledBuf) -> io::Result<Option<u32>> {
        if buf.len() < 4 {
            return Ok(None);
        }
        Ok(Some(buf.get_u32()))
    }
}

/// Big-endian `u64`s, one per frame (for swapping decoders).
struct U64Decoder;

impl Decoder for U64Decoder {
    type Item = u64;
    type Error = io::Error;

    fn decode(&mut self, buf: &mut PooledBuf) -> io::Result<Option<u64>> {
        if buf.len() < 8 {
            return Ok(None);
        }
        Ok(Some(buf.get_u64()))
    }
}

#[test]
fn several_frames_in_one_read() {
    let mock = Mock::new([data(b"\0\0\0\0\0\0\0\x01\0\0\0\x02")]);
    let mut framed = FramedRead::new(mock, U32Decoder);
    assert_eq!(frame(&mut framed), 0);
    assert_eq!(frame(&mut framed), 1);
    assert_eq!(frame(&mut framed), 2);
    end(&mut framed);
}

#[test]
fn frames_across_reads() {
    let mock = Mock::new([
        data(b"\0\0"),
        data(b"\0\0\0\0"),
        data(b"\0\x01\0\0\0"),
        data(b"\x02"),
    ]);
    let mut framed = FramedRead::new(mock, U32Decoder);
    assert_eq!(frame(&mut framed), 0);
    assert_eq!(frame(&mut framed), 1);
    assert_eq!(frame(&mut framed), 2);
    end(&mut framed);
}

#[test]
fn decoder_swapped_between_frames_keeps_the_buffered_bytes() {
    let mock = Mock::new([data(b"\0\0\0\x01\0\0\0\0\0\0\0\x02")]);
    let mut framed = FramedRead::new(mock, U32Decoder);
    assert_eq!(frame(&mut framed), 1);
    let mut framed = framed.map_decoder(|_| U64Decoder);
    assert_eq!(frame(&mut framed), 2);
    end(&mut framed);
}

#[test]
fn not_ready_is_pending() {
    let mut framed = FramedRead::new(Mock::new([Step::Pending]), U32Decoder);
    assert!(next(&mut framed).is_pending());
    end(&mut framed);
}

#[test]
fn partial_then_not_ready_then_the_rest() {
    let mock = Mock::new([
        data(b"\0\0"),
        Step::Pending,
        data(b"\0\0\0\0\0\x01\0\0\0\x02"),
    ]);
    let mut framed = FramedRead::new(mock, U32Decoder);
    assert!(next(&mut framed).is_pending());
    assert_eq!(framed.read_buffer().len(), 2, "the partial frame is kept");
    assert_eq!(frame(&mut framed), 0);
    assert_eq!(frame(&mut framed), 1);
    assert_eq!(frame(&mut framed), 2);
    end(&mut framed);
}

#[test]
fn read_error_is_yielded_then_the_stream_ends() {
    let mock = Mock::new([Step::Fail(io::ErrorKind::ConnectionReset)]);
    let mut framed = FramedRead::new(mock, U32Decoder);
    assert_eq!(error(&mut framed).kind(), io::ErrorKind::ConnectionReset);
    end(&mut framed);
}

#[test]
fn partial_then_error() {
    let mock = Mock::new([data(b"\0\0"), Step::Fail(io::ErrorKind::Other)]);
    let mut framed = FramedRead::new(mock, U32Decoder);
    assert_eq!(error(&mut framed).kind(), io::ErrorKind::Other);
}

#[test]
fn partial_then_pending_then_error() {
    let mock = Mock::new([
        data(b"\0\0"),
        Step::Pending,
        Step::Fail(io::ErrorKind::Other),
    ]);
    let mut framed = FramedRead::new(mock, U32Decoder);
    assert!(next(&mut framed).is_pending());
    assert_eq!(error(&mut framed).kind(), io::ErrorKind::Other);
}

#[test]
fn decoder_error_ends_the_stream_once() {
    struct Refuses;
    impl Decoder for Refuses {
        type Item = ();
        type Error = io::Error;
        fn decode(&mut self, buf: &mut PooledBuf) -> io::Result<Option<()>> {
            buf.clear();
            Err(io::Error::new(io::ErrorKind::InvalidData, "refused"))
        }
    }
    let mut framed = FramedRead::new(Mock::new([data(b"x"), data(b"y")]), Refuses);
    assert_eq!(error(&mut framed).kind(), io::ErrorKind::InvalidData);
    end(&mut framed);
    // Polled again, it reads on (as tokio-util's does).
    assert_eq!(error(&mut framed).kind(), io::ErrorKind::InvalidData);
}

#[test]
fn a_frame_larger_than_any_read() {
    struct Big;
    impl Decoder for Big {
        type Item = usize;
        type Error = io::Error;
        fn decode(&mut self, buf: &mut PooledBuf) -> io::Result<Option<usize>> {
            const SIZE: usize = 32 << 10;
            if buf.len() < SIZE {
                return Ok(None);
            }
            assert!(buf[..SIZE].iter().all(|&b| b == 7));
            buf.advance(SIZE);
            Ok(Some(SIZE))
        }
    }
    let bytes = vec![7u8; 32 << 10];
    let mut framed = FramedRead::new(&bytes[..], Big);
    assert_eq!(frame(&mut framed), 32 << 10);
    end(&mut framed);
}

#[test]
fn bytes_left_at_the_end_are_an_error() {
    let mut framed = FramedRead::new(&[0u8; 5][..], U32Decoder);
    assert_eq!(frame(&mut framed), 0);
    let e = error(&mut framed);
    // tokio-util's kind and message.
    assert_eq!(e.kind(), io::ErrorKind::Other);
    assert_eq!(e.to_string(), "bytes remaining on stream");
    end(&mut framed);
}

/// Yields a frame per byte left at the end of the stream.
struct EofFrames;

impl Decoder for EofFrames {
    type Item = u8;
    type Error = io::Error;

    fn decode(&mut self, _buf: &mut PooledBuf) -> io::Result<Option<u8>> {
        Ok(None)
    }

    fn decode_eof(&mut self, buf: &mut PooledBuf) -> io::Result<Option<u8>> {
        Ok((!buf.is_empty()).then(|| buf.get_u8()))
    }
}

#[test]
fn several_frames_at_the_end() {
    let mut framed = FramedRead::new(Mock::new([data(b"\x01\x02\x03")]), EofFrames);
    assert_eq!(frame(&mut framed), 1);
    assert_eq!(frame(&mut framed), 2);
    assert_eq!(frame(&mut framed), 3);
    end(&mut framed);
}

#[test]
fn a_stream_that_resumes_after_its_end() {
    // A reader that reports the end, then has more (a growing file): one `None` per end.
    let mut framed = FramedRead::new(Mock::new([data(b"\x01\x02")]), EofFrames);
    assert_eq!(frame(&mut framed), 1);
    assert_eq!(frame(&mut framed), 2);
    end(&mut framed);
    framed.get_mut().steps.push_back(data(b"\x03"));
    assert_eq!(frame(&mut framed), 3);
    end(&mut framed);
    end(&mut framed);
}

#[test]
fn frames_are_split_off_the_read_buffer_without_copying() {
    let mock = Mock::new([data(b"\0\0\0\x03abc\0\0\0\x02de")]);
    let mut framed = FramedRead::new(mock, LengthDelimitedCodec::new());
    let first = frame(&mut framed);
    assert_eq!(first, "abc");
    // The rest of the read follows the frame in the same memory.
    let rest = framed.read_buffer();
    assert_eq!(&rest[..], b"\0\0\0\x02de");
    assert_eq!(first.as_ptr().wrapping_add(3), rest.as_ptr());
    assert_eq!(frame(&mut framed), "de");
}

/// The standard framed-read loop: each frame is dropped before the next read. The read
/// buffer is then the only handle on its region, and every read lands in the same region
/// (`BytesMut` does the same; the pool used to move to a new region on every other frame).
#[test]
fn the_read_buffer_is_reused_in_place_between_frames() {
    let pool = pool();
    let frames = if cfg!(miri) { 10 } else { 100 };
    let mut steps = Vec::new();
    for i in 0..frames {
        let mut f = vec![0, 0, 0, 100];
        f.extend(std::iter::repeat_n(i as u8, 100));
        steps.push(Step::Data(f));
    }
    let predictor = RecvPredictor::with_bounds(256, 256, 256).unwrap();
    let mut framed = FramedRead::with_pool(
        Mock::new(steps),
        LengthDelimitedCodec::new(),
        pool.clone(),
        predictor,
    );
    let mut addresses = Vec::new();
    for i in 0..frames {
        let f = frame(&mut framed);
        assert!(f.iter().all(|&b| b == i as u8));
        addresses.push(f.as_ptr() as usize);
        drop(f);
    }
    assert!(
        addresses.iter().all(|&a| a == addresses[0]),
        "the read buffer moved: {addresses:x?}"
    );
    let s = pool.stats();
    assert_eq!(s.live_buffers, 1, "{s}");
    end(&mut framed);
    assert!(pool.stats().is_quiet(), "{}", pool.stats());
}

/// While frames are still alive, the unread rest moves to a new region; the frames keep
/// the old one, and every byte is intact.
#[test]
fn frames_kept_alive_keep_their_region_and_reads_move_on() {
    let pool = pool();
    let mut wire = Vec::new();
    for i in 0..20u8 {
        wire.extend_from_slice(&[0, 0, 0, 50]);
        wire.extend(std::iter::repeat_n(i, 50));
    }
    let steps = wire.chunks(37).map(data).collect::<Vec<_>>();
    let predictor = RecvPredictor::with_bounds(64, 64, 64).unwrap();
    let mut framed = FramedRead::with_pool(
        Mock::new(steps),
        LengthDelimitedCodec::new(),
        pool.clone(),
        predictor,
    );
    let mut kept: Vec<PooledBuf> = Vec::new();
    for _ in 0..20 {
        kept.push(frame(&mut framed));
    }
    end(&mut framed);
    for (i, f) in kept.iter().enumerate() {
        assert_eq!(&f[..], &[i as u8; 50][..], "frame {i}");
    }
    assert!(pool.stats().live_buffers > 1);
    drop(kept);
    assert!(pool.stats().is_quiet(), "{}", pool.stats());
}

#[test]
fn an_idle_connection_holds_no_buffer() {
    let pool = pool();
    let mock = Mock::new([
        data(b"\0\0\0\x02hi"),
        Step::Pending,
        Step::Pending,
        data(b"\0\0\0"),
        Step::Pending,
        data(b"\x01!"),
        Step::Pending,
    ]);
    let mut framed = FramedRead::with_pool(
        mock,
        LengthDelimitedCodec::new(),
        pool.clone(),
        RecvPredictor::new(),
    );
    let hi = frame(&mut framed);
    assert_eq!(hi, "hi");
    drop(hi);
    // Waiting with nothing buffered: no memory held.
    assert!(next(&mut framed).is_pending());
    assert_eq!(framed.read_buffer().capacity(), 0);
    assert!(pool.stats().is_quiet(), "{}", pool.stats());
    assert!(next(&mut framed).is_pending());
    assert!(pool.stats().is_quiet(), "{}", pool.stats());
    // A partial frame is kept while waiting.
    assert!(next(&mut framed).is_pending());
    assert_eq!(&framed.read_buffer()[..], b"\0\0\0");
    assert_eq!(pool.stats().live_buffers, 1);
    assert_eq!(frame(&mut framed), "!");
    assert!(next(&mut framed).is_pending());
    assert!(pool.stats().is_quiet(), "{}", pool.stats());
    // At the end of the stream too.
    end(&mut framed);
    assert_eq!(framed.read_buffer().capacity(), 0);
}

#[test]
fn reads_are_offered_the_predicted_size() {
    let pool = pool();
    let predictor = RecvPredictor::with_bounds(64, 1024, 16 << 10).unwrap();
    // Full reads: the offered room grows x4 per read, up to the maximum.
    let steps = [1024, 4096, 16384, 16384, 100, 100, 100]
        .iter()
        .map(|&n| Step::Data(vec![1; n]))
        .collect::<Vec<_>>();
    let mut framed = FramedRead::with_pool(Mock::new(steps), BytesCodec::new(), pool, predictor);
    let mut sizes = Vec::new();
    while let Poll::Ready(Some(f)) = next(&mut framed) {
        sizes.push(f.unwrap().len());
    }
    assert_eq!(sizes, [1024, 4096, 16384, 16384, 100, 100, 100]);
    let offered = &framed.get_ref().offered;
    let predicted = [1024, 4096, 16384, 16384, 16384, 16384, 8192, 8192];
    assert_eq!(offered.len(), predicted.len());
    // Each read is offered at least the prediction (more when the buffer reuses a larger
    // region in place), and never more than the largest prediction's size class.
    for (o, p) in offered.iter().zip(predicted) {
        assert!(*o >= p && *o <= 20 << 10, "offered {offered:?}");
    }
    assert_eq!(framed.predictor().next_size(), 8192);
}

#[test]
fn a_refused_buffer_is_an_out_of_memory_error() {
    let pool = AdaptiveAllocator::builder()
        .max_memory(128 << 10)
        .build()
        .unwrap();
    let predictor = RecvPredictor::with_bounds(1 << 20, 1 << 20, 1 << 20).unwrap();
    let mut framed = FramedRead::with_pool(
        Mock::new([data(b"never read")]),
        BytesCodec::new(),
        pool.clone(),
        predictor,
    );
    let e = error(&mut framed);
    assert_eq!(e.kind(), io::ErrorKind::OutOfMemory);
    assert!(framed.get_ref().offered.is_empty(), "nothing was read");
    end(&mut framed);
    assert!(pool.stats().is_quiet());
}

#[test]
fn with_capacity_sets_the_first_read() {
    let mut framed = FramedRead::with_capacity(Mock::new([data(b"x")]), BytesCodec::new(), 300);
    assert_eq!(framed.predictor().next_size(), 300);
    assert_eq!(frame(&mut framed), "x");
    assert!(framed.get_ref().offered[0] >= 300);
}

/// Frames are `PooledBuf`s, mutable as tokio-util's `BytesMut` frames: changed in place,
/// grown, then frozen into `Bytes` on the same memory.
#[test]
fn frames_are_mutable_pooled_buffers() {
    let pool = pool();
    let mock = Mock::new([data(b"\0\0\0\x05hello\0\0\0\x02ab")]);
    let mut framed = FramedRead::with_pool(
        mock,
        LengthDelimitedCodec::new(),
        pool.clone(),
        RecvPredictor::new(),
    );
    let mut hello: PooledBuf = frame(&mut framed);
    hello[0] = b'j';
    hello.put_slice(b", world");
    assert_eq!(hello, "jello, world");
    let at = hello.as_ptr();
    let frozen: Bytes = hello.freeze();
    assert_eq!(frozen.as_ptr(), at, "frozen in place");
    let ab = frame(&mut framed);
    assert_eq!(ab, "ab");
    end(&mut framed);
    drop((frozen, ab));
    assert!(pool.stats().is_quiet(), "{}", pool.stats());
}

/// The first read of `new` is offered tokio-util's initial capacity, 8 KiB.
#[test]
fn the_first_read_is_offered_8_kib_as_in_tokio_util() {
    let mut framed = FramedRead::new(Mock::new([data(b"x")]), BytesCodec::new());
    assert_eq!(framed.predictor().next_size(), 8 << 10);
    assert_eq!(frame(&mut framed), "x");
    let first = framed.get_ref().offered[0];
    assert!((8 << 10..=10 << 10).contains(&first), "offered {first}");
}

/// A `FramedRead` over a transport that is also a `Sink` is that `Sink` (tokio-util's
/// pass-through), e.g. a `Framed` read half wrapped again.
#[test]
fn a_sink_passes_through_framed_read() {
    use adaptive_pool::codec::{Framed, LinesCodec};
    use futures_util::{SinkExt, StreamExt};

    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(async {
            let (a, b) = tokio::io::duplex(64);
            // A `Framed` of lines, itself read through a `FramedRead`'s pass-through
            // `Sink`: the outer stream decodes nothing of its own (it is never polled).
            let mut outer = FramedRead::new(Framed::new(a, LinesCodec::new()), BytesCodec::new());
            outer.send("through").await.unwrap();
            let mut b = Framed::new(b, LinesCodec::new());
            assert_eq!(b.next().await.unwrap().unwrap(), "through");
        });
}
