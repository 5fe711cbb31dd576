//! API behaviour (SPEC sections 2 and 4): the `PooledBuf` surface compared with `BytesMut`,
//! errors and their messages, configuration refusals, statistics, and the allocator handle.

use adaptive_pool::{AdaptiveAllocator, AllocError, ConfigError, InitError, PooledBuf, Stats};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::borrow::Borrow;
use std::io::Write;
use std::mem::MaybeUninit;

mod common;
use common::default_allocator;

fn pool() -> AdaptiveAllocator {
    default_allocator()
}

// ---------------------------------------------------------------------------------------------
// Static properties.

#[test]
fn send_sync_and_friends() {
    fn send_sync<T: Send + Sync>() {}
    fn debug<T: std::fmt::Debug>() {}
    fn error<T: std::error::Error + Send + Sync + 'static>() {}
    fn copy<T: Copy>() {}
    send_sync::<AdaptiveAllocator>();
    send_sync::<PooledBuf>();
    send_sync::<Stats>();
    debug::<AdaptiveAllocator>();
    debug::<PooledBuf>();
    debug::<adaptive_pool::Builder>();
    error::<AllocError>();
    error::<ConfigError>();
    error::<InitError<std::io::Error>>();
    copy::<Stats>();
    let _: AdaptiveAllocator = Default::default();
    let _: AdaptiveAllocator = pool().clone();
}

// ---------------------------------------------------------------------------------------------
// Capacity edge cases and errors.

#[test]
fn capacity_zero_is_valid() {
    let pool = pool();
    let mut b = pool.allocate(0);
    assert_eq!(b.len(), 0);
    assert!(b.is_empty());
    assert_eq!(&b[..], b"");
    b.extend_from_slice(b"grows");
    assert_eq!(&b[..], b"grows");
    let b0 = pool.try_allocate(0).expect("capacity 0");
    assert!(b0.is_empty());
    drop((b, b0));
    assert!(pool.stats().is_quiet());
}

#[test]
fn capacity_overflow() {
    let pool = pool();
    for cap in [usize::MAX, isize::MAX as usize + 1, usize::MAX - 15] {
        match pool.try_allocate(cap) {
            Err(AllocError::CapacityOverflow { requested }) => assert_eq!(requested, cap),
            other => panic!("try_allocate({cap}) gave {other:?}"),
        }
    }
    // isize::MAX itself cannot be served either; it must be an error, not an abort.
    assert!(pool.try_allocate(isize::MAX as usize).is_err());
    let s = pool.stats();
    assert_eq!(s.allocated_bytes, 0, "{s}");
    assert!(s.is_quiet());
    // `allocate` panics with the error's message.
    let err = std::panic::catch_unwind(|| AdaptiveAllocator::new().allocate(usize::MAX))
        .expect_err("must panic");
    let msg = err
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    assert!(msg.contains("capacity overflow"), "{msg}");
    // Growth past isize::MAX is refused too.
    let mut b = pool.allocate(16);
    b.put_u8(1);
    assert!(matches!(
        b.try_reserve(usize::MAX),
        Err(AllocError::CapacityOverflow { .. })
    ));
    assert_eq!(&b[..], &[1], "a failed reserve changed the buffer");
}

#[test]
fn alloc_error_messages() {
    let e = AllocError::MemoryLimit {
        requested: 4096,
        limit: 8192,
    };
    let m = e.to_string();
    assert!(m.contains("memory limit"), "{m}");
    assert!(m.contains("4096") && m.contains("8192"), "{m}");
    let m = AllocError::CapacityOverflow { requested: 77 }.to_string();
    assert!(m.contains("capacity overflow") && m.contains("77"), "{m}");
    let m = AllocError::System { size: 1234 }.to_string();
    assert!(m.contains("system") && m.contains("1234"), "{m}");
    let i: InitError<std::io::Error> = InitError::Alloc(AllocError::System { size: 1 });
    assert!(i.to_string().contains("system"), "{i}");
    let i: InitError<&str> = InitError::Init("bad frame");
    assert!(i.to_string().contains("bad frame"), "{i}");
    let i: InitError<AllocError> = AllocError::CapacityOverflow { requested: 3 }.into();
    assert_eq!(
        i,
        InitError::Alloc(AllocError::CapacityOverflow { requested: 3 })
    );
}

