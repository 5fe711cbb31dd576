//! `FramedWrite`: tokio-util's framed_write tests re-expressed, and the pooled write buffer.

use std::io;
use std::task::Poll;

use adaptive_pool::codec::{Encoder, FramedWrite, LengthDelimitedCodec};
use adaptive_pool::PooledBuf;
use bytes::BufMut;

use super::mock::{close, data, flush, pool, ready, send, Mock, Step};

/// Big-endian `u32`s.
struct U32Encoder;

impl Encoder<u32> for U32Encoder {
    type Error = io::Error;

    fn encode(&mut self, item: u32, dst: &mut PooledBuf) -> io::Result<()> {
        dst.reserve(4);
        dst.put_u32(item);
        Ok(())
    }
}

/// Big-endian `u64`s.
struct U64Encoder;

impl Encoder<u64> for U64Encoder {
    type Error = io::Error;

    fn encode(&mut self, item: u64, dst: &mut PooledBuf) -> io::Result<()> {
        dst.put_u64(item);
        Ok(())
    }
}

#[test]
fn several_frames_in_one_write() {
    let mock = Mock::new([data(b"\0\0\0\0\0\0\0\x01\0\0\0\x02")]);
    let mut framed = FramedWrite::new(mock, U32Encoder);
    for i in 0..3 {
        assert!(ready(&mut framed).is_ready());
        send(&mut framed, i).unwrap();
    }
    assert!(flush(&mut framed).is_ready());
    assert!(framed.get_ref().steps.is_empty());
    assert_eq!(framed.get_ref().flushes, 1);
}

#[test]
fn encoder_swapped_between_frames() {
    let mut framed = FramedWrite::new(Mock::default(), U32Encoder);
    send(&mut framed, 1).unwrap();
    let mut framed = framed.map_encoder(|_| U64Encoder);
    send(&mut framed, 2).unwrap();
    assert!(flush(&mut framed).is_ready());
    assert_eq!(framed.get_ref().written, b"\0\0\0\x01\0\0\0\0\0\0\0\x02");
}

/// `poll_ready` flushes once the buffer reaches the boundary; a writer that is not ready
/// makes it pending, and nothing is lost or reordered.
#[test]
fn a_slow_writer_pushes_back() {
    let count: u32 = if cfg!(miri) { 64 } else { 2048 };
    let boundary = count as usize * 2; // half of the bytes
    let mut mock = Mock::new([Step::Pending]);
    // Then the writer takes 1 KiB per write.
    let mut expected = Vec::new();
    for i in 0..=count {
        expected.extend_from_slice(&i.to_be_bytes());
    }
    for chunk in expected.chunks(1024) {
        mock.steps.push_back(data(chunk));
    }
    let mut framed = FramedWrite::new(mock, U32Encoder);
    framed.set_backpressure_boundary(boundary);
    assert_eq!(framed.backpressure_boundary(), boundary);
    let mut i = 0;
    while framed.write_buffer().len() < boundary {
        assert!(ready(&mut framed).is_ready());
        send(&mut framed, i).unwrap();
        i += 1;
    }
    // Over the boundary: the flush meets the pending writer.
    assert!(ready(&mut framed).is_pending());
    assert_eq!(framed.write_buffer().len(), boundary, "nothing written yet");
    // Ready again once the writer took everything.
    assert!(matches!(ready(&mut framed), std::task::Poll::Ready(Ok(()))));
    assert!(framed.write_buffer().is_empty());
    while i <= count {
        send(&mut framed, i).unwrap();
        i += 1;
    }
    assert!(flush(&mut framed).is_ready());
    assert_eq!(framed.get_ref().written, expected);
    assert!(framed.get_ref().steps.is_empty());
}

#[test]
fn partial_writes_keep_the_order() {
    let mut mock = Mock::default();
    for chunk in b"\0\0\0\x07\0\0\0\x08".chunks(3) {
        mock.steps.push_back(data(chunk));
    }
    let mut framed = FramedWrite::new(mock, U32Encoder);
    send(&mut framed, 7).unwrap();
    send(&mut framed, 8).unwrap();
    assert!(flush(&mut framed).is_ready());
    assert_eq!(framed.get_ref().written, b"\0\0\0\x07\0\0\0\x08");
}

#[test]
fn a_writer_that_takes_nothing_is_an_error() {
    let mut framed = FramedWrite::new(Mock::new([data(b"")]), U32Encoder);
    send(&mut framed, 1).unwrap();
    match flush(&mut framed) {
        std::task::Poll::Ready(Err(e)) => assert_eq!(e.kind(), io::ErrorKind::WriteZero),
        other => panic!("expected WriteZero, got {other:?}"),
    }
}

#[test]
fn writer_errors_pass_through() {
    let mock = Mock::new([Step::Fail(io::ErrorKind::BrokenPipe)]);
    let mut framed = FramedWrite::new(mock, U32Encoder);
    send(&mut framed, 1).unwrap();
    match flush(&mut framed) {
        std::task::Poll::Ready(Err(e)) => assert_eq!(e.kind(), io::ErrorKind::BrokenPipe),
        other => panic!("expected the writer's error, got {other:?}"),
    }
    assert_eq!(
        framed.write_buffer().len(),
        4,
        "the frame is still buffered"
    );
}

