//! [`Framed`]: a `Stream` of decoded frames and a `Sink` of encoded items over one
//! transport; and [`FramedParts`], its parts taken apart and put together again (protocol
//! upgrades, a codec changed mid-stream).
//!
//! Owns: the public types; the state machines are in `framed_impl`.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use futures_sink::Sink;
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite};

use super::framed_impl::{predictor_from, ReadFrame, WriteFrame, FIRST_WRITE, INITIAL_CAPACITY};
use super::{Decoder, Encoder};
use crate::{AdaptiveAllocator, PooledBuf, RecvPredictor};

pin_project! {
    /// Both at once over one transport, like `tokio_util::codec::Framed`: a [`Stream`] of
    /// frames decoded from it (as [`FramedRead`](super::FramedRead)) and a [`Sink`] of items
    /// encoded onto it (as [`FramedWrite`](super::FramedWrite)), with one codec.
    pub struct Framed<T, U> {
        #[pin]
        inner: T,
        codec: U,
        read: ReadFrame,
        write: WriteFrame,
    }
}

impl<T, U> Framed<T, U> {
    /// Frames over `inner` with `codec`, through buffers from [`global()`](crate::global);
    /// the first read is offered 8 KiB (tokio-util's initial capacity), later ones follow
    /// the traffic (64 B to 64 KiB).
    pub fn new(inner: T, codec: U) -> Framed<T, U> {
        Framed::with_pool(
            inner,
            codec,
            crate::global().clone(),
            predictor_from(INITIAL_CAPACITY),
        )
    }

    /// Like [`new`](Self::new), with `capacity` bytes for the first read and the first
    /// write buffer, and a back-pressure boundary of `capacity` (as tokio-util's
    /// `with_capacity`; see [`FramedRead::with_capacity`](super::FramedRead::with_capacity)).
    pub fn with_capacity(inner: T, codec: U, capacity: usize) -> Framed<T, U> {
        let pool = crate::global().clone();
        Framed {
            inner,
            codec,
            read: ReadFrame::new(pool.clone(), predictor_from(capacity)),
            write: WriteFrame::new(pool, capacity, capacity),
        }
    }

    /// Frames over `inner` with `codec`, through buffers from `pool`, reads sized by
    /// `predictor`.
    pub fn with_pool(
        inner: T,
        codec: U,
        pool: AdaptiveAllocator,
        predictor: RecvPredictor,
    ) -> Framed<T, U> {
        Framed {
            inner,
            codec,
            read: ReadFrame::new(pool.clone(), predictor),
            write: WriteFrame::new(pool, FIRST_WRITE, INITIAL_CAPACITY),
        }
    }

    /// A `Framed` from its parts, as tokio-util's `from_parts`: the bytes in
    /// `parts.read_buf` are decoded before anything more is read (a frame already buffered
    /// comes out at once), and those in `parts.write_buf` are written before the items sent
    /// after them. The buffers come from the pool of the `Framed`, `FramedRead` or
    /// `FramedWrite` the parts came from (with its read predictor); for parts made by
    /// [`FramedParts::new`], from the pool of the buffer put in `read_buf` (else
    /// `write_buf`, else [`global()`](crate::global)), the first read offered 8 KiB.
    pub fn from_parts(parts: FramedParts<T, U>) -> Framed<T, U> {
        let (pool, predictor) = parts._priv.origin.unwrap_or_else(|| {
            let pool = if parts.read_buf.capacity() > 0 {
                parts.read_buf.allocator()
            } else if parts.write_buf.capacity() > 0 {
                parts.write_buf.allocator()
            } else {
                crate::global().clone()
            };
            (pool, predictor_from(INITIAL_CAPACITY))
        });
        Framed {
            inner: parts.io,
            codec: parts.codec,
            read: ReadFrame::with_buffer(parts.read_buf, pool.clone(), predictor),
            write: WriteFrame::with_buffer(parts.write_buf, pool),
        }
    }

    /// The transport, the codec and both buffers (bytes read and not yet decoded, bytes
    /// encoded and not yet written), as tokio-util's `into_parts`: to go on with another
    /// codec (a protocol upgrade) through [`from_parts`](Self::from_parts), without losing
    /// a byte. The parts keep this `Framed`'s pool and read predictor.
    pub fn into_parts(self) -> FramedParts<T, U> {
        let pool = self.read.pool.clone();
        let predictor = self.read.predictor;
        FramedParts::assemble(
            self.inner,
            self.codec,
            self.read.into_buffer(),
            self.write.into_buffer(),
            Some((pool, predictor)),
        )
    }

    /// The transport.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// The transport, mutably; using it directly may lose or interleave data.
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    /// The pinned transport; the same caution as [`get_mut`](Self::get_mut).
    pub fn get_pin_mut(self: Pin<&mut Self>) -> Pin<&mut T> {
        self.project().inner
    }

    /// The transport back; buffered bytes either way are lost.
    pub fn into_inner(self) -> T {
        self.inner
    }

    /// The codec.
    pub fn codec(&self) -> &U {
        &self.codec
    }

    /// The codec, mutably.
    pub fn codec_mut(&mut self) -> &mut U {
        &mut self.codec
    }

    /// The codec of a pinned `Framed`.
    pub fn codec_pin_mut(self: Pin<&mut Self>) -> &mut U {
        self.project().codec
    }

    /// The same transport with another codec, made from this one (buffered bytes stay).
    pub fn map_codec<C, F: FnOnce(U) -> C>(self, map: F) -> Framed<T, C> {
        Framed {
            inner: self.inner,
            codec: map(self.codec),
            read: self.read,
            write: self.write,
        }
    }