// ---------------------------------------------------------------------------------------------
// Configuration.

fn refused(b: adaptive_pool::Builder) -> ConfigError {
    b.build().expect_err("the setting must be refused")
}

#[test]
fn config_errors_name_the_setting() {
    let b = AdaptiveAllocator::builder;
    let cases: Vec<(ConfigError, &str)> = vec![
        (refused(b().min_chunk_size(0)), "min_chunk_size"),
        (refused(b().max_chunk_size(0)), "max_chunk_size"),
        (refused(b().max_memory(0)), "max_memory"),
        (
            refused(b().min_chunk_size(1 << 20).max_chunk_size(64 << 10)),
            "min_chunk_size",
        ),
        (
            refused(b().max_memory(1 << 20).max_cached_bytes(2 << 20)),
            "max_cached_bytes",
        ),
        (refused(b().max_chunk_size(usize::MAX)), "max_chunk_size"),
        (refused(b().min_chunk_size(usize::MAX)), "min_chunk_size"),
        (refused(b().max_memory(usize::MAX)), "max_memory"),
        (
            refused(b().idle_release(std::time::Duration::ZERO)),
            "idle_release",
        ),
    ];
    for (e, setting) in cases {
        assert_eq!(e.setting(), setting, "{e}");
        assert!(!e.reason().is_empty(), "{e:?}");
        let shown = e.to_string();
        assert!(shown.contains(setting), "{shown}");
    }
    // Valid settings build.
    let pool = b()
        .max_memory(64 << 20)
        .max_cached_bytes(4 << 20)
        .min_chunk_size(16 << 10)
        .max_chunk_size(1 << 20)
        .idle_release(std::time::Duration::from_secs(1))
        .zero_on_release(true)
        .build()
        .expect("valid settings");
    drop(pool.allocate(100));
}

// ---------------------------------------------------------------------------------------------
// Reading and writing.

#[test]
fn bufmut_then_buf() {
    let pool = pool();
    let mut b = pool.allocate(8);
    b.put_u8(0xAB);
    b.put_i8(-2);
    b.put_u16(0xBEEF);
    b.put_u16_le(0x1234);
    b.put_u32(0xDEAD_BEEF);
    b.put_i32_le(-123_456);
    b.put_u64(u64::MAX - 1);
    b.put_f64(3.5);
    b.put_slice(b"tail");
    b.put_bytes(b'z', 3);
    assert_eq!(b.len(), 1 + 1 + 2 + 2 + 4 + 4 + 8 + 8 + 4 + 3);
    assert_eq!(b.remaining(), b.len());
    assert_eq!(b.get_u8(), 0xAB);
    assert_eq!(b.get_i8(), -2);
    assert_eq!(b.get_u16(), 0xBEEF);
    assert_eq!(b.get_u16_le(), 0x1234);
    assert_eq!(b.get_u32(), 0xDEAD_BEEF);
    assert_eq!(b.get_i32_le(), -123_456);
    assert_eq!(b.get_u64(), u64::MAX - 1);
    assert_eq!(b.get_f64(), 3.5);
    let mut tail = [0u8; 4];
    b.copy_to_slice(&mut tail);
    assert_eq!(&tail, b"tail");
    assert_eq!(b.copy_to_bytes(3), Bytes::from_static(b"zzz"));
    assert_eq!(b.remaining(), 0);
    assert!(!b.has_remaining());
}

