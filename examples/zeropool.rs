//! The zeropool comparison (SPEC section 7, "No cliff"): zeropool 0.7's benchmark workloads
//! (`hot_path`, `realistic_write_st`, `realistic_write_mt`, `scale_sustained`, `mixed_uniform`,
//! `mixed_zipf`, `burst`), ported, run on the pool, on zeropool 0.7 and on `Vec` in one
//! process, plus a large-live-set churn. Prints time per buffer and minor page faults per
//! buffer for each, and the pool's time over the better of zeropool and `Vec`. Writes a
//! Markdown report.
//!
//! ```text
//! cargo run --release --example zeropool                     # this binary's global allocator
//! cargo run --release --example zeropool -- --all-allocators # system, mimalloc and jemalloc
//! cargo run --release --example zeropool -- --quick          # a short run (for CI)
//! cargo run --release --example zeropool -- --only burst,4MiB
//! ```
//!
//! Every buffer is a safe, zeroed buffer of the requested size, on each side by that side's
//! own means: the pool's is `allocate(n)` then `resize(n, 0)`; zeropool's is its `alloc(n)`
//! (which hands out a zeroed buffer of `n` bytes, and takes it back on drop); `Vec`'s is
//! `vec![0; n]` (calloc on the global allocator). The workloads follow zeropool 0.7's
//! `benches/pool.rs` (its sizes, thread counts, and its pool settings: the default pool for
//! `hot_path`, `min_buffer_size(0)` for the rest), written here from its description, not
//! copied.
//!
//! A process has one global allocator, so `--all-allocators` runs this example three times
//! through cargo (`--features mimalloc`, `--features jemalloc`) and merges the results, as
//! `examples/ratio.rs` does. Each row gets fresh pools (nothing cached from an earlier row),
//! calibrates one iteration count on the slowest of the three sides, then measures rounds
//! in which the three run the same count back to back in rotating order; the report takes
//! the median of the rounds for each side. Page faults are the process's minor faults
//! (`getrusage(RUSAGE_SELF)`, all threads) read just before and just after the timed loop,
//! so they count the same region the clock does (Linux and Android; elsewhere "-").

#[path = "../benches/workloads/mod.rs"]
mod workloads;

use std::collections::BTreeMap;
use std::env;
use std::fmt::Write as _;
use std::fs;
use std::hint::black_box;
use std::ops::DerefMut;
use std::path::PathBuf;
use std::process;
use std::thread;
use std::time::{Duration, Instant};

use adaptive_pool::{AdaptiveAllocator, PooledBuf};
use workloads::{Rng, GLOBAL_ALLOCATOR};
use zeropool::ZeroPool;

const USAGE: &str = "\
usage: zeropool [--quick] [--all-allocators] [--only ROWS] [--out FILE] [--help]

Runs zeropool 0.7's benchmark workloads (hot_path, realistic_write_st, realistic_write_mt,
scale_sustained, mixed_uniform, mixed_zipf, burst) and a 256 MiB live-set churn of 64 KiB
buffers on adaptive-pool, on zeropool 0.7 and on Vec<u8>, in one process, each buffer a
zeroed buffer of its size. Prints, per row: ns per buffer for each side, the pool's time over
the better of zeropool and Vec (below 1.00 the pool is faster) and over Vec, and minor page
faults per buffer for each side (getrusage around the timed loop). Writes the tables as
Markdown.

options:
  --quick           short measurements, 3 rounds, 1,000 instead of 10,000 buffers per thread
                    in scale_sustained (seconds per allocator instead of minutes)
  --all-allocators  run under the system allocator, mimalloc and jemalloc (via cargo with
                    the matching feature) and merge the results
  --only ROWS       measure only the rows whose names contain one of these comma-separated
                    words (case-insensitive), e.g. --only burst,4mib
  --out FILE        where to write the Markdown (default target/zeropool-report.md)
  --help            print this help";

// --- the three sides ------------------------------------------------------------------------

/// A source of zeroed buffers: the pool, zeropool, or `Vec` on the global allocator.
trait Zeroed: Sync {
    /// The buffer; it gives its memory back when dropped.
    type Buf<'a>: DerefMut<Target = [u8]>
    where
        Self: 'a;
    /// A buffer of `len` bytes, all zero.
    fn zeroed(&self, len: usize) -> Self::Buf<'_>;
}

