//! A soak test: a realistic, mixed, network-like workload on the default settings.
//!
//! ```text
//! cargo run --release --example soak                      # about 20 s: 10 s per run, 4 threads
//! cargo run --release --example soak -- --duration 3 --threads 8 --plot /tmp/soak.svg
//! ```
//!
//! The pool runs with the default settings but one: `idle_release` is 0.5 s (the default is
//! 10 s; `--idle-release` sets it), so that the quiet phase, 30 % of the run, lasts several
//! times past it and shows idle memory going back while the worker threads are still alive.
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
//! `--no-compare` is given) and the allocator's final statistics, checks that no buffer is
//! left alive, and writes an SVG plot of memory over time for both runs (`--plot`, default
//! `target/soak.svg`): the pool's `allocated_bytes`, `pinned_bytes` and `retained_bytes` (the
//! memory it gave back and keeps resident for reuse, decaying by age), the bytes the
//! application holds (the capacity of every buffer kept in a ring or in flight, counted the
//! same way for both), and the process's resident set size, which is what the system
//! allocator behind `BytesMut` keeps. The workload freezes whole buffers and never keeps a
//! split part, so its `pinned_bytes` is expected to stay at 0: the line is there to show a
//! workload of your own that does (see `docs/TUNING.md`, "Spotting pinning").

use std::env;
use std::ops::Deref;
use std::path::PathBuf;
use std::process;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
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
    idle_release: Duration,
    compare: bool,
    plot: Option<PathBuf>,
    huge_pages: bool,
}

const USAGE: &str = "\
usage: soak [--duration SECS] [--threads N] [--idle-release SECS] [--plot FILE | --no-plot]
            [--no-compare] [--no-huge-pages] [--help]

Runs a mixed network-like workload on an adaptive_pool allocator with the default settings
(but a 0.5 s idle_release), printing a progress line once per second, then the same workload on
bytes::BytesMut, then a summary table, the final statistics, and an SVG plot of memory over
time for both runs.

options:
  --duration SECS   length of each run in seconds, fractions allowed (default 10)
  --threads N       worker threads (default 4)
  --idle-release SECS
                    the pool's idle_release (default 0.5; the allocator's default is 10)
  --plot FILE       where to write the SVG plot (default target/soak.svg)
  --no-plot         do not write the plot
  --no-compare      skip the second run of the same workload with bytes::BytesMut
  --no-huge-pages   the pool without transparent huge pages (Builder::huge_pages(false))
  --help            print this help";

