//! Failing cases found by the verification suite (fuzzing, proptest, loom, Miri, the odd
//! global allocators), kept so they stay fixed. Each test names the tool and the fix.

use adaptive_pool::AdaptiveAllocator;
use bytes::BufMut;

mod common;
use common::POISON;

/// Found by the fuzz target `builder`: `max_cached_bytes` is accepted up to `isize::MAX`, and
/// the central queue sized its slot array as `budget / chunk size` and allocated it up front,
/// so `build()` asked the system for terabytes and aborted. The queue now holds at most
/// 16,384 chunks of each size; the byte budget still bounds what it keeps.
#[test]
fn a_huge_cache_budget_builds_and_caches() {
    // Under Miri one budget and fewer chunks: interpreting the 16,384-slot queue's creation
    // and the buffers' checks takes a while.
    let (budgets, chunks): (&[usize], usize) = if cfg!(miri) {
        (&[isize::MAX as usize], 4)
    } else {
        (&[isize::MAX as usize, 1 << 50, 1 << 40], 40)
    };
    for &budget in budgets {
        let pool = AdaptiveAllocator::builder()
            .min_chunk_size(4 << 10)
            .max_chunk_size(4 << 10)
            .max_cached_bytes(budget)
            .poison(POISON)
            .build()
            .expect("a large cache budget is valid");
        // `chunks` chunks' worth of 1 KiB buffers, made on another thread that then exits, so
        // all of those chunks are given back to the queue at once.
        let p = pool.clone();
        std::thread::spawn(move || {
            let bufs: Vec<_> = (0..4 * chunks)
                .map(|i| {
                    let mut b = p.allocate(1024);
                    b.put_bytes(i as u8, 1024);
                    b
                })
                .collect();
            for (i, b) in bufs.iter().enumerate() {
                assert!(b[..] == [i as u8; 1024]);
            }
        })
        .join()
        .unwrap();
        let s = pool.stats();
        assert!(s.is_quiet(), "{s}");
        assert_eq!(s.chunks, chunks, "{s}");
        assert_eq!(
            s.cached_bytes,
            chunks * (4 << 10),
            "every chunk fits the budget: {s}"
        );
        assert_eq!(pool.trim(), chunks * (4 << 10));
        assert_eq!(pool.stats().allocated_bytes, 0);
    }
}
