//! A soak test: a realistic, mixed, network-like workload on the default allocator.
//!
//! ```text
//! cargo run --release --example soak                      # 10 s per run, 4 threads
//! cargo run --release --example soak -- --duration 3 --threads 8
//! ```
//!
//! Worker threads allocate buffers of mixed sizes (mostly 64 B .. 16 KiB, some 64 KiB, rarely
//! 2 MiB, which is too large to pool) and fill them. Most buffers are dropped at once, some
//! are kept in a per-thread ring for a while, and some are frozen into `bytes::Bytes` and sent
//! over a channel to a sink thread that drops them (cross-thread releases). The run starts
//! with a burst at full speed and ends with a quiet phase at a trickle, during which the
//! rings shrink, as when load drops.
//!
//! A progress line is printed once per second. At the end the program prints a summary
//! table (the same workload is run again with `bytes::BytesMut` for comparison unless
//! `--no-compare` is given) and the allocator's final statistics, and checks that no
//! buffer is left alive.

use std::env;
use std::ops::Deref;
use std::process;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use adaptive_pool::{AdaptiveAllocator, Stats};
use bytes::{BufMut, Bytes, BytesMut};

/// Fraction of the run spent in the burst phase; the rest is the quiet phase.
const BURST_FRACTION: f64 = 0.7;
/// Ring slots per thread during the burst.
const RING_SLOTS: usize = 1024;
/// Ring slots per thread kept during the quiet phase.
const QUIET_RING_SLOTS: usize = 32;
/// Operations per batch in the quiet phase, and the pause after each batch.
const QUIET_BATCH: u64 = 8;
const QUIET_PAUSE: Duration = Duration::from_millis(2);
/// Capacity of the channel to the sink thread.
const CHANNEL_BOUND: usize = 4096;

struct Options {
    duration: Duration,
    threads: usize,
    compare: bool,
}

const USAGE: &str = "\
usage: soak [--duration SECS] [--threads N] [--no-compare] [--help]

Runs a mixed network-like workload on adaptive_pool's default allocator, printing a progress
line once per second, then a summary table and the final statistics.

options:
  --duration SECS   length of each run in seconds, fractions allowed (default 10)
  --threads N       worker threads (default 4)
  --no-compare      skip the second run of the same workload with bytes::BytesMut
  --help            print this help";

fn parse_args() -> Options {
    let mut opts = Options {
        duration: Duration::from_secs(10),
        threads: 4,
        compare: true,
    };
    let mut args = env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next().unwrap_or_else(|| {
                eprintln!("soak: {name} needs a value\n\n{USAGE}");
                process::exit(2)
            })
        };
        match arg.as_str() {
            "--duration" => {
                let v = value("--duration");
                match v.parse::<f64>() {
                    Ok(s) if s.is_finite() && s > 0.0 && s < 1e6 => {
                        opts.duration = Duration::from_secs_f64(s)
                    }
                    _ => fail(&format!(
                        "--duration: not a positive number of seconds: {v}"
                    )),
                }
            }
            "--threads" => {
                let v = value("--threads");
                match v.parse::<usize>() {
                    Ok(n) if (1..=1024).contains(&n) => opts.threads = n,
                    _ => fail(&format!("--threads: not a number from 1 to 1024: {v}")),
                }
            }
            "--no-compare" => opts.compare = false,
            "-h" | "--help" => {
                println!("{USAGE}");
                process::exit(0)
            }
            other => fail(&format!("unknown argument: {other}")),
        }
    }
    opts
}

fn fail(msg: &str) -> ! {
    eprintln!("soak: {msg}\n\n{USAGE}");
    process::exit(2)
}

/// What the workload allocates with: the pool, or plain `BytesMut` for comparison.
trait Backend: Send + Sync + 'static {
    type Buf: BufMut + Deref<Target = [u8]> + Send + 'static;
    const NAME: &'static str;
    fn alloc(&self, capacity: usize) -> Self::Buf;
    fn freeze(buf: Self::Buf) -> Bytes;
    /// The allocator's statistics, if it keeps any.
    fn stats(&self) -> Option<Stats>;
}

