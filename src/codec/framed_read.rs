//! [`FramedRead`]: a tokio reader as a `Stream` of decoded frames.
//!
//! Owns: the public type; the state machine is [`ReadFrame`] in `framed_impl`.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use futures_sink::Sink;
use pin_project_lite::pin_project;
use tokio::io::AsyncRead;

use super::framed_impl::{predictor_from, ReadFrame, INITIAL_CAPACITY};
use super::{Decoder, FramedParts};
use crate::{AdaptiveAllocator, PooledBuf, RecvPredictor};

pin_project! {
    /// A [`Stream`] of frames decoded from a tokio [`AsyncRead`], like
    /// `tokio_util::codec::FramedRead`, reading into pooled buffers.
    ///
    /// Each item is `Ok(frame)` or the decoder's or the reader's error; after an error the
    /// stream yields `None` once (and may be polled again: bytes still buffered are decoded
    /// again before more is read). At the end of the stream the decoder's
    /// [`decode_eof`](Decoder::decode_eof) drains what is left, then `None`.
    ///
    /// The read buffer comes from the pool, grows with a [`RecvPredictor`], is reused in
    /// place between frames and is given back while the reader has nothing to read (see the
    /// [module docs](super#the-read-path)). A `!Unpin` reader is pinned in place, as in
    /// tokio-util. If the reader is also a [`Sink`], so is the `FramedRead` (items pass
    /// through to it, as in tokio-util).
    pub struct FramedRead<T, D> {
        #[pin]
        inner: T,
        decoder: D,
        read: ReadFrame,
    }
}

impl<T, D> FramedRead<T, D> {
    /// Frames read from `inner` by `decoder`, into buffers from [`global()`](crate::global);
    /// the first read is offered 8 KiB (tokio-util's initial capacity), later ones follow
    /// the traffic (64 B to 64 KiB).
    pub fn new(inner: T, decoder: D) -> FramedRead<T, D> {
        FramedRead::with_capacity(inner, decoder, INITIAL_CAPACITY)
    }

    /// Like [`new`](Self::new), with `capacity` bytes for the first read (tokio-util's
    /// initial buffer capacity); later reads follow the traffic, up to
    /// `max(capacity, 64 KiB)`.
    pub fn with_capacity(inner: T, decoder: D, capacity: usize) -> FramedRead<T, D> {
        let predictor = predictor_from(capacity);
        FramedRead::with_pool(inner, decoder, crate::global().clone(), predictor)
    }

    /// Frames read from `inner` by `decoder`, into buffers from `pool` sized by `predictor`.
    pub fn with_pool(
        inner: T,
        decoder: D,
        pool: AdaptiveAllocator,
        predictor: RecvPredictor,
    ) -> FramedRead<T, D> {
        FramedRead {
            inner,
            decoder,
            read: ReadFrame::new(pool, predictor),
        }
    }

    /// The reader.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// The reader, mutably; reading from it directly may lose data or confuse the decoder.
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    /// The pinned reader; the same caution as [`get_mut`](Self::get_mut).
    pub fn get_pin_mut(self: Pin<&mut Self>) -> Pin<&mut T> {
        self.project().inner
    }

    /// The reader back; bytes read and not yet decoded are lost.
    pub fn into_inner(self) -> T {
        self.inner
    }

    /// The reader, the decoder and the bytes read and not yet decoded (`read_buf`; the
    /// `write_buf` is empty), e.g. to go on with another decoder through
    /// [`Framed::from_parts`](super::Framed::from_parts). The parts keep this stream's pool
    /// and predictor.
    pub fn into_parts(self) -> FramedParts<T, D> {
        let pool = self.read.pool.clone();
        let predictor = self.read.predictor;
        FramedParts::assemble(
            self.inner,
            self.decoder,
            self.read.into_buffer(),
            PooledBuf::new(),
            Some((pool, predictor)),
        )
    }

    /// The decoder.
    pub fn decoder(&self) -> &D {
        &self.decoder
    }

    /// The decoder, mutably.
    pub fn decoder_mut(&mut self) -> &mut D {
        &mut self.decoder
    }

    /// The decoder of a pinned `FramedRead`.
    pub fn decoder_pin_mut(self: Pin<&mut Self>) -> &mut D {
        self.project().decoder
    }

    /// The same stream with another decoder, made from this one (the buffered bytes stay).
    pub fn map_decoder<C, F: FnOnce(D) -> C>(self, map: F) -> FramedRead<T, C> {
        FramedRead {
            inner: self.inner,
            decoder: map(self.decoder),
            read: self.read,
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

    /// The predictor that sizes the reads.
    pub fn predictor(&self) -> &RecvPredictor {
        &self.read.predictor
    }

    /// The allocator the read buffers come from.
    pub fn pool(&self) -> &AdaptiveAllocator {
        &self.read.pool
    }
}

impl<T: AsyncRead, D: Decoder> Stream for FramedRead<T, D> {
    type Item = Result<D::Item, D::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.project();
        this.read.poll_frame(this.inner, this.decoder, cx)
    }
}

/// Items pass through to the reader, when it is a `Sink` (as in tokio-util).
impl<T: Sink<I>, I, D> Sink<I> for FramedRead<T, D> {
    type Error = T::Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.project().inner.poll_ready(cx)
    }

    fn start_send(self: Pin<&mut Self>, item: I) -> Result<(), Self::Error> {
        self.project().inner.start_send(item)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.project().inner.poll_close(cx)
    }
}

impl<T: fmt::Debug, D: fmt::Debug> fmt::Debug for FramedRead<T, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("FramedRead");
        s.field("inner", &self.inner)
            .field("decoder", &self.decoder);
        self.read.debug(&mut s);
        s.finish()
    }
}
