//! Allocation latency under a mixed multi-thread workload with maintenance running (SPEC
//! section 3, "Decay, not purge": maintenance that runs on an application thread is bounded
//! in time; no allocation waits more than about 100 us for it; the p99.99 of allocation
//! latency at most `BytesMut`'s on mimalloc).
//!
//! ```text
//! cargo run --release --example latency                    # this binary's global allocator
//! cargo run --release --example latency -- --all-allocators
//! cargo run --release --example latency -- --threads 2 --secs 2
//! ```
//!
//! Each worker thread keeps a ring of buffers of network sizes (64 B .. 16 KiB, 3 % 64 KiB,
//! 0.1 % 2 MiB, which is past `max_pooled` and mapped on its own) and replaces a random slot
//! per operation; a third of the buffers are frozen and dropped on a sink thread, as a
//! server's writes are. Phases alternate every 150 ms: a burst (the ring full, 4,096 slots)
//! and a lull (the ring cut to 64 slots, a 1 ms pause every 16 operations), so the pool's
//! maintenance has work on application threads: chunks emptied past the cache, the decay of
//! what was kept (`decay_time` 1 s, its tick every 250 ms) and the idle sweep (`idle_release`
//! 0.5 s here, so that sweeps run within the run; the default is 10 s).
//!
//! Every allocation (`allocate(n)` against `BytesMut::with_capacity(n)`) and every drop of a
//! replaced buffer on the worker is timed with `Instant` (about 20-40 ns of the figures are
//! the clock itself, on both sides) into a histogram of 1/16-octave buckets. The report gives
//! p50, p99, p99.9, p99.99 and the maximum for each side, and how many operations took more
//! than 100 us. The two sides run one after the other, twice, alternating (pool, `BytesMut`,
//! pool, `BytesMut`), and the histograms of a side's two runs are merged.
//!
//! Read the tail with the machine in mind: a worker that the scheduler preempts mid-call
//! shows the time slice in the figure, on either side. On a machine with fewer cores than
//! threads that dominates the maximum; `--threads` at the core count or below shows the
//! allocator's own tail.

#[path = "../benches/workloads/mod.rs"]
mod workloads;

use std::env;
use std::hint::black_box;
use std::process;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use adaptive_pool::AdaptiveAllocator;
use bytes::{BufMut, Bytes, BytesMut};
use workloads::{network_size, Rng, GLOBAL_ALLOCATOR};

const USAGE: &str = "\
usage: latency [--threads N] [--secs S] [--all-allocators] [--help]