/// adaptive-pool with its default settings.
struct PoolSide(AdaptiveAllocator);

impl Zeroed for PoolSide {
    type Buf<'a> = PooledBuf;
    #[inline]
    fn zeroed(&self, len: usize) -> PooledBuf {
        let mut buf = self.0.allocate(len);
        buf.resize(len, 0);
        buf
    }
}

/// zeropool 0.7.
struct ZeroSide(ZeroPool);

impl Zeroed for ZeroSide {
    type Buf<'a> = zeropool::Buf<'a>;
    #[inline]
    fn zeroed(&self, len: usize) -> zeropool::Buf<'_> {
        self.0.alloc(len)
    }
}

/// `Vec<u8>` on the global allocator.
struct VecSide;

impl Zeroed for VecSide {
    type Buf<'a> = Vec<u8>;
    #[inline]
    fn zeroed(&self, len: usize) -> Vec<u8> {
        vec![0; len]
    }
}

const SIDES: [&str; 3] = ["pool", "zeropool", "Vec"];

// --- measuring --------------------------------------------------------------------------

/// The process's minor page faults so far (all threads, exited ones included).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn minor_faults() -> Option<u64> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `usage` is valid and aligned for one `rusage`, which getrusage writes whole on
    // success; RUSAGE_SELF is a valid target. `rusage` is integers only, so the zeroed value
    // is initialized whatever the call did, and it is read only when the call succeeded.
    let (rc, usage) = unsafe {
        let rc = libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        (rc, usage.assume_init())
    };
    (rc == 0).then_some(usage.ru_minflt as u64)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn minor_faults() -> Option<u64> {
    None
}

/// One measured run: its time and the minor page faults taken in it.
#[derive(Clone, Copy)]
struct Sample {
    time: Duration,
    faults: Option<u64>,
}

/// Starts the clock (and the fault count) for a timed loop.
struct Meter {
    faults: Option<u64>,
    start: Instant,
}

impl Meter {
    fn start() -> Self {
        let faults = minor_faults();
        Meter {
            faults,
            start: Instant::now(),
        }
    }

    fn stop(self) -> Sample {
        let time = self.start.elapsed();
        let faults = match (self.faults, minor_faults()) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        };
        Sample { time, faults }
    }
}

/// Writes one byte in every 4 KiB page, as zeropool's benches do.
#[inline]
fn touch_pages(buf: &mut [u8]) {
    for i in (0..buf.len()).step_by(4096) {
        buf[i] = 0xAB;
    }
    black_box(buf);
}

// --- the workloads ----------------------------------------------------------------------
//
// Each takes an iteration count and answers the `Sample` of the timed part. The row says how
// many buffers one iteration is, so every figure is per buffer.

/// hot_path: a zeroed buffer of `size`, dropped at once (no other write).
fn hot<Z: Zeroed>(z: &Z, size: usize, iters: u64) -> Sample {
    let m = Meter::start();
    for _ in 0..iters {
        let buf = z.zeroed(black_box(size));
        black_box(&buf);
    }
    m.stop()
}

/// realistic_write_st: a zeroed buffer of `size`, one byte written per page, dropped.
fn write_st<Z: Zeroed>(z: &Z, size: usize, iters: u64) -> Sample {
    let m = Meter::start();
    for _ in 0..iters {
        let mut buf = z.zeroed(black_box(size));
        touch_pages(&mut buf);
    }
    m.stop()
}

/// realistic_write_mt and scale_sustained: per iteration, `threads` threads are started, each
/// takes `per_thread` zeroed 64 KiB buffers one at a time, writes a byte per page and drops
/// it; the iteration ends when all have finished.
fn write_mt<Z: Zeroed>(z: &Z, threads: usize, per_thread: usize, iters: u64) -> Sample {
    let m = Meter::start();
    for _ in 0..iters {
        thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    for _ in 0..per_thread {
                        let mut buf = z.zeroed(64 << 10);
                        touch_pages(&mut buf);
                    }
                });
            }
        });
    }
    m.stop()
}

/// zeropool's mixed_uniform sizes: 1 KiB to 4 MiB.
const MIXED_SIZES: [usize; 7] = [
    1 << 10,
    4 << 10,
    16 << 10,
    64 << 10,
    256 << 10,
    1 << 20,
    4 << 20,
];