#[test]
fn the_write_buffer_is_held_only_while_it_has_bytes() {
    let pool = pool();
    let mut framed = FramedWrite::with_pool(Mock::default(), U32Encoder, pool.clone());
    assert!(pool.stats().is_quiet());
    send(&mut framed, 1).unwrap();
    assert_eq!(pool.stats().live_buffers, 1);
    assert!(flush(&mut framed).is_ready());
    assert_eq!(framed.write_buffer().capacity(), 0);
    assert!(pool.stats().is_quiet(), "{}", pool.stats());
    send(&mut framed, 2).unwrap();
    assert!(close(&mut framed).is_ready());
    assert!(framed.get_ref().shut_down);
    assert_eq!(framed.get_ref().written, b"\0\0\0\x01\0\0\0\x02");
    assert!(pool.stats().is_quiet(), "{}", pool.stats());
}

/// A back-pressure flush (`poll_ready` over the boundary) keeps the emptied buffer, back at
/// its region's start, for the item the caller sends next, as tokio-util keeps its capacity;
/// the burst's own flush gives it back, so nothing is held between bursts.
#[test]
fn a_back_pressure_flush_keeps_the_buffer_until_the_burst_is_flushed() {
    let pool = pool();
    let mut framed = FramedWrite::with_pool(Mock::default(), U32Encoder, pool.clone());
    framed.set_backpressure_boundary(8);
    send(&mut framed, 1).unwrap();
    let start = framed.write_buffer().as_ptr();
    send(&mut framed, 2).unwrap();
    assert!(matches!(ready(&mut framed), Poll::Ready(Ok(()))));
    assert_eq!(framed.get_ref().written, b"\0\0\0\x01\0\0\0\x02");
    let kept = framed.write_buffer();
    assert!(kept.is_empty());
    assert!(kept.capacity() > 0, "kept for the next item");
    assert_eq!(kept.as_ptr(), start, "back at the start of the same region");
    assert_eq!(pool.stats().live_buffers, 1);
    send(&mut framed, 3).unwrap();
    assert_eq!(framed.write_buffer().as_ptr(), start);
    assert_eq!(pool.stats().live_buffers, 1, "no new buffer for the item");
    assert!(flush(&mut framed).is_ready());
    assert_eq!(framed.write_buffer().capacity(), 0);
    assert!(pool.stats().is_quiet(), "{}", pool.stats());
    assert_eq!(framed.get_ref().written, b"\0\0\0\x01\0\0\0\x02\0\0\0\x03");
}

/// A buffer grown past 64 KiB by a large item is not kept across a back-pressure flush.
#[test]
fn a_large_write_buffer_is_not_kept() {
    let pool = pool();
    let mut framed =
        FramedWrite::with_pool(Mock::default(), LengthDelimitedCodec::new(), pool.clone());
    let large = vec![7u8; 100 << 10];
    send(&mut framed, &large[..]).unwrap();
    assert!(framed.write_buffer().capacity() > 64 << 10);
    assert!(matches!(
        ready::<&[u8], _>(&mut framed),
        Poll::Ready(Ok(()))
    ));
    assert_eq!(framed.write_buffer().capacity(), 0, "given back");
    assert!(pool.stats().is_quiet(), "{}", pool.stats());
    assert_eq!(framed.get_ref().written.len(), 4 + large.len());
}

/// An item copied from the start of a pooled region (a frame at the start of a read buffer)
/// never lands 1 to 31 bytes past its source's offset in a page: the distances at which x86's
/// `rep movsb` (glibc's `memcpy` for copies of several KiB) slows down (30 to 40 times at 1 to
/// 15 bytes). Pooled
/// regions of 16 and 20 KiB start on page boundaries, so without the write buffer's
/// one-line pad each 16 KiB item here lands 4 bytes (its header) past its source.
#[test]
#[cfg(target_os = "linux")]
#[cfg_attr(
    miri,
    ignore = "relies on regions at page boundaries, as the OS maps them"
)]
fn items_do_not_land_just_past_their_source_in_a_page() {
    let pool = pool();
    let mut source = pool.allocate(16 << 10);
    source.put_bytes(9, 16 << 10);
    let mut framed =
        FramedWrite::with_pool(Mock::default(), LengthDelimitedCodec::new(), pool.clone());
    for i in 0..8 {
        assert!(matches!(
            ready::<&[u8], _>(&mut framed),
            Poll::Ready(Ok(()))
        ));
        send(&mut framed, &source[..]).unwrap();
        let w = framed.write_buffer();
        let dst = w.as_ptr() as usize + w.len() - source.len();
        let distance = dst.wrapping_sub(source.as_ptr() as usize) % 4096;
        // The first item lands in the buffer it outgrew (moved to a new region's start).
        if i > 0 {
            assert!(
                !(1..32).contains(&distance),
                "item {i}: {distance} bytes past its source's page offset"
            );
        }
    }
    assert!(flush::<&[u8], _>(&mut framed).is_ready());
    assert_eq!(framed.get_ref().written.len(), 8 * (4 + (16 << 10)));
}
