//! tokio integration: [`AsyncReadPoolExt`], reads from any `tokio::io::AsyncRead` into
//! pooled buffers sized by a [`RecvPredictor`], handing each read on as a [`PooledBuf`]
//! (`.freeze()` it for a `bytes::Bytes`, without copying); and [`OutOfMemory`], the error
//! inside the `io::Error` of a refused allocation (here and in the codecs).
//!
//! Owns: the receive loop's glue between a reader, an [`AdaptiveAllocator`] and a predictor.
//! May import: the public API only (`AdaptiveAllocator`, `PooledBuf`, `RecvPredictor`,
//! `AllocError`); it touches no core internals and contains no `unsafe`: reads go through
//! tokio's `AsyncReadExt::read_buf`, which writes into the buffer's spare capacity through
//! [`bytes::BufMut`]. Compiled with the `tokio` feature only.

use std::future::Future;
use std::io;

use std::fmt;

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::{AdaptiveAllocator, AllocError, PooledBuf, RecvPredictor};

/// Reads from a `tokio::io::AsyncRead` into pooled buffers whose size adapts to the traffic.
///
/// Implemented for every `AsyncRead` (sockets, `split` halves, `BufReader`s, test doubles).
/// Two ways to read:
///
/// * [`read_pooled`](Self::read_pooled): one read into a fresh buffer of the predicted size,
///   returned as that `PooledBuf`. For streams handled chunk by chunk (proxies, echo, body
///   forwarding); `.freeze()` it where a `Bytes` is needed.
/// * [`read_pooled_into`](Self::read_pooled_into): one read appended to a `PooledBuf` you
///   keep, after making room for the predicted size. For framing: split complete frames off
///   the front with `split_to(n).freeze()` and keep reading into the rest.
///
/// Both allocate (or reserve) before they read, so while a read waits on an idle connection
/// its buffer is held: one buffer of about `next_size()` bytes per waiting connection. With
/// many mostly idle connections, wait for readiness first (`TcpStream::readable().await`, or
/// `readable()` on its read halves) and read after it: then only connections with data hold
/// a buffer, and only for as long as the read and the frames it returns live.
///
/// An allocation refused by the pool (past `max_memory`) is returned as an
/// [`io::Error`] of kind [`io::ErrorKind::OutOfMemory`] wrapping an [`OutOfMemory`]
/// (`err.get_ref()` downcasts to it), which holds the [`AllocError`] and the pool's usage
/// then: treat it as back-pressure, e.g. stop reading for a while (or await
/// `pool.ready(predictor.next_size())`) or close the connection, rather than as a crash.
///
/// ```
/// use adaptive_pool::io::AsyncReadPoolExt;
/// use adaptive_pool::{AdaptiveAllocator, RecvPredictor};
///
/// # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// # rt.block_on(async {
/// let pool = AdaptiveAllocator::new();
/// let mut predictor = RecvPredictor::with_bounds(64, 1024, 64 << 10)?;
///
/// // Any `AsyncRead` works; a byte slice stands in for a socket here.
/// let mut socket: &[u8] = &[7u8; 5000];
/// let mut frames = Vec::new();
/// while let Some(frame) = socket.read_pooled(&pool, &mut predictor).await? {
///     frames.push(frame); // a `PooledBuf`: `frame.freeze()` is a `bytes::Bytes`, no copy
/// }
/// // 1024 filled the first buffer, so the next read was offered 4096.
/// let sizes: Vec<usize> = frames.iter().map(|f| f.len()).collect();
/// assert_eq!(sizes, [1024, 3976]);
/// assert_eq!(predictor.next_size(), 4096);
///
/// assert_eq!(pool.stats().live_buffers, 2);
/// drop(frames);
/// assert!(pool.stats().is_quiet());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
pub trait AsyncReadPoolExt: AsyncRead {
    /// Reads once into a new buffer of `predictor.next_size()` bytes (rounded up to the pool's
    /// size class; the read may fill that whole capacity) from `pool`, records the read in
    /// `predictor`, and returns the buffer holding the bytes read. Returns `Ok(None)` at the
    /// end of the stream (a read of zero bytes), which leaves the predictor as it was.
    ///
    /// The buffer is mutable, as tokio-util's frames are: parse it in place, split it, or
    /// `.freeze()` it into a `Bytes` on the same memory (`freeze` boxes an owner for the
    /// `Bytes`, so freeze only what you hand on as `Bytes`). The buffer (and the `Bytes`
    /// frozen from it, with every clone and slice) holds its whole region, the unused
    /// capacity included, until dropped, on whatever thread; the predictor keeps the unused
    /// part small by shrinking after small reads.
    ///
    /// Cancel safe: if the future is dropped before it completes, no data has been read and
    /// the predictor is unchanged.
    ///
    /// # Errors
    /// The reader's error; or, if the pool refuses the buffer, an error of kind
    /// [`io::ErrorKind::OutOfMemory`] wrapping an [`OutOfMemory`].
    fn read_pooled<'a>(
        &'a mut self,
        pool: &'a AdaptiveAllocator,
        predictor: &'a mut RecvPredictor,
    ) -> impl Future<Output = io::Result<Option<PooledBuf>>> + 'a
    where
        Self: Unpin;

    /// Makes room in `buf` for at least `predictor.next_size()` more bytes, reads once into
    /// its spare capacity (as much as it holds), records the read in `predictor`, and returns
    /// the number of bytes appended; `0` means the end of the stream.
    ///
    /// Making room follows [`PooledBuf::try_reserve`]: in place when `buf` is the only handle
    /// on its region, otherwise (after `split_to` handed frames on) by moving the unread tail
    /// to a new region of the same allocator, as `BytesMut` does.
    ///
    /// Cancel safe, as [`read_pooled`](Self::read_pooled) (the room made stays).
    ///
    /// ```
    /// use adaptive_pool::io::AsyncReadPoolExt;
    /// use adaptive_pool::{AdaptiveAllocator, RecvPredictor};
    /// use bytes::Buf;
    ///
    /// # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    /// # rt.block_on(async {
    /// let pool = AdaptiveAllocator::new();
    /// let mut predictor = RecvPredictor::new();
    /// // Two frames, each a one-byte length then the payload.
    /// let mut socket: &[u8] = b"\x05hello\x03abc";
    /// let mut buf = pool.allocate(0);
    /// let mut frames = Vec::new();
    /// while socket.read_pooled_into(&mut buf, &mut predictor).await? > 0 {
    ///     while let Some(&len) = buf.first() {
    ///         if buf.len() < 1 + len as usize {
    ///             break;
    ///         }
    ///         buf.advance(1);
    ///         frames.push(buf.split_to(len as usize).freeze());
    ///     }
    /// }
    /// assert_eq!(frames, ["hello", "abc"]);
    /// # Ok::<(), std::io::Error>(())
    /// # }).unwrap();
    /// ```
    ///
    /// # Errors
    /// The reader's error; or, if the pool refuses the room, an error of kind
    /// [`io::ErrorKind::OutOfMemory`] wrapping an [`OutOfMemory`] (`buf` is unchanged).
    fn read_pooled_into<'a>(
        &'a mut self,
        buf: &'a mut PooledBuf,
        predictor: &'a mut RecvPredictor,
    ) -> impl Future<Output = io::Result<usize>> + 'a
    where
        Self: Unpin;
}