#[test]
fn io_write() {
    let pool = pool();
    let mut b = pool.allocate(4);
    b.write_all(b"hello, ").unwrap();
    let who = "world";
    write!(b, "{who} {}", 42).unwrap();
    b.flush().unwrap();
    assert_eq!(&b[..], b"hello, world 42");
    let n = b.write(&[b'!'; 1000]).unwrap();
    assert_eq!(n, 1000);
    assert_eq!(b.len(), 15 + 1000);
}

#[test]
fn extend_and_compare() {
    let pool = pool();
    let mut b = pool.allocate(0);
    b.extend(0u8..10);
    b.extend([10u8, 11, 12].iter());
    b.extend(&[13u8, 14]);
    let want: Vec<u8> = (0..15).collect();
    assert!(b == want[..]);
    assert!(b == *want.as_slice());
    assert!(b == want);
    assert!(b != want[..14]);
    assert_eq!(AsRef::<[u8]>::as_ref(&b), &want[..]);
    let borrowed: &[u8] = b.borrow();
    assert_eq!(borrowed, &want[..]);
    AsMut::<[u8]>::as_mut(&mut b)[0] = 99;
    assert_eq!(b[0], 99);
    let mut other = pool.allocate(100);
    other.extend_from_slice(&b);
    assert_eq!(
        b, other,
        "equal contents compare equal whatever the capacity"
    );
    other[1] = 0;
    assert_ne!(b, other);
}

#[test]
fn resize_truncate_clear() {
    let pool = pool();
    let mut b = pool.allocate(10);
    b.resize(5, 7);
    assert_eq!(&b[..], &[7; 5]);
    b.resize(300, 9);
    assert_eq!(b.len(), 300);
    assert!(b[..5].iter().all(|&x| x == 7) && b[5..].iter().all(|&x| x == 9));
    b.resize(2, 0);
    assert_eq!(&b[..], &[7, 7]);
    b.truncate(10);
    assert_eq!(b.len(), 2, "truncate to a larger length does nothing");
    b.truncate(1);
    assert_eq!(&b[..], &[7]);
    let cap = b.capacity();
    b.clear();
    assert!(b.is_empty());
    assert_eq!(b.capacity(), cap, "clear keeps the capacity");
}

#[test]
fn spare_capacity_and_set_len() {
    let pool = pool();
    let mut b = pool.allocate(64);
    b.extend_from_slice(b"ab");
    let cap = b.capacity();
    let spare = b.spare_capacity_mut();
    assert_eq!(spare.len(), cap - 2);
    for (i, slot) in spare.iter_mut().take(5).enumerate() {
        *slot = MaybeUninit::new(b'0' + i as u8);
    }
    // SAFETY: the first 2 + 5 bytes are initialised, and 7 <= capacity.
    unsafe { b.set_len(7) };
    assert_eq!(&b[..], b"ab01234");
}

// ---------------------------------------------------------------------------------------------
// Splitting, compared with `BytesMut` doing the same.

fn filled(pool: &AdaptiveAllocator, n: usize) -> (PooledBuf, BytesMut) {
    let mut p = pool.allocate(n);
    let mut m = BytesMut::with_capacity(p.capacity());
    for i in 0..n {
        p.put_u8(i as u8);
        m.put_u8(i as u8);
    }
    assert_eq!(p.capacity(), m.capacity());
    (p, m)
}

fn same(p: &PooledBuf, m: &BytesMut, what: &str) {
    assert_eq!(&p[..], &m[..], "{what}: contents");
    assert_eq!(p.len(), m.len(), "{what}: len");
    assert_eq!(p.capacity(), m.capacity(), "{what}: capacity");
}

#[test]
fn split_to_like_bytesmut() {
    let pool = pool();
    for &(n, at) in &[(100, 0), (100, 40), (100, 100), (1000, 999), (0, 0)] {
        let (mut p, mut m) = filled(&pool, n);
        let pf = p.split_to(at);
        let mf = m.split_to(at);
        same(&pf, &mf, "split_to front");
        same(&p, &m, "split_to rest");
        assert_eq!(pool.stats().live_buffers, 1, "one region, two handles");
    }
    assert!(pool.stats().is_quiet());
}

