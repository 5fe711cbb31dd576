//! [`FramedRead`], [`FramedWrite`] and [`Framed`]: a tokio reader as a `Stream` of decoded
//! frames, a tokio writer as a `Sink` of encoded items, and both over one transport.
//!
//! Owns: the read state machine ([`ReadHalf`]: buffer, predictor, phase) and the write state
//! ([`WriteHalf`]: buffer, back-pressure, flushing). The three public types only pin their
//! transport and delegate to these two.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::task::{ready, Context, Poll};

use bytes::Buf;
use futures_core::Stream;
use futures_sink::Sink;
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use super::{Decoder, Encoder};
use crate::{AdaptiveAllocator, AllocError, PooledBuf, RecvPredictor};

/// The write buffer's size before it has seen a flush, and the default back-pressure
/// boundary (tokio-util's initial capacity, 8 KiB).
const WRITE_BOUNDARY: usize = 8 << 10;

/// Where the read half stands. Transitions (`decode_eof` is called only after the stream
/// ended, and each end of stream yields one `None`):
///
/// ```text
/// Reading --read n > 0--> Framing --decode None--> Reading
/// Reading --read 0------> Ending  --decode_eof None: yield None--> Ended
/// Ended   --read n > 0--> Framing        Ended --read 0: yield None--> Ended
/// any decode or read error: yield the error --> Failed --yield None--> Reading or Ended
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// The buffer holds no complete frame: read.
    Reading,
    /// Data arrived: decode until the decoder has no frame.
    Framing,
    /// The stream ended: `decode_eof` until it has no frame.
    Ending,
    /// The end was reported; a reader that resumes (a file that grows) may bring more.
    Ended,
    /// An error was returned; the next poll yields `None`. `ended` says where to go then.
    Failed { ended: bool },
}

/// The read half's state: the pooled buffer, the pool it comes from, the predictor that
/// sizes the reads, and the phase.
pub(super) struct ReadHalf {
    buffer: PooledBuf,
    pool: AdaptiveAllocator,
    predictor: RecvPredictor,
    phase: Phase,
}

impl ReadHalf {
    pub(super) fn new(pool: AdaptiveAllocator, predictor: RecvPredictor) -> ReadHalf {
        ReadHalf {
            buffer: PooledBuf::new(),
            pool,
            predictor,
            phase: Phase::Reading,
        }
    }