Times every allocation and every drop of a mixed multi-thread workload with bursts and lulls
(so the pool's maintenance runs on the application threads) on adaptive-pool and on BytesMut
over this binary's global allocator, and prints p50, p99, p99.9, p99.99 and the maximum of
each, and the operations over 100 us. --all-allocators runs it under the system allocator,
mimalloc and jemalloc (through cargo). Defaults: 2 threads, 3 s a run (two runs a side).";

/// Slots of a worker's ring during a burst, and during a lull.
const BURST_SLOTS: usize = 4096;
const LULL_SLOTS: usize = 64;
/// Length of a phase (a burst or a lull).
const PHASE: Duration = Duration::from_millis(150);
/// The threshold SPEC names: maintenance makes no allocation wait longer.
const BOUND_NS: u64 = 100_000;

/// A histogram of nanoseconds in 1/16-octave buckets (16 per power of two): a value's bucket
/// is its highest set bit and the four bits below it, so every bucket is within 6.25 % of its
/// values, up to 2^63 ns.
struct Histogram {
    counts: Vec<u64>,
    max: u64,
    total: u64,
    over_bound: u64,
}

impl Histogram {
    fn new() -> Self {
        Histogram {
            counts: vec![0; 64 * 16],
            max: 0,
            total: 0,
            over_bound: 0,
        }
    }

    fn bucket(ns: u64) -> usize {
        if ns < 16 {
            return ns as usize;
        }
        let top = 63 - ns.leading_zeros() as usize;
        let sub = ((ns >> (top - 4)) & 15) as usize;
        (top - 3) * 16 + sub
    }

    /// The smallest value of bucket `b` (the inverse of [`Histogram::bucket`]).
    fn floor(b: usize) -> u64 {
        if b < 16 {
            return b as u64;
        }
        let top = b / 16 + 3;
        let sub = (b % 16) as u64;
        (16 + sub) << (top - 4)
    }

    #[inline]
    fn record(&mut self, ns: u64) {
        self.counts[Self::bucket(ns)] += 1;
        self.max = self.max.max(ns);
        self.total += 1;
        self.over_bound += u64::from(ns > BOUND_NS);
    }

    fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.max = self.max.max(other.max);
        self.total += other.total;
        self.over_bound += other.over_bound;
    }

    /// The value at quantile `q` (the lower edge of its bucket).
    fn quantile(&self, q: f64) -> u64 {
        let rank = ((self.total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (b, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::floor(b);
            }
        }
        self.max
    }
}

/// One side: how it makes a buffer of `n` bytes and freezes it.
trait Side: Sync {
    type Buf: BufMut + Send + 'static;
    const NAME: &'static str;
    fn alloc(&self, n: usize) -> Self::Buf;
    fn freeze(buf: Self::Buf) -> Bytes;
}

struct Pool(AdaptiveAllocator);

impl Side for Pool {
    type Buf = adaptive_pool::PooledBuf;
    const NAME: &'static str = "pool";
    #[inline]
    fn alloc(&self, n: usize) -> Self::Buf {
        self.0.allocate(n)
    }
    fn freeze(buf: Self::Buf) -> Bytes {
        buf.freeze()
    }
}

struct Plain;

impl Side for Plain {
    type Buf = BytesMut;
    const NAME: &'static str = "BytesMut";
    #[inline]
    fn alloc(&self, n: usize) -> Self::Buf {
        BytesMut::with_capacity(n)
    }
    fn freeze(buf: Self::Buf) -> Bytes {
        buf.freeze()
    }
}

/// A size: network sizes, 0.1 % of 2 MiB (unpooled).
#[inline]
fn size(rng: &mut Rng) -> usize {
    if rng.below(1000) == 0 {
        2 << 20
    } else {
        network_size(rng)
    }
}

/// One worker until `stop`: answers its histograms (allocations, drops).
fn worker<S: Side>(
    side: &S,
    seed: u64,
    stop: &AtomicBool,
    sink: mpsc::Sender<Bytes>,
) -> [Histogram; 2] {
    let mut rng = Rng::new(seed);
    let mut hist = [Histogram::new(), Histogram::new()];
    let mut ring: Vec<Option<S::Buf>> = (0..BURST_SLOTS).map(|_| None).collect();
    let start = Instant::now();
    let mut ops = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let burst = (start.elapsed().as_nanos() / PHASE.as_nanos()) % 2 == 0;
        let slots = if burst { BURST_SLOTS } else { LULL_SLOTS };
        if !burst {
            // The lull: the ring shrinks (its buffers go, untimed) and work comes in trickles.
            for slot in &mut ring[LULL_SLOTS..] {
                drop(slot.take());
            }
            if ops % 16 == 0 {
                thread::sleep(Duration::from_millis(1));
            }
        }
        let n = size(&mut rng);
        let t = Instant::now();
        let mut buf = side.alloc(n);
        hist[0].record(t.elapsed().as_nanos() as u64);
        buf.put_bytes(0xA5, n.min(64));
        let i = rng.below(slots);
        let old = ring[i].replace(buf);
        if let Some(old) = old {
            if rng.below(3) == 0 {
                // Sent to the sink, which drops it (a cross-thread release), untimed here.
                let _ = sink.send(S::freeze(old));
            } else {
                let t = Instant::now();
                drop(black_box(old));
                hist[1].record(t.elapsed().as_nanos() as u64);
            }
        }
        ops += 1;
    }
    hist
}

/// One run of `side` for `secs` on `threads` workers: merged histograms (allocations, drops).
fn run<S: Side>(side: &S, threads: usize, secs: f64, seed: u64) -> [Histogram; 2] {
    let stop = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel::<Bytes>();
    let sink = thread::spawn(move || {
        for b in rx {
            drop(black_box(b));
        }
    });
    let mut merged = [Histogram::new(), Histogram::new()];
    thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let tx = tx.clone();
                let stop = &stop;
                s.spawn(move || worker(side, seed + t as u64, stop, tx))
            })
            .collect();
        thread::sleep(Duration::from_secs_f64(secs));
        stop.store(true, Ordering::Relaxed);
        for h in handles {
            let h = h.join().expect("a worker panicked");
            merged[0].merge(&h[0]);
            merged[1].merge(&h[1]);
        }
    });
    drop(tx);
    sink.join().expect("the sink panicked");
    merged
}

