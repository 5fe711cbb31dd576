//! The state machines shared by [`FramedRead`](super::FramedRead),
//! [`FramedWrite`](super::FramedWrite) and [`Framed`](super::Framed), as tokio-util's
//! `framed_impl`: [`ReadFrame`] (the read buffer, its pool and predictor, the phase) and
//! [`WriteFrame`] (the write buffer, back-pressure, flushing).
//!
//! Owns: reading, decoding, the end of the stream and errors; encoding, flushing and giving
//! the buffers back to the pool. The three public types pin their transport and delegate
//! here.
//!
//! The rule of this file: no state changes before a step that can fail. A read that cannot
//! get its buffer, and a decoder that cannot reserve, leave the buffered bytes where they
//! were; after the error (and the `None` that follows it) the buffered bytes are decoded
//! again before anything more is read, so a connection resumes on its frame boundary once
//! memory comes back.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::task::{ready, Context, Poll};

use bytes::{Buf, BufMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use super::{Decoder, Encoder};
use crate::io::OutOfMemory;
use crate::{AdaptiveAllocator, PooledBuf, RecvPredictor};

/// tokio-util's initial buffer capacity, 8 KiB: the first read's size by default, and the
/// default back-pressure boundary.
pub(super) const INITIAL_CAPACITY: usize = 8 << 10;

/// The write buffer's size before it has seen a flush (later ones follow the flushes).
pub(super) const FIRST_WRITE: usize = 1 << 10;

/// The largest write buffer kept across a back-pressure flush (the write predictor's upper
/// bound); a larger one (grown by a large item) goes back to the pool at once.
pub(super) const KEEP_MAX: usize = INITIAL_CAPACITY * 8;

/// Bytes left unused at the start of a write buffer of [`PAD_FROM`] bytes or more: one cache
/// line, so that an item copied from the start of a pooled region lands at least this far
/// from its source's offset in a page.
///
/// Regions of 4, 8, 16, 32 or 64 KiB start on page boundaries, so without it a frame at the
/// start of a read region, echoed to the start of a write region after a 4-byte header,
/// lands 4 bytes past its source's offset in a page. x86's `rep movsb`, which glibc's
/// `memcpy` uses for copies of several KiB, runs 30 to 40 times slower when the destination
/// is 1 to 15 bytes past the source modulo 4 KiB, and twice as slow at 16 to 31 (4K
/// aliasing): a 10 KB copy took 2.8-4.2 us
/// instead of 0.1 us on the development machine (AMD EPYC, glibc 2.36), and 9 % of the
/// frames of the 4-16 KiB echo row hit it (docs/DESIGN.md, "Framing"). jemalloc offsets
/// large allocations within their first page for the same reason (`opt.cache_oblivious`).
pub(super) const WRITE_PAD: usize = 64;

/// The smallest write buffer that gets [`WRITE_PAD`]: items copied into smaller ones are too
/// short for glibc's `rep movsb` path (from 2-8 KiB up, by CPU).
pub(super) const PAD_FROM: usize = 4 << 10;

/// Where the read half stands. Transitions (`decode_eof` is called only after the stream
/// ended, and each end of stream yields one `None`):
///
/// ```text
/// Reading --read n > 0--> Framing --decode None--> Reading
/// Reading --read 0------> Ending  --decode_eof None: yield None--> Ended
/// Ended   --read n > 0--> Framing        Ended --read 0: yield None--> Ended
/// any error: yield it --> Failed --yield None--> then:
///     Framing  after a decode error with bytes buffered (decode them again first)
///     Reading  after a read error, or a decode error with nothing buffered
///     Ended    after a decode_eof error, or a read error once ended
/// ```
///
/// A buffer handed in already filled (`from_parts`) starts in `Framing`.
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
    /// An error was returned; the next poll yields `None`, then goes on in `then`.
    Failed { then: Resume },
}

/// Where the read half goes on after an error and its `None`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Resume {
    Framing,
    Reading,
    Ended,
}

/// The read half's state: the pooled buffer, the pool it comes from, the predictor that
/// sizes the reads, and the phase.
pub(super) struct ReadFrame {
    pub(super) buffer: PooledBuf,
    pub(super) pool: AdaptiveAllocator,
    pub(super) predictor: RecvPredictor,
    phase: Phase,
}

impl ReadFrame {
    pub(super) fn new(pool: AdaptiveAllocator, predictor: RecvPredictor) -> ReadFrame {
        ReadFrame::with_buffer(PooledBuf::new(), pool, predictor)
    }

    /// A read half that starts with `buffer`: its bytes are decoded before anything is read
    /// (tokio-util's `from_parts`).
    pub(super) fn with_buffer(
        buffer: PooledBuf,
        pool: AdaptiveAllocator,
        predictor: RecvPredictor,
    ) -> ReadFrame {
        let phase = if buffer.is_empty() {
            Phase::Reading
        } else {
            Phase::Framing
        };
        ReadFrame {
            buffer,
            pool,
            predictor,
            phase,
        }
    }