/// mixed_uniform: one zeroed buffer of each of [`MIXED_SIZES`] in turn, first byte written,
/// dropped. One iteration is 7 buffers.
fn mixed_uniform<Z: Zeroed>(z: &Z, iters: u64) -> Sample {
    let m = Meter::start();
    for _ in 0..iters {
        for &size in &MIXED_SIZES {
            let mut buf = z.zeroed(black_box(size));
            buf[0] = 0xAB;
            black_box(&buf);
        }
    }
    m.stop()
}

/// zeropool's mixed_zipf mix: (size, buffers per iteration), small sizes common.
const ZIPF: [(usize, usize); 5] = [
    (1 << 10, 50),
    (4 << 10, 25),
    (16 << 10, 15),
    (64 << 10, 7),
    (256 << 10, 3),
];

/// mixed_zipf: per iteration the 100 zeroed buffers of [`ZIPF`], each dropped at once.
fn mixed_zipf<Z: Zeroed>(z: &Z, iters: u64) -> Sample {
    let m = Meter::start();
    for _ in 0..iters {
        for &(size, count) in &ZIPF {
            for _ in 0..count {
                let buf = z.zeroed(black_box(size));
                black_box(&buf);
            }
        }
    }
    m.stop()
}

/// burst: `count` zeroed 64 KiB buffers taken (first byte written) and held, then all
/// dropped. The holder is allocated once, outside the clock.
fn burst<Z: Zeroed>(z: &Z, count: usize, iters: u64) -> Sample {
    let mut held = Vec::with_capacity(count);
    let m = Meter::start();
    for _ in 0..iters {
        held.extend((0..count).map(|_| {
            let mut buf = z.zeroed(64 << 10);
            buf[0] = 0xFF;
            buf
        }));
        black_box(&mut held);
        held.clear();
    }
    m.stop()
}

/// Slots of the large-live-set churn: 4,096 x 64 KiB = 256 MiB live.
const CHURN_SLOTS: usize = 4096;

/// Large-live-set churn: [`CHURN_SLOTS`] zeroed 64 KiB buffers (a byte written per page) are
/// filled before the clock starts; each iteration replaces a random one (seed 42) with a new
/// one, written the same way. The slots are dropped after the clock stops.
fn churn_64k<Z: Zeroed>(z: &Z, iters: u64) -> Sample {
    let mut rng = Rng::new(42);
    let new = || {
        let mut buf = z.zeroed(64 << 10);
        touch_pages(&mut buf);
        buf
    };
    let mut slots: Vec<_> = (0..CHURN_SLOTS).map(|_| new()).collect();
    let m = Meter::start();
    for _ in 0..iters {
        let i = rng.below(CHURN_SLOTS);
        slots[i] = new();
    }
    let sample = m.stop();
    drop(slots);
    sample
}

// --- rows -------------------------------------------------------------------------------

/// One measured row: medians per buffer for each side (pool, zeropool, Vec).
struct Row {
    section: usize,
    name: String,
    /// Buffers in one measured run (iterations times buffers per iteration).
    buffers: u64,
    ns: [f64; 3],
    /// Minor page faults per buffer (NaN where they could not be read).
    faults: [f64; 3],
}

impl Row {
    /// Pool time over the better of zeropool and `Vec`.
    fn vs_best(&self) -> f64 {
        self.ns[0] / self.ns[1].min(self.ns[2])
    }
    /// Pool time over `Vec`.
    fn vs_vec(&self) -> f64 {
        self.ns[0] / self.ns[2]
    }
}

const SECTIONS: [&str; 2] = [
    "zeropool 0.7's workloads",
    "large live set (for the decay issue)",
];

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

type Run<'a> = &'a dyn Fn(u64) -> Sample;

