//! The ratio report's small-frame codec echo row alone, on one side: a whole-process probe for
//! callgrind, cachegrind and perf (the report runs both sides in one process).
//!
//! ```text
//! cargo build --release --features codec --example codec_probe
//! valgrind --tool=callgrind target/release/examples/codec_probe pool 200000
//! valgrind --tool=callgrind target/release/examples/codec_probe tokio-util 200000
//! ```
//!
//! `SIDE N [MIN MAX]`: SIDE is `pool` or `tokio-util`; N frames after a warm-up of N / 10;
//! frames of MIN..=MAX bytes (default 64 1500, the report's small-frame row). Prints the
//! nanoseconds a frame of the measured run. The work per frame is `(run(2N) - run(N)) / N`
//! in instructions, which leaves the warm-up and start-up out.

#[path = "../benches/workloads/mod.rs"]
mod workloads;

#[cfg(feature = "codec")]
mod echo {
    use std::io;
    use std::pin::Pin;
    use std::task::{Context, Poll, Waker};
    use std::time::{Duration, Instant};

    use adaptive_pool::{AdaptiveAllocator, PooledBuf, RecvPredictor};
    use bytes::{Bytes, BytesMut};
    use futures_core::Stream;
    use futures_sink::Sink;
    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

    const FRAMES: usize = 4096;
    const MAX_READ: usize = 64 << 10;

    /// As `examples/ratio.rs`'s `codec_rows::wire`.
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
            _ => panic!("the wire never ends"),
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

    pub fn echo_pool(
        pool: &AdaptiveAllocator,
        wire: &Bytes,
        n: u64,
        max_read: Option<usize>,
    ) -> Duration {
        let cx = &mut Context::from_waker(Waker::noop());
        let mut framed = adaptive_pool::codec::Framed::with_pool(
            loop_io(wire),
            adaptive_pool::codec::LengthDelimitedCodec::new(),
            pool.clone(),
            match max_read {
                Some(max) => RecvPredictor::with_bounds(64, 8192.min(max), max).expect("bounds"),
                None => RecvPredictor::new(),
            },
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
            let frame: Bytes = next::<_, BytesMut, _>(&mut framed, cx).freeze();
            send(&mut framed, frame, i % 32 == 31, cx);
        }
        assert!(Sink::<Bytes>::poll_flush(Pin::new(&mut framed), cx).is_ready());
        t.elapsed()
    }
}

#[cfg(feature = "codec")]
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: codec_probe pool|tokio-util N [MIN MAX]";
    let (side, n) = match (
        args.first(),
        args.get(1).and_then(|n| n.parse::<u64>().ok()),
    ) {
        (Some(side), Some(n)) => (side.clone(), n),
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    };
    let min = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(64);
    let max = args.get(3).and_then(|v| v.parse().ok()).unwrap_or(1500);
    let wire = echo::wire(min, max);
    let pool = adaptive_pool::AdaptiveAllocator::new();
    // Several sides, comma-separated: run alternately, 9 rounds, medians.
    let sides: Vec<&str> = side.split(',').collect();
    let run = |side: &str, n| match side {
        "pool" => echo::echo_pool(&pool, &wire, n, None),
        s if s.starts_with("pool@") => echo::echo_pool(&pool, &wire, n, s[5..].parse().ok()),
        "tokio-util" => echo::echo_tokio_util(&wire, n),
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    };
    if sides.len() == 1 {
        run(&side, n / 10);
        let t = run(&side, n);
        println!("{side}: {:.1} ns a frame", t.as_nanos() as f64 / n as f64);
        return;
    }
    let mut times = vec![Vec::new(); sides.len()];
    for s in &sides {
        run(s, n / 10);
    }
    for _ in 0..9 {
        for (i, s) in sides.iter().enumerate() {
            times[i].push(run(s, n).as_nanos() as f64 / n as f64);
        }
    }
    for (i, s) in sides.iter().enumerate() {
        times[i].sort_by(f64::total_cmp);
        println!("{s}: median {:.1} ns a frame", times[i][4]);
    }
}

#[cfg(not(feature = "codec"))]
fn main() {
    eprintln!("codec_probe needs --features codec");
    std::process::exit(2);
}
