//! `FramedParts`, `into_parts` and `from_parts`: tokio-util's framed tests re-expressed
//! (a pre-filled read buffer is decoded before anything is read), and protocol upgrades
//! that change the codec without losing a byte either way.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use adaptive_pool::codec::{
    BytesCodec, Decoder, Encoder, Framed, FramedParts, FramedRead, FramedWrite,
    LengthDelimitedCodec, LinesCodec,
};
use adaptive_pool::{PooledBuf, RecvPredictor};
use bytes::{Buf, BufMut, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::mock::{data, end, flush, frame, next, pool, send, Mock, Step};

/// A transport that must not be read or written.
struct DontReadIntoThis;

impl AsyncRead for DontReadIntoThis {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        panic!("read from a transport whose frames were all buffered")
    }
}

impl AsyncWrite for DontReadIntoThis {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, _: &[u8]) -> Poll<io::Result<usize>> {
        panic!("written to")
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Big-endian `u32`s, counting the bytes and the calls it decoded.
#[derive(Default)]
struct U32Codec {
    read_bytes: usize,
    decodes: usize,
}

impl Decoder for U32Codec {
    type Item = u32;
    type Error = io::Error;

    fn decode(&mut self, buf: &mut PooledBuf) -> io::Result<Option<u32>> {
        self.decodes += 1;
        if buf.len() < 4 {
            return Ok(None);
        }
        self.read_bytes += 4;
        Ok(Some(buf.get_u32()))
    }
}

impl Encoder<u32> for U32Codec {
    type Error = io::Error;

    fn encode(&mut self, item: u32, dst: &mut PooledBuf) -> io::Result<()> {
        dst.reserve(4);
        dst.put_u32(item);
        Ok(())
    }
}

/// Big-endian `u64`s, continuing a `U32Codec`'s count.
struct U64Codec {
    read_bytes: usize,
}

impl Decoder for U64Codec {
    type Item = u64;
    type Error = io::Error;

