//! tokio integration: [`AsyncReadPoolExt`], reads from any `tokio::io::AsyncRead` into
//! pooled buffers sized by a [`RecvPredictor`], handing frames on as `bytes::Bytes` without
//! copying.
//!
//! Owns: the receive loop's glue between a reader, an [`AdaptiveAllocator`] and a predictor.
//! May import: the public API only (`AdaptiveAllocator`, `PooledBuf`, `RecvPredictor`,
//! `AllocError`); it touches no core internals and contains no `unsafe`: reads go through
//! tokio's `AsyncReadExt::read_buf`, which writes into the buffer's spare capacity through
//! [`bytes::BufMut`]. Compiled with the `tokio` feature only.

use std::future::Future;
use std::io;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::{AdaptiveAllocator, AllocError, PooledBuf, RecvPredictor};

/// Reads from a `tokio::io::AsyncRead` into pooled buffers whose size adapts to the traffic.
///
/// Implemented for every `AsyncRead` (sockets, `split` halves, `BufReader`s, test doubles).
/// Two ways to read:
///
/// * [`read_pooled`](Self::read_pooled): one read into a fresh buffer of the predicted size,
///   returned frozen as `Bytes`. For streams handled chunk by chunk (proxies, echo, body
///   forwarding).
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
/// [`io::Error`] of kind [`io::ErrorKind::OutOfMemory`] wrapping the [`AllocError`]
/// (`err.get_ref()` downcasts to it): treat it as back-pressure, e.g. stop reading for a while
/// or close the connection, rather than as a crash.
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
///     frames.push(frame); // a `bytes::Bytes` on pooled memory, no copy
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
    /// `predictor`, and returns the bytes read as a `Bytes` on the pooled memory, without
    /// copying. Returns `Ok(None)` at the end of the stream (a read of zero bytes), which
    /// leaves the predictor as it was.
    ///
    /// The `Bytes` holds its whole buffer (the bytes read plus the unused capacity) until it
    /// and every clone and slice of it are dropped, on whatever thread; the predictor keeps
    /// the unused part small by shrinking after small reads.
    ///
    /// Cancel safe: if the future is dropped before it completes, no data has been read and
    /// the predictor is unchanged.
    ///
    /// # Errors
    /// The reader's error; or, if the pool refuses the buffer, an error of kind
    /// [`io::ErrorKind::OutOfMemory`] wrapping the [`AllocError`].
    fn read_pooled<'a>(
        &'a mut self,
        pool: &'a AdaptiveAllocator,
        predictor: &'a mut RecvPredictor,
    ) -> impl Future<Output = io::Result<Option<Bytes>>> + 'a
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
    /// [`io::ErrorKind::OutOfMemory`] wrapping the [`AllocError`] (`buf` is unchanged).
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
    ) -> io::Result<Option<Bytes>>
    where
        Self: Unpin,
    {
        let mut buf = pool
            .try_allocate(predictor.next_size())
            .map_err(out_of_memory)?;
        let n = self.read_buf(&mut buf).await?;
        predictor.record(n);
        Ok((n > 0).then(|| buf.freeze()))
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
            .map_err(out_of_memory)?;
        let n = self.read_buf(buf).await?;
        predictor.record(n);
        Ok(n)
    }
}

/// An allocation failure as an `io::Error` that keeps the `AllocError` inside.
fn out_of_memory(e: AllocError) -> io::Error {
    io::Error::new(io::ErrorKind::OutOfMemory, e)
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
        let sizes: Vec<usize> = got.iter().map(Bytes::len).collect();
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
        let inner = err.get_ref().and_then(|e| e.downcast_ref::<AllocError>());
        assert!(
            matches!(inner, Some(AllocError::MemoryLimit { .. })),
            "{err:?}"
        );
        assert!(src.offered.is_empty(), "nothing was read");

        let mut buf = pool.allocate(16);
        buf.extend_from_slice(b"kept");
        let err = block_on(src.read_pooled_into(&mut buf, &mut p)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::OutOfMemory);
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