#[test]
fn split_off_like_bytesmut() {
    let pool = pool();
    for &(n, at) in &[(100, 0), (100, 40), (100, 100), (100, 120)] {
        let (mut p, mut m) = filled(&pool, n);
        let at = at.min(p.capacity());
        let pb = p.split_off(at);
        let mb = m.split_off(at);
        same(&pb, &mb, "split_off back");
        same(&p, &m, "split_off front");
    }
    let (mut p, mut m) = filled(&pool, 50);
    let cap = p.capacity();
    let pb = p.split_off(cap);
    let mb = m.split_off(cap);
    same(&pb, &mb, "split_off at capacity");
    assert!(pool.stats().live_buffers <= 1);
}

#[test]
fn split_like_bytesmut() {
    let pool = pool();
    let (mut p, mut m) = filled(&pool, 77);
    let ps = p.split();
    let ms = m.split();
    same(&ps, &ms, "split taken");
    same(&p, &m, "split rest");
    // The rest is still writable (growing past its 3 bytes of room: capacities may then
    // differ from `BytesMut`'s), and writing it does not touch the taken part.
    p.put_slice(&[0xFF; 10]);
    m.put_slice(&[0xFF; 10]);
    assert_eq!(&p[..], &m[..]);
    assert!(p.capacity() >= 10);
    same(&ps, &ms, "taken after writing the rest");
}

#[test]
#[should_panic(expected = "out of bounds")]
fn split_to_past_len_panics() {
    let mut b = pool().allocate(10);
    b.put_slice(b"abc");
    let _ = b.split_to(4);
}

#[test]
#[should_panic(expected = "out of bounds")]
fn split_off_past_capacity_panics() {
    let mut b = pool().allocate(10);
    let cap = b.capacity();
    let _ = b.split_off(cap + 1);
}

#[test]
fn split_region_released_once() {
    let pool = pool();
    let (mut p, _) = filled(&pool, 1000);
    let cap = p.capacity();
    let a = p.split_to(100);
    let b = p.split_off(500);
    let s = pool.stats();
    assert_eq!((s.live_buffers, s.live_bytes), (1, cap), "{s}");
    drop(p);
    drop(a);
    assert_eq!(pool.stats().live_buffers, 1);
    // `b` starts at byte 100 + 500 of the original contents (byte i holds i as u8).
    assert_eq!(b[0], 600u32 as u8);
    assert_eq!(b.len(), 400);
    drop(b);
    assert!(pool.stats().is_quiet());
}

// ---------------------------------------------------------------------------------------------
// Growth.

#[test]
fn reserve_doubling_keeps_contents() {
    let pool = pool();
    let mut b = pool.allocate(256);
    let mut expected = Vec::new();
    let mut cap = 256;
    while cap <= 64 << 10 {
        while b.len() < cap {
            let x = (b.len() % 251) as u8;
            b.put_u8(x);
            expected.push(x);
        }
        b.reserve(cap);
        assert!(b.capacity() >= 2 * cap, "reserve({cap}) at len {cap}");
        assert_eq!(&b[..], &expected[..], "contents lost growing past {cap}");
        cap *= 2;
    }
    let s = pool.stats();
    assert_eq!(s.live_buffers, 1, "old regions not released: {s}");
    assert_eq!(s.live_bytes, b.capacity(), "{s}");
    drop(b);
    assert!(pool.stats().is_quiet());
}

#[test]
fn reserve_in_place_after_advance() {
    let pool = pool();
    let mut b = pool.allocate(1024);
    let base = b.as_ptr();
    let cap = b.capacity();
    b.put_bytes(1, 900);
    b.put_bytes(2, 100);
    b.advance(900);
    assert_eq!(b.capacity(), cap - 900);
    // Room for 600 exists in the region once the contents move to its start.
    b.reserve(500);
    assert_eq!(&b[..], &[2; 100][..]);
    assert!(b.capacity() >= 600);
    assert_eq!(
        b.as_ptr(),
        base,
        "reserve moved to another region although it fitted"
    );
    assert_eq!(pool.stats().live_buffers, 1);
}

