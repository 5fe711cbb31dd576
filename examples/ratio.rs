//! The ratio report: every benchmark row of SPEC section 7 run on the pool and on
//! `bytes::BytesMut`, alternating the two in one process, printed as the pool's time divided
//! by `BytesMut`'s (below 1.00 the pool is faster), plus the memory rows. Writes a Markdown
//! table.
//!
//! ```text
//! cargo run --release --example ratio                     # this binary's global allocator
//! cargo run --release --example ratio -- --all-allocators # system, mimalloc and jemalloc
//! cargo run --release --example ratio -- --quick          # a short run (CI uses it)
//! cargo run --release --features codec,mimalloc --example ratio -- --no-memory  # + codec rows
//! ```
//!
//! A process has one global allocator, so `--all-allocators` runs this example three times
//! through cargo (`--features mimalloc`, `--features jemalloc`) and merges their rows.
//! Each row is measured in rounds; in each round the pool and `BytesMut` run the same number
//! of iterations back to back, in alternating order, and the report takes the median of the
//! rounds for each. The workloads are in `benches/workloads/mod.rs`, shared with the criterion
//! benches. Beside each time, the minor page faults per operation (the process's, from
//! `getrusage`, Linux and Android only), counted over the whole workload call: that includes
//! what the workload does outside its clock (B4's slot fill, thread starts), which for the
//! calibrated run lengths is spread over hundreds of thousands of operations.

#[path = "../benches/workloads/mod.rs"]
mod workloads;

use std::collections::BTreeMap;
use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;
use std::process;
use std::time::{Duration, Instant};

use adaptive_pool::{AdaptiveAllocator, PooledBuf};
use workloads::{label, Plain, Pool, B1_SIZES, B2_SIZES, GLOBAL_ALLOCATOR};

const USAGE: &str = "\
usage: ratio [--quick] [--all-allocators] [--only ROWS] [--out FILE] [--no-memory] [--help]

Runs each benchmark row (B1..B7, xmalloc, larson; with --features codec also the codec rows,
against tokio-util's codec on BytesMut) on adaptive-pool and on bytes::BytesMut,
alternating the two in one process, and prints pool time / BytesMut time per row (below 1.00
the pool is faster), then the memory rows. Writes the tables as Markdown.

options:
  --quick           short measurements and fewer rounds (seconds instead of a minute)
  --all-allocators  run this report under the system allocator, mimalloc and jemalloc (via
                    cargo with the matching feature) and merge the rows into one table
  --only ROWS       measure only the rows whose names contain one of these comma-separated
                    words (case-insensitive), e.g. --only larson,b7
  --out FILE        where to write the Markdown (default target/ratio-report.md)
  --no-memory       skip the memory rows
  --help            print this help";

struct Options {
    quick: bool,
    all: bool,
    child: bool,
    memory: bool,
    /// Lower-case words; a row is measured if its name contains one (all rows when empty).
    only: Vec<String>,
    out: PathBuf,
}

fn parse_args() -> Options {
    let mut o = Options {
        quick: false,
        all: false,
        child: false,
        memory: true,
        only: Vec::new(),
        out: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/ratio-report.md"),
    };
    let mut args = env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => o.quick = true,
            "--all-allocators" => o.all = true,
            "--child" => o.child = true,
            "--no-memory" => o.memory = false,
            "--only" => {
                let list = args.next().unwrap_or_else(|| {
                    eprintln!("ratio: --only needs a list of row names\n\n{USAGE}");
                    process::exit(2)
                });
                o.only = list
                    .split(',')
                    .map(|w| w.trim().to_lowercase())
                    .filter(|w| !w.is_empty())
                    .collect();
                if o.only.is_empty() {
                    eprintln!("ratio: --only needs at least one row name\n\n{USAGE}");
                    process::exit(2)
                }
            }
            "--out" => {
                o.out = args.next().map(PathBuf::from).unwrap_or_else(|| {
                    eprintln!("ratio: --out needs a file\n\n{USAGE}");
                    process::exit(2)
                })
            }
            "--help" | "-h" => {
                println!("{USAGE}");
                process::exit(0)
            }
            other => {
                eprintln!("ratio: unknown argument {other:?}\n\n{USAGE}");
                process::exit(2)
            }
        }
    }
    o
}

/// One measured row: median nanoseconds and minor page faults per operation for each side
/// (faults NaN where they could not be read).
struct Row {
    name: String,
    pool_ns: f64,
    plain_ns: f64,
    pool_faults: f64,
    plain_faults: f64,
}

