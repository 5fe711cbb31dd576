//! [`FramedWrite`]: a tokio writer as a `Sink` of encoded items.
//!
//! Owns: the public type; the state machine is [`WriteFrame`] in `framed_impl`.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use futures_sink::Sink;
use pin_project_lite::pin_project;
use tokio::io::AsyncWrite;

use super::framed_impl::{predictor_from, WriteFrame, FIRST_WRITE, INITIAL_CAPACITY};
use super::{Encoder, FramedParts};
use crate::{AdaptiveAllocator, PooledBuf};

pin_project! {
    /// A [`Sink`] of items encoded onto a tokio [`AsyncWrite`], like
    /// `tokio_util::codec::FramedWrite`, encoding into pooled buffers.
    ///
    /// `start_send` encodes into the write buffer; `poll_flush` writes it all, then flushes
    /// the writer; `poll_ready` flushes first when the buffer holds
    /// [`backpressure_boundary`](Self::backpressure_boundary) bytes or more (8 KiB by
    /// default), so a slow writer slows the sender. The buffer is taken from the pool for a
    /// burst of items, kept across `poll_ready`'s flushes (up to 64 KiB) and given back once
    /// `poll_flush` or `poll_close` has written it all. If the writer is also
    /// a [`Stream`], so is the `FramedWrite` (its items pass through, as in tokio-util).
    pub struct FramedWrite<T, E> {
        #[pin]
        inner: T,
        encoder: E,
        write: WriteFrame,
    }
}

impl<T, E> FramedWrite<T, E> {
    /// Items encoded by `encoder` onto `inner`, through buffers from
    /// [`global()`](crate::global).
    pub fn new(inner: T, encoder: E) -> FramedWrite<T, E> {
        FramedWrite::with_pool(inner, encoder, crate::global().clone())
    }

    /// Like [`new`](Self::new), with a first write buffer of `capacity` bytes and a
    /// back-pressure boundary of `capacity` (as tokio-util's `with_capacity`).
    pub fn with_capacity(inner: T, encoder: E, capacity: usize) -> FramedWrite<T, E> {
        FramedWrite {
            inner,
            encoder,
            write: WriteFrame::new(crate::global().clone(), capacity, capacity),
        }
    }

    /// Items encoded by `encoder` onto `inner`, through buffers from `pool`.
    pub fn with_pool(inner: T, encoder: E, pool: AdaptiveAllocator) -> FramedWrite<T, E> {
        FramedWrite {
            inner,
            encoder,
            write: WriteFrame::new(pool, FIRST_WRITE, INITIAL_CAPACITY),
        }
    }

    /// The writer.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// The writer, mutably; writing to it directly may interleave with buffered frames.
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    /// The pinned writer; the same caution as [`get_mut`](Self::get_mut).
    pub fn get_pin_mut(self: Pin<&mut Self>) -> Pin<&mut T> {
        self.project().inner
    }

    /// The writer back; encoded bytes not yet written are lost.
    pub fn into_inner(self) -> T {
        self.inner
    }

    /// The writer, the encoder and the bytes encoded and not yet written (`write_buf`; the
    /// `read_buf` is empty). The parts keep this sink's pool.
    pub fn into_parts(self) -> FramedParts<T, E> {
        let pool = self.write.pool().clone();
        FramedParts::assemble(
            self.inner,
            self.encoder,
            PooledBuf::new(),
            self.write.into_buffer(),
            Some((pool, predictor_from(INITIAL_CAPACITY))),
        )
    }

    /// The encoder.
    pub fn encoder(&self) -> &E {
        &self.encoder
    }

    /// The encoder, mutably.
    pub fn encoder_mut(&mut self) -> &mut E {
        &mut self.encoder
    }

    /// The encoder of a pinned `FramedWrite`.
    pub fn encoder_pin_mut(self: Pin<&mut Self>) -> &mut E {
        self.project().encoder
    }

    /// The same sink with another encoder, made from this one (the buffered bytes stay).
    pub fn map_encoder<C, F: FnOnce(E) -> C>(self, map: F) -> FramedWrite<T, C> {
        FramedWrite {
            inner: self.inner,
            encoder: map(self.encoder),
            write: self.write,
        }
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
}

impl<T: AsyncWrite, I, E: Encoder<I>> Sink<I> for FramedWrite<T, E> {
    type Error = E::Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let this = self.project();
        this.write.poll_ready(this.inner, cx)
    }

    #[inline]
    fn start_send(self: Pin<&mut Self>, item: I) -> Result<(), Self::Error> {
        let this = self.project();
        this.write.start_send(this.encoder, item)
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

/// The writer's items pass through, when it is a `Stream` (as in tokio-util).
impl<T: Stream, E> Stream for FramedWrite<T, E> {
    type Item = T::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.project().inner.poll_next(cx)
    }
}

impl<T: fmt::Debug, E: fmt::Debug> fmt::Debug for FramedWrite<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("FramedWrite");
        s.field("inner", &self.inner)
            .field("encoder", &self.encoder);
        self.write.debug(&mut s);
        s.finish()
    }
}