#[test]
fn reserve_within_capacity_does_not_move() {
    let pool = pool();
    let mut b = pool.allocate(1000);
    b.put_slice(b"keep");
    let p = b.as_ptr();
    b.reserve(b.capacity() - 4);
    assert_eq!(b.as_ptr(), p);
    assert_eq!(&b[..], b"keep");
}

#[test]
fn growth_of_split_handles() {
    let pool = pool();
    let mut b = pool.allocate(100);
    b.put_bytes(5, 100);
    let front = b.split_to(50);
    b.reserve(10_000);
    b.put_bytes(6, 10_000);
    assert_eq!(
        &front[..],
        &[5; 50][..],
        "growing the back disturbed the front"
    );
    assert_eq!(&b[..50], &[5; 50][..]);
    assert!(b[50..].iter().all(|&x| x == 6));
    drop((front, b));
    assert!(pool.stats().is_quiet());
}

// ---------------------------------------------------------------------------------------------
// Freeze.

#[test]
fn freeze_is_zero_copy() {
    let pool = pool();
    // (Sizes of at least 2, so that `slice(1..)` is not empty: an empty slice is a static
    // `Bytes` that holds nothing.)
    for n in [2, 100, 5000, 300_000, 3 << 20] {
        let mut b = pool.allocate(n);
        b.put_bytes(0x5A, n);
        let ptr = b.as_ptr();
        let frozen = b.freeze();
        assert_eq!(frozen.as_ptr(), ptr, "freeze copied {n} bytes");
        assert_eq!(frozen.len(), n);
        let c = frozen.clone();
        assert_eq!(c.as_ptr(), ptr);
        let sl = frozen.slice(1..);
        assert_eq!(sl.as_ptr(), ptr.wrapping_add(1));
        assert_eq!(pool.stats().live_buffers, 1);
        drop(frozen);
        drop(c);
        assert_eq!(pool.stats().live_buffers, 1, "a slice keeps the region");
        drop(sl);
        assert!(pool.stats().is_quiet());
    }
    // Frozen split handles.
    let mut b = pool.allocate(64);
    b.put_slice(b"headerbody");
    let p = b.as_ptr();
    let head = b.split_to(6).freeze();
    assert_eq!(head, "header");
    assert_eq!(head.as_ptr(), p);
    let body = b.freeze();
    assert_eq!(body, "body");
    assert_eq!(pool.stats().live_buffers, 1);
    drop(head);
    drop(body);
    assert!(pool.stats().is_quiet());
}

// ---------------------------------------------------------------------------------------------
// Handles, clones, debug output.

#[test]
fn allocator_handle_sees_the_buffer() {
    let pool = pool();
    let b = pool.allocate(500);
    let handle = b.allocator();
    let s = handle.stats();
    assert_eq!(s.live_buffers, 1);
    assert_eq!(s.live_bytes, b.capacity());
    // It is the same pool: allocations through it show in the original's stats.
    let c = handle.allocate(10);
    assert_eq!(pool.stats().live_buffers, 2);
    drop((b, c));
    assert!(pool.stats().is_quiet());
    assert!(handle.stats().is_quiet());
    // A different allocator is not affected.
    let other = AdaptiveAllocator::new();
    let d = other.allocate(10);
    assert!(pool.stats().is_quiet());
    assert_eq!(d.allocator().stats().live_buffers, 1);
}