fn parse_args() -> Options {
    let mut opts = Options {
        duration: Duration::from_secs(10),
        threads: 4,
        idle_release: Duration::from_millis(500),
        compare: true,
        plot: Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/soak.svg")),
        huge_pages: true,
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
            "--idle-release" => {
                let v = value("--idle-release");
                match v.parse::<f64>() {
                    Ok(s) if s.is_finite() && s > 0.0 && s < 1e6 => {
                        opts.idle_release = Duration::from_secs_f64(s)
                    }
                    _ => fail(&format!(
                        "--idle-release: not a positive number of seconds: {v}"
                    )),
                }
            }
            "--no-compare" => opts.compare = false,
            "--no-huge-pages" => opts.huge_pages = false,
            "--plot" => opts.plot = Some(PathBuf::from(value("--plot"))),
            "--no-plot" => opts.plot = None,
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
    fn capacity(buf: &Self::Buf) -> usize;
    /// The allocator's statistics, if it keeps any.
    fn stats(&self) -> Option<Stats>;
}

struct Pool(AdaptiveAllocator);

impl Backend for Pool {
    type Buf = adaptive_pool::PooledBuf;
    const NAME: &'static str = "adaptive-pool";
    fn alloc(&self, capacity: usize) -> Self::Buf {
        self.0.allocate(capacity)
    }
    fn freeze(buf: Self::Buf) -> Bytes {
        buf.freeze()
    }
    fn capacity(buf: &Self::Buf) -> usize {
        buf.capacity()
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
    fn capacity(buf: &Self::Buf) -> usize {
        buf.capacity()
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
struct Shared {
    ops: AtomicU64,
    burst_ops: AtomicU64,
    /// Bytes of buffer capacity each thread holds (workers, then the sink): each slot has one
    /// writer, which stores its running total now and then (no read-modify-write on the hot
    /// path); a frame in flight is added by its sender and subtracted by the sink, so the
    /// sum is what the application holds.
    held: Vec<AtomicI64>,
}

impl Shared {
    fn new(threads: usize) -> Self {
        Shared {
            ops: AtomicU64::new(0),
            burst_ops: AtomicU64::new(0),
            held: (0..=threads).map(|_| AtomicI64::new(0)).collect(),
        }
    }

    fn held(&self) -> usize {
        self.held
            .iter()
            .map(|h| h.load(Ordering::Relaxed))
            .sum::<i64>()
            .max(0) as usize
    }
}

/// The resident set size of this process, from `/proc/self/status` (Linux); `None` elsewhere.
fn rss() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// One worker thread's loop.
fn worker<B: Backend>(
    backend: Arc<B>,
    id: usize,
    start: Instant,
    burst_end: Duration,
    end: Duration,
    tx: mpsc::SyncSender<(Bytes, usize)>,
    shared: Arc<Shared>,
) {
    let mut rng = Rng::new(0x5EED + id as u64);
    let mut ring: Vec<Option<(B::Buf, u8)>> = (0..RING_SLOTS).map(|_| None).collect();
    let mut held: i64 = 0;
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
                    held -= check::<B>(slot.take()) as i64;
                }
            }
            shared.held[id].store(held, Ordering::Relaxed);
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
            held += B::capacity(&buf) as i64;
            held -= check::<B>(ring[i].replace((buf, fill))) as i64;
        } else {
            // Some are frozen, cloned, and the last handle dropped by the sink thread.
            let cap = B::capacity(&buf);
            let frame = B::freeze(buf);
            let copy = frame.clone();
            drop(frame);
            held += cap as i64;
            if tx.send((copy, cap)).is_err() {
                break;
            }
        }
    }
    if !quiet {
        shared.burst_ops.fetch_add(ops, Ordering::Relaxed);
    }
    shared.ops.fetch_add(ops - reported, Ordering::Relaxed);
    for slot in ring.iter_mut() {
        held -= check::<B>(slot.take()) as i64;
    }
    shared.held[id].store(held, Ordering::Relaxed);
}

/// Checks that a kept buffer still holds its fill byte (a cheap check that no other buffer
/// overlapped it), then drops it; answers its capacity (0 for an empty slot).
fn check<B: Backend>(held: Option<(B::Buf, u8)>) -> usize {
    let Some((buf, fill)) = held else { return 0 };
    let (first, last) = (buf.first().copied(), buf.last().copied());
    assert!(
        first == Some(fill) && last == Some(fill),
        "buffer contents changed while it was held: expected {fill:#04x}, found {first:?} .. {last:?}"
    );
    B::capacity(&buf)
}

/// One sample of memory over time.
#[derive(Clone, Copy)]
struct Sample {
    secs: f64,
    /// The pool's `allocated_bytes` (none for `BytesMut`).
    allocated: Option<usize>,
    /// The pool's `pinned_bytes`: bytes of live regions no live handle covers (none for
    /// `BytesMut`).
    pinned: Option<usize>,
    /// The pool's `retained_bytes`: memory it gave back that is kept resident for reuse and
    /// decays (none for `BytesMut`).
    retained: Option<usize>,
    /// Capacity of the buffers the application holds.
    held: usize,
    rss: Option<usize>,
}

