//! Criterion benchmarks, single thread: the pool against `bytes::BytesMut` doing the same work
//! in the same run, on the global allocator the features pick (system by default;
//! `--features mimalloc` or `--features jemalloc`).
//!
//! ```text
//! cargo bench --bench alloc                                   # HTML report: target/criterion
//! cargo bench --bench alloc --features mimalloc
//! cargo bench --bench alloc -- --warm-up-time 0.2 --measurement-time 0.5   # quick
//! cargo bench --bench alloc -- B4                             # one group
//! ```
//!
//! Groups (rows of SPEC section 7; the workloads are in `benches/workloads/mod.rs`):
//! * `B1_alloc_fill_drop`: allocate, fill, drop at 64 B, 1 KiB, 16 KiB, 64 KiB.
//! * `B2_freeze_clone2`: allocate, fill, freeze, clone twice, drop all at 1 KiB, 16 KiB.
//! * `B4_live_set_churn`: 8,192 live buffers, random replace (seed 42), 256 B .. 64 KiB.
//! * `B7_churn_256B`: the same churn at one small size, 256 B buffers with 64 B written.
//! * `B6_grow_256_to_64k`: start at 256 B, double by `reserve` up to 64 KiB.
//!
//! Each benchmark id is `<pool|BytesMut>/<size>`, so the two rows of a size sit side by side.
//! The multi-thread rows are in `benches/threads.rs`.

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

#[path = "workloads/mod.rs"]
mod workloads;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::time::Duration;
use workloads::{label, Backend, Plain, Pool, B1_SIZES, B2_SIZES};

/// One row for both backends, side by side.
fn both(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    param: &str,
    pool: impl Fn(&Pool, u64) -> Duration,
    plain: impl Fn(&Plain, u64) -> Duration,
) {
    let p = Pool::new();
    g.bench_function(BenchmarkId::new(Pool::NAME, param), |b| {
        b.iter_custom(|n| pool(&p, n))
    });
    g.bench_function(BenchmarkId::new(Plain::NAME, param), |b| {
        b.iter_custom(|n| plain(&Plain, n))
    });
}

fn b1(c: &mut Criterion) {
    let mut g = c.benchmark_group("B1_alloc_fill_drop");
    for size in B1_SIZES {
        g.throughput(Throughput::Elements(1));
        both(
            &mut g,
            &label(size),
            |b, n| workloads::b1(b, size, n),
            |b, n| workloads::b1(b, size, n),
        );
    }
    g.finish();
}

fn b2(c: &mut Criterion) {
    let mut g = c.benchmark_group("B2_freeze_clone2");
    for size in B2_SIZES {
        both(
            &mut g,
            &label(size),
            |b, n| workloads::b2(b, size, n),
            |b, n| workloads::b2(b, size, n),
        );
    }
    g.finish();
}

fn b4(c: &mut Criterion) {
    let mut g = c.benchmark_group("B4_live_set_churn");
    both(&mut g, "8192_slots", workloads::b4, workloads::b4);
    g.finish();
}

fn b7(c: &mut Criterion) {
    let mut g = c.benchmark_group("B7_churn_256B");
    both(&mut g, "8192_slots", workloads::b7, workloads::b7);
    g.finish();
}

fn b6(c: &mut Criterion) {
    let mut g = c.benchmark_group("B6_grow_256_to_64k");
    both(&mut g, "doubling", workloads::b6, workloads::b6);
    g.finish();
}

criterion_group!(benches, b1, b2, b4, b6, b7);
criterion_main!(benches);
