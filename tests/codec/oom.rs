//! Out of memory in the middle of a frame (issue 21, part 2): the pool refuses an
//! allocation, the stream reports it, memory comes back, and decoding resumes on the right
//! frame boundary, for every codec. Before the fix, `LengthDelimitedCodec` had skipped the
//! header before the refused reservation and then read payload bytes as the next header.

use std::io;
use std::task::Poll;

use adaptive_pool::codec::{
    AnyDelimiterCodec, AnyDelimiterCodecError, BytesCodec, Decoder, FramedRead,
    LengthDelimitedCodec, LinesCodec, LinesCodecError,
};
use adaptive_pool::io::OutOfMemory;
use adaptive_pool::{AdaptiveAllocator, AllocError, PooledBuf, RecvPredictor};
use bytes::BufMut;

use super::mock::{data, end, error, frame, next, Mock, Step};

/// A pool of 1 MiB.
fn limited() -> AdaptiveAllocator {
    AdaptiveAllocator::builder()
        .max_memory(1 << 20)
        .max_chunk_size(256 << 10)
        .build()
        .expect("valid settings")
}

/// Takes every byte the pool will still give in buffers of 64 B or more, the larger first,
/// in every size class up to 64 KiB (a class whose chunk has room would serve a read).
fn exhaust(pool: &AdaptiveAllocator) -> Vec<PooledBuf> {
    let mut hogs = Vec::new();
    for size in (1..=1024).rev().map(|i| i * 64) {
        while let Ok(b) = pool.try_allocate(size) {
            hogs.push(b);
        }
    }
    assert!(!hogs.is_empty(), "the pool had room to take");
    hogs
}

/// The error is the pool's refusal, and says how much the pool holds.
#[track_caller]
fn assert_out_of_memory(e: &io::Error) {
    assert_eq!(e.kind(), io::ErrorKind::OutOfMemory, "{e}");
    let oom = e
        .get_ref()
        .and_then(|e| e.downcast_ref::<OutOfMemory>())
        .expect("an OutOfMemory inside");
    assert!(matches!(oom.alloc_error(), AllocError::MemoryLimit { .. }));
    assert!(oom.allocated_bytes() > 0);
    assert!(e.to_string().contains("the pool holds"), "{e}");
}

/// A 4-byte big-endian length and `payload`.
fn frame_bytes(payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(payload);
    f
}

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// The decoder alone: the refused reservation consumes nothing, and the frame decodes once
/// memory is back.
#[test]
fn length_delimited_decode_keeps_the_header_when_the_pool_refuses() {
    let pool = limited();
    let big = payload(200 << 10);
    let mut buf = pool.allocate(4096);
    buf.put_slice(&frame_bytes(&big)[..1004]);
    let hogs = exhaust(&pool);
    let mut codec = LengthDelimitedCodec::new();
    let e = codec.decode(&mut buf).unwrap_err();
    assert_out_of_memory(&e);
    assert_eq!(buf.len(), 1004, "nothing consumed");
    assert_eq!(&buf[..4], &(200u32 << 10).to_be_bytes());
    // Still refused: the same error, the same bytes.
    assert_out_of_memory(&codec.decode(&mut buf).unwrap_err());
    assert_eq!(buf.len(), 1004);

    drop(hogs);
    assert_eq!(
        codec.decode(&mut buf).unwrap(),
        None,
        "the payload is incomplete"
    );
    assert!(buf.capacity() >= 200 << 10, "room for the whole frame");
    let wire = frame_bytes(&big);
    buf.put_slice(&wire[1004..]);
    buf.put_slice(b"\0\0\0\x03abc");
    assert_eq!(codec.decode(&mut buf).unwrap().unwrap(), &big[..]);
    assert_eq!(codec.decode(&mut buf).unwrap().unwrap(), "abc");
    assert!(buf.is_empty());
}

/// The server: a 200 KiB frame over a 1 MiB limit, the stream polled again after
/// memory came back, yields that frame and then the next, not a forged one.
#[test]
fn length_delimited_stream_resumes_on_the_frame_boundary() {
    let pool = limited();
    let big = payload(200 << 10);
    let mut first = frame_bytes(b"hi");
    let wire = frame_bytes(&big);
    first.extend_from_slice(&wire[..1004]);
    let mut rest = wire[1004..].to_vec();
    rest.extend_from_slice(&frame_bytes(b"abc"));
    let mut r = FramedRead::with_pool(
        Mock::new([data(&first), Step::Pending, data(&rest)]),
        LengthDelimitedCodec::new(),
        pool.clone(),
        RecvPredictor::new(),
    );
    assert_eq!(frame(&mut r), "hi");
    let hogs = exhaust(&pool);
    assert_out_of_memory(&error(&mut r));
    end(&mut r);
    // Polled while memory is still short: the same refusal, nothing lost.
    assert_out_of_memory(&error(&mut r));
    end(&mut r);
    drop(hogs);
    // The buffered header is decoded again first; the rest of the payload is read after it.
    assert!(next(&mut r).is_pending());
    assert_eq!(frame(&mut r), &big[..]);
    assert_eq!(frame(&mut r), "abc");
    end(&mut r);
    assert_eq!(r.get_ref().steps.len(), 0);
}