fn us(ns: u64) -> String {
    if ns < 10_000 {
        format!("{:.2}", ns as f64 / 1000.0)
    } else {
        format!("{:.0}", ns as f64 / 1000.0)
    }
}

/// One tab-separated line per (side, operation), for the parent of `--all-allocators`.
fn lines(allocator: &str, name: &str, op: &str, h: &Histogram) -> String {
    format!(
        "ROW\t{allocator}\t{name}\t{op}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
        h.total,
        h.quantile(0.5),
        h.quantile(0.99),
        h.quantile(0.999),
        h.quantile(0.9999),
        h.max,
        h.over_bound
    )
}

fn table(rows: &[Vec<String>]) {
    println!("| allocator | side | op | count | p50 us | p99 us | p99.9 us | p99.99 us | max us | over 100 us |");
    println!("|---|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for f in rows {
        let n = |i: usize| f[i].parse::<u64>().unwrap_or(0);
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            f[1],
            f[2],
            f[3],
            n(4),
            us(n(5)),
            us(n(6)),
            us(n(7)),
            us(n(8)),
            us(n(9)),
            n(10)
        );
    }
}

fn main() {
    let mut threads = 2usize;
    let mut secs = 3.0f64;
    let mut all = false;
    let mut child = false;
    let fail = |why: &str| -> ! {
        eprintln!("latency: {why}\n\n{USAGE}");
        process::exit(2)
    };
    let mut args = env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--threads" => {
                threads = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|&n| n > 0)
                    .unwrap_or_else(|| fail("--threads needs a positive number"))
            }
            "--secs" => {
                secs = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|&s: &f64| s > 0.0)
                    .unwrap_or_else(|| fail("--secs needs a positive number"))
            }
            "--all-allocators" => all = true,
            "--child" => child = true,
            "--help" | "-h" => {
                println!("{USAGE}");
                return;
            }
            other => fail(&format!("unknown argument {other:?}")),
        }
    }
    if all {
        let t = threads.to_string();
        let s = secs.to_string();
        let mut rows = Vec::new();
        for feature in [None, Some("mimalloc"), Some("jemalloc")] {
            let features: Vec<&str> = feature.into_iter().collect();
            match workloads::child::run_example(
                "latency",
                &features,
                &["--child", "--threads", &t, "--secs", &s],
            ) {
                Ok(out) => rows.extend(
                    out.lines()
                        .filter(|l| l.starts_with("ROW\t"))
                        .map(|l| l.split('\t').map(str::to_string).collect::<Vec<_>>()),
                ),
                Err(e) => eprintln!("latency: the run under {feature:?} failed: {e}"),
            }
        }
        println!("\n{threads} worker threads, {secs} s a run, two runs a side, alternating:\n");
        table(&rows);
        return;
    }
    let pool = Pool(
        AdaptiveAllocator::builder()
            .idle_release(Duration::from_millis(500))
            .build()
            .expect("valid settings"),
    );
    let mut sides: [[Histogram; 2]; 2] = [
        [Histogram::new(), Histogram::new()],
        [Histogram::new(), Histogram::new()],
    ];
    for round in 0..2u64 {
        let h = run(&pool, threads, secs, 42 + round);
        sides[0][0].merge(&h[0]);
        sides[0][1].merge(&h[1]);
        let h = run(&Plain, threads, secs, 42 + round);
        sides[1][0].merge(&h[0]);
        sides[1][1].merge(&h[1]);
    }
    let mut out = Vec::new();
    for (name, h) in [(Pool::NAME, &sides[0]), (Plain::NAME, &sides[1])] {
        out.push(lines(GLOBAL_ALLOCATOR, name, "allocate", &h[0]));
        out.push(lines(GLOBAL_ALLOCATOR, name, "drop", &h[1]));
    }
    if child {
        for l in out {
            println!("{l}");
        }
    } else {
        let rows: Vec<Vec<String>> = out
            .iter()
            .map(|l| l.split('\t').map(str::to_string).collect())
            .collect();
        println!("\n{threads} worker threads, {secs} s a run, two runs a side, alternating:\n");
        table(&rows);
        eprintln!("pool after the runs: {}", pool.0.stats());
    }
}