impl<R: AsyncRead + ?Sized> AsyncReadPoolExt for R {
    async fn read_pooled(
        &mut self,
        pool: &AdaptiveAllocator,
        predictor: &mut RecvPredictor,
    ) -> io::Result<Option<PooledBuf>>
    where
        Self: Unpin,
    {
        let mut buf = pool
            .try_allocate(predictor.next_size())
            .map_err(|e| OutOfMemory::io_error(e, pool))?;
        let n = self.read_buf(&mut buf).await?;
        predictor.record(n);
        Ok((n > 0).then_some(buf))
    }

    async fn read_pooled_into(
        &mut self,
        buf: &mut PooledBuf,
        predictor: &mut RecvPredictor,
    ) -> io::Result<usize>
    where
        Self: Unpin,
    {
        buf.try_reserve(predictor.next_size())
            .map_err(|e| OutOfMemory::io_error(e, &buf.allocator()))?;
        let n = self.read_buf(buf).await?;
        predictor.record(n);
        Ok(n)
    }
}

/// An allocation the pool refused, with the pool's usage at that moment: the error inside
/// the [`io::Error`] of kind [`io::ErrorKind::OutOfMemory`] that [`AsyncReadPoolExt`] and the
/// codecs (feature `codec`) return. Its message states the refusal and the usage, e.g.
/// "memory limit reached: 1049600 more bytes would exceed the limit of 1048576 bytes (the
/// pool holds 917504 bytes from the system, 786432 of them in 3 live buffers)";
/// [`source`](std::error::Error::source) is the [`AllocError`].
///
/// ```
/// use adaptive_pool::io::OutOfMemory;
/// use adaptive_pool::{AdaptiveAllocator, AllocError};
///
/// let pool = AdaptiveAllocator::builder().max_memory(1 << 20).build()?;
/// let held = pool.allocate(600 << 10);
/// let refused = pool.try_allocate(600 << 10).unwrap_err();
/// let err = OutOfMemory::io_error(refused, &pool);
/// assert_eq!(err.kind(), std::io::ErrorKind::OutOfMemory);
/// let oom = err.get_ref().unwrap().downcast_ref::<OutOfMemory>().unwrap();
/// assert!(matches!(oom.alloc_error(), AllocError::MemoryLimit { .. }));
/// assert_eq!(oom.live_buffers(), 1);
/// assert!(oom.live_bytes() >= 600 << 10);
/// assert!(err.to_string().contains("in 1 live buffers"), "{err}");
/// # drop(held);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfMemory {
    error: AllocError,
    allocated_bytes: usize,
    live_bytes: usize,
    live_buffers: usize,
}