/// A read whose room the pool refuses, in the middle of a line or chunk: the error, then
/// the line or chunk whole once memory is back. `decoded` turns an item into its bytes,
/// `io_error` the decoder's error into the I/O error inside it.
fn resumes_mid_frame<D, F, G>(decoder: D, delimiter: u8, decoded: F, io_error: G)
where
    D: Decoder,
    D::Error: std::fmt::Debug,
    D::Item: std::fmt::Debug,
    F: Fn(D::Item) -> Vec<u8>,
    G: Fn(D::Error) -> io::Error,
{
    let pool = limited();
    const LONG: usize = 200 << 10;
    let mut wire = vec![b'a'; LONG];
    wire.push(delimiter);
    wire.extend_from_slice(b"next");
    wire.push(delimiter);
    // 64 KiB per read: the first fills its buffer, the second grows it, then the pool is
    // exhausted and the next growth is refused.
    let predictor = RecvPredictor::with_bounds(64 << 10, 64 << 10, 64 << 10).unwrap();
    let mut r = FramedRead::with_pool(
        Mock::new([
            data(&wire[..64 << 10]),
            Step::Pending,
            data(&wire[64 << 10..]),
        ]),
        decoder,
        pool.clone(),
        predictor,
    );
    assert!(next(&mut r).is_pending());
    let buffered = r.read_buffer().len();
    assert!(buffered >= 64 << 10);
    let hogs = exhaust(&pool);
    let e = match next(&mut r) {
        Poll::Ready(Some(Err(e))) => io_error(e),
        other => panic!("expected the refusal, got {other:?}"),
    };
    assert_out_of_memory(&e);
    assert!(r.read_buffer().len() >= buffered, "nothing dropped");
    end(&mut r);
    drop(hogs);
    let line = match next(&mut r) {
        Poll::Ready(Some(Ok(line))) => decoded(line),
        other => panic!("expected the long frame, got {other:?}"),
    };
    assert_eq!(line.len(), LONG);
    assert!(line.iter().all(|&b| b == b'a'));
    let next_one = match next(&mut r) {
        Poll::Ready(Some(Ok(line))) => decoded(line),
        other => panic!("expected the next frame, got {other:?}"),
    };
    assert_eq!(next_one, b"next");
    end(&mut r);
}

#[test]
fn lines_resume_on_the_line_boundary() {
    resumes_mid_frame(LinesCodec::new(), b'\n', String::into_bytes, |e| match e {
        LinesCodecError::Io(e) => e,
        other => panic!("{other:?}"),
    });
}

#[test]
fn any_delimiter_chunks_resume_on_the_chunk_boundary() {
    resumes_mid_frame(
        AnyDelimiterCodec::default(),
        b';',
        |c| c.to_vec(),
        |e| match e {
            AnyDelimiterCodecError::Io(e) => e,
            other => panic!("{other:?}"),
        },
    );
}

/// `BytesCodec`: each read is a frame; a refused buffer loses no byte of the stream.
#[test]
fn bytes_resume_with_the_next_read() {
    let pool = limited();
    let mut r = FramedRead::with_pool(
        Mock::new([data(b"one,"), Step::Pending, data(b"two,"), data(b"three")]),
        BytesCodec::new(),
        pool.clone(),
        RecvPredictor::new(),
    );
    let mut got = Vec::new();
    let one = frame(&mut r);
    got.extend_from_slice(&one);
    assert!(next(&mut r).is_pending());
    // The first frame is kept, so the next read needs a new buffer, which is refused.
    let hogs = exhaust(&pool);
    assert_out_of_memory(&error(&mut r));
    end(&mut r);
    drop(hogs);
    while let Poll::Ready(Some(f)) = next(&mut r) {
        got.extend_from_slice(&f.unwrap());
    }
    assert_eq!(got, b"one,two,three");
    drop((one, r));
    assert!(pool.stats().is_quiet(), "{}", pool.stats());
}