    /// The `Stream::poll_next` of every framed type. The common step, a frame decoded from
    /// the bytes buffered, is inline, so that the frame (48 bytes) is not copied once more
    /// through the return value of an out-of-line call (docs/BENCHMARKS.md, "Codec rows");
    /// everything else is [`poll_more`].
    ///
    /// [`poll_more`]: Self::poll_more
    #[inline]
    pub(super) fn poll_frame<T: AsyncRead, D: Decoder>(
        &mut self,
        io: Pin<&mut T>,
        decoder: &mut D,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<D::Item, D::Error>>> {
        if self.phase == Phase::Framing {
            match decoder.decode(&mut self.buffer) {
                Ok(Some(frame)) => return Poll::Ready(Some(Ok(frame))),
                Ok(None) => self.phase = Phase::Reading,
                Err(e) => return self.decode_failed(e),
            }
        }
        self.poll_more(io, decoder, cx)
    }

    /// The state machine of [`poll_frame`](Self::poll_frame) (out of line).
    #[inline(never)]
    fn poll_more<T: AsyncRead, D: Decoder>(
        &mut self,
        mut io: Pin<&mut T>,
        decoder: &mut D,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<D::Item, D::Error>>> {
        loop {
            match self.phase {
                Phase::Failed { then } => {
                    self.phase = match then {
                        Resume::Framing => Phase::Framing,
                        Resume::Reading => Phase::Reading,
                        Resume::Ended => Phase::Ended,
                    };
                    return Poll::Ready(None);
                }
                Phase::Framing => match decoder.decode(&mut self.buffer) {
                    Ok(Some(frame)) => return Poll::Ready(Some(Ok(frame))),
                    Ok(None) => self.phase = Phase::Reading,
                    Err(e) => return self.decode_failed(e),
                },
                Phase::Ending => match decoder.decode_eof(&mut self.buffer) {
                    Ok(Some(frame)) => return Poll::Ready(Some(Ok(frame))),
                    Ok(None) => {
                        self.phase = Phase::Ended;
                        self.release_if_empty();
                        return Poll::Ready(None);
                    }
                    Err(e) => return self.fail(e, Resume::Ended),
                },
                Phase::Reading | Phase::Ended => {
                    let ended = self.phase == Phase::Ended;
                    match ready!(self.poll_read(io.as_mut(), cx)) {
                        Ok(0) if ended => return Poll::Ready(None),
                        Ok(0) => self.phase = Phase::Ending,
                        Ok(_) => self.phase = Phase::Framing,
                        Err(e) => {
                            let then = if ended {
                                Resume::Ended
                            } else {
                                Resume::Reading
                            };
                            return self.fail(e.into(), then);
                        }
                    }
                }
            }
        }
    }

    /// A decode error: yielded, then decoding resumes on the bytes buffered, if any.
    #[cold]
    fn decode_failed<I, E>(&mut self, e: E) -> Poll<Option<Result<I, E>>> {
        let then = if self.buffer.is_empty() {
            Resume::Reading
        } else {
            Resume::Framing
        };
        self.fail(e, then)
    }

    fn fail<I, E>(&mut self, e: E, then: Resume) -> Poll<Option<Result<I, E>>> {
        self.phase = Phase::Failed { then };
        Poll::Ready(Some(Err(e)))
    }

    /// One read into the buffer's spare capacity, after making room for the predicted size.
    /// A refused allocation changes nothing (the buffered bytes stay).
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
                self.buffer = self
                    .pool
                    .try_allocate(want)
                    .map_err(|e| OutOfMemory::io_error(e, &self.pool))?;
            }
        } else {
            // A partial frame: grow with it (same allocator as its region).
            self.buffer
                .try_reserve(want)
                .map_err(|e| OutOfMemory::io_error(e, &self.buffer.allocator()))?;
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

    /// The buffer, taken out (for `into_parts`).
    pub(super) fn into_buffer(self) -> PooledBuf {
        self.buffer
    }

    pub(super) fn debug(&self, f: &mut fmt::DebugStruct<'_, '_>) {
        f.field("read_buffer", &self.buffer)
            .field("predictor", &self.predictor)
            .field("phase", &self.phase);
    }
}

/// The write half's state: the pooled buffer items are encoded into, the back-pressure
/// boundary, and the predictor that sizes the buffer from past flushes.
pub(super) struct WriteFrame {
    pub(super) buffer: PooledBuf,
    pool: AdaptiveAllocator,
    /// Sizes the buffer taken for a burst: by the bytes that past bursts flushed.
    sizes: RecvPredictor,
    /// Bytes written since the buffer was taken.
    written: usize,
    pub(super) boundary: usize,
}

impl WriteFrame {
    /// A write half whose first buffer is `first` bytes (later ones follow the flushes) and
    /// whose back-pressure boundary is `boundary`.
    pub(super) fn new(pool: AdaptiveAllocator, first: usize, boundary: usize) -> WriteFrame {
        let first = first.clamp(64, INITIAL_CAPACITY * 8);
        WriteFrame {
            buffer: PooledBuf::new(),
            pool,
            sizes: RecvPredictor::with_bounds(64, first, INITIAL_CAPACITY * 8)
                .expect("valid write-size bounds"),
            written: 0,
            boundary,
        }
    }