    /// The `Stream::poll_next` of every framed type.
    pub(super) fn poll_frame<T: AsyncRead, D: Decoder>(
        &mut self,
        mut io: Pin<&mut T>,
        decoder: &mut D,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<D::Item, D::Error>>> {
        loop {
            match self.phase {
                Phase::Failed { ended } => {
                    self.phase = if ended { Phase::Ended } else { Phase::Reading };
                    return Poll::Ready(None);
                }
                Phase::Framing => match decoder.decode(&mut self.buffer) {
                    Ok(Some(frame)) => return Poll::Ready(Some(Ok(frame))),
                    Ok(None) => self.phase = Phase::Reading,
                    Err(e) => return self.fail(e, false),
                },
                Phase::Ending => match decoder.decode_eof(&mut self.buffer) {
                    Ok(Some(frame)) => return Poll::Ready(Some(Ok(frame))),
                    Ok(None) => {
                        self.phase = Phase::Ended;
                        self.release_if_empty();
                        return Poll::Ready(None);
                    }
                    Err(e) => return self.fail(e, true),
                },
                Phase::Reading | Phase::Ended => {
                    let ended = self.phase == Phase::Ended;
                    match ready!(self.poll_read(io.as_mut(), cx)) {
                        Ok(0) if ended => return Poll::Ready(None),
                        Ok(0) => self.phase = Phase::Ending,
                        Ok(_) => self.phase = Phase::Framing,
                        Err(e) => return self.fail(e.into(), ended),
                    }
                }
            }
        }
    }

    fn fail<I, E>(&mut self, e: E, ended: bool) -> Poll<Option<Result<I, E>>> {
        self.phase = Phase::Failed { ended };
        Poll::Ready(Some(Err(e)))
    }

    /// One read into the buffer's spare capacity, after making room for the predicted size.
    fn poll_read<T: AsyncRead>(
        &mut self,
        mut io: Pin<&mut T>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        let want = self.predictor.next_size();
        if self.buffer.is_empty() {
            // Nothing to keep: reuse the region in place if the frames split off it have all
            // dropped, else take a fresh one from the pool (sized for this read only).
            if !self.buffer.try_reclaim(want) {
                self.buffer = self.pool.try_allocate(want).map_err(out_of_memory)?;
            }
        } else {
            // A partial frame: grow with it (same allocator as its region).
            self.buffer.try_reserve(want).map_err(out_of_memory)?;
        }
        let result = pin!(io.read_buf(&mut self.buffer)).poll(cx);
        match result {
            Poll::Pending => {
                // Idle: hold no memory while waiting, unless a partial frame is in it.
                self.release_if_empty();
                Poll::Pending
            }
            Poll::Ready(Ok(n)) => {
                self.predictor.record(n);
                if n == 0 {
                    self.release_if_empty();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => {
                self.release_if_empty();
                Poll::Ready(Err(e))
            }
        }
    }

    fn release_if_empty(&mut self) {
        if self.buffer.is_empty() {
            self.buffer = PooledBuf::new();
        }
    }

    fn debug(&self, f: &mut fmt::DebugStruct<'_, '_>) {
        f.field("read_buffer", &self.buffer)
            .field("predictor", &self.predictor)
            .field("phase", &self.phase);
    }
}

/// The write half's state: the pooled buffer items are encoded into, the back-pressure
/// boundary, and the predictor that sizes the buffer from past flushes.
pub(super) struct WriteHalf {
    buffer: PooledBuf,
    pool: AdaptiveAllocator,
    /// Sizes the buffer taken for a burst: by the bytes that past bursts flushed.
    sizes: RecvPredictor,
    /// Bytes written since the buffer was taken.
    written: usize,
    boundary: usize,
}

impl WriteHalf {
    pub(super) fn new(pool: AdaptiveAllocator) -> WriteHalf {
        WriteHalf {
            buffer: PooledBuf::new(),
            pool,
            sizes: RecvPredictor::with_bounds(64, 1024, WRITE_BOUNDARY * 8)
                .expect("valid write-size bounds"),
            written: 0,
            boundary: WRITE_BOUNDARY,
        }
    }

    pub(super) fn poll_ready<T: AsyncWrite, E: From<io::Error>>(
        &mut self,
        io: Pin<&mut T>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), E>> {
        if self.buffer.len() >= self.boundary {
            self.poll_flush(io, cx)
        } else {
            Poll::Ready(Ok(()))
        }
    }

    pub(super) fn start_send<I, C: Encoder<I>>(
        &mut self,
        encoder: &mut C,
        item: I,
    ) -> Result<(), C::Error> {
        if self.buffer.capacity() == 0 {
            self.buffer = self
                .pool
                .try_allocate(self.sizes.next_size())
                .map_err(out_of_memory)?;
        }
        encoder.encode(item, &mut self.buffer)
    }

    pub(super) fn poll_flush<T: AsyncWrite, E: From<io::Error>>(
        &mut self,
        mut io: Pin<&mut T>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), E>> {
        while !self.buffer.is_empty() {
            let n = ready!(io.as_mut().poll_write(cx, &self.buffer))?;
            if n == 0 {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "failed to write frame to transport",
                )
                .into()));
            }
            self.buffer.advance(n);
            self.written += n;
        }
        // Everything is written: the buffer goes back to the pool until the next item, and
        // its size for the next burst follows this one's.
        self.sizes.record(self.written);
        self.written = 0;
        self.buffer = PooledBuf::new();
        ready!(io.poll_flush(cx))?;
        Poll::Ready(Ok(()))
    }

    pub(super) fn poll_close<T: AsyncWrite, E: From<io::Error>>(
        &mut self,
        mut io: Pin<&mut T>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), E>> {
        ready!(self.poll_flush::<T, E>(io.as_mut(), cx))?;
        ready!(io.poll_shutdown(cx))?;
        Poll::Ready(Ok(()))
    }

    fn debug(&self, f: &mut fmt::DebugStruct<'_, '_>) {
        f.field("write_buffer", &self.buffer)
            .field("backpressure_boundary", &self.boundary);
    }
}

/// An allocation refused by the pool, as the `io::Error` the codecs' errors convert from.
fn out_of_memory(e: AllocError) -> io::Error {
    io::Error::new(io::ErrorKind::OutOfMemory, e)
}

/// The predictor `with_capacity` constructors use: `capacity` for the first read.
fn predictor_from(capacity: usize) -> RecvPredictor {
    let initial = capacity.clamp(1, isize::MAX as usize);
    RecvPredictor::with_bounds(initial.min(64), initial, initial.max(64 << 10))
        .expect("bounds ordered by construction")
}

