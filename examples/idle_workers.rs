//! Idle workers: what the pool keeps, and what the process keeps resident, when long-lived
//! threads serve a burst and then stay alive and idle (as a runtime's workers do).
//!
//! ```text
//! cargo run --release --example idle_workers -- --threads 8
//! cargo run --release --example idle_workers -- --threads 64 --window 500
//! ```
//!
//! Each of N threads serves a burst of network-sized buffers (64 B to 400 KB, log-uniform,
//! every byte written, a window of live buffers replaced at random), drops them all, and then
//! waits, alive. The program prints, with the threads idle: the pool's `allocated_bytes` and
//! the process RSS right after the burst; after `idle_release` (0.5 s here) with light
//! activity on the main thread (a `stats()` every 50 ms); and after `trim()` from the main
//! thread. It uses only API that every version of the crate has, so the same program measures
//! before and after a change.

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use adaptive_pool::{AdaptiveAllocator, PooledBuf, Stats};
use bytes::BufMut;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn size(rng: &mut Rng) -> usize {
    let (lo, hi) = ((64f64).ln(), (400_000f64).ln());
    let u = (rng.next() >> 11) as f64 / (1u64 << 53) as f64;
    (lo + u * (hi - lo)).exp() as usize
}

fn rss() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<usize>().ok())
        .map_or(0, |pages| pages * 4096)
}

fn mib(b: usize) -> String {
    format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
}

fn line(what: &str, s: &Stats) {
    println!(
        "{what:<44} allocated {:>10} ({:>4} chunks, {:>9} cached)  live {:>9}  rss {:>10}",
        mib(s.allocated_bytes),
        s.chunks,
        mib(s.cached_bytes),
        mib(s.live_bytes),
        mib(rss())
    );
}

fn main() {
    let mut threads = 8;
    let mut window = 2000;
    let mut ops = 20_000;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = || -> usize {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{a} needs a number"))
        };
        match a.as_str() {
            "--threads" => threads = num(),
            "--window" => window = num(),
            "--ops" => ops = num(),
            _ => {
                eprintln!("usage: idle_workers [--threads N] [--window N] [--ops N]");
                std::process::exit(2)
            }
        }
    }
    let idle = Duration::from_millis(500);
    let pool = AdaptiveAllocator::builder()
        .idle_release(idle)
        .build()
        .expect("valid settings");
    let start = Arc::new(Barrier::new(threads + 1));
    let done = Arc::new(Barrier::new(threads + 1));
    let release = Arc::new(Barrier::new(threads + 1));
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (pool, start, done, release) =
                (pool.clone(), start.clone(), done.clone(), release.clone());
            thread::spawn(move || {
                let mut rng = Rng(0x1D1E_0000 + t as u64);
                let mut live: Vec<PooledBuf> = Vec::with_capacity(window);
                start.wait();
                for _ in 0..ops {
                    let n = size(&mut rng);
                    let mut b = pool.allocate(n);
                    b.put_bytes(t as u8, n);
                    if live.len() < window {
                        live.push(b);
                    } else {
                        let i = (rng.next() % window as u64) as usize;
                        live[i] = b;
                    }
                }
                drop(live);
                done.wait();
                release.wait();
            })
        })
        .collect();
    let baseline = rss();
    println!(
        "{threads} threads, window {window}, {ops} buffers each (64 B .. 400 KB); RSS before: {}",
        mib(baseline)
    );
    start.wait();
    done.wait();
    line("after the burst, threads idle and alive:", &pool.stats());
    let t = Instant::now();
    while t.elapsed() < idle * 4 {
        thread::sleep(Duration::from_millis(50));
        let _ = pool.stats();
    }
    line(
        &format!("after {:?} idle, stats() every 50 ms:", idle * 4),
        &pool.stats(),
    );
    pool.trim();
    line("after trim() from the main thread:", &pool.stats());
    release.wait();
    for w in workers {
        w.join().unwrap();
    }
    pool.trim();
    line("after the threads exited and trim():", &pool.stats());
}
