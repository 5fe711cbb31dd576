//! Runs one benchmark row on the pool alone and prints the time of its measured run: a
//! whole-process probe for comparing two builds of the crate side by side (the ratio report
//! compares the pool with `BytesMut` inside one process; this compares the pool with itself).
//!
//! ```text
//! cargo build --release --example row
//! target/release/examples/row b4 600000        # ROW N: a warm-up of N/10, then N
//! # another build (a worktree of an older commit, with this file copied in), then e.g.
//! hyperfine -N 'target/release/examples/row b4 600000' '../old/target/release/examples/row b4 600000'
//! ```
//!
//! Rows: b1-64, b1-1k, b1-16k, b1-64k, b2-1k, b2-16k, b3, b3-unfrozen (diagnostic: B3 without the freeze), b4, b5-2, b5-8, b6, b7, xmalloc, larson
//! (the workloads of `benches/workloads/mod.rs`, scaled so that N = 600,000 takes a few
//! hundred milliseconds on the development machine). Default settings; the global allocator
//! is the system's unless built with `--features mimalloc` or `--features jemalloc`. With the
//! prefix `bytesmut-` (`bytesmut-larson`) the row runs on `BytesMut` instead: the other side
//! of a ratio row alone, e.g. to compare both under `valgrind --tool=cachegrind`.

#[path = "../benches/workloads/mod.rs"]
mod workloads;

use std::process;
use std::time::Duration;

use workloads::{b1, b2, b3, b3_unfrozen, b4, b5, b6, b7, larson, xmalloc, Backend, Plain, Pool};

const USAGE: &str = "usage: row ROW N   (ROW: b1-64 b1-1k b1-16k b1-64k b2-1k b2-16k b3 b3-unfrozen b4 b5-2 b5-8 b6 b7 xmalloc larson; \
                     the prefix bytesmut- runs the row on BytesMut instead of the pool)";

fn run<B: Backend>(p: &B, row: &str, n: u64) -> Option<Duration> {
    Some(match row {
        "b1-64" => b1(p, 64, n * 20),
        "b1-1k" => b1(p, 1024, n * 20),
        "b1-16k" => b1(p, 16 << 10, n * 4),
        "b1-64k" => b1(p, 64 << 10, n),
        "b2-1k" => b2(p, 1024, n * 10),
        "b2-16k" => b2(p, 16 << 10, n * 4),
        "b3" => b3(p, n * 2),
        "b3-unfrozen" => b3_unfrozen(p, n * 2),
        "b4" => b4(p, n * 4),
        "b5-2" => b5(p, 2, n * 10).0,
        "b5-8" => b5(p, 8, n * 10).0,
        "b6" => b6(p, n / 4),
        "b7" => b7(p, n * 4),
        "xmalloc" => xmalloc(p, 2, n * 2),
        "larson" => larson(p, 2, n * 4),
        _ => return None,
    })
}

/// A warm-up of `n / 10`, then the measured run of `n`; exits on an unknown row.
fn warm_then_run<B: Backend>(b: &B, row: &str, n: u64) -> Duration {
    if run(b, row, n / 10).is_none() {
        eprintln!("unknown row {row:?}\n{USAGE}");
        process::exit(2);
    }
    run(b, row, n).expect("the row ran above")
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (row, n) = match args.as_slice() {
        [row, n] => match n.parse::<u64>() {
            Ok(n) if n >= 10 => (row.as_str(), n),
            _ => {
                eprintln!("{USAGE}\nN must be a whole number of at least 10");
                process::exit(2);
            }
        },
        _ => {
            eprintln!("{USAGE}");
            process::exit(2);
        }
    };
    let t = match row.strip_prefix("bytesmut-") {
        Some(plain) => warm_then_run(&Plain, plain, n),
        None => warm_then_run(&Pool::new(), row, n),
    };
    println!("{row} {n}: {:.1} ms", t.as_secs_f64() * 1e3);
}
