//! A large buffer grows without copying (issue 23, item 2): an unpooled buffer mapped on its
//! own that `reserve` must grow, and that is its region's only handle, has its mapping
//! resized by the kernel (`mremap`), which moves the pages instead of copying the bytes, as
//! glibc's `realloc` does for its own mapped chunks. Contents stay, the accounting stays exact
//! (`allocated_bytes`, `live_bytes`, `max_memory`), and `mapped_bytes` is back to 0 at the end.
//!
//! The page faults it counts are the calling thread's (its tests run side by side). Mapped memory
//! only: not run under Miri, whose memory source is the global allocator, where growth moves
//! and copies as `tests/buf_parity.rs`'s reserve tests check (and a byte-by-byte fill of
//! megabytes would take Miri minutes).

use std::time::Duration;

use adaptive_pool::{AdaptiveAllocator, AllocError, MemorySource};

const MIB: usize = 1 << 20;

fn os_backed() -> bool {
    MemorySource::Os.is_supported() && !cfg!(miri)
}

/// Minor page faults of the calling thread so far (Linux; 0 elsewhere).
fn minor_faults() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/thread-self/stat") else {
        return 0;
    };
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    rest.split(' ')
        .nth(7)
        .expect("minflt")
        .parse()
        .expect("a number")
}

fn pattern(i: usize) -> u8 {
    (i % 251) as u8
}

#[test]
#[cfg_attr(miri, ignore = "mapped memory only")]
fn a_large_buffer_grows_without_copying() {
    let size = 8 * MIB;
    let pool = AdaptiveAllocator::builder()
        .max_memory(64 * MIB)
        .decay_time(Duration::ZERO)
        .build()
        .unwrap();
    let mut b = pool.allocate(size);
    b.extend((0..size).map(pattern));
    let cap = b.capacity();
    let s = pool.stats();
    assert_eq!((s.allocated_bytes, s.live_bytes), (cap, cap), "{s}");
    let faults = minor_faults();
    b.reserve(cap + 1);
    let moved_faults = minor_faults() - faults;
    let grown = b.capacity();
    assert!(grown > cap);
    if os_backed() {
        // A copy would fault in every page of the new region it writes: `size` bytes.
        assert!(
            moved_faults < (size / 4096 / 8) as u64,
            "{moved_faults} page faults growing an {size}-byte buffer: it was copied"
        );
    }
    assert!(
        b.iter().enumerate().all(|(i, &x)| x == pattern(i)),
        "contents kept"
    );
    let s = pool.stats();
    assert_eq!(
        (s.allocated_bytes, s.live_bytes, s.live_buffers),
        (grown, grown, 1),
        "the accounting follows the growth: {s}"
    );
    // Write into the new room, then grow once more.
    b.extend((size..grown).map(pattern));
    b.reserve(1);
    assert!(b.iter().enumerate().all(|(i, &x)| x == pattern(i)));
    let s = pool.stats();
    assert_eq!(
        (s.allocated_bytes, s.live_bytes),
        (b.capacity(), b.capacity()),
        "{s}"
    );
    drop(b);
    pool.trim();
    let s = pool.stats();
    assert_eq!(
        (s.allocated_bytes, s.live_bytes, s.mapped_bytes),
        (0, 0, 0),
        "{s}"
    );
}

#[test]
#[cfg_attr(miri, ignore = "mapped memory only")]
fn growth_in_place_respects_the_memory_limit() {
    let pool = AdaptiveAllocator::builder()
        .max_memory(6 * MIB)
        .decay_time(Duration::ZERO)
        .build()
        .unwrap();
    let mut b = pool.allocate(3 * MIB);
    b.extend((0..3 * MIB).map(pattern));
    let (ptr, cap) = (b.as_ptr(), b.capacity());
    // 8 MiB do not fit under 6 MiB, in place or moved: an error, the buffer unchanged.
    let e = b.try_reserve(8 * MIB).unwrap_err();
    assert!(matches!(e, AllocError::MemoryLimit { .. }), "{e}");
    assert_eq!((b.as_ptr(), b.capacity(), b.len()), (ptr, cap, 3 * MIB));
    let s = pool.stats();
    assert_eq!(
        s.allocated_bytes, cap,
        "a refused growth reserves nothing: {s}"
    );
    if !os_backed() {
        return;
    }
    // 5 MiB fit in place (it would not fit moved: 3 + 5 > 6).
    b.try_reserve(5 * MIB - b.len()).unwrap();
    assert!(b.capacity() >= 5 * MIB);
    assert!(b.iter().enumerate().all(|(i, &x)| x == pattern(i)));
    let s = pool.stats();
    assert!(s.allocated_bytes <= 6 * MIB, "{s}");
    assert_eq!(s.allocated_bytes, b.capacity(), "{s}");
    drop(b);
    let s = pool.stats();
    assert_eq!((s.allocated_bytes, s.live_bytes), (0, 0), "{s}");
}
