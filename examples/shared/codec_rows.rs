//! The codec rows: frames of a seeded mix of sizes (4-byte big-endian lengths) read
//! from an in-memory transport that hands out up to 64 KiB per read (as a socket would) and
//! never waits, so the figures are the framing's own cost. Each side gets the same bytes and
//! yields each frame as its codec's item: a `PooledBuf` on the pool, a `BytesMut` on
//! tokio-util (neither is frozen: no `Bytes::from_owner` box on the pool's side); every frame
//! is dropped before the next is read, as in a server that handles a request and moves on.
//! "Echo" also encodes every frame back into the same `Framed` (the pool's as the `PooledBuf`
//! it is, tokio-util's frozen into `Bytes`, which is free for a `BytesMut`, since its
//! `LengthDelimitedCodec` encodes `Bytes`), flushing every 32 frames into a writer that
//! discards the bytes.
//!
//! Shared by `examples/ratio.rs` (the report's codec rows) and `examples/codec_probe.rs`
//! (the echo row alone, one side a process, for callgrind and perf). Its includer has the
//! benchmarks' `workloads` module beside it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use adaptive_pool::{AdaptiveAllocator, PooledBuf, RecvPredictor};
use bytes::{Bytes, BytesMut};
use futures_core::Stream;
use futures_sink::Sink;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Frames in the wire before it repeats.
const FRAMES: usize = 4096;
/// The most one read hands out.
const MAX_READ: usize = 64 << 10;

/// The bytes of `FRAMES` frames of `min..=max` bytes, whole, so reading it round and
/// round stays framed.
pub fn wire(min: usize, max: usize) -> Bytes {
    let mut rng = super::workloads::Rng::new(12);
    let mut wire = Vec::new();
    for i in 0..FRAMES {
        let len = min + rng.below(max - min + 1);
        wire.extend_from_slice(&(len as u32).to_be_bytes());
        wire.extend(std::iter::repeat_n(i as u8, len));
    }
    Bytes::from(wire)
}

/// Reads the wire round and round; takes and discards writes.
struct Loop {
    wire: Bytes,
    at: usize,
}

impl AsyncRead for Loop {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let at = self.at;
        let n = buf.remaining().min(MAX_READ).min(self.wire.len() - at);
        buf.put_slice(&self.wire[at..at + n]);
        self.at = (at + n) % self.wire.len();
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Loop {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        src: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(std::hint::black_box(src).len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn next<S, T, E>(s: &mut S, cx: &mut Context<'_>) -> T
where
    S: Stream<Item = Result<T, E>> + Unpin,
    E: std::fmt::Debug,
{
    match Pin::new(s).poll_next(cx) {
        Poll::Ready(Some(Ok(frame))) => frame,
        other => panic!(
            "the wire never ends: {:?}",
            other.map(|o| o.map(|r| r.err()))
        ),
    }
}

fn send<I, S: Sink<I> + Unpin>(s: &mut S, frame: I, flush: bool, cx: &mut Context<'_>)
where
    S::Error: std::fmt::Debug,
{
    assert!(Pin::new(&mut *s).poll_ready(cx).is_ready());
    Pin::new(&mut *s).start_send(frame).expect("encode");
    if flush {
        assert!(Pin::new(&mut *s).poll_flush(cx).is_ready());
    }
}

fn loop_io(wire: &Bytes) -> Loop {
    Loop {
        wire: wire.clone(),
        at: 0,
    }
}

pub fn read_pool(pool: &AdaptiveAllocator, wire: &Bytes, n: u64) -> Duration {
    let cx = &mut Context::from_waker(Waker::noop());
    let mut framed = adaptive_pool::codec::FramedRead::with_pool(
        loop_io(wire),
        adaptive_pool::codec::LengthDelimitedCodec::new(),
        pool.clone(),
        RecvPredictor::new(),
    );
    let t = Instant::now();
    for _ in 0..n {
        let frame: PooledBuf = next(&mut framed, cx);
        std::hint::black_box(&frame);
    }
    t.elapsed()
}

pub fn read_tokio_util(wire: &Bytes, n: u64) -> Duration {
    let cx = &mut Context::from_waker(Waker::noop());
    let mut framed = tokio_util::codec::FramedRead::new(
        loop_io(wire),
        tokio_util::codec::LengthDelimitedCodec::new(),
    );
    let t = Instant::now();
    for _ in 0..n {
        let frame: BytesMut = next(&mut framed, cx);
        std::hint::black_box(&frame);
    }
    t.elapsed()
}

pub fn echo_pool(pool: &AdaptiveAllocator, wire: &Bytes, n: u64) -> Duration {
    let cx = &mut Context::from_waker(Waker::noop());
    let mut framed = adaptive_pool::codec::Framed::with_pool(
        loop_io(wire),
        adaptive_pool::codec::LengthDelimitedCodec::new(),
        pool.clone(),
        RecvPredictor::new(),
    );
    let t = Instant::now();
    for i in 0..n {
        let frame: PooledBuf = next(&mut framed, cx);
        send(&mut framed, frame, i % 32 == 31, cx);
    }
    assert!(Sink::<PooledBuf>::poll_flush(Pin::new(&mut framed), cx).is_ready());
    t.elapsed()
}

pub fn echo_tokio_util(wire: &Bytes, n: u64) -> Duration {
    let cx = &mut Context::from_waker(Waker::noop());
    let mut framed = tokio_util::codec::Framed::new(
        loop_io(wire),
        tokio_util::codec::LengthDelimitedCodec::new(),
    );
    let t = Instant::now();
    for i in 0..n {
        let frame: Bytes = next(&mut framed, cx).freeze();
        send(&mut framed, frame, i % 32 == 31, cx);
    }
    assert!(Sink::<Bytes>::poll_flush(Pin::new(&mut framed), cx).is_ready());
    t.elapsed()
}