/// Measures one row: warms the three sides, calibrates the iteration count on the slowest so
/// that its run takes about `target`, then runs `rounds` rounds of all three, rotating which
/// goes first.
fn measure(
    section: usize,
    name: &str,
    per_iter: u64,
    target: Duration,
    rounds: usize,
    sides: [Run; 3],
) -> Row {
    for side in sides {
        side(1);
    }
    let mut n = 1u64;
    loop {
        let t = sides
            .iter()
            .map(|side| side(n).time)
            .max()
            .unwrap_or_default();
        if t >= target / 8 || n >= 1 << 32 {
            let scale = target.as_secs_f64() / t.as_secs_f64().max(1e-9);
            n = ((n as f64 * scale) as u64).max(1);
            break;
        }
        n *= 4;
    }
    let buffers = n * per_iter;
    let mut ns: [Vec<f64>; 3] = Default::default();
    let mut faults: [Vec<f64>; 3] = Default::default();
    for r in 0..rounds {
        for k in 0..3 {
            let i = (r + k) % 3;
            let s = sides[i](n);
            ns[i].push(s.time.as_secs_f64() * 1e9 / buffers as f64);
            faults[i].push(s.faults.map_or(f64::NAN, |f| f as f64 / buffers as f64));
        }
    }
    let row = Row {
        section,
        name: name.to_string(),
        buffers,
        ns: ns.map(median),
        faults: faults.map(median),
    };
    eprintln!(
        "  {:<44} ns: pool {:>9.1} zeropool {:>9.1} Vec {:>9.1} | pool/best {:>6.2} pool/Vec {:>6.2} \
         | faults/buf: {} {} {} ({} bufs/run)",
        row.name,
        row.ns[0],
        row.ns[1],
        row.ns[2],
        row.vs_best(),
        row.vs_vec(),
        faults_cell(row.faults[0]),
        faults_cell(row.faults[1]),
        faults_cell(row.faults[2]),
        row.buffers,
    );
    row
}

fn faults_cell(f: f64) -> String {
    if f.is_nan() {
        "-".into()
    } else if f == 0.0 {
        "0".into()
    } else if f < 0.01 {
        format!("{f:.1e}")
    } else if f >= 10.0 {
        format!("{f:.0}")
    } else {
        format!("{f:.3}")
    }
}

fn size_label(size: usize) -> String {
    if size >= 1 << 20 {
        format!("{}MiB", size >> 20)
    } else {
        format!("{}KiB", size >> 10)
    }
}

/// zeropool's pool for its `hot_path` (default settings).
fn zeropool_default() -> ZeroSide {
    ZeroSide(ZeroPool::new())
}

/// zeropool's pool for every other workload: small buffers pooled too.
fn zeropool_no_min() -> ZeroSide {
    ZeroSide(ZeroPool::new().min_buffer_size(0))
}

fn pool() -> PoolSide {
    PoolSide(AdaptiveAllocator::new())
}

/// Runs every row on this binary's global allocator.
fn rows(quick: bool, only: &[String]) -> Vec<Row> {
    let (target, rounds, sustained_per_thread) = if quick {
        (Duration::from_millis(10), 3, 1_000)
    } else {
        (Duration::from_millis(100), 7, 10_000)
    };
    let mut out = Vec::new();
    let wanted = |name: &str| {
        let lower = name.to_lowercase();
        only.is_empty() || only.iter().any(|w| lower.contains(w.as_str()))
    };
    // A row: fresh pools (so that no row runs on what an earlier one left cached) and one
    // workload body, instantiated for each of the three sides.
    macro_rules! row {
        ($section:expr, $name:expr, $per_iter:expr, $zp:expr, |$z:ident, $n:ident| $work:expr) => {{
            let name: String = $name;
            if wanted(&name) {
                let (p, zs, v) = (pool(), $zp, VecSide);
                out.push(measure(
                    $section,
                    &name,
                    $per_iter as u64,
                    target,
                    rounds,
                    [
                        &|$n| {
                            let $z = &p;
                            $work
                        },
                        &|$n| {
                            let $z = &zs;
                            $work
                        },
                        &|$n| {
                            let $z = &v;
                            $work
                        },
                    ],
                ));
            }
        }};
    }
    const SIZES: [usize; 6] = [4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20];
    for size in SIZES {
        row!(
            0,
            format!("hot_path {}", size_label(size)),
            1,
            zeropool_default(),
            |z, n| hot(z, size, n)
        );
    }
    for size in SIZES {
        row!(
            0,
            format!("realistic_write_st {}", size_label(size)),
            1,
            zeropool_no_min(),
            |z, n| write_st(z, size, n)
        );
    }
    for threads in [2, 4, 8, 16] {
        row!(
            0,
            format!("realistic_write_mt 64KiB {threads} threads x 200"),
            threads * 200,
            zeropool_no_min(),
            |z, n| write_mt(z, threads, 200, n)
        );
    }
    for threads in [1, 4, 8, 16, 32] {
        row!(
            0,
            format!(
                "scale_sustained 64KiB {threads} thread{}",
                if threads == 1 { "" } else { "s" }
            ),
            threads * sustained_per_thread,
            zeropool_no_min(),
            |z, n| write_mt(z, threads, sustained_per_thread, n)
        );
    }
    row!(
        0,
        "mixed_uniform 1KiB..4MiB (7 sizes)".to_string(),
        MIXED_SIZES.len(),
        zeropool_no_min(),
        |z, n| mixed_uniform(z, n)
    );
    row!(
        0,
        "mixed_zipf 1KiB..256KiB (100 buffers)".to_string(),
        ZIPF.iter().map(|&(_, c)| c).sum::<usize>(),
        zeropool_no_min(),
        |z, n| mixed_zipf(z, n)
    );
    for count in [10, 50, 100, 1_000] {
        row!(
            0,
            format!("burst {count} x 64KiB"),
            count,
            zeropool_no_min(),
            |z, n| burst(z, count, n)
        );
    }
    row!(
        1,
        format!("churn 64KiB {CHURN_SLOTS} slots (256 MiB live)"),
        1,
        zeropool_no_min(),
        |z, n| churn_64k(z, n)
    );
    out
}