impl Row {
    fn ratio(&self) -> f64 {
        self.pool_ns / self.plain_ns
    }
}

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

/// Runs `f(n)`: its time per operation in ns, and the minor page faults per operation over
/// the whole call (NaN where they cannot be read).
fn timed(f: &dyn Fn(u64) -> Duration, n: u64) -> (f64, f64) {
    let before = minor_faults();
    let d = f(n);
    let faults = match (before, minor_faults()) {
        (Some(a), Some(b)) => b.saturating_sub(a) as f64 / n as f64,
        _ => f64::NAN,
    };
    (d.as_secs_f64() * 1e9 / n as f64, faults)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Measures one row: calibrates an iteration count on the pool so that one measurement takes
/// about `target`, then runs `rounds` rounds of pool and `BytesMut` back to back, alternating
/// which goes first.
fn measure(
    name: &str,
    target: Duration,
    rounds: usize,
    pool: &dyn Fn(u64) -> Duration,
    plain: &dyn Fn(u64) -> Duration,
) -> Row {
    // Warm both up, then calibrate on the pool.
    pool(16);
    plain(16);
    let mut n = 16u64;
    loop {
        let t = pool(n);
        if t >= target / 8 || n >= 1 << 32 {
            let scale = target.as_secs_f64() / t.as_secs_f64().max(1e-9);
            n = ((n as f64 * scale) as u64).max(16);
            break;
        }
        n *= 4;
    }
    let (mut p, mut q) = (Vec::new(), Vec::new());
    for r in 0..rounds {
        if r % 2 == 0 {
            p.push(timed(pool, n));
            q.push(timed(plain, n));
        } else {
            q.push(timed(plain, n));
            p.push(timed(pool, n));
        }
    }
    let row = Row {
        name: name.to_string(),
        pool_ns: median(p.iter().map(|s| s.0).collect()),
        plain_ns: median(q.iter().map(|s| s.0).collect()),
        pool_faults: median(p.iter().map(|s| s.1).collect()),
        plain_faults: median(q.iter().map(|s| s.1).collect()),
    };
    eprintln!(
        "  {:<34} pool {:>10.1} ns   BytesMut {:>10.1} ns   ratio {:.2}   faults/op {} / {}",
        row.name,
        row.pool_ns,
        row.plain_ns,
        row.ratio(),
        faults_cell(row.pool_faults),
        faults_cell(row.plain_faults)
    );
    row
}

/// Runs every speed row on this binary's global allocator.
fn speed_rows(quick: bool, only: &[String]) -> Vec<Row> {
    let (target, rounds) = if quick {
        (Duration::from_millis(10), 3)
    } else {
        (Duration::from_millis(100), 7)
    };
    let pool = Pool::new();
    let mut rows = Vec::new();
    let mut row = |name: &str, fp: &dyn Fn(u64) -> Duration, fq: &dyn Fn(u64) -> Duration| {
        let lower = name.to_lowercase();
        if only.is_empty() || only.iter().any(|w| lower.contains(w.as_str())) {
            rows.push(measure(name, target, rounds, fp, fq));
        }
    };
    for size in B1_SIZES {
        row(
            &format!("B1 alloc+fill+drop {}", label(size)),
            &|n| workloads::b1(&pool, size, n),
            &|n| workloads::b1(&Plain, size, n),
        );
    }
    for size in B2_SIZES {
        row(
            &format!("B2 freeze+clone x2+drop {}", label(size)),
            &|n| workloads::b2(&pool, size, n),
            &|n| workloads::b2(&Plain, size, n),
        );
    }
    row(
        "B3 cross-thread 1 producer 1 consumer",
        &|n| workloads::b3(&pool, n),
        &|n| workloads::b3(&Plain, n),
    );
    row(
        "B4 live-set churn 8192 slots",
        &|n| workloads::b4(&pool, n),
        &|n| workloads::b4(&Plain, n),
    );
    row(
        "B7 churn 256 B 8192 slots",
        &|n| workloads::b7(&pool, n),
        &|n| workloads::b7(&Plain, n),
    );
    for threads in [2, 8] {
        row(
            &format!("B5 mixed, {threads} threads"),
            &|n| workloads::b5(&pool, threads, n).0,
            &|n| workloads::b5(&Plain, threads, n).0,
        );
    }
    row(
        "B6 grow 256 B to 64 KiB",
        &|n| workloads::b6(&pool, n),
        &|n| workloads::b6(&Plain, n),
    );
    row(
        "xmalloc 2 producers 2 consumers",
        &|n| workloads::xmalloc(&pool, 2, n),
        &|n| workloads::xmalloc(&Plain, 2, n),
    );
    row(
        "larson 2 lineages",
        &|n| workloads::larson(&pool, 2, n),
        &|n| workloads::larson(&Plain, 2, n),
    );
    // The codec rows (feature `codec`): `adaptive_pool::codec` against tokio-util's codec on
    // `BytesMut`, per frame.
    #[cfg(feature = "codec")]
    {
        let small = codec_rows::wire(64, 1500);
        row(
            "codec FramedRead 64 B-1.5 KiB frames",
            &|n| codec_rows::read_pool(&pool.0, &small, n),
            &|n| codec_rows::read_tokio_util(&small, n),
        );
        row(
            "codec Framed echo 64 B-1.5 KiB frames",
            &|n| codec_rows::echo_pool(&pool.0, &small, n),
            &|n| codec_rows::echo_tokio_util(&small, n),
        );
        let large = codec_rows::wire(4 << 10, 16 << 10);
        row(
            "codec Framed echo 4-16 KiB frames",
            &|n| codec_rows::echo_pool(&pool.0, &large, n),
            &|n| codec_rows::echo_tokio_util(&large, n),
        );
    }
    rows
}

/// The codec rows (`examples/shared/codec_rows.rs`).
#[cfg(feature = "codec")]
#[path = "shared/codec_rows.rs"]
mod codec_rows;

/// Faults per operation, short: "0", "3.2e-4", "0.125", "1024".
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

fn mib(b: usize) -> String {
    format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
}

/// The memory rows (the pool's own figures; they do not depend on the global allocator).
fn memory_rows(quick: bool) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let scale = if quick { 1 } else { 10 };

    for threads in [2, 8] {
        let pool = Pool::new();
        let (_, peaks) = workloads::b5(&pool, threads, 200_000 * scale);
        out.push((
            format!("B5 peak allocated / peak live, {threads} threads"),
            format!(
                "{:.2} ({} / {}); without the idle cache {:.2} ({})",
                peaks.ratio(),
                mib(peaks.allocated),
                mib(peaks.live),
                peaks.in_use_ratio(),
                mib(peaks.in_use)
            ),
        ));
    }

    // Retained after a burst: the burst's threads have exited, so what the pool still holds
    // is its central cache.
    let cap = 8 << 20;
    let pool = Pool(
        AdaptiveAllocator::builder()
            .max_cached_bytes(cap)
            .build()
            .expect("valid settings"),
    );
    let (_, peaks) = workloads::b5(&pool, 8, 200_000 * scale);
    // The burst's threads hand their magazines back in their thread-local destructors, which
    // may still be running when `join` returns; wait for them (a second at most).
    let deadline = Instant::now() + Duration::from_secs(1);
    while pool.0.stats().magazines > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let st = pool.0.stats();
    let freed = pool.0.trim();
    out.push((
        "retained after an 8-thread B5 burst (threads exited)".into(),
        format!(
            "{} of peak {} (cache bound {}); trim() frees {} -> {}",
            mib(st.allocated_bytes),
            mib(peaks.allocated),
            mib(cap),
            mib(freed),
            mib(pool.0.stats().allocated_bytes)
        ),
    ));

    // Scenario 1: Netty issue 14553's loop.
    let pool = AdaptiveAllocator::new();
    let mut peak = 0;
    for _ in 0..10_000 * scale {
        let b = pool.allocate(659_225);
        peak = peak.max(pool.stats().allocated_bytes);
        drop(b);
    }
    out.push((
        format!(
            "scenario 1: {} x allocate(659,225), one thread",
            10_000 * scale
        ),
        format!("peak allocated {}", mib(peak)),
    ));

    // Scenario 4: pinning, without an idle cache.
    for (s, p, r) in [(1024, 256, 200), (100_000, 64, 100), (600_000, 16, 50)] {
        let mut cells = Vec::new();
        for keep in ["first", "last", "random"] {
            let pool = AdaptiveAllocator::builder()
                .max_cached_bytes(0)
                .build()
                .expect("valid settings");
            let mut rng = workloads::Rng::new(s as u64);
            let mut kept: Vec<PooledBuf> = Vec::new();
            for _ in 0..r {
                let mut bufs: Vec<PooledBuf> = (0..p).map(|_| pool.allocate(s)).collect();
                let k = match keep {
                    "first" => 0,
                    "last" => p - 1,
                    _ => rng.below(p),
                };
                kept.push(bufs.swap_remove(k));
            }
            let st = pool.stats();
            cells.push(format!(
                "{keep} {:.2}",
                st.allocated_bytes as f64 / st.live_bytes as f64
            ));
        }
        out.push((
            format!("scenario 4 pinning, allocated / live, S={s} (P={p}, R={r})"),
            cells.join(", "),
        ));
    }
    for (k, v) in &out {
        eprintln!("  {k:<60} {v}");
    }
    out
}

