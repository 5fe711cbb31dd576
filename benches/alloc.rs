//! Criterion benchmarks: the pool against `bytes::BytesMut` doing the same work, in the same
//! run, under the same global allocator (the system allocator unless a feature swaps it).
//!
//! ```text
//! cargo bench --bench alloc
//! cargo bench --bench alloc -- --warm-up-time 0.2 --measurement-time 0.5   # quick
//! cargo bench --bench alloc -- B1                                         # one group
//! ```
//!
//! Groups (names from the specification's benchmark section):
//! * `B1_alloc_fill_drop`: allocate, fill, drop at 64 B, 1 KiB, 16 KiB, 64 KiB.
//! * `B2_freeze_clone2`: allocate, fill, freeze, clone twice, drop all at 1 KiB, 16 KiB.
//! * `B6_grow_256_to_64k`: start at 256 B, double by `reserve` up to 64 KiB.
//!
//! Each benchmark id is `<pool|BytesMut>/<size>`, so the two rows of a size sit side by side.

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use std::time::Duration;

use adaptive_pool::AdaptiveAllocator;
use bytes::{BufMut, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};

/// Source bytes to fill buffers with (the largest size benchmarked).
static SRC: [u8; 64 << 10] = [0xA5; 64 << 10];

const B1_SIZES: [usize; 4] = [64, 1 << 10, 16 << 10, 64 << 10];
const B2_SIZES: [usize; 2] = [1 << 10, 16 << 10];

fn label(size: usize) -> String {
    if size >= 1 << 10 {
        format!("{}KiB", size >> 10)
    } else {
        format!("{size}B")
    }
}

/// B1: allocate, fill, drop.
fn b1_alloc_fill_drop(c: &mut Criterion) {
    let pool = AdaptiveAllocator::new();
    let mut g = c.benchmark_group("B1_alloc_fill_drop");
    for size in B1_SIZES {
        g.bench_with_input(BenchmarkId::new("pool", label(size)), &size, |b, &n| {
            b.iter(|| {
                let mut buf = pool.allocate(black_box(n));
                buf.put_slice(&SRC[..n]);
                black_box(&buf);
            })
        });
        g.bench_with_input(BenchmarkId::new("BytesMut", label(size)), &size, |b, &n| {
            b.iter(|| {
                let mut buf = BytesMut::with_capacity(black_box(n));
                buf.put_slice(&SRC[..n]);
                black_box(&buf);
            })
        });
    }
    g.finish();
}

/// B2: allocate, fill, freeze, clone twice, drop all.
fn b2_freeze_clone2(c: &mut Criterion) {
    let pool = AdaptiveAllocator::new();
    let mut g = c.benchmark_group("B2_freeze_clone2");
    for size in B2_SIZES {
        g.bench_with_input(BenchmarkId::new("pool", label(size)), &size, |b, &n| {
            b.iter(|| {
                let mut buf = pool.allocate(black_box(n));
                buf.put_slice(&SRC[..n]);
                let frozen = buf.freeze();
                let c1 = frozen.clone();
                let c2 = frozen.clone();
                black_box((&frozen, &c1, &c2));
            })
        });
        g.bench_with_input(BenchmarkId::new("BytesMut", label(size)), &size, |b, &n| {
            b.iter(|| {
                let mut buf = BytesMut::with_capacity(black_box(n));
                buf.put_slice(&SRC[..n]);
                let frozen = buf.freeze();
                let c1 = frozen.clone();
                let c2 = frozen.clone();
                black_box((&frozen, &c1, &c2));
            })
        });
    }
    g.finish();
}

/// B6: start at 256 B and double by `reserve` up to 64 KiB, filling as it grows.
fn b6_grow(c: &mut Criterion) {
    const START: usize = 256;
    const END: usize = 64 << 10;
    let pool = AdaptiveAllocator::new();
    let mut g = c.benchmark_group("B6_grow_256_to_64k");
    g.bench_function("pool", |b| {
        b.iter(|| {
            let mut buf = pool.allocate(black_box(START));
            buf.put_slice(&SRC[..START]);
            while buf.len() < END {
                let n = buf.len();
                buf.reserve(n);
                buf.put_slice(&SRC[..n]);
            }
            black_box(&buf);
        })
    });
    g.bench_function("BytesMut", |b| {
        b.iter(|| {
            let mut buf = BytesMut::with_capacity(black_box(START));
            buf.put_slice(&SRC[..START]);
            while buf.len() < END {
                let n = buf.len();
                buf.reserve(n);
                buf.put_slice(&SRC[..n]);
            }
            black_box(&buf);
        })
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_millis(1500))
        .sample_size(50)
}

criterion_group! {
    name = benches;
    config = config();
    targets = b1_alloc_fill_drop, b2_freeze_clone2, b6_grow
}
criterion_main!(benches);