// --- running under the three allocators and reporting -----------------------------------

struct Options {
    quick: bool,
    all: bool,
    child: bool,
    only: Vec<String>,
    out: PathBuf,
}

fn parse_args() -> Options {
    let mut o = Options {
        quick: false,
        all: false,
        child: false,
        only: Vec::new(),
        out: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/zeropool-report.md"),
    };
    let fail = |why: &str| -> ! {
        eprintln!("zeropool: {why}\n\n{USAGE}");
        process::exit(2)
    };
    let mut args = env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => o.quick = true,
            "--all-allocators" => o.all = true,
            "--child" => o.child = true,
            "--only" => {
                let list = args
                    .next()
                    .unwrap_or_else(|| fail("--only needs a list of row names"));
                o.only = list
                    .split(',')
                    .map(|w| w.trim().to_lowercase())
                    .filter(|w| !w.is_empty())
                    .collect();
                if o.only.is_empty() {
                    fail("--only needs at least one row name");
                }
            }
            "--out" => {
                o.out = PathBuf::from(args.next().unwrap_or_else(|| fail("--out needs a file")))
            }
            "--help" | "-h" => {
                println!("{USAGE}");
                process::exit(0)
            }
            other => fail(&format!("unknown argument {other:?}")),
        }
    }
    o
}

/// The child's line for one row (tab-separated; NaN for faults that could not be read).
fn row_line(r: &Row) -> String {
    format!(
        "ROW\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
        r.section,
        r.name,
        r.buffers,
        r.ns[0],
        r.ns[1],
        r.ns[2],
        r.faults[0],
        r.faults[1],
        r.faults[2]
    )
}

fn parse_row(line: &str) -> Option<Row> {
    let f: Vec<&str> = line.split('\t').collect();
    if f.len() != 10 || f[0] != "ROW" {
        return None;
    }
    let num = |s: &str| s.parse::<f64>().unwrap_or(f64::NAN);
    Some(Row {
        section: f[1].parse().ok()?,
        name: f[2].to_string(),
        buffers: f[3].parse().ok()?,
        ns: [num(f[4]), num(f[5]), num(f[6])],
        faults: [num(f[7]), num(f[8]), num(f[9])],
    })
}

/// Runs this example under another global allocator through cargo; answers its rows.
fn run_child(feature: Option<&str>, quick: bool, only: &[String]) -> Result<Vec<Row>, String> {
    let only = only.join(",");
    let mut args = vec!["--child"];
    if quick {
        args.push("--quick");
    }
    if !only.is_empty() {
        args.extend(["--only", &only]);
    }
    let features: Vec<&str> = feature.into_iter().collect();
    let out = workloads::child::run_example("zeropool", &features, &args)?;
    Ok(out.lines().filter_map(parse_row).collect())
}

