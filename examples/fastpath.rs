//! The loops behind the instruction counts in `docs/BENCHMARKS.md`: one operation repeated
//! `N` times on a warm pool (or on `BytesMut`), meant to be run under callgrind, which counts
//! instructions exactly where wall time on a shared machine is noise.
//!
//! ```text
//! cargo build --release --example fastpath
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/fastpath alloc-drop 64 0
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/fastpath alloc-drop 64 100000
//! ```
//!
//! (instructions with N = 100,000 minus instructions with N = 0) / 100,000 is the cost of one
//! operation. For `remote-drop`, run with `--separate-threads=yes` and read the dropping
//! thread's file (`...-02`): one thread allocates N buffers, another drops them all.
//!
//! Operations: `alloc-drop SIZE` (allocate, drop), `freeze-drop SIZE` (allocate, freeze into
//! `Bytes`, drop the `Bytes`), `remote-drop SIZE` (drop on another thread), and the same on
//! `BytesMut` with the prefix `bytesmut-`. Without valgrind it prints nanoseconds per
//! operation, which are only indicative.

// For the global allocator the `mimalloc` / `jemalloc` features select (what `BytesMut` runs
// on); the workloads themselves are not used here.
#[path = "../benches/workloads/mod.rs"]
mod workloads;

use std::env;
use std::hint::black_box;
use std::process;
use std::thread;
use std::time::Instant;

use adaptive_pool::AdaptiveAllocator;
use bytes::BytesMut;

const USAGE: &str = "\
usage: fastpath OPERATION SIZE N

OPERATION: alloc-drop | freeze-drop | remote-drop, on the pool, or with the prefix
`bytesmut-` on bytes::BytesMut (global allocator). SIZE in bytes, N repetitions after a
warm-up of the same operation.";

fn main() {
    let args: Vec<String> = env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return;
    }
    let (op, size, n) = match args.as_slice() {
        [op, size, n] => match (size.parse::<usize>(), n.parse::<usize>()) {
            (Ok(size), Ok(n)) => (op.as_str(), size, n),
            _ => usage(),
        },
        _ => usage(),
    };
    let pool = AdaptiveAllocator::new();
    // Warm up: the magazine and a chunk of the class exist before counting starts (the
    // N = 0 run pays the same warm-up, so it cancels out).
    for _ in 0..1000 {
        black_box(pool.allocate(size));
        black_box(BytesMut::with_capacity(size));
    }
    let start = Instant::now();
    match op {
        "alloc-drop" => {
            for _ in 0..n {
                let b = pool.allocate(black_box(size));
                black_box(&b);
            }
        }
        "bytesmut-alloc-drop" => {
            for _ in 0..n {
                let b = BytesMut::with_capacity(black_box(size));
                black_box(&b);
            }
        }
        "freeze-drop" => {
            for _ in 0..n {
                let b = pool.allocate(black_box(size)).freeze();
                black_box(&b);
            }
        }
        "bytesmut-freeze-drop" => {
            for _ in 0..n {
                let b = BytesMut::with_capacity(black_box(size)).freeze();
                black_box(&b);
            }
        }
        "remote-drop" => {
            let bufs: Vec<_> = (0..n).map(|_| pool.allocate(size)).collect();
            thread::spawn(move || drop(black_box(bufs)))
                .join()
                .expect("dropper");
        }
        "bytesmut-remote-drop" => {
            let bufs: Vec<_> = (0..n).map(|_| BytesMut::with_capacity(size)).collect();
            thread::spawn(move || drop(black_box(bufs)))
                .join()
                .expect("dropper");
        }
        _ => usage(),
    }
    if n > 0 {
        let ns = start.elapsed().as_secs_f64() * 1e9 / n as f64;
        println!(
            "{op} {size} B on {}: {ns:.1} ns per operation (indicative)",
            workloads::GLOBAL_ALLOCATOR
        );
    }
}

fn usage() -> ! {
    eprintln!("{USAGE}");
    process::exit(2)
}