    /// A write half that starts with `buffer` (for `from_parts`): its bytes are written
    /// before the items encoded after them.
    pub(super) fn with_buffer(buffer: PooledBuf, pool: AdaptiveAllocator) -> WriteFrame {
        let mut write = WriteFrame::new(pool, FIRST_WRITE, INITIAL_CAPACITY);
        if buffer.capacity() > 0 {
            write.buffer = buffer;
        }
        write
    }

    /// Flushes first when the buffer holds `boundary` bytes or more. The emptied buffer is
    /// kept (up to [`KEEP_MAX`]): the caller is about to send an item into it, as tokio-util
    /// keeps its capacity. The burst's own `poll_flush` or `poll_close` gives it back.
    pub(super) fn poll_ready<T: AsyncWrite, E: From<io::Error>>(
        &mut self,
        io: Pin<&mut T>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), E>> {
        if self.buffer.len() >= self.boundary {
            self.write_out(io, cx, Keep::Buffer)
        } else {
            Poll::Ready(Ok(()))
        }
    }

    #[inline]
    pub(super) fn start_send<I, C: Encoder<I>>(
        &mut self,
        encoder: &mut C,
        item: I,
    ) -> Result<(), C::Error> {
        if self.buffer.capacity() == 0 {
            self.take_buffer()?;
        }
        encoder.encode(item, &mut self.buffer)
    }

    /// The first item of a burst: a buffer from the pool, sized by past flushes.
    #[inline(never)]
    fn take_buffer(&mut self) -> io::Result<()> {
        self.buffer = self
            .pool
            .try_allocate(self.sizes.next_size())
            .map_err(|e| OutOfMemory::io_error(e, &self.pool))?;
        pad(&mut self.buffer);
        Ok(())
    }

    /// Writes everything buffered, then flushes the writer; the emptied buffer goes back to
    /// the pool, so a connection holds no write buffer between bursts.
    pub(super) fn poll_flush<T: AsyncWrite, E: From<io::Error>>(
        &mut self,
        io: Pin<&mut T>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), E>> {
        self.write_out(io, cx, Keep::Nothing)
    }

    fn write_out<T: AsyncWrite, E: From<io::Error>>(
        &mut self,
        mut io: Pin<&mut T>,
        cx: &mut Context<'_>,
        keep: Keep,
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
        // Everything is written. The size of the next burst's buffer follows this one's;
        // the buffer goes back to the pool until the next item, unless an item is coming now
        // (back-pressure) and it is small enough to keep.
        if self.written > 0 {
            self.sizes.record(self.written);
            self.written = 0;
        }
        let kept = keep == Keep::Buffer && {
            // Back to the region's start (possible once the buffer is its only handle): the
            // capacity is then the whole region's.
            let rest = self.buffer.capacity();
            self.buffer.try_reclaim(rest + 1) && self.buffer.capacity() <= KEEP_MAX
        };
        if kept {
            pad(&mut self.buffer);
        } else {
            self.buffer = PooledBuf::new();
        }
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

    /// The buffer, taken out (for `into_parts`).
    pub(super) fn into_buffer(self) -> PooledBuf {
        self.buffer
    }

    /// The allocator the write buffers come from.
    pub(super) fn pool(&self) -> &AdaptiveAllocator {
        &self.pool
    }

    pub(super) fn debug(&self, f: &mut fmt::DebugStruct<'_, '_>) {
        f.field("write_buffer", &self.buffer)
            .field("backpressure_boundary", &self.boundary);
    }
}

/// What a flush keeps of the write buffer once everything is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Keep {
    /// Nothing: the buffer goes back to the pool (`poll_flush`, `poll_close`).
    Nothing,
    /// The emptied buffer, for the item that follows (`poll_ready`'s back-pressure flush).
    Buffer,
}

/// Leaves [`WRITE_PAD`] bytes unused at the start of an empty write buffer of [`PAD_FROM`]
/// bytes or more.
fn pad(buffer: &mut PooledBuf) {
    if buffer.is_empty() && buffer.capacity() >= PAD_FROM {
        buffer.put_bytes(0, WRITE_PAD);
        buffer.advance(WRITE_PAD);
    }
}

/// The predictor of `new` (tokio-util's 8 KiB for the first read) and of the
/// `with_capacity` constructors (`capacity`); later reads follow the traffic, from 64 B up to
/// `max(capacity, 64 KiB)`.
pub(super) fn predictor_from(capacity: usize) -> RecvPredictor {
    let initial = capacity.clamp(1, isize::MAX as usize);
    RecvPredictor::with_bounds(initial.min(64), initial, initial.max(64 << 10))
        .expect("bounds ordered by construction")
}
