//! Issue 13, part 3: the live-buffer report (`Builder::sample_allocations`,
//! `AdaptiveAllocator::live_report`).
//!
//! A deliberately kept ("leaked") buffer is found by its file and line; sampling 1 in N records
//! exactly every N-th allocation (the count is per allocator, over all threads); entries go
//! when their region is released, split and frozen handles included; growth and compaction
//! keep a buffer's site; a sampled buffer behaves exactly like an unsampled one.

use std::sync::Mutex;

use adaptive_pool::{AdaptiveAllocator, LiveBuffer, PooledBuf, ReportOrder};
use bytes::Bytes;

fn sampling(every: u32) -> AdaptiveAllocator {
    AdaptiveAllocator::builder()
        .sample_allocations(every)
        .build()
        .expect("valid settings")
}

fn is_here(e: &LiveBuffer, line: u32) -> bool {
    e.site.file().ends_with("live_report.rs") && e.site.line() == line
}

/// Kept for the whole test binary, like a buffer a server forgot in a map.
static KEPT: Mutex<Vec<PooledBuf>> = Mutex::new(Vec::new());

#[test]
fn a_kept_buffer_is_found_by_its_site() {
    let pool = sampling(1);
    let (kept, kept_line) = (pool.allocate(20_000), line!());
    KEPT.lock().unwrap().push(kept);
    // Traffic that comes and goes, from other lines and entry points.
    for i in 0..100 {
        let mut b = pool.try_allocate(64 + i).unwrap();
        b.extend_from_slice(b"transient");
        let _frozen = b.freeze();
        let _ = pool.allocate_with(128, |b| {
            b.extend_from_slice(b"x");
            Ok::<(), ()>(())
        });
    }
    let held_line = line!() + 1;
    let held = pool.allocate_with(300, |_| Ok::<(), ()>(())).unwrap();
    let (tried, tried_line) = (pool.try_allocate(5000).unwrap(), line!());

    let oldest = pool.live_report(ReportOrder::Oldest, 10);
    assert_eq!(oldest.len(), 3, "{oldest:#?}");
    assert!(is_here(&oldest[0], kept_line), "{oldest:#?}");
    assert!(oldest[0].capacity >= 20_000);
    assert!(is_here(&oldest[1], held_line), "{oldest:#?}");
    assert!(is_here(&oldest[2], tried_line), "{oldest:#?}");
    assert!(oldest[0].age >= oldest[1].age && oldest[1].age >= oldest[2].age);

    let largest = pool.live_report(ReportOrder::Largest, 2);
    assert_eq!(largest.len(), 2, "limit");
    assert!(is_here(&largest[0], kept_line), "{largest:#?}");
    assert!(is_here(&largest[1], tried_line), "{largest:#?}");

    drop((held, tried));
    let left = pool.live_report(ReportOrder::Oldest, 10);
    assert_eq!(left.len(), 1);
    assert!(is_here(&left[0], kept_line));
    KEPT.lock().unwrap().clear();
    assert!(pool.live_report(ReportOrder::Oldest, 10).is_empty());
    assert_eq!(pool.sampled_live_buffers(), 0);
}

