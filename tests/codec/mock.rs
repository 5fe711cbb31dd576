//! Scripted transports and hand polling for the codec tests.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use adaptive_pool::AdaptiveAllocator;
use futures_core::Stream;
use futures_sink::Sink;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// One step of a script.
#[derive(Debug)]
pub enum Step {
    /// Bytes (a read hands out as many as fit; the rest stays first in line). For a writer:
    /// accept at most this many bytes in one write, which must match them.
    Data(Vec<u8>),
    /// Not ready yet.
    Pending,
    /// An error of this kind.
    Fail(io::ErrorKind),
}

pub fn data(bytes: &[u8]) -> Step {
    Step::Data(bytes.to_vec())
}

/// A reader that follows a script, then reports the end of the stream. Records the room
/// each read was offered.
#[derive(Debug, Default)]
pub struct Mock {
    pub steps: VecDeque<Step>,
    pub offered: Vec<usize>,
    /// Bytes written, for a writer.
    pub written: Vec<u8>,
    pub flushes: usize,
    pub shut_down: bool,
}

impl Mock {
    pub fn new(steps: impl IntoIterator<Item = Step>) -> Mock {
        Mock {
            steps: steps.into_iter().collect(),
            ..Mock::default()
        }
    }
}

impl AsyncRead for Mock {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let room = buf.remaining();
        self.offered.push(room);
        match self.steps.pop_front() {
            None => Poll::Ready(Ok(())),
            Some(Step::Pending) => Poll::Pending,
            Some(Step::Fail(kind)) => Poll::Ready(Err(io::Error::new(kind, "scripted"))),
            Some(Step::Data(mut bytes)) => {
                if bytes.len() > room {
                    let rest = bytes.split_off(room);
                    self.steps.push_front(Step::Data(rest));
                }
                buf.put_slice(&bytes);
                Poll::Ready(Ok(()))
            }
        }
    }
}

impl AsyncWrite for Mock {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        src: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.steps.pop_front() {
            // No script left: take everything.
            None => {
                self.written.extend_from_slice(src);
                Poll::Ready(Ok(src.len()))
            }
            Some(Step::Pending) => Poll::Pending,
            Some(Step::Fail(kind)) => Poll::Ready(Err(io::Error::new(kind, "scripted"))),
            Some(Step::Data(expected)) => {
                let n = expected.len().min(src.len());
                assert_eq!(&src[..n], &expected[..n], "unexpected bytes written");
                self.written.extend_from_slice(&src[..n]);
                Poll::Ready(Ok(n))
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.flushes += 1;
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.shut_down = true;
        Poll::Ready(Ok(()))
    }
}

fn cx() -> Context<'static> {
    Context::from_waker(Waker::noop())
}

/// Polls a stream once.
pub fn next<S: Stream + Unpin>(s: &mut S) -> Poll<Option<S::Item>> {
    Pin::new(s).poll_next(&mut cx())
}

/// Polls a stream once; it must be ready with a frame.
#[track_caller]
pub fn frame<S, T, E>(s: &mut S) -> T
where
    S: Stream<Item = Result<T, E>> + Unpin,
    E: std::fmt::Debug,
{
    match next(s) {
        Poll::Ready(Some(Ok(frame))) => frame,
        Poll::Ready(Some(Err(e))) => panic!("expected a frame, got the error {e:?}"),
        Poll::Ready(None) => panic!("expected a frame, got the end of the stream"),
        Poll::Pending => panic!("expected a frame, got Pending"),
    }
}

/// Polls a stream once; it must be ready with an error.
#[track_caller]
pub fn error<S, T, E>(s: &mut S) -> E
where
    S: Stream<Item = Result<T, E>> + Unpin,
    T: std::fmt::Debug,
    E: std::fmt::Debug,
{
    match next(s) {
        Poll::Ready(Some(Err(e))) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

/// Polls a stream once; it must be ready and ended.
#[track_caller]
pub fn end<S, T, E>(s: &mut S)
where
    S: Stream<Item = Result<T, E>> + Unpin,
    T: std::fmt::Debug,
    E: std::fmt::Debug,
{
    match next(s) {
        Poll::Ready(None) => {}
        other => panic!("expected the end of the stream, got {other:?}"),
    }
}

pub fn ready<I, S: Sink<I> + Unpin>(s: &mut S) -> Poll<Result<(), S::Error>> {
    Pin::new(s).poll_ready(&mut cx())
}

pub fn send<I, S: Sink<I> + Unpin>(s: &mut S, item: I) -> Result<(), S::Error> {
    Pin::new(s).start_send(item)
}

pub fn flush<I, S: Sink<I> + Unpin>(s: &mut S) -> Poll<Result<(), S::Error>> {
    Pin::new(s).poll_flush(&mut cx())
}

pub fn close<I, S: Sink<I> + Unpin>(s: &mut S) -> Poll<Result<(), S::Error>> {
    Pin::new(s).poll_close(&mut cx())
}

/// An allocator of the test's own, so its statistics count that test alone.
pub fn pool() -> AdaptiveAllocator {
    AdaptiveAllocator::builder()
        .max_memory(64 << 20)
        .build()
        .expect("valid settings")
}