fn markdown(runs: &[(String, Vec<Row>)], failures: &[(String, String)], quick: bool) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Pool / zeropool 0.7 / `Vec` on zeropool's workloads, every buffer zeroed; medians of {} \
         rotating rounds. Times are ns per buffer; **pool/best** is the pool's time over the \
         better of zeropool and `Vec` (below 1.00 the pool is faster). Faults are minor page \
         faults per buffer (the process's, over the timed loop); a run is `bufs/run` buffers.",
        if quick { 3 } else { 7 }
    );
    // The summary: pool/best per allocator.
    let mut names: Vec<(usize, &str)> = Vec::new();
    for (_, rows) in runs {
        for r in rows {
            if !names.iter().any(|&(_, n)| n == r.name) {
                names.push((r.section, &r.name));
            }
        }
    }
    names.sort_by_key(|&(s, _)| s);
    let by_alloc: Vec<BTreeMap<&str, &Row>> = runs
        .iter()
        .map(|(_, rows)| rows.iter().map(|r| (r.name.as_str(), r)).collect())
        .collect();
    let _ = writeln!(md, "\n### pool / best of (zeropool, Vec)\n");
    let mut head = String::from("| row |");
    let mut rule = String::from("|---|");
    for (alloc, _) in runs {
        let _ = write!(head, " {alloc} |");
        rule.push_str("---:|");
    }
    let _ = writeln!(md, "{head}\n{rule}");
    for &(_, name) in &names {
        let mut line = format!("| {name} |");
        for m in &by_alloc {
            match m.get(name) {
                Some(r) => {
                    let _ = write!(line, " **{:.2}** |", r.vs_best());
                }
                None => line.push_str(" - |"),
            }
        }
        let _ = writeln!(md, "{line}");
    }
    // One full table per allocator and section.
    for (alloc, rows) in runs {
        for (s, title) in SECTIONS.iter().enumerate() {
            let rows: Vec<&Row> = rows.iter().filter(|r| r.section == s).collect();
            if rows.is_empty() {
                continue;
            }
            let _ = writeln!(
                md,
                "\n### {title}, global allocator {alloc}\n\n\
                 | row | pool ns | zeropool ns | Vec ns | pool/best | pool/Vec \
                 | faults pool | faults zeropool | faults Vec | bufs/run |\n\
                 |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
            );
            for r in rows {
                let _ = writeln!(
                    md,
                    "| {} | {:.1} | {:.1} | {:.1} | **{:.2}** | {:.2} | {} | {} | {} | {} |",
                    r.name,
                    r.ns[0],
                    r.ns[1],
                    r.ns[2],
                    r.vs_best(),
                    r.vs_vec(),
                    faults_cell(r.faults[0]),
                    faults_cell(r.faults[1]),
                    faults_cell(r.faults[2]),
                    r.buffers
                );
            }
        }
    }
    for (alloc, why) in failures {
        let _ = writeln!(md, "\n**{alloc}: not measured**: {why}");
    }
    md
}

fn main() {
    let o = parse_args();
    if o.child {
        for r in rows(o.quick, &o.only) {
            println!("{}", row_line(&r));
        }
        return;
    }
    let started = Instant::now();
    let mut runs = Vec::new();
    let mut failures = Vec::new();
    if o.all {
        for (name, feature) in [
            ("system", None),
            ("mimalloc", Some("mimalloc")),
            ("jemalloc", Some("jemalloc")),
        ] {
            match run_child(feature, o.quick, &o.only) {
                Ok(rows) if !rows.is_empty() => runs.push((name.to_string(), rows)),
                Ok(_) => failures.push((name.to_string(), "no rows came back".to_string())),
                Err(why) => {
                    eprintln!("!!!!! zeropool: the {name} run failed: {why} !!!!!");
                    failures.push((name.to_string(), why));
                }
            }
        }
    } else {
        eprintln!("global allocator {GLOBAL_ALLOCATOR} ({SIDES:?}):");
        runs.push((GLOBAL_ALLOCATOR.to_string(), rows(o.quick, &o.only)));
    }
    let md = markdown(&runs, &failures, o.quick);
    println!("\n{md}");
    if let Some(dir) = o.out.parent() {
        let _ = fs::create_dir_all(dir);
    }
    match fs::write(&o.out, &md) {
        Ok(()) => eprintln!(
            "wrote {} ({:.0} s)",
            o.out.display(),
            started.elapsed().as_secs_f64()
        ),
        Err(e) => {
            eprintln!("zeropool: could not write {}: {e}", o.out.display());
            process::exit(1)
        }
    }
    if !failures.is_empty() {
        process::exit(1);
    }
}