impl OutOfMemory {
    /// The refusal `error` of `pool`, with `pool`'s usage now.
    pub fn new(error: AllocError, pool: &AdaptiveAllocator) -> OutOfMemory {
        let stats = pool.stats();
        OutOfMemory {
            error,
            allocated_bytes: stats.allocated_bytes,
            live_bytes: stats.live_bytes,
            live_buffers: stats.live_buffers,
        }
    }

    /// The same, as an [`io::Error`] of kind [`io::ErrorKind::OutOfMemory`]: what a
    /// `Decoder` of your own (feature `codec`, `adaptive_pool::codec::Decoder`) returns when
    /// `try_reserve` fails.
    pub fn io_error(error: AllocError, pool: &AdaptiveAllocator) -> io::Error {
        io::Error::new(io::ErrorKind::OutOfMemory, OutOfMemory::new(error, pool))
    }

    /// Why the pool refused.
    pub fn alloc_error(&self) -> AllocError {
        self.error
    }

    /// The pool's `Stats::allocated_bytes` when it refused: bytes held from the system.
    pub fn allocated_bytes(&self) -> usize {
        self.allocated_bytes
    }

    /// The pool's `Stats::live_bytes` when it refused: the capacity of its live buffers.
    pub fn live_bytes(&self) -> usize {
        self.live_bytes
    }

    /// The pool's `Stats::live_buffers` when it refused.
    pub fn live_buffers(&self) -> usize {
        self.live_buffers
    }
}

impl fmt::Display for OutOfMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (the pool holds {} bytes from the system, {} of them in {} live buffers)",
            self.error, self.allocated_bytes, self.live_bytes, self.live_buffers
        )
    }
}

impl std::error::Error for OutOfMemory {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::pin::Pin;
    use std::task::{Context, Poll};

