//! What issue 13's features cost: compaction (a value split from a large read buffer and
//! frozen, zero-copy with `freeze` or copied into a region of its own with `freeze_compact`,
//! then dropped) and allocation sampling when it is on. Meant to be run under callgrind, as
//! `examples/fastpath.rs` is (figures in `docs/BENCHMARKS.md`):
//!
//! ```text
//! cargo build --release --example cost13
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/cost13 freeze 4096 0
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/cost13 freeze 4096 100000
//! ```
//!
//! (instructions with N = 100,000 minus instructions with N = 0) / 100,000 is the cost of one
//! value. Both modes fill the same 64 KiB read buffers and replace them when full, so the
//! difference between `freeze` and `compact` is what compaction adds.
//!
//! Modes: `freeze SIZE N` (`split_to(SIZE).freeze()`), `compact SIZE N`
//! (`split_to(SIZE).freeze_compact()`), `setting SIZE N` (`split_to(SIZE).freeze()` on an
//! allocator built with `compact_frozen_below(50)`); `alloc-drop SIZE N` (allocate and drop on
//! a default allocator), `sampled-alloc-drop SIZE N` (the same with `sample_allocations(1000)`)
//! and `sampled1-alloc-drop SIZE N` (with `sample_allocations(1)`: every buffer recorded).
//! Without valgrind it prints nanoseconds per operation, which are only indicative.

use std::env;
use std::hint::black_box;
use std::process;
use std::time::Instant;

use adaptive_pool::{AdaptiveAllocator, PooledBuf};

const READ: usize = 64 << 10;

const USAGE: &str =
    "usage: cost13 freeze|compact|setting|alloc-drop|sampled-alloc-drop|sampled1-alloc-drop SIZE N";

fn main() {
    let args: Vec<String> = env::args().skip(1).collect();
    let (mode, size, n) = match args.as_slice() {
        [mode, size, n] => match (size.parse::<usize>(), n.parse::<usize>()) {
            (Ok(size), Ok(n)) if size > 0 && size <= READ => (mode.clone(), size, n),
            _ => usage(),
        },
        _ => usage(),
    };
    let pool = match mode.as_str() {
        "freeze" | "compact" | "alloc-drop" => AdaptiveAllocator::new(),
        "setting" => AdaptiveAllocator::builder()
            .compact_frozen_below(50)
            .build()
            .expect("valid settings"),
        "sampled-alloc-drop" | "sampled1-alloc-drop" => AdaptiveAllocator::builder()
            .sample_allocations(if mode == "sampled1-alloc-drop" {
                1
            } else {
                1000
            })
            .build()
            .expect("valid settings"),
        _ => usage(),
    };
    if mode.ends_with("alloc-drop") {
        let run = |count: usize| {
            for _ in 0..count {
                let b = pool.allocate(black_box(size));
                black_box(&b);
            }
        };
        run(1000);
        let start = Instant::now();
        run(n);
        if n > 0 {
            let ns = start.elapsed().as_secs_f64() * 1e9 / n as f64;
            println!("{mode} {size} B: {ns:.1} ns per operation (indicative)");
        }
        return;
    }
    let compact = mode == "compact";
    let fresh = |pool: &AdaptiveAllocator| {
        let mut read = pool.allocate(READ);
        read.resize(READ, 7);
        read
    };
    let mut read: PooledBuf = fresh(&pool);
    let mut run = |count: usize| {
        for _ in 0..count {
            if read.len() < size {
                read = fresh(&pool);
            }
            let part = read.split_to(black_box(size));
            let value = if compact {
                part.freeze_compact()
            } else {
                part.freeze()
            };
            black_box(&value);
        }
    };
    // Warm up: magazines and chunks of both classes exist before counting starts.
    run(1000);
    let start = Instant::now();
    run(n);
    if n > 0 {
        let ns = start.elapsed().as_secs_f64() * 1e9 / n as f64;
        println!("{mode} {size} B: {ns:.1} ns per operation (indicative)");
    }
}

fn usage() -> ! {
    eprintln!("{USAGE}");
    process::exit(2)
}