/// What one run measured.
struct Outcome {
    name: &'static str,
    ops: u64,
    burst_ops_per_s: f64,
    peak_allocated: Option<usize>,
    peak_live: Option<usize>,
    peak_pinned: Option<usize>,
    peak_held: usize,
    peak_rss: Option<usize>,
    /// The resident set before the run started.
    start_rss: Option<usize>,
    /// The last sample of the quiet phase, threads still alive.
    end: Sample,
    samples: Vec<Sample>,
}

fn mib(bytes: usize) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

fn run<B: Backend>(backend: B, opts: &Options) -> Outcome {
    let backend = Arc::new(backend);
    let shared = Arc::new(Shared::new(opts.threads));
    let start_rss = rss();
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

    let (tx, rx) = mpsc::sync_channel::<(Bytes, usize)>(CHANNEL_BOUND);
    let sink_shared = shared.clone();
    let sink = thread::Builder::new()
        .name("soak-sink".into())
        .spawn(move || {
            // Keep a few frames in flight, as a writer queue would, then drop them here.
            let slot = &sink_shared.held[sink_shared.held.len() - 1];
            let mut freed: i64 = 0;
            let mut in_flight = std::collections::VecDeque::with_capacity(64);
            for frame in rx {
                in_flight.push_back(frame);
                if in_flight.len() > 64 {
                    if let Some((_, cap)) = in_flight.pop_front() {
                        freed -= cap as i64;
                        slot.store(freed, Ordering::Relaxed);
                    }
                }
            }
            freed -= in_flight.iter().map(|(_, cap)| *cap as i64).sum::<i64>();
            drop(in_flight);
            slot.store(freed, Ordering::Relaxed);
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
    let mut peak_pinned = 0;
    let mut peak_held = 0;
    let mut peak_rss = None::<usize>;
    let mut samples = Vec::new();
    let mut last_ops = 0;
    let mut last_report = start;
    let mut next_report = Duration::from_secs(1);
    while !workers.iter().all(|w| w.is_finished()) {
        thread::sleep(Duration::from_millis(50));
        let stats = backend.stats();
        if let Some(s) = &stats {
            peak_allocated = peak_allocated.max(s.allocated_bytes);
            peak_live = peak_live.max(s.live_bytes);
            peak_pinned = peak_pinned.max(s.pinned_bytes);
        }
        let sample = Sample {
            secs: start.elapsed().as_secs_f64(),
            allocated: stats.map(|s| s.allocated_bytes),
            pinned: stats.map(|s| s.pinned_bytes),
            retained: stats.map(|s| s.retained_bytes),
            held: shared.held(),
            rss: rss(),
        };
        peak_held = peak_held.max(sample.held);
        peak_rss = sample.rss.max(peak_rss);
        samples.push(sample);
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
            let rss = sample.rss.map_or_else(|| "n/a".into(), mib);
            match backend.stats() {
                Some(s) => println!(
                    "[{:5.1} s] {phase}  {:>11.0} ops/s  live {:>10}  allocated {:>10}  cached {:>10}  pinned {:>10}  retained {:>10}  rss {:>10}",
                    elapsed.as_secs_f64(),
                    rate,
                    mib(s.live_bytes),
                    mib(s.allocated_bytes),
                    mib(s.cached_bytes),
                    mib(s.pinned_bytes),
                    mib(s.retained_bytes),
                    rss,
                ),
                None => println!(
                    "[{:5.1} s] {phase}  {:>11.0} ops/s  held {:>10}  rss {:>10}",
                    elapsed.as_secs_f64(),
                    rate,
                    mib(sample.held),
                    rss,
                ),
            }
        }
    }
    // The end of the quiet phase: the last sample taken before the workers start to finish
    // (they drop their rings as they end).
    let quiet_end = end.as_secs_f64() - 0.15;
    let end_sample = samples
        .iter()
        .rev()
        .find(|s| s.secs <= quiet_end)
        .copied()
        .unwrap_or(Sample {
            secs: 0.0,
            allocated: None,
            pinned: None,
            retained: None,
            held: 0,
            rss: None,
        });
    for w in workers {
        w.join().expect("a worker thread panicked");
    }
    sink.join().expect("the sink thread panicked");
    let ops = shared.ops.load(Ordering::Relaxed);
    let burst_ops = shared.burst_ops.load(Ordering::Relaxed);
    Outcome {
        name: B::NAME,
        ops,
        burst_ops_per_s: burst_ops as f64 / burst_end.as_secs_f64(),
        peak_allocated: backend.stats().map(|_| peak_allocated),
        peak_live: backend.stats().map(|_| peak_live),
        peak_pinned: backend.stats().map(|_| peak_pinned),
        peak_held,
        peak_rss,
        start_rss,
        end: end_sample,
        samples,
    }
}

/// Writes the memory-over-time plot of both runs as SVG.
fn plot(path: &std::path::Path, runs: &[&Outcome]) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let to_mib = |b: usize| b as f64 / (1 << 20) as f64;
    let x_max = runs
        .iter()
        .flat_map(|o| o.samples.iter().map(|s| s.secs))
        .fold(1.0, f64::max);
    let y_max = runs
        .iter()
        .flat_map(|o| {
            o.samples
                .iter()
                .map(|s| s.allocated.unwrap_or(0).max(s.held).max(s.rss.unwrap_or(0)))
        })
        .map(to_mib)
        .fold(1.0, f64::max)
        * 1.1;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let root = SVGBackend::new(path, (1000, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "soak: memory over time (burst, then quiet)",
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the run started")
        .y_desc("MiB")
        .draw()?;
    let pool_color = RGBColor(0x1f, 0x77, 0xb4);
    let plain_color = RGBColor(0xd6, 0x27, 0x28);
    for o in runs {
        let color = if o.peak_allocated.is_some() {
            pool_color
        } else {
            plain_color
        };
        type Series = (String, ShapeStyle, Vec<(f64, f64)>);
        let mut series: Vec<Series> = Vec::new();
        if o.peak_allocated.is_some() {
            series.push((
                format!("{}: allocated_bytes", o.name),
                color.stroke_width(3),
                o.samples
                    .iter()
                    .filter_map(|s| Some((s.secs, to_mib(s.allocated?))))
                    .collect(),
            ));
            series.push((
                format!("{}: pinned_bytes", o.name),
                RGBColor(0x2c, 0xa0, 0x2c).stroke_width(2),
                o.samples
                    .iter()
                    .filter_map(|s| Some((s.secs, to_mib(s.pinned?))))
                    .collect(),
            ));
            // What the decay keeps resident for reuse (and gives back by age): the gap
            // between the RSS and `allocated_bytes` after the burst.
            series.push((
                format!("{}: retained_bytes (decaying)", o.name),
                RGBColor(0xff, 0x7f, 0x0e).stroke_width(2),
                o.samples
                    .iter()
                    .filter_map(|s| Some((s.secs, to_mib(s.retained?))))
                    .collect(),
            ));
        }
        series.push((
            format!("{}: bytes held by the application", o.name),
            color.mix(0.6).stroke_width(1),
            o.samples.iter().map(|s| (s.secs, to_mib(s.held))).collect(),
        ));
        series.push((
            format!("{}: process RSS", o.name),
            color.mix(0.35).stroke_width(2),
            o.samples
                .iter()
                .filter_map(|s| Some((s.secs, to_mib(s.rss?))))
                .collect(),
        ));
        for (label, style, points) in series {
            chart
                .draw_series(LineSeries::new(points, style))?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

fn main() {
    let opts = parse_args();
    let pool = AdaptiveAllocator::builder()
        .idle_release(opts.idle_release)
        .huge_pages(opts.huge_pages)
        .build()
        .expect("valid settings");
    println!(
        "pool: default settings, idle_release {:.1} s (the default is 10 s: shorter here, so \
         the quiet phase lasts past it), memory from {:?}, huge pages {}",
        opts.idle_release.as_secs_f64(),
        adaptive_pool::MemorySource::default_for_platform(),
        if opts.huge_pages { "advised" } else { "off" }
    );

    let pooled = run(Pool(pool.clone()), &opts);
    let before_trim = pool.stats();
    let trimmed = pool.trim();
    let after_trim = pool.stats();
    let plain = opts.compare.then(|| run(Plain, &opts));

    println!();
    println!(
        "{:<14} {:>11} {:>12} {:>11} {:>11} {:>11} {:>11} {:>13} {:>13} {:>13}",
        "allocator",
        "ops",
        "burst ops/s",
        "peak held",
        "peak alloc",
        "start rss",
        "peak rss",
        "held, quiet",
        "alloc, quiet",
        "rss, quiet"
    );
    let na = || "n/a".to_string();
    let row = |o: &Outcome| {
        println!(
            "{:<14} {:>11} {:>12.0} {:>11} {:>11} {:>11} {:>11} {:>13} {:>13} {:>13}",
            o.name,
            o.ops,
            o.burst_ops_per_s,
            mib(o.peak_held),
            o.peak_allocated.map_or_else(na, mib),
            o.start_rss.map_or_else(na, mib),
            o.peak_rss.map_or_else(na, mib),
            mib(o.end.held),
            o.end.allocated.map_or_else(na, mib),
            o.end.rss.map_or_else(na, mib),
        )
    };
    row(&pooled);
    if let Some(plain) = &plain {
        row(plain);
        println!(
            "burst throughput, pool / BytesMut: {:.2}x",
            pooled.burst_ops_per_s / plain.burst_ops_per_s
        );
        if let (Some(p), Some(b)) = (pooled.peak_rss, plain.peak_rss) {
            println!(
                "peak RSS, pool / BytesMut: {:.2}x; RSS at the end of the quiet phase, pool / \
                 BytesMut: {}",
                p as f64 / b as f64,
                match (pooled.end.rss, plain.end.rss) {
                    (Some(p), Some(b)) => format!("{:.2}x", p as f64 / b as f64),
                    _ => na(),
                }
            );
        }
    }
    if let (Some(a), Some(l)) = (pooled.peak_allocated, pooled.peak_live) {
        println!(
            "pool: peak allocated / peak live = {:.2}; peak allocated / peak held by the application = {:.2}",
            a as f64 / l.max(1) as f64,
            a as f64 / pooled.peak_held.max(1) as f64
        );
    }
    if let Some(p) = pooled.peak_pinned {
        println!(
            "pool: peak pinned_bytes {} ({:.1} % of peak allocated; bytes of live regions that \
             no live buffer covers, kept alive by split or frozen parts)",
            mib(p),
            100.0 * p as f64 / pooled.peak_allocated.unwrap_or(0).max(1) as f64
        );
    }
    println!(
        "(held: capacity of the buffers the workload keeps in rings or in flight; rss: the \
         whole process, which for BytesMut is what the system allocator keeps; \"quiet\": the \
         last sample of the quiet phase, the worker threads still alive)"
    );
    if let Some(path) = &opts.plot {
        let runs: Vec<&Outcome> = std::iter::once(&pooled).chain(plain.as_ref()).collect();
        match plot(path, &runs) {
            Ok(()) => println!("plot: {}", path.display()),
            Err(e) => {
                eprintln!("soak: could not write the plot {}: {e}", path.display());
                process::exit(1)
            }
        }
    }
    println!();
    println!("after the run: {before_trim}");
    println!("trim() freed {trimmed} B");
    println!("final:         {after_trim}");

    assert_eq!(
        after_trim.live_buffers, 0,
        "buffers still alive after the soak: {after_trim}"
    );
    assert_eq!(
        after_trim.live_bytes, 0,
        "bytes still alive after the soak: {after_trim}"
    );
    assert_eq!(
        after_trim.allocated_bytes, 0,
        "trim() left memory allocated: {after_trim}"
    );
    println!("ok: no live buffers left, nothing allocated after trim()");
}