    fn decode(&mut self, buf: &mut PooledBuf) -> io::Result<Option<u64>> {
        if buf.len() < 8 {
            return Ok(None);
        }
        self.read_bytes += 8;
        Ok(Some(buf.get_u64()))
    }
}

#[test]
fn a_prefilled_read_buffer_is_decoded_before_any_read() {
    let mut parts = FramedParts::new::<u32>(DontReadIntoThis, U32Codec::default());
    parts.read_buf = PooledBuf::from(&[0, 0, 0, 42][..]);
    let mut framed = Framed::from_parts(parts);
    assert_eq!(frame(&mut framed), 42);
    assert_eq!(framed.codec().read_bytes, 4);
}

#[test]
fn a_prefilled_read_buffer_after_the_codec_changed() {
    let mut parts = FramedParts::new::<u32>(DontReadIntoThis, U32Codec::default());
    parts.read_buf = PooledBuf::from(&[0, 0, 0, 42, 0, 0, 0, 0, 0, 0, 0, 84][..]);
    let mut framed = Framed::from_parts(parts);
    assert_eq!(frame(&mut framed), 42);
    let mut framed = framed.map_codec(|c| U64Codec {
        read_bytes: c.read_bytes,
    });
    assert_eq!(frame(&mut framed), 84);
    assert_eq!(framed.codec().read_bytes, 12);
}

/// tokio-util's regression test: an empty read buffer with capacity (as `into_parts` leaves
/// it) is not decoded before the first read.
#[test]
fn an_empty_read_buffer_is_not_decoded_before_a_read() {
    let mut parts = FramedParts::new::<u32>(Mock::new([data(&[0, 0, 0, 42])]), U32Codec::default());
    parts.read_buf = PooledBuf::with_capacity(8 << 10);
    let mut framed = Framed::from_parts(parts);
    assert_eq!(frame(&mut framed), 42);
    assert_eq!(framed.codec().decodes, 1);
}

/// A line-based handshake, then length-delimited frames, the first of them in the same
/// read as the handshake: after the upgrade it comes out at once, without another read.
#[test]
fn a_protocol_upgrade_keeps_the_bytes_read_ahead() {
    let pool = pool();
    let mock = Mock::new([
        data(b"STARTTLS\n\0\0\0\x05hello\0\0"),
        Step::Pending,
        data(b"\0\x02hi"),
    ]);
    let mut lines = Framed::with_pool(mock, LinesCodec::new(), pool.clone(), RecvPredictor::new());
    assert_eq!(frame(&mut lines), "STARTTLS");
    let reads = lines.get_ref().offered.len();

    let parts = lines.into_parts();
    assert_eq!(parts.read_buf, &b"\0\0\0\x05hello\0\0"[..]);
    let mut upgraded = FramedParts::new::<Bytes>(parts.io, LengthDelimitedCodec::new());
    upgraded.read_buf = parts.read_buf;
    upgraded.write_buf = parts.write_buf;
    let mut frames = Framed::from_parts(upgraded);
    assert_eq!(frame(&mut frames), "hello");
    assert_eq!(
        frames.get_ref().offered.len(),
        reads,
        "decoded without a read"
    );
    // The partial header stays buffered; the rest comes with the next reads.
    assert!(next(&mut frames).is_pending());
    assert_eq!(frame(&mut frames), "hi");
    end(&mut frames);
    // The buffers come from the pool of the `Framed` the parts came from.
    let before = pool.stats().live_buffers;
    let probe = frames.pool().allocate(64);
    assert_eq!(pool.stats().live_buffers, before + 1);
    drop((probe, frames));
    assert!(pool.stats().is_quiet(), "{}", pool.stats());
}

/// Bytes encoded and not yet written travel in `write_buf` and are written first.
#[test]
fn the_write_buffer_travels_with_the_parts() {
    let mut framed = Framed::new(Mock::default(), U32Codec::default());
    send(&mut framed, 1).unwrap();
    send(&mut framed, 2).unwrap();
    let parts = framed.into_parts();
    assert_eq!(parts.write_buf, &b"\0\0\0\x01\0\0\0\x02"[..]);
    let mut framed = Framed::from_parts(parts);
    send(&mut framed, 3).unwrap();
    assert!(flush::<u32, _>(&mut framed).is_ready());
    assert_eq!(framed.get_ref().written, b"\0\0\0\x01\0\0\0\x02\0\0\0\x03");
}

/// `into_parts` keeps the pool and the read predictor; the round trip loses nothing.
#[test]
fn into_parts_and_back_keeps_the_pool_and_the_predictor() {
    let pool = pool();
    let predictor = RecvPredictor::with_bounds(128, 512, 4096).unwrap();
    let mock = Mock::new([data(b"\0\0\0\x01\0\0")]);
    let mut framed = Framed::with_pool(mock, U32Codec::default(), pool.clone(), predictor);
    assert_eq!(frame(&mut framed), 1);
    let seen = *framed.predictor();
    let parts = framed.into_parts();
    let framed = Framed::from_parts(parts);
    assert_eq!(*framed.predictor(), seen);
    assert_eq!(framed.read_buffer(), &b"\0\0"[..]);
    let before = pool.stats().live_buffers;
    let probe = framed.pool().allocate(64);
    assert_eq!(pool.stats().live_buffers, before + 1);
    drop((probe, framed));
    assert!(pool.stats().is_quiet(), "{}", pool.stats());
}

#[test]
fn framed_read_and_write_into_parts() {
    let mut r = FramedRead::new(
        Mock::new([data(b"\0\0\0\x02ab\0\0")]),
        LengthDelimitedCodec::new(),
    );
    assert_eq!(frame(&mut r), "ab");
    let parts = r.into_parts();
    assert_eq!(parts.read_buf, &b"\0\0"[..]);
    assert!(parts.write_buf.is_empty());

    let mut w = FramedWrite::new(Mock::default(), BytesCodec::new());
    send(&mut w, Bytes::from_static(b"queued")).unwrap();
    let parts = w.into_parts();
    assert!(parts.read_buf.is_empty());
    assert_eq!(parts.write_buf, "queued");
}

/// tokio-util's `with_capacity`: the boundary is the capacity.
#[test]
fn framed_write_with_capacity_sets_the_boundary() {
    let mut w = FramedWrite::with_capacity(Mock::default(), U32Codec::default(), 8);
    assert_eq!(w.backpressure_boundary(), 8);
    send(&mut w, 1).unwrap();
    send(&mut w, 2).unwrap();
    // Two items reach the boundary: `poll_ready` flushes them first.
    assert!(super::mock::ready::<u32, _>(&mut w).is_ready());
    assert!(w.write_buffer().is_empty());
    assert_eq!(w.get_ref().written, b"\0\0\0\x01\0\0\0\x02");
    let f = Framed::with_capacity(Mock::default(), U32Codec::default(), 300);
    assert_eq!(f.backpressure_boundary(), 300);
    assert_eq!(f.predictor().next_size(), 300);
}

/// A `FramedWrite` over a transport that is also a `Stream` is that `Stream` (tokio-util's
/// pass-through): a `FramedRead` wrapped in a `FramedWrite` reads and writes.
#[test]
fn a_stream_passes_through_framed_write() {
    let inner = FramedRead::new(Mock::new([data(b"\0\0\0\x07")]), U32Codec::default());
    let mut both = FramedWrite::new(inner, U32Codec::default());
    assert_eq!(frame(&mut both), 7);
    end(&mut both);
}