    use tokio::io::ReadBuf;

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime")
            .block_on(f)
    }

    /// Hands out the given read sizes, one per `poll_read`, then the end of the stream.
    /// Records how much room each read was offered.
    struct Script {
        reads: Vec<usize>,
        offered: Vec<usize>,
        next_byte: u8,
    }

    impl Script {
        fn new(reads: &[usize]) -> Self {
            Script {
                reads: reads.iter().rev().copied().collect(),
                offered: Vec::new(),
                next_byte: 0,
            }
        }
    }

    impl AsyncRead for Script {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            self.offered.push(buf.remaining());
            let n = self.reads.pop().unwrap_or(0).min(buf.remaining());
            for _ in 0..n {
                let b = self.next_byte;
                buf.put_slice(&[b]);
                self.next_byte = b.wrapping_add(1);
            }
            Poll::Ready(Ok(()))
        }
    }

    /// Always fails, like a reset connection.
    struct Broken;

    impl AsyncRead for Broken {
        fn poll_read(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            _buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()))
        }
    }

    fn pool() -> AdaptiveAllocator {
        AdaptiveAllocator::builder()
            .max_memory(1 << 20)
            .max_chunk_size(256 << 10)
            .build()
            .unwrap()
    }

    #[test]
    fn read_pooled_offers_the_predicted_size_and_follows_the_traffic() {
        let pool = pool();
        let mut p = RecvPredictor::with_bounds(256, 1024, 16 << 10).unwrap();
        let mut src = Script::new(&[1024, 4096, 16384, 100, 100, 100, 100]);
        let mut got = Vec::new();
        block_on(async {
            while let Some(b) = src.read_pooled(&pool, &mut p).await.unwrap() {
                got.push(b);
            }
        });
        // Grows x4 on each full read up to the max, then halves after two small reads.
        assert_eq!(
            src.offered,
            [1024, 4096, 16384, 16384, 16384, 8192, 8192, 4096]
        );
        let sizes: Vec<usize> = got.iter().map(PooledBuf::len).collect();
        assert_eq!(sizes, [1024, 4096, 16384, 100, 100, 100, 100]);
        // The stream's bytes arrive in order, across frames.
        let all: Vec<u8> = got.iter().flat_map(|b| b.iter().copied()).collect();
        assert!(all.iter().enumerate().all(|(i, &b)| b == i as u8));
        // The end of the stream changed nothing.
        assert_eq!(p.next_size(), 4096);
        // Every frame is on the pool until dropped.
        assert_eq!(pool.stats().live_buffers, 7);
        drop(got);
        assert!(pool.stats().is_quiet(), "{}", pool.stats());
    }

    #[test]
    fn read_pooled_at_eof_returns_none_and_keeps_nothing() {
        let pool = pool();
        let mut p = RecvPredictor::new();
        let mut src = Script::new(&[]);
        let got = block_on(src.read_pooled(&pool, &mut p)).unwrap();
        assert!(got.is_none());
        assert_eq!(p, RecvPredictor::new());
        assert!(pool.stats().is_quiet());
    }

    #[test]
    fn read_pooled_into_appends_and_reserves_the_predicted_room() {
        let pool = pool();
        let mut p = RecvPredictor::with_bounds(64, 128, 4096).unwrap();
        let mut src = Script::new(&[128, 10, 512, 3]);
        let mut buf = pool.allocate(0);
        let mut total = 0;
        block_on(async {
            loop {
                let n = src.read_pooled_into(&mut buf, &mut p).await.unwrap();
                if n == 0 {
                    break;
                }
                total += n;
                assert_eq!(buf.len(), total);
            }
        });
        assert_eq!(total, 128 + 10 + 512 + 3);
        assert!(buf.iter().enumerate().all(|(i, &b)| b == i as u8));
        // Every read was offered at least the prediction in force.
        let predicted = [128, 512, 512, 2048, 2048];
        for (offered, predicted) in src.offered.iter().zip(predicted) {
            assert!(*offered >= predicted, "{:?}", src.offered);
        }
        // Hand a frame on, then ask for more room than the region has left: the unread tail
        // moves to a new region, and the frame keeps the old one.
        let frame = buf.split_to(100).freeze();
        let tail = buf.len();
        assert_eq!(tail, 553);
        let mut p = RecvPredictor::with_bounds(8192, 8192, 8192).unwrap();
        assert!(buf.capacity() - tail < 8192);
        let mut src = Script::new(&[8192]);
        let n = block_on(src.read_pooled_into(&mut buf, &mut p)).unwrap();
        assert_eq!(n, 8192);
        assert!(frame.iter().enumerate().all(|(i, &b)| b == i as u8));
        assert!(buf[..tail]
            .iter()
            .enumerate()
            .all(|(i, &b)| b == (100 + i) as u8));
        assert!(buf[tail..].iter().enumerate().all(|(i, &b)| b == i as u8));
        assert_eq!(pool.stats().live_buffers, 2);
        drop((frame, buf));
        assert!(pool.stats().is_quiet(), "{}", pool.stats());
    }

    #[test]
    fn pool_refusal_is_an_out_of_memory_io_error() {
        // The least limit `build()` accepts is about 76 KiB (one 4 KiB chunk per small class):
        // 128 KiB is far below the 1 MiB read.
        let pool = AdaptiveAllocator::builder()
            .max_memory(128 << 10)
            .build()
            .unwrap();
        let mut p = RecvPredictor::with_bounds(1 << 20, 1 << 20, 1 << 20).unwrap();
        let mut src = Script::new(&[10]);
        let err = block_on(src.read_pooled(&pool, &mut p)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::OutOfMemory);
        let inner = err.get_ref().and_then(|e| e.downcast_ref::<OutOfMemory>());
        assert!(
            matches!(
                inner.map(OutOfMemory::alloc_error),
                Some(AllocError::MemoryLimit { .. })
            ),
            "{err:?}"
        );
        // The message states the usage: nothing live yet.
        assert!(
            err.to_string().contains("0 of them in 0 live buffers"),
            "{err}"
        );
        assert!(src.offered.is_empty(), "nothing was read");

        let mut buf = pool.allocate(16);
        buf.extend_from_slice(b"kept");
        let err = block_on(src.read_pooled_into(&mut buf, &mut p)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::OutOfMemory);
        assert!(err.to_string().contains("in 1 live buffers"), "{err}");
        assert_eq!(&buf[..], b"kept", "the buffer is unchanged");
        assert_eq!(p.next_size(), 1 << 20, "the predictor is unchanged");
        drop(buf);
        assert!(pool.stats().is_quiet());
    }

    #[test]
    fn reader_errors_pass_through_and_release_the_buffer() {
        let pool = pool();
        let mut p = RecvPredictor::new();
        let err = block_on(Broken.read_pooled(&pool, &mut p)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
        assert_eq!(p, RecvPredictor::new());
        assert!(pool.stats().is_quiet(), "{}", pool.stats());
    }
}