#[test]
fn one_in_n_records_every_nth_allocation_over_all_threads() {
    const N: u32 = 8;
    let per_thread = if cfg!(miri) { 40 } else { 800 };
    let pool = sampling(N);
    let kept: Vec<Vec<PooledBuf>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|_| s.spawn(|| (0..per_thread).map(|_| pool.allocate(256)).collect()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let total = 2 * per_thread;
    assert_eq!(
        pool.sampled_live_buffers(),
        total / N as usize,
        "exactly 1 in {N}"
    );
    drop(kept);
    assert_eq!(pool.sampled_live_buffers(), 0);
    // Interleaved with drops: only live ones are listed.
    let mut live = Vec::new();
    for i in 0..(8 * N as usize) {
        let b = pool.allocate(100);
        if i % 2 == 0 {
            live.push(b);
        }
    }
    // Allocations 0, 8, 16, … are sampled, and all are even: all kept.
    assert_eq!(pool.sampled_live_buffers(), 8);
    drop(live);
    assert_eq!(pool.sampled_live_buffers(), 0);
    assert!(pool.stats().is_quiet());
}

#[test]
fn entries_go_with_the_last_handle_of_split_and_frozen_regions() {
    let pool = sampling(1);
    let (mut read, line) = (pool.allocate(64 << 10), line!());
    read.resize(10_000, 3);
    let value: Bytes = read.split_to(4096).freeze();
    let clone = value.clone();
    let rest_of_read = read.split_off(5904);
    drop(rest_of_read);
    let report = pool.live_report(ReportOrder::Oldest, 10);
    assert_eq!(report.len(), 1, "one region: {report:#?}");
    assert!(is_here(&report[0], line));
    let rest_cap = report[0].capacity - 10_000;
    assert_eq!(
        report[0].pinned_bytes, rest_cap,
        "the dropped tail is uncovered"
    );
    drop(read);
    let report = pool.live_report(ReportOrder::Oldest, 10);
    assert_eq!(report[0].pinned_bytes, rest_cap + 5904);
    assert_eq!(pool.stats().pinned_bytes, rest_cap + 5904);
    drop(value);
    assert_eq!(
        pool.sampled_live_buffers(),
        1,
        "a clone still holds the region"
    );
    drop(clone);
    assert_eq!(pool.sampled_live_buffers(), 0);
    let s = pool.stats();
    assert!(s.is_quiet() && s.pinned_bytes == 0, "{s}");
}

#[test]
fn growth_and_compaction_keep_the_site() {
    let pool = sampling(1);
    let (mut buf, line) = (pool.allocate(100), line!());
    buf.resize(100, 9);
    buf.reserve(100_000); // moves to a new region
    let report = pool.live_report(ReportOrder::Oldest, 10);
    assert_eq!(report.len(), 1, "the old region went: {report:#?}");
    assert!(is_here(&report[0], line));
    assert!(report[0].capacity >= 100_100);
    assert_eq!(&buf[..], &[9u8; 100][..]);

    // A value copied out by `freeze_compact` is recorded at its read buffer's site.
    let value = buf.split_to(50).freeze_compact();
    assert_eq!(pool.sampled_live_buffers(), 2);
    drop(buf);
    let report = pool.live_report(ReportOrder::Oldest, 10);
    assert_eq!(report.len(), 1, "{report:#?}");
    assert!(is_here(&report[0], line));
    assert!(report[0].capacity < 1000, "the value's own region");
    assert_eq!(report[0].pinned_bytes, 0);
    drop(value);
    assert_eq!(pool.sampled_live_buffers(), 0);
    assert!(pool.stats().is_quiet());
}

/// The same operations on a sampling and a plain allocator give the same buffers: a sampled
/// region's count (one handle from birth) changes nothing that `reserve`, `try_reclaim`,
/// `try_unsplit` and `split_*` decide.
#[test]
fn a_sampled_buffer_behaves_like_an_unsampled_one() {
    fn script(pool: &AdaptiveAllocator) -> Vec<(usize, usize, Vec<u8>)> {
        let mut seen = Vec::new();
        let mut note = |b: &PooledBuf| seen.push((b.len(), b.capacity(), b.to_vec()));
        let mut b = pool.allocate(64);
        b.extend_from_slice(b"hello world");
        note(&b);
        assert!(b.try_reclaim(20), "room in place");
        note(&b);
        bytes::Buf::advance(&mut b, 6);
        assert!(b.try_reclaim(55), "moves to the region's start");
        note(&b);
        let tail = b.split_off(3);
        b.try_unsplit(tail).expect("contiguous");
        note(&b);
        let front = b.split_to(3);
        assert!(!b.try_reclaim(b.capacity()), "shared");
        drop(front);
        assert!(
            b.try_reclaim(b.capacity() - b.len() + 2),
            "the only handle again"
        );
        note(&b);
        b.reserve(1000);
        note(&b);
        let frozen = b.split().freeze();
        assert_eq!(&frozen[..], b"ld");
        note(&b);
        seen
    }
    let sampled = sampling(1);
    let plain = AdaptiveAllocator::new();
    assert_eq!(script(&sampled), script(&plain));
    assert_eq!(sampled.sampled_live_buffers(), 0);
    for pool in [&sampled, &plain] {
        let s = pool.stats();
        assert!(s.is_quiet() && s.pinned_bytes == 0, "{s}");
    }
}

#[test]
fn an_allocator_that_does_not_sample_reports_nothing() {
    let pool = AdaptiveAllocator::new();
    let kept: Vec<_> = (0..10).map(|_| pool.allocate(512)).collect();
    assert!(pool.live_report(ReportOrder::Largest, 100).is_empty());
    assert_eq!(pool.sampled_live_buffers(), 0);
    drop(kept);
}