#[test]
fn clone_is_a_deep_copy() {
    let pool = pool();
    let mut b = pool.allocate(100);
    b.put_slice(b"original");
    let mut c = b.clone();
    assert_eq!(b, c);
    assert_ne!(b.as_ptr(), c.as_ptr());
    c[0] = b'O';
    c.put_slice(b"+more");
    assert_eq!(&b[..], b"original");
    assert_eq!(&c[..], b"Original+more");
    assert_eq!(
        pool.stats().live_buffers,
        2,
        "the clone comes from the same pool"
    );
    let e = pool.allocate(10).clone();
    assert!(e.is_empty());
}

#[test]
fn debug_output() {
    let pool = pool();
    let mut b = pool.allocate(10);
    b.put_slice(b"hi");
    let d = format!("{b:?}");
    assert!(d.contains("PooledBuf"), "{d}");
    let d = format!("{pool:?}");
    assert!(d.contains("AdaptiveAllocator"), "{d}");
    let d = format!("{:?}", pool.stats());
    assert!(d.contains("live_buffers"), "{d}");
}

#[test]
fn stats_display_names_what_is_held() {
    let pool = pool();
    let b = pool.allocate(3000);
    let s = pool.stats();
    assert!(!s.is_quiet());
    let shown = s.to_string();
    assert!(shown.contains(&s.allocated_bytes.to_string()), "{shown}");
    assert!(shown.contains(&s.live_bytes.to_string()), "{shown}");
    assert!(shown.contains("live"), "{shown}");
    drop(b);
    let s = pool.stats();
    assert!(s.is_quiet(), "{s}");
    assert!(s.overhead_bytes() <= s.allocated_bytes);
}

#[test]
fn with_capacity_uses_the_global_allocator() {
    let g = adaptive_pool::global();
    assert!(
        std::ptr::eq(g, adaptive_pool::global()),
        "one global allocator"
    );
    let before = g.stats();
    let mut b = PooledBuf::with_capacity(1234);
    assert!(b.capacity() >= 1234);
    b.put_slice(b"global");
    let during = g.stats();
    assert_eq!(during.live_buffers, before.live_buffers + 1, "{during}");
    assert_eq!(
        during.live_bytes,
        before.live_bytes + b.capacity(),
        "{during}"
    );
    assert_eq!(b.allocator().stats().live_buffers, during.live_buffers);
    drop(b);
    assert_eq!(g.stats().live_buffers, before.live_buffers);
}

#[test]
fn dropping_the_allocator_while_buffers_live() {
    let pool = AdaptiveAllocator::builder()
        .max_memory(32 << 20)
        .build()
        .unwrap();
    let mut bufs: Vec<PooledBuf> = [10usize, 1000, 50_000, 700_000, 2 << 20]
        .iter()
        .map(|&n| {
            let mut b = pool.allocate(n);
            b.put_bytes(n as u8, n);
            b
        })
        .collect();
    let mut split = pool.allocate(100);
    split.put_bytes(3, 100);
    let half = split.split_to(50);
    let frozen = {
        let mut f = pool.allocate(4000);
        f.put_bytes(4, 4000);
        f.freeze()
    };
    drop(pool);
    // Still readable and writable, and growable.
    for b in bufs.iter_mut() {
        let n = b.len();
        // (A slice comparison: a `memcmp`, where a byte loop would take Miri minutes.)
        assert!(b[..] == vec![n as u8; n][..]);
        b.put_slice(b"more");
        b.reserve(10_000);
        b.put_bytes(1, 10_000);
        assert_eq!(b.len(), n + 4 + 10_000);
    }
    assert_eq!(&half[..], &[3; 50][..]);
    assert_eq!(&split[..], &[3; 50][..]);
    let remote = frozen.clone();
    std::thread::spawn(move || assert!(remote[..] == [4; 4000][..]))
        .join()
        .unwrap();
    // And dropped, on this thread and another.
    let moved: Vec<PooledBuf> = bufs.drain(..2).collect();
    std::thread::spawn(move || drop(moved)).join().unwrap();
    drop(bufs);
    drop(half);
    drop(frozen);
    drop(split);
}