    /// The bytes read and not yet decoded.
    pub fn read_buffer(&self) -> &PooledBuf {
        &self.read.buffer
    }

    /// The read buffer, mutably.
    pub fn read_buffer_mut(&mut self) -> &mut PooledBuf {
        &mut self.read.buffer
    }

    /// The bytes encoded and not yet written.
    pub fn write_buffer(&self) -> &PooledBuf {
        &self.write.buffer
    }

    /// The write buffer, mutably.
    pub fn write_buffer_mut(&mut self) -> &mut PooledBuf {
        &mut self.write.buffer
    }

    /// The buffered bytes at which `poll_ready` flushes first.
    pub fn backpressure_boundary(&self) -> usize {
        self.write.boundary
    }

    /// Sets the back-pressure boundary.
    pub fn set_backpressure_boundary(&mut self, boundary: usize) {
        self.write.boundary = boundary;
    }

    /// The predictor that sizes the reads.
    pub fn predictor(&self) -> &RecvPredictor {
        &self.read.predictor
    }

    /// The allocator the buffers come from.
    pub fn pool(&self) -> &AdaptiveAllocator {
        &self.read.pool
    }
}

impl<T: AsyncRead, U: Decoder> Stream for Framed<T, U> {
    type Item = Result<U::Item, U::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.project();
        this.read.poll_frame(this.inner, this.codec, cx)
    }
}

impl<T: AsyncWrite, I, U: Encoder<I>> Sink<I> for Framed<T, U> {
    type Error = U::Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let this = self.project();
        this.write.poll_ready(this.inner, cx)
    }

    #[inline]
    fn start_send(self: Pin<&mut Self>, item: I) -> Result<(), Self::Error> {
        let this = self.project();
        this.write.start_send(this.codec, item)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let this = self.project();
        this.write.poll_flush(this.inner, cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let this = self.project();
        this.write.poll_close(this.inner, cx)
    }
}

impl<T: fmt::Debug, U: fmt::Debug> fmt::Debug for Framed<T, U> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("Framed");
        s.field("inner", &self.inner).field("codec", &self.codec);
        self.read.debug(&mut s);
        self.write.debug(&mut s);
        s.finish()
    }
}

/// A framed transport taken apart, as tokio-util's `FramedParts`: the transport, the codec,
/// the bytes read and not yet decoded, and the bytes encoded and not yet written. Made by
/// `into_parts` of [`Framed`], [`FramedRead`](super::FramedRead) and
/// [`FramedWrite`](super::FramedWrite), or by [`FramedParts::new`]; put together again by
/// [`Framed::from_parts`], typically with another codec:
///
/// ```
/// use adaptive_pool::codec::{Framed, FramedParts, LengthDelimitedCodec, LinesCodec};
/// use bytes::Bytes;
/// use futures_util::StreamExt;
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// // A line-based handshake, then length-delimited frames, in one read.
/// let wire: &[u8] = b"UPGRADE\n\0\0\0\x05hello";
/// let (mut client, server) = tokio::io::duplex(64);
/// tokio::io::AsyncWriteExt::write_all(&mut client, wire).await?;
/// let mut lines = Framed::new(server, LinesCodec::new());
/// assert_eq!(lines.next().await.unwrap().unwrap(), "UPGRADE");
///
/// let parts = lines.into_parts();
/// let mut upgraded = FramedParts::new::<Bytes>(parts.io, LengthDelimitedCodec::new());
/// upgraded.read_buf = parts.read_buf; // the frame read with the handshake
/// upgraded.write_buf = parts.write_buf;
/// let mut frames = Framed::from_parts(upgraded);
/// // Decoded at once from the buffered bytes, before any read.
/// assert_eq!(frames.next().await.unwrap()?, "hello");
/// # Ok::<(), std::io::Error>(())
/// # }).unwrap();
/// ```
#[derive(Debug)]
#[allow(clippy::manual_non_exhaustive)]
pub struct FramedParts<T, U> {
    /// The transport.
    pub io: T,
    /// The codec.
    pub codec: U,
    /// Bytes read and not yet decoded.
    pub read_buf: PooledBuf,
    /// Bytes encoded and not yet written.
    pub write_buf: PooledBuf,
    /// Room for more fields, as in tokio-util; here, where the buffers came from.
    _priv: Private,
}

/// The private part of [`FramedParts`]: the pool and read predictor of the framed type the
/// parts came from (`None` from [`FramedParts::new`]).
#[derive(Debug)]
struct Private {
    origin: Option<(AdaptiveAllocator, RecvPredictor)>,
}

impl<T, U> FramedParts<T, U> {
    /// Parts with empty buffers (tokio-util's `FramedParts::new`, whose `I` names an item
    /// type the codec encodes); set `read_buf` and `write_buf` before
    /// [`Framed::from_parts`]. A `Framed` made from them takes its buffers from
    /// [`global()`](crate::global).
    pub fn new<I>(io: T, codec: U) -> FramedParts<T, U>
    where
        U: Encoder<I>,
    {
        FramedParts::assemble(io, codec, PooledBuf::new(), PooledBuf::new(), None)
    }

    pub(super) fn assemble(
        io: T,
        codec: U,
        read_buf: PooledBuf,
        write_buf: PooledBuf,
        origin: Option<(AdaptiveAllocator, RecvPredictor)>,
    ) -> FramedParts<T, U> {
        FramedParts {
            io,
            codec,
            read_buf,
            write_buf,
            _priv: Private { origin },
        }
    }
}