/// Runs this example under another global allocator through cargo; answers its rows.
fn run_child(feature: Option<&str>, quick: bool, only: &[String]) -> Result<Vec<Row>, String> {
    // The codec rows come along when this run has them.
    let features: Vec<&str> = feature
        .into_iter()
        .chain(cfg!(feature = "codec").then_some("codec"))
        .collect();
    let only = only.join(",");
    let mut args = vec!["--child", "--no-memory"];
    if quick {
        args.push("--quick");
    }
    if !only.is_empty() {
        args.extend(["--only", &only]);
    }
    let text = workloads::child::run_example("ratio", &features, &args)?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f.len() == 6 && f[0] == "ROW").then(|| Row {
                name: f[1].to_string(),
                pool_ns: f[2].parse().unwrap_or(f64::NAN),
                plain_ns: f[3].parse().unwrap_or(f64::NAN),
                pool_faults: f[4].parse().unwrap_or(f64::NAN),
                plain_faults: f[5].parse().unwrap_or(f64::NAN),
            })
        })
        .collect())
}

fn markdown(
    runs: &[(String, Vec<Row>)],
    memory: &[(String, String)],
    failures: &[(String, String)],
    quick: bool,
) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Pool time / `BytesMut` time per row (below 1.00 the pool is faster), median of {} \
         alternating rounds; ns per operation in brackets (pool / BytesMut), then minor page \
         faults per operation (pool / BytesMut; the process's, over the whole workload call).\n",
        if quick { 3 } else { 7 }
    );
    let mut head = String::from("| row |");
    let mut rule = String::from("|---|");
    for (alloc, _) in runs {
        let _ = write!(head, " {alloc} |");
        rule.push_str("---:|");
    }
    let _ = writeln!(md, "{head}\n{rule}");
    let mut names: Vec<&str> = Vec::new();
    for (_, rows) in runs {
        for r in rows {
            if !names.contains(&r.name.as_str()) {
                names.push(&r.name);
            }
        }
    }
    let by_alloc: Vec<BTreeMap<&str, &Row>> = runs
        .iter()
        .map(|(_, rows)| rows.iter().map(|r| (r.name.as_str(), r)).collect())
        .collect();
    for name in names {
        let mut line = format!("| {name} |");
        for m in &by_alloc {
            match m.get(name) {
                Some(r) => {
                    let _ = write!(
                        line,
                        " **{:.2}** ({:.1} / {:.1}; pf {} / {}) |",
                        r.ratio(),
                        r.pool_ns,
                        r.plain_ns,
                        faults_cell(r.pool_faults),
                        faults_cell(r.plain_faults)
                    );
                }
                None => line.push_str(" - |"),
            }
        }
        let _ = writeln!(md, "{line}");
    }
    for (alloc, why) in failures {
        let _ = writeln!(md, "\n**{alloc}: not measured**: {why}");
    }
    if !memory.is_empty() {
        let _ = writeln!(md, "\n| memory (pool) | figure |\n|---|---|");
        for (k, v) in memory {
            let _ = writeln!(md, "| {k} | {v} |");
        }
    }
    md
}

fn main() {
    let o = parse_args();
    if o.child {
        for r in speed_rows(o.quick, &o.only) {
            println!(
                "ROW\t{}\t{}\t{}\t{}\t{}",
                r.name, r.pool_ns, r.plain_ns, r.pool_faults, r.plain_faults
            );
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
                    eprintln!("!!!!! ratio: the {name} run failed: {why} !!!!!");
                    failures.push((name.to_string(), why));
                }
            }
        }
    } else {
        eprintln!("speed rows, global allocator {GLOBAL_ALLOCATOR}:");
        runs.push((GLOBAL_ALLOCATOR.to_string(), speed_rows(o.quick, &o.only)));
    }
    let memory = if o.memory {
        eprintln!("memory rows:");
        memory_rows(o.quick)
    } else {
        Vec::new()
    };
    let md = markdown(&runs, &memory, &failures, o.quick);
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
            eprintln!("ratio: could not write {}: {e}", o.out.display());
            process::exit(1)
        }
    }
    if !failures.is_empty() {
        process::exit(1);
    }
}
