//! `FramedWrite`: tokio-util's framed_write tests re-expressed, and the pooled write buffer.

use std::io;

use adaptive_pool::codec::{Encoder, FramedWrite};
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
