//! Criterion benchmarks, several threads: the pool against `bytes::BytesMut` doing the same
//! work in the same run, on the global allocator the features pick (system by default;
//! `--features mimalloc` or `--features jemalloc`). Times are per buffer (or operation).
//!
//! ```text
//! cargo bench --bench threads
//! cargo bench --bench threads -- --warm-up-time 0.5 --measurement-time 2   # quick
//! ```
//!
//! Groups (workloads in `benches/workloads/mod.rs`):
//! * `B3_cross_thread`: one thread allocates 1 KiB, fills, freezes; another drops.
//! * `B5_mixed`: network sizes and lifetimes on 2 threads, and on 8 threads.
//! * `xmalloc`: 2 producer and 2 consumer threads, batches of 4,096, 64 B .. 32 KiB.
//! * `larson`: 2 lineages of threads with 5,000 slots each, random replace, each thread
//!   handing its slots to a successor after 20,000 operations.

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

#[path = "workloads/mod.rs"]
mod workloads;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use std::time::Duration;
use workloads::{Backend, Plain, Pool};

fn both(
    c: &mut Criterion,
    group: &str,
    param: &str,
    pool: impl Fn(&Pool, u64) -> Duration,
    plain: impl Fn(&Plain, u64) -> Duration,
) {
    let mut g = c.benchmark_group(group);
    g.sample_size(20);
    let p = Pool::new();
    g.bench_function(BenchmarkId::new(Pool::NAME, param), |b| {
        b.iter_custom(|n| pool(&p, n))
    });
    g.bench_function(BenchmarkId::new(Plain::NAME, param), |b| {
        b.iter_custom(|n| plain(&Plain, n))
    });
    g.finish();
}

fn b3(c: &mut Criterion) {
    both(c, "B3_cross_thread", "1KiB", workloads::b3, workloads::b3);
}

fn b5(c: &mut Criterion) {
    for threads in [2, 8] {
        both(
            c,
            "B5_mixed",
            &format!("{threads}_threads"),
            |b, n| workloads::b5(b, threads, n).0,
            |b, n| workloads::b5(b, threads, n).0,
        );
    }
}

fn xmalloc(c: &mut Criterion) {
    both(
        c,
        "xmalloc",
        "2x2",
        |b, n| workloads::xmalloc(b, 2, n),
        |b, n| workloads::xmalloc(b, 2, n),
    );
}

fn larson(c: &mut Criterion) {
    both(
        c,
        "larson",
        "2_lineages",
        |b, n| workloads::larson(b, 2, n),
        |b, n| workloads::larson(b, 2, n),
    );
}

criterion_group!(benches, b3, b5, xmalloc, larson);
criterion_main!(benches);
