//! SPEC section 5, scenario 11: resident memory.
//!
//! After a multi-thread burst (8 threads, network-sized buffers written in full, so every page
//! is touched) and `trim()`, the process's resident set is within 8 MiB of what it was before
//! the burst, with the worker threads still alive. The pool maps its chunks from the OS and
//! decommits what it gives back, so this holds whatever the global allocator keeps; before,
//! chunks came from glibc, which kept 20-25 MiB of them resident after the same burst.
//!
//! Linux only: it reads `/proc/self/statm`. Elsewhere (and under Miri) it says so loudly and
//! checks nothing. The file holds a single test, so nothing else in the process allocates
//! while it measures.

use std::sync::{Arc, Barrier};
use std::thread;

use adaptive_pool::{AdaptiveAllocator, PooledBuf};
use bytes::BufMut;

mod common;
use common::Rng;

const THREADS: usize = 8;
const WINDOW: usize = 256;
const OPS: usize = 3000;
const SLACK: usize = 8 << 20;

/// The resident set, in bytes.
#[cfg(target_os = "linux")]
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|f| f.parse().ok())
        .expect("statm's second field");
    // The page size, without a libc dependency in the tests: 4 KiB on the machines this
    // runs on; a larger page only makes the measurement coarser.
    pages * 4096
}

fn size(rng: &mut Rng) -> usize {
    let lo = (64f64).ln();
    let hi = (400_000f64).ln();
    let u = (rng.next() >> 11) as f64 / (1u64 << 53) as f64;
    (lo + u * (hi - lo)).exp() as usize
}

#[test]
fn resident_memory_returns_after_a_burst_and_trim() {
    if cfg!(miri) || !cfg!(target_os = "linux") {
        eprintln!(
            "!!!!! SKIPPED: scenario 11 (resident memory) reads /proc/self/statm and runs on \
             Linux outside Miri only; nothing was checked here !!!!!"
        );
        return;
    }
    #[cfg(target_os = "linux")]
    run();
}

#[cfg(target_os = "linux")]
fn run() {
    let pool = AdaptiveAllocator::new();
    let start = Arc::new(Barrier::new(THREADS + 1));
    let done = Arc::new(Barrier::new(THREADS + 1));
    let release = Arc::new(Barrier::new(THREADS + 1));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (pool, start, done, release) =
                (pool.clone(), start.clone(), done.clone(), release.clone());
            thread::spawn(move || {
                let mut rng = Rng(0x0055_0000 + t as u64);
                let mut live: Vec<PooledBuf> = Vec::with_capacity(WINDOW);
                // The thread's own heap (its glibc arena) is made before the baseline.
                drop(pool.allocate(64));
                pool.trim_thread();
                start.wait();
                // A failed burst still passes the barriers (or the test would wait forever
                // for it); its panic is raised again when the thread is joined.
                let burst = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    for _ in 0..OPS {
                        let n = size(&mut rng);
                        let mut b = pool.allocate(n);
                        b.put_bytes(t as u8, b.capacity());
                        if live.len() < WINDOW {
                            live.push(b);
                        } else {
                            let i = rng.below(WINDOW);
                            live[i] = b;
                        }
                    }
                    drop(live);
                }));
                done.wait();
                // Alive and idle until the measurement is over.
                release.wait();
                if let Err(panic) = burst {
                    std::panic::resume_unwind(panic);
                }
            })
        })
        .collect();
    // Warm-ups of this thread's own: the pool's first sweep clock reading, a trim.
    pool.trim();
    let _ = pool.stats();
    let baseline = rss();
    start.wait();
    done.wait();
    let peak = rss();
    let burst = pool.stats();
    let freed = pool.trim();
    let after = rss();
    let s = pool.stats();
    println!(
        "scenario 11: RSS before the burst {} KiB, right after it {} KiB (pool allocated {} B), \
         after trim() {} KiB (freed {freed} B; allocated now {} B, mapped {} B)",
        baseline >> 10,
        peak >> 10,
        burst.allocated_bytes,
        after >> 10,
        s.allocated_bytes,
        s.mapped_bytes
    );
    assert!(s.is_quiet(), "{s}");
    assert_eq!(s.allocated_bytes, 0, "{s}");
    assert!(
        after <= baseline + SLACK,
        "RSS after trim() is {} KiB, more than 8 MiB over the {} KiB before the burst (peak {} \
         KiB): memory the pool gave back is still resident ({s})",
        after >> 10,
        baseline >> 10,
        peak >> 10
    );
    release.wait();
    for w in workers {
        w.join().unwrap();
    }
}