struct Pool(&'static AdaptiveAllocator);

impl Backend for Pool {
    type Buf = adaptive_pool::PooledBuf;
    const NAME: &'static str = "adaptive-pool";
    fn alloc(&self, capacity: usize) -> Self::Buf {
        self.0.allocate(capacity)
    }
    fn freeze(buf: Self::Buf) -> Bytes {
        buf.freeze()
    }
    fn stats(&self) -> Option<Stats> {
        Some(self.0.stats())
    }
}

struct Plain;

impl Backend for Plain {
    type Buf = BytesMut;
    const NAME: &'static str = "BytesMut";
    fn alloc(&self, capacity: usize) -> Self::Buf {
        BytesMut::with_capacity(capacity)
    }
    fn freeze(buf: Self::Buf) -> Bytes {
        buf.freeze()
    }
    fn stats(&self) -> Option<Stats> {
        None
    }
}

/// xorshift64*: small, fast, good enough for a workload mix.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A request size: mostly 64 B .. 16 KiB (log-uniform), some 64 KiB, rarely 2 MiB.
fn pick_size(rng: &mut Rng) -> usize {
    let r = rng.below(100_000);
    if r < 95_000 {
        let e = 6 + rng.below(8) as u32; // 64 .. 8 KiB
        let base = 1usize << e;
        base + rng.below(base as u64) as usize // 64 .. 16 KiB - 1
    } else if r < 99_998 {
        64 << 10
    } else {
        2 << 20
    }
}

/// Counters a run's threads share with the reporting thread.
#[derive(Default)]
struct Shared {
    ops: AtomicU64,
    burst_ops: AtomicU64,
}

/// One worker thread's loop.
fn worker<B: Backend>(
    backend: Arc<B>,
    id: usize,
    start: Instant,
    burst_end: Duration,
    end: Duration,
    tx: mpsc::SyncSender<Bytes>,
    shared: Arc<Shared>,
) {
    let mut rng = Rng::new(0x5EED + id as u64);
    let mut ring: Vec<Option<(B::Buf, u8)>> = (0..RING_SLOTS).map(|_| None).collect();
    let mut ops: u64 = 0;
    let mut reported: u64 = 0;
    let mut quiet = false;
    loop {
        // Check the clock and publish progress every 256 operations.
        if ops & 255 == 0 || quiet {
            let now = start.elapsed();
            if now >= end {
                break;
            }
            if !quiet && now >= burst_end {
                // Load drops: shrink the ring, then trickle.
                quiet = true;
                shared.burst_ops.fetch_add(ops, Ordering::Relaxed);
                for slot in ring.iter_mut().skip(QUIET_RING_SLOTS) {
                    check(slot.take());
                }
            }
            shared.ops.fetch_add(ops - reported, Ordering::Relaxed);
            reported = ops;
            if quiet && ops % QUIET_BATCH == 0 {
                thread::sleep(QUIET_PAUSE);
            }
        }
        ops += 1;
        let size = pick_size(&mut rng);
        let fill = ops as u8;
        let mut buf = backend.alloc(size);
        buf.put_bytes(fill, size);
        let lifetime = rng.below(100);
        if lifetime < 75 {
            // Most buffers: used and dropped at once.
            std::hint::black_box(&buf[..]);
            drop(buf);
        } else if lifetime < 90 {
            // Some live a while in the ring, replacing an older one.
            let slots = if quiet { QUIET_RING_SLOTS } else { RING_SLOTS };
            let i = rng.below(slots as u64) as usize;
            check(ring[i].replace((buf, fill)));
        } else {
            // Some are frozen, cloned, and the last handle dropped by the sink thread.
            let frame = B::freeze(buf);
            let copy = frame.clone();
            drop(frame);
            if tx.send(copy).is_err() {
                break;
            }
        }
    }
    if !quiet {
        shared.burst_ops.fetch_add(ops, Ordering::Relaxed);
    }
    shared.ops.fetch_add(ops - reported, Ordering::Relaxed);
    for slot in ring.iter_mut() {
        check(slot.take());
    }
}

/// Checks that a kept buffer still holds its fill byte (a cheap check that no other buffer
/// overlapped it), then drops it.
fn check<T: Deref<Target = [u8]>>(held: Option<(T, u8)>) {
    if let Some((buf, fill)) = held {
        let (first, last) = (buf.first().copied(), buf.last().copied());
        assert!(
            first == Some(fill) && last == Some(fill),
            "buffer contents changed while it was held: expected {fill:#04x}, found {first:?} .. {last:?}"
        );
    }
}

/// What one run measured.
struct Outcome {
    name: &'static str,
    ops: u64,
    burst_ops_per_s: f64,
    ops_per_s: f64,
    peak_allocated: Option<usize>,
    peak_live: Option<usize>,
}

fn mib(bytes: usize) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

fn run<B: Backend>(backend: B, opts: &Options) -> Outcome {
    let backend = Arc::new(backend);
    let shared = Arc::new(Shared::default());
    let start = Instant::now();
    let end = opts.duration;
    let burst_end = end.mul_f64(BURST_FRACTION);
    println!(
        "== {}: {} threads, {:.1} s (burst {:.1} s, then quiet)",
        B::NAME,
        opts.threads,
        end.as_secs_f64(),
        burst_end.as_secs_f64()
    );

    let (tx, rx) = mpsc::sync_channel::<Bytes>(CHANNEL_BOUND);
    let sink = thread::Builder::new()
        .name("soak-sink".into())
        .spawn(move || {
            // Keep a few frames in flight, as a writer queue would, then drop them here.
            let mut in_flight = std::collections::VecDeque::with_capacity(64);
            for frame in rx {
                in_flight.push_back(frame);
                if in_flight.len() > 64 {
                    drop(in_flight.pop_front());
                }
            }
        })
        .expect("spawn the sink thread");

    let workers: Vec<_> = (0..opts.threads)
        .map(|id| {
            let (backend, tx, shared) = (backend.clone(), tx.clone(), shared.clone());
            thread::Builder::new()
                .name(format!("soak-{id}"))
                .spawn(move || worker(backend, id, start, burst_end, end, tx, shared))
                .expect("spawn a worker thread")
        })
        .collect();
    drop(tx);

    // Report once per second; sample the statistics more often for the peaks.
    let mut peak_allocated = 0;
    let mut peak_live = 0;
    let mut last_ops = 0;
    let mut last_report = start;
    let mut next_report = Duration::from_secs(1);
    while !workers.iter().all(|w| w.is_finished()) {
        thread::sleep(Duration::from_millis(50));
        if let Some(s) = backend.stats() {
            peak_allocated = peak_allocated.max(s.allocated_bytes);
            peak_live = peak_live.max(s.live_bytes);
        }
        let elapsed = start.elapsed();
        if elapsed >= next_report {
            next_report += Duration::from_secs(1);
            let ops = shared.ops.load(Ordering::Relaxed);
            let rate = (ops - last_ops) as f64 / last_report.elapsed().as_secs_f64();
            last_ops = ops;
            last_report = Instant::now();
            let phase = if elapsed < burst_end {
                "burst"
            } else {
                "quiet"
            };
            match backend.stats() {
                Some(s) => println!(
                    "[{:5.1} s] {phase}  {:>11.0} ops/s  live {:>10}  allocated {:>10}  cached {:>10}",
                    elapsed.as_secs_f64(),
                    rate,
                    mib(s.live_bytes),
                    mib(s.allocated_bytes),
                    mib(s.cached_bytes),
                ),
                None => println!(
                    "[{:5.1} s] {phase}  {:>11.0} ops/s",
                    elapsed.as_secs_f64(),
                    rate
                ),
            }
        }
    }
    for w in workers {
        w.join().expect("a worker thread panicked");
    }
    sink.join().expect("the sink thread panicked");
    let elapsed = start.elapsed().as_secs_f64();
    let ops = shared.ops.load(Ordering::Relaxed);
    let burst_ops = shared.burst_ops.load(Ordering::Relaxed);
    Outcome {
        name: B::NAME,
        ops,
        burst_ops_per_s: burst_ops as f64 / burst_end.as_secs_f64(),
        ops_per_s: ops as f64 / elapsed,
        peak_allocated: backend.stats().map(|_| peak_allocated),
        peak_live: backend.stats().map(|_| peak_live),
    }
}

fn main() {
    let opts = parse_args();
    let pool = adaptive_pool::global();

    let pooled = run(Pool(pool), &opts);
    let before_trim = pool.stats();
    let trimmed = pool.trim();
    let after_trim = pool.stats();
    let plain = opts.compare.then(|| run(Plain, &opts));

    println!();
    println!(
        "{:<14} {:>12} {:>14} {:>14} {:>12} {:>12} {:>14}",
        "allocator",
        "ops",
        "burst ops/s",
        "overall ops/s",
        "peak live",
        "peak alloc",
        "final alloc"
    );
    let na = || "n/a".to_string();
    let row = |o: &Outcome, final_alloc: String| {
        println!(
            "{:<14} {:>12} {:>14.0} {:>14.0} {:>12} {:>12} {:>14}",
            o.name,
            o.ops,
            o.burst_ops_per_s,
            o.ops_per_s,
            o.peak_live.map_or_else(na, mib),
            o.peak_allocated.map_or_else(na, mib),
            final_alloc,
        )
    };
    row(
        &pooled,
        format!("{} (trim)", mib(after_trim.allocated_bytes)),
    );
    if let Some(plain) = &plain {
        row(plain, na());
        println!(
            "burst throughput, pool / BytesMut: {:.2}x",
            pooled.burst_ops_per_s / plain.burst_ops_per_s
        );
    }
    println!();
    println!("before trim: {before_trim}");
    println!("trim() freed {trimmed} B");
    println!("final:       {after_trim}");

    assert_eq!(
        after_trim.live_buffers, 0,
        "buffers still alive after the soak: {after_trim}"
    );
    assert_eq!(
        after_trim.live_bytes, 0,
        "bytes still alive after the soak: {after_trim}"
    );
    println!("ok: no live buffers left");
}