pin_project! {
    /// A [`Stream`] of frames decoded from a tokio [`AsyncRead`], like
    /// `tokio_util::codec::FramedRead`, reading into pooled buffers.
    ///
    /// Each item is `Ok(frame)` or the decoder's or the reader's error; after an error the
    /// stream yields `None` once (and may be polled again). At the end of the stream the
    /// decoder's [`decode_eof`](Decoder::decode_eof) drains what is left, then `None`.
    ///
    /// The read buffer comes from the pool, grows with a [`RecvPredictor`], is reused in
    /// place between frames and is given back while the reader has nothing to read (see the
    /// [module docs](super#the-read-path)). A `!Unpin` reader is pinned in place, as in
    /// tokio-util.
    pub struct FramedRead<T, D> {
        #[pin]
        inner: T,
        decoder: D,
        read: ReadHalf,
    }
}

impl<T, D> FramedRead<T, D> {
    /// Frames read from `inner` by `decoder`, into buffers from [`global()`](crate::global)
    /// sized by a default [`RecvPredictor`] (64 B to 64 KiB, from 2 KiB).
    pub fn new(inner: T, decoder: D) -> FramedRead<T, D> {
        FramedRead::with_pool(
            inner,
            decoder,
            crate::global().clone(),
            RecvPredictor::new(),
        )
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
            read: ReadHalf::new(pool, predictor),
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

impl<T: fmt::Debug, D: fmt::Debug> fmt::Debug for FramedRead<T, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("FramedRead");
        s.field("inner", &self.inner)
            .field("decoder", &self.decoder);
        self.read.debug(&mut s);
        s.finish()
    }
}

pin_project! {
    /// A [`Sink`] of items encoded onto a tokio [`AsyncWrite`], like
    /// `tokio_util::codec::FramedWrite`, encoding into pooled buffers.
    ///
    /// `start_send` encodes into the write buffer; `poll_flush` writes it all, then flushes
    /// the writer; `poll_ready` flushes first when the buffer holds
    /// [`backpressure_boundary`](Self::backpressure_boundary) bytes or more (8 KiB by
    /// default), so a slow writer slows the sender. The buffer is taken from the pool for a
    /// burst of items and given back once a flush has written it all.
    pub struct FramedWrite<T, E> {
        #[pin]
        inner: T,
        encoder: E,
        write: WriteHalf,
    }
}

impl<T, E> FramedWrite<T, E> {
    /// Items encoded by `encoder` onto `inner`, through buffers from
    /// [`global()`](crate::global).
    pub fn new(inner: T, encoder: E) -> FramedWrite<T, E> {
        FramedWrite::with_pool(inner, encoder, crate::global().clone())
    }

    /// Items encoded by `encoder` onto `inner`, through buffers from `pool`.
    pub fn with_pool(inner: T, encoder: E, pool: AdaptiveAllocator) -> FramedWrite<T, E> {
        FramedWrite {
            inner,
            encoder,
            write: WriteHalf::new(pool),
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

impl<T: fmt::Debug, E: fmt::Debug> fmt::Debug for FramedWrite<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("FramedWrite");
        s.field("inner", &self.inner)
            .field("encoder", &self.encoder);
        self.write.debug(&mut s);
        s.finish()
    }
}

pin_project! {
    /// Both at once over one transport, like `tokio_util::codec::Framed`: a [`Stream`] of
    /// frames decoded from it (as [`FramedRead`]) and a [`Sink`] of items encoded onto it (as
    /// [`FramedWrite`]), with one codec.
    pub struct Framed<T, U> {
        #[pin]
        inner: T,
        codec: U,
        read: ReadHalf,
        write: WriteHalf,
    }
}

impl<T, U> Framed<T, U> {
    /// Frames over `inner` with `codec`, through buffers from [`global()`](crate::global),
    /// reads sized by a default [`RecvPredictor`].
    pub fn new(inner: T, codec: U) -> Framed<T, U> {
        Framed::with_pool(inner, codec, crate::global().clone(), RecvPredictor::new())
    }

    /// Like [`new`](Self::new), with `capacity` bytes for the first read (see
    /// [`FramedRead::with_capacity`]).
    pub fn with_capacity(inner: T, codec: U, capacity: usize) -> Framed<T, U> {
        let predictor = predictor_from(capacity);
        Framed::with_pool(inner, codec, crate::global().clone(), predictor)
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
            read: ReadHalf::new(pool.clone(), predictor),
            write: WriteHalf::new(pool),
        }
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
