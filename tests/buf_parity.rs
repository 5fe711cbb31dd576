//! `PooledBuf` against `BytesMut`: the `bytes` crate's own `BytesMut` tests, re-expressed
//! for `PooledBuf`, and one test for each item of `BytesMut`'s API that `PooledBuf` offers.
//!
//! Where `PooledBuf` differs on purpose (capacities rounded up to a size class, growth
//! copying to the start of the new region, the `Debug` layout, `Vec<u8>` conversion copying;
//! see `PooledBuf`'s docs), the test asserts the pool's behaviour and says so. Small enough
//! for Miri.

use std::collections::hash_map::DefaultHasher;
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};

use adaptive_pool::{AdaptiveAllocator, PooledBuf};
use bytes::{Buf, BufMut, Bytes, BytesMut};

const LONG: &[u8] = b"mary had a little lamb, little lamb, little lamb, mary had a little lamb, \
                      its fleece was white as snow";
const SHORT: &[u8] = b"hello world";

/// An allocator without poisoning under Miri (its scans are slow to interpret).
fn pool() -> AdaptiveAllocator {
    AdaptiveAllocator::builder()
        .poison(!cfg!(miri) && cfg!(debug_assertions))
        .build()
        .unwrap()
}

fn from(pool: &AdaptiveAllocator, bytes: &[u8]) -> PooledBuf {
    let mut b = pool.allocate(bytes.len());
    b.extend_from_slice(bytes);
    b
}

fn is_send_sync<T: Send + Sync>() {}

// --- construction ---------------------------------------------------------------------------

#[test]
fn bounds() {
    is_send_sync::<PooledBuf>();
}

#[test]
fn new_and_default_allocate_nothing() {
    // (No check of `global()`'s statistics here: the other tests of this binary allocate
    // from it at the same moment. A capacity of 0 is the proof that no region was taken.)
    let b = PooledBuf::new();
    assert_eq!((b.len(), b.capacity()), (0, 0));
    assert!(b.is_empty());
    let d = PooledBuf::default();
    assert_eq!(d.capacity(), 0);
    // Nothing to release, and splitting or freezing it allocates nothing either.
    let mut e = PooledBuf::new();
    assert_eq!(e.split().capacity(), 0);
    assert_eq!(e.split_off(0).capacity(), 0);
    assert!(e.clone().is_empty());
    assert_eq!(e.freeze(), Bytes::new());
    drop((b, d));
}

#[test]
fn new_grows_on_first_use() {
    let mut b = PooledBuf::new();
    b.put_u8(17);
    b.put_bytes(19, 2);
    assert_eq!([17, 19, 19], b.as_ref());
    assert!(b.capacity() >= 3);
}

#[test]
fn zeroed() {
    let b = PooledBuf::zeroed(1000);
    assert_eq!(b.len(), 1000);
    assert!(b.iter().all(|&x| x == 0));
    // Recycled memory is zeroed too.
    let pool = pool();
    drop(from(&pool, &[0xee; 64]));
    let z = {
        let mut z = pool.allocate(64);
        z.resize(64, 0);
        z
    };
    assert!(z.iter().all(|&x| x == 0));
}

#[test]
fn from_slices_and_strs() {
    let b = PooledBuf::from(LONG);
    assert_eq!(b, LONG);
    let s = PooledBuf::from("hello");
    assert_eq!(s, "hello");
    assert_eq!(s.len(), 5);
}

#[test]
fn from_iterators() {
    let b: PooledBuf = (0..=255u8).collect();
    assert_eq!(b.len(), 256);
    assert!(b.iter().enumerate().all(|(i, &x)| x == i as u8));
    let r: PooledBuf = SHORT.iter().collect();
    assert_eq!(r, SHORT);
    // Without a size hint.
    let mut n = 100;
    let no_hint: PooledBuf = std::iter::from_fn(|| {
        n -= 1;
        (n > 0).then_some(b'x')
    })
    .collect();
    assert_eq!(no_hint, [b'x'; 99]);
}

// --- formatting -----------------------------------------------------------------------------

#[test]
fn debug_is_a_summary() {
    // A deliberate difference: `BytesMut` prints every byte as `b"..."`.
    let b = PooledBuf::from(&b"\0\x01\x02abc"[..]);
    let s = format!("{b:?}");
    assert!(s.starts_with("PooledBuf { len: 6, capacity: "), "{s}");
    assert!(s.contains(r#"data: b"\x00\x01\x02abc""#), "{s}");
    let long = PooledBuf::zeroed(100);
    assert!(format!("{long:?}").ends_with("\"… }"));
}

#[test]
fn fmt_write() {
    let mut b = PooledBuf::with_capacity(64);
    write!(b, "{}", "a".repeat(64)).unwrap();
    assert_eq!(&b[..], "a".repeat(64).as_bytes());
    // Past the capacity: it grows.
    write!(b, "{}", "b".repeat(1000)).unwrap();
    assert_eq!(b.len(), 1064);
}

#[test]
fn hex() {
    let b = PooledBuf::from(&b"\x01\xab\xff"[..]);
    assert_eq!(format!("{b:x}"), "01abff");
    assert_eq!(format!("{b:X}"), "01ABFF");
    assert_eq!(format!("{:x}", PooledBuf::new()), "");
}

// --- length, indexing, comparisons ----------------------------------------------------------

#[test]
fn len_and_index() {
    let a = PooledBuf::from(&b"abcdefg"[..]);
    assert_eq!(a.len(), 7);
    assert_eq!(a[0], b'a');
    assert_eq!(&a[2..5], b"cde");
    assert!(!a.is_empty());
}

#[test]
// The comparisons are the subject here: references and owned values on purpose.
#[allow(clippy::op_ref, clippy::cmp_owned)]
fn comparisons_both_ways() {
    let b = PooledBuf::from("abc");
    // With slices, arrays, strs, Vec, String, Bytes, BytesMut and references, both ways.
    assert!(b == b"abc"[..]);
    assert!(b"abc"[..] == b);
    assert!(b == b"abc");
    assert!(b"abc" == b);
    assert!(b == *b"abc");
    assert!(*b"abc" == b);
    assert!(b == &b"abc"[..]);
    assert!(&b"abc"[..] == b);
    assert!(b == "abc");
    assert!("abc" == b);
    assert!(b == *"abc");
    assert!(*"abc" == b);
    assert!(b == b"abc".to_vec());
    assert!(b"abc".to_vec() == b);
    assert!(b == String::from("abc"));
    assert!(String::from("abc") == b);
    assert!(b == Bytes::from_static(b"abc"));
    assert!(Bytes::from_static(b"abc") == b);
    assert!(b == BytesMut::from("abc"));
    assert!(BytesMut::from("abc") == b);
    assert!(b == &&b"abc"[..]);
    assert!(b != "abd");
    assert!("abd" != b);
    assert_eq!(b, PooledBuf::from("abc"));
    // Ordering, byte-wise.
    assert!(b < PooledBuf::from("abd"));
    assert!(b > PooledBuf::from("ab"));
    assert!(b < "abd");
    assert!("abd" > b);
    assert!(b < b"b"[..]);
    assert!(b"b"[..] > b);
    assert!(b < b"b".to_vec());
    assert!(b"b".to_vec() > b);
    assert!(b < String::from("b"));
    assert!(String::from("b") > b);
    assert!(b < &b"b"[..]);
    assert!(&b"b"[..] > b);
    assert!(b < Bytes::from_static(b"b"));
    assert!(Bytes::from_static(b"b") > b);
    assert_eq!(b.cmp(&PooledBuf::from("abc")), std::cmp::Ordering::Equal);
    let mut sorted = vec![
        PooledBuf::from("b"),
        PooledBuf::from("a"),
        PooledBuf::from("ab"),
    ];
    sorted.sort();
    assert_eq!(sorted, [&b"a"[..], b"ab", b"b"]);
}

#[test]
fn hash_is_the_bytes_hash() {
    let h = |x: &dyn Fn(&mut DefaultHasher)| {
        let mut s = DefaultHasher::new();
        x(&mut s);
        s.finish()
    };
    let b = PooledBuf::from(SHORT);
    assert_eq!(h(&|s| b.hash(s)), h(&|s| SHORT.hash(s)));
}

// --- splitting ------------------------------------------------------------------------------

#[test]
fn split_off() {
    let mut hello = PooledBuf::from(SHORT);
    let world = hello.split_off(5);
    assert_eq!(hello, &b"hello"[..]);
    assert_eq!(world, &b" world"[..]);
}

#[test]
#[should_panic = "split_off out of bounds"]
fn split_off_out_of_bounds() {
    let mut b = PooledBuf::with_capacity(32);
    let cap = b.capacity();
    let _ = b.split_off(cap + 1);
}

#[test]
fn split_off_past_the_written_bytes() {
    let mut b = PooledBuf::with_capacity(1024);
    b.put_slice(SHORT);
    let cap = b.capacity();
    let other = b.split_off(64);
    assert_eq!(b.len(), SHORT.len());
    assert_eq!(b.capacity(), 64);
    assert_eq!(other.len(), 0);
    assert_eq!(other.capacity(), cap - 64);
}

#[test]
fn split_off_and_split_to_at_every_position() {
    let s = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    for i in 0..=s.len() {
        let mut b = PooledBuf::from(&s[..]);
        let off = b.split_off(i);
        assert_eq!(b.len(), i);
        let sum: Vec<u8> = b.iter().chain(&off).copied().collect();
        assert_eq!(&sum[..], &s[..]);

        let mut b = PooledBuf::from(&s[..]);
        let to = b.split_to(i);
        assert_eq!(to.len(), i);
        let sum: Vec<u8> = to.into_iter().chain(b.iter().copied()).collect();
        assert_eq!(&sum[..], &s[..]);
    }
}

#[test]
fn split_to() {
    let mut b = PooledBuf::from(LONG);
    let front = b.split_to(4);
    assert_eq!(front, &LONG[..4]);
    assert_eq!(b, &LONG[4..]);
    let mut b = PooledBuf::from(SHORT);
    assert_eq!(b.split_to(0), "");
    assert_eq!(b.split_to(SHORT.len()), SHORT);
    assert!(b.is_empty());
}

#[test]
#[should_panic = "split_to out of bounds"]
fn split_to_out_of_bounds() {
    let mut b = PooledBuf::from(SHORT);
    let _ = b.split_to(SHORT.len() + 1);
}

#[test]
#[should_panic = "split_to out of bounds"]
fn split_to_past_the_written_bytes() {
    let mut b = PooledBuf::with_capacity(1024);
    let _ = b.split_to(1);
}

#[test]
fn split_keeps_the_capacity_split_between_the_parts() {
    for at in [0, 5, 11] {
        let mut b = PooledBuf::with_capacity(64);
        let cap = b.capacity();
        b.extend_from_slice(SHORT);
        let other = b.split_off(at);
        assert_eq!(b.capacity() + other.capacity(), cap, "split_off at {at}");

        let mut b = PooledBuf::with_capacity(64);
        b.extend_from_slice(SHORT);
        let _ = b.split_to(0); // shared mode, as BytesMut's promotion to ARC
        let other = b.split_to(at);
        assert_eq!(b.capacity() + other.capacity(), cap, "split_to at {at}");
    }
}

#[test]
fn truncate_and_clear() {
    let s = &b"helloworld"[..];
    let mut b = PooledBuf::from(s);
    b.truncate(20);
    assert_eq!(b, s);
    b.truncate(10);
    assert_eq!(b, s);
    b.truncate(2);
    assert_eq!(b, "he");
    b.clear();
    assert!(b.is_empty());
}

// --- freeze ---------------------------------------------------------------------------------

#[test]
fn freeze_after_every_kind_of_change() {
    let mut b = PooledBuf::from(LONG);
    b.advance(1);
    assert_eq!(b.clone().freeze(), &LONG[1..]);
    let mut b = PooledBuf::from(LONG);
    let _ = b.split_to(0);
    b.advance(1);
    assert_eq!(b.freeze(), &LONG[1..]);
    let mut b = PooledBuf::from(LONG);
    let _ = b.split_to(4);
    assert_eq!(b.freeze(), &LONG[4..]);
    let mut b = PooledBuf::from(LONG);
    b.truncate(7);
    assert_eq!(b.freeze(), &LONG[..7]);
    let mut b = PooledBuf::from(LONG);
    let _ = b.split_off(4);
    assert_eq!(b.freeze(), &LONG[..4]);
}

#[test]
fn freeze_clone_shared_and_unique() {
    let b = PooledBuf::from(LONG).freeze();
    let c = b.clone();
    assert_eq!(b, c);
    let s = PooledBuf::from(SHORT).freeze();
    assert_eq!(s.clone(), s);
}

#[test]
fn into_bytes_and_vec() {
    let pool = pool();
    let b = from(&pool, SHORT);
    let addr = b.as_ptr();
    let frozen: Bytes = b.into();
    assert_eq!(frozen, SHORT);
    assert_eq!(frozen.as_ptr(), addr, "no copy");
    drop(frozen);
    // A deliberate difference: `Vec<u8>` is a copy; the pooled memory goes back.
    let v: Vec<u8> = from(&pool, LONG).into();
    assert_eq!(v, LONG);
    assert!(pool.stats().is_quiet());
}

// --- reserve --------------------------------------------------------------------------------

#[test]
fn reserve_converts_and_grows() {
    let mut b = PooledBuf::from(LONG);
    b.reserve(64);
    assert!(b.capacity() >= LONG.len() + 64);
    let mut b = PooledBuf::from(LONG);
    let a = b.split_to(30);
    b.reserve(128);
    assert!(b.capacity() >= b.len() + 128);
    assert_eq!(a, &LONG[..30]);
    assert_eq!(b, &LONG[30..]);
}

#[test]
fn reserve_growth_after_the_other_half_dropped() {
    // `let _ =` drops the split-off part at once: `b` is its region's only handle.
    let mut b = PooledBuf::with_capacity(64);
    b.put_slice(SHORT);
    let _ = b.split();
    b.reserve(65);
    // `BytesMut` answers 117 here (it doubles its 64-byte Vec and keeps the 11-byte offset);
    // the pool doubles the region (64 B class) and copies to the new region's start.
    assert_eq!(b.capacity(), 128);
}

/// Issue 12 (3a): once the handle is its region's only one, `reserve` reuses the region
/// in place, as `BytesMut` documents, instead of moving.
#[test]
fn reserve_reuses_the_region_once_the_handle_is_its_only_one() {
    let pool = pool();
    let mut b = pool.allocate(1024);
    let base = b.as_ptr();
    let region = b.capacity();
    // The framed-read loop: read, split a frame off, drop it, reserve for the next read.
    let in_region = |p: *const u8| (base as usize..base as usize + region).contains(&(p as usize));
    for i in 0..if cfg!(miri) { 10 } else { 100 } {
        b.reserve(300);
        assert!(
            in_region(b.as_ptr()),
            "moved to another region at frame {i}"
        );
        b.put_bytes(i as u8, 300);
        let frame = b.split_to(300).freeze();
        assert!(frame.iter().all(|&x| x == i as u8));
        assert!(in_region(frame.as_ptr()));
        drop(frame);
    }
    assert_eq!(pool.stats().live_buffers, 1);
    // While a frame lives, the region is not reused: the empty view moves instead.
    b.put_bytes(1, 100);
    let frame = b.split_to(100).freeze();
    b.reserve(1000);
    assert_ne!(b.as_ptr(), base);
    assert_eq!(frame, [1u8; 100][..]);
}

#[test]
fn reserve_reuses_the_rest_of_the_region_after_split_off() {
    // `BytesMut`'s reserve_shared_reuse: the view ends before the region does.
    let mut b = PooledBuf::with_capacity(1000);
    let region = b.capacity();
    b.put_slice(b"Hello, World!");
    drop(b.split());
    b.put_slice(b"!123ex123,sadchELLO,_wORLD!");
    drop(b.split_off(9));
    assert_eq!(b, "!123ex123");
    let base = b.as_ptr();
    // Fits after the view, in the part the dropped handles had: no copy, no move.
    b.reserve(region - 13 - 9);
    assert_eq!(b.as_ptr(), base);
    assert_eq!(b.capacity(), region - 13);
    assert_eq!(b, "!123ex123");
    // Does not fit at all: a larger region, at least double (BytesMut: exactly 2009).
    b.reserve(2000);
    assert_eq!(b, "!123ex123");
    assert!(b.capacity() >= 2009);
}

#[test]
fn reserve_in_a_unique_shared_region() {
    let mut b = PooledBuf::with_capacity(1000);
    let region = b.capacity();
    let _ = b.split();
    assert_eq!(b.capacity(), region);
    // Fits the region: in place.
    b.reserve(region);
    assert_eq!(b.capacity(), region);
    // Does not: doubled (BytesMut: 2000 for a 1000-byte Vec; the pool's region is 1024).
    b.reserve(region + 1);
    assert_eq!(b.capacity(), 2 * region);
    // After splits the whole region comes back.
    let mut b = PooledBuf::from(LONG);
    let region = b.capacity();
    for _ in 0..10 {
        drop(b.split_off(LONG.len() / 2));
        let cap = b.capacity();
        b.reserve(region - cap);
    }
    assert_eq!(b.capacity(), region);
}

/// Issue 12 (3b): after a split, while the other handles live, growth takes what is needed
/// with the shared region's size as a lower bound, not twice the capacity.
#[test]
fn reserve_after_a_split_takes_what_is_needed_with_the_original_capacity_as_a_hint() {
    let pool = pool();
    let mut b = pool.allocate(1024);
    b.put_bytes(1, 1020);
    let other = b.split();
    // Little needed: the original capacity.
    b.reserve(16);
    assert_eq!(b.capacity(), 1024);
    drop(b);
    let mut b = pool.allocate(1000);
    let _copy = b.split();
    // Much needed: what is needed (rounded to its class, 2048), not 2 x 1024 + 2001.
    b.reserve(2001);
    assert_eq!(b.capacity(), 2048);
    // The hint is capped at 64 KiB, as BytesMut caps its original capacity.
    if !cfg!(miri) {
        let mut big = pool.allocate(128 << 10);
        big.put_bytes(0, 128 << 10);
        let _whole = big.split();
        big.reserve(16);
        assert_eq!(big.capacity(), 64 << 10);
    }
    // A KV server's values: split off and kept; the read buffer's new regions do not grow.
    let mut read = pool.allocate(4096);
    let mut values = Vec::new();
    for i in 0..if cfg!(miri) { 8 } else { 64 } {
        read.reserve(1000);
        read.put_bytes(i as u8, 1000);
        values.push(read.split_to(1000).freeze());
        assert!(read.capacity() <= 4096, "{}", read.capacity());
    }
    drop((other, values));
}

#[test]
fn reserve_reclaims_a_fully_consumed_buffer() {
    let mut b = PooledBuf::new();
    b.reserve(8192);
    b.extend_from_slice(&[0u8; 100]);
    let p = b.as_ptr();
    b.advance(100);
    b.reserve(8192);
    b.extend_from_slice(b" ");
    assert_eq!(b.as_ptr(), p);
}

#[test]
fn reserve_after_advance_moves_back_only_when_worth_it() {
    let mut b = PooledBuf::with_capacity(16);
    let cap = b.capacity();
    let addr = b.as_ptr();
    b.put_bytes(b'x', cap);
    b.advance(cap - 6);
    assert_eq!(b.capacity(), 6);
    b.reserve(cap - 6);
    assert_eq!(b.capacity(), cap);
    assert_eq!(b.as_ptr(), addr);
}

#[test]
#[should_panic = "growing a buffer"]
fn reserve_overflow_panics() {
    let mut b = PooledBuf::with_capacity(1024);
    b.put_slice(SHORT);
    b.reserve(usize::MAX);
}

#[test]
fn try_reclaim() {
    // No region: nothing to reclaim.
    let mut b = PooledBuf::new();
    assert!(!b.try_reclaim(6));
    b.reserve(6);
    assert!(b.try_reclaim(6));
    let cap = b.capacity();
    assert!(!b.try_reclaim(cap + 1));

    let mut b = PooledBuf::with_capacity(6);
    let cap = b.capacity();
    b.put_bytes(b'a', cap);
    assert!(!b.try_reclaim(usize::MAX));
    assert!(!b.try_reclaim(1));
    b.advance(cap - 1);
    assert!(b.try_reclaim(cap - 1), "the one byte moves to the start");
    assert_eq!(b.capacity(), cap);

    // Shared: only once every other handle has dropped.
    let mut b = PooledBuf::with_capacity(6);
    let cap = b.capacity();
    b.put_slice(b"abc");
    let x = b.split().freeze();
    b.put_slice(b"def");
    let y = b.split().freeze();
    let z = y.clone();
    assert!(!b.try_reclaim(cap));
    drop((x, z));
    assert!(!b.try_reclaim(cap));
    drop(y);
    assert!(b.try_reclaim(cap));
    assert_eq!(b.capacity(), cap);
    assert!(b.is_empty());
}

// --- extend ---------------------------------------------------------------------------------

#[test]
fn extend_from_iterators_and_slices() {
    let mut b = PooledBuf::with_capacity(0);
    b.extend(LONG);
    assert_eq!(b, LONG);
    let mut b = PooledBuf::new();
    b.extend(LONG.iter().copied());
    assert_eq!(b, LONG);
    let mut b = PooledBuf::with_capacity(0);
    b.extend_from_slice(&LONG[..10]);
    b.extend_from_slice(&LONG[10..]);
    assert_eq!(b, LONG);
    // Past the lower bound of the size hint, and without one.
    struct Lying<I>(I);
    impl<I: Iterator<Item = u8>> Iterator for Lying<I> {
        type Item = u8;
        fn next(&mut self) -> Option<u8> {
            self.0.next()
        }
        fn size_hint(&self) -> (usize, Option<usize>) {
            (5, None)
        }
    }
    let mut b = PooledBuf::with_capacity(5);
    b.extend(Lying(std::iter::repeat_n(0, 10)));
    assert_eq!(b.len(), 10);
    let mut it = LONG.iter();
    let mut b = PooledBuf::new();
    b.extend(std::iter::from_fn(|| it.next()));
    assert_eq!(b, LONG);
}

#[test]
fn extend_with_bytes() {
    let mut b = PooledBuf::with_capacity(0);
    b.extend([Bytes::from_static(LONG), Bytes::from_static(SHORT)]);
    assert_eq!(&b[..LONG.len()], LONG);
    assert_eq!(&b[LONG.len()..], SHORT);
}

#[test]
fn extend_from_within() {
    let mut b = PooledBuf::new();
    b.extend_from_slice(b"0123456789");
    b.extend_from_within(2..5);
    b.extend_from_within(10..13);
    assert_eq!(b, "0123456789234234");
    // Growing on the way: the copy still reads the right bytes.
    let mut b = PooledBuf::with_capacity(32);
    b.put_bytes(b'a', b.capacity() - 1);
    b.put_u8(b'z');
    let len = b.len();
    b.extend_from_within(len - 2..);
    assert_eq!(&b[len - 2..], b"azaz");
    let mut b = PooledBuf::from("ab");
    b.extend_from_within(..);
    b.extend_from_within(1..=2);
    assert_eq!(b, "ababba");
}

#[test]
#[should_panic = "out of bounds"]
fn extend_from_within_out_of_range() {
    let mut b = PooledBuf::new();
    b.extend_from_slice(&LONG[..23]);
    b.extend_from_within(23..=23);
}

// --- Buf / BufMut ---------------------------------------------------------------------------

#[test]
fn advance() {
    let mut a = PooledBuf::from("hello world boooo yah world zomg wat wat");
    a.advance(16);
    assert_eq!(a, &b"o yah world zomg wat wat"[..]);
    a.advance(4);
    assert_eq!(a, &b"h world zomg wat wat"[..]);
    a.reserve(1024);
    assert_eq!(a, &b"h world zomg wat wat"[..]);
    a.advance(6);
    assert_eq!(a, &b"d zomg wat wat"[..]);
}

#[test]
fn advance_reduces_the_capacity() {
    let max = if cfg!(miri) { 8 } else { 64 };
    for capacity in 0..=max {
        for len in 0..=capacity {
            for advance in 0..=len {
                let mut b = PooledBuf::with_capacity(capacity);
                let cap = b.capacity();
                b.resize(len, 42);
                assert_eq!(b.remaining(), len);
                b.advance(advance);
                assert_eq!(b.remaining(), len - advance);
                assert_eq!(b.capacity(), cap - advance);
            }
        }
    }
}

#[test]
#[should_panic = "advance out of bounds"]
fn advance_past_the_length() {
    let mut b = PooledBuf::from("hello");
    b.advance(6);
}

#[test]
fn chunk_mut_and_advance_mut() {
    let mut b = PooledBuf::with_capacity(1024);
    let cap = b.capacity();
    let start = b.chunk_mut().as_mut_ptr();
    assert_eq!(b.chunk_mut().len(), cap);
    // SAFETY: the bytes are written before they are exposed.
    unsafe {
        b.chunk_mut()[..10].as_mut_ptr().write_bytes(3, 10);
        b.advance_mut(10);
    }
    assert_eq!(b.chunk_mut().as_mut_ptr(), start.wrapping_add(10));
    assert_eq!(b.chunk_mut().len(), cap - 10);
    b.put_bytes(4, cap - 10);
    // Full: the next chunk is in a region twice as large.
    assert_eq!(b.chunk_mut().len(), cap);
    assert_eq!(&b[..10], &[3; 10]);
}

#[test]
fn buf_mut_put_bytes() {
    let mut b = PooledBuf::new();
    b.put_u8(17);
    b.put_bytes(19, 2);
    b.put(&b"xy"[..]);
    b.put(Bytes::from_static(b"z"));
    assert_eq!(b, &[17, 19, 19, b'x', b'y', b'z'][..]);
}

// --- unsplit --------------------------------------------------------------------------------

#[test]
fn unsplit_contiguous_parts_without_copying() {
    let mut b = PooledBuf::with_capacity(64);
    b.extend_from_slice(b"aaabbbcccddd");
    let addr = b.as_ptr();
    let back = b.split_off(6);
    assert_eq!(b, "aaabbb");
    assert_eq!(back, "cccddd");
    b.unsplit(back);
    assert_eq!(b, "aaabbbcccddd");
    assert_eq!(b.as_ptr(), addr);
}

#[test]
fn unsplit_with_empty_parts() {
    let mut b = PooledBuf::with_capacity(64);
    b.extend_from_slice(b"aaabbbcccddd");
    b.unsplit(PooledBuf::new());
    assert_eq!(b, "aaabbbcccddd");

    let mut empty = PooledBuf::new();
    let mut other = PooledBuf::with_capacity(64);
    other.extend_from_slice(b"aaabbbcccddd");
    empty.unsplit(other);
    assert_eq!(empty, "aaabbbcccddd");
}

#[test]
fn unsplit_keeps_the_capacity() {
    let mut b = PooledBuf::with_capacity(64);
    let cap = b.capacity();
    b.extend_from_slice(b"aabb");
    let mut other = b.split_off(b.len());
    other.extend_from_slice(b"ccddee");
    b.unsplit(other);
    assert_eq!(b.capacity(), cap);
    assert_eq!(b, "aabbccddee");

    let mut b = PooledBuf::with_capacity(64);
    b.extend_from_slice(b"aabbccddee");
    let other = b.split_off(b.len());
    b.unsplit(other);
    assert_eq!(b.capacity(), cap);
}

#[test]
fn unsplit_of_unrelated_or_non_contiguous_parts_copies() {
    let mut b = PooledBuf::with_capacity(64);
    b.extend_from_slice(b"aaaabbbbeeee");
    let _ = b.split_off(8);
    let mut b2 = PooledBuf::with_capacity(64);
    b2.extend_from_slice(b"ccccddddeeee");
    let _ = b2.split_off(8);
    b.unsplit(b2);
    assert_eq!(b, "aaaabbbbccccdddd");

    let mut b = PooledBuf::with_capacity(64);
    b.extend_from_slice(b"aaaabbbbeeeeccccdddd");
    let mut b2 = b.split_off(8);
    let b3 = b2.split_off(4);
    b.unsplit(b3);
    assert_eq!(b, "aaaabbbbccccdddd");
    assert_eq!(b2, "eeee");
}

#[test]
fn unsplit_two_split_offs() {
    let mut b = PooledBuf::with_capacity(64);
    b.extend_from_slice(b"aaaabbbbccccdddd");
    let mut b2 = b.split_off(8);
    let b3 = b2.split_off(4);
    b2.unsplit(b3);
    b.unsplit(b2);
    assert_eq!(b, "aaaabbbbccccdddd");
}

#[test]
fn try_unsplit_hands_back_what_it_cannot_join() {
    let pool = pool();
    let mut b = from(&pool, b"abcdef");
    let back = b.split_off(3);
    let unrelated = from(&pool, b"xyz");
    let unrelated = b.try_unsplit(unrelated).unwrap_err();
    assert_eq!(unrelated, "xyz");
    // The wrong order is not contiguous either.
    let mut back = back;
    let front = std::mem::take(&mut b);
    let front = back.try_unsplit(front).unwrap_err();
    b = front;
    b.try_unsplit(back).unwrap();
    assert_eq!(b, "abcdef");
    drop((b, unrelated));
    assert!(pool.stats().is_quiet(), "{}", pool.stats());
}

// --- iteration ------------------------------------------------------------------------------

#[test]
fn into_iterator_by_value_and_by_reference() {
    let b = PooledBuf::from(SHORT);
    let by_ref: Vec<u8> = (&b).into_iter().copied().collect();
    assert_eq!(by_ref, SHORT);
    let mut seen = Vec::new();
    for x in &b {
        seen.push(*x);
    }
    assert_eq!(seen, SHORT);
    let by_value: Vec<u8> = b.into_iter().collect();
    assert_eq!(by_value, SHORT);
}

#[test]
fn clone_is_a_deep_copy_on_the_same_allocator() {
    let pool = pool();
    let a = from(&pool, SHORT);
    let mut b = a.clone();
    b[0] = b'j';
    assert_eq!(a, SHORT);
    assert_eq!(b, "jello world");
    assert_eq!(pool.stats().live_buffers, 2);
}

#[test]
fn allocator_of_a_buffer_without_a_region_is_the_global_one() {
    let b = PooledBuf::new();
    let global = b.allocator();
    assert_eq!(
        format!("{:?}", global.stats().allocated_bytes),
        format!("{:?}", adaptive_pool::global().stats().allocated_bytes)
    );
}

#[cfg(feature = "serde")]
mod serde_support {
    use super::*;
    use serde_test::{assert_de_tokens, assert_tokens, Token};

    #[test]
    fn as_a_byte_string() {
        let b = PooledBuf::from("abc");
        assert_tokens(&b, &[Token::Bytes(b"abc")]);
        assert_de_tokens(&b, &[Token::ByteBuf(b"abc")]);
        assert_de_tokens(&b, &[Token::Str("abc")]);
        assert_de_tokens(&b, &[Token::String("abc")]);
        assert_de_tokens(
            &b,
            &[
                Token::Seq { len: Some(3) },
                Token::U8(b'a'),
                Token::U8(b'b'),
                Token::U8(b'c'),
                Token::SeqEnd,
            ],
        );
    }

    #[test]
    fn through_json() {
        let b = PooledBuf::from(&b"\x00\xffok"[..]);
        let json = serde_json::to_string(&b).unwrap();
        assert_eq!(json, "[0,255,111,107]");
        let back: PooledBuf = serde_json::from_str(&json).unwrap();
        assert_eq!(back, b);
        let from_str: PooledBuf = serde_json::from_str("\"text\"").unwrap();
        assert_eq!(from_str, "text");
    }
}

// --- growth after a split (review of 2026-12-07, issue 21 part 3) -----------------------------

/// The only handle again after a split: `reserve` doubles, as `BytesMut` does for a unique
/// handle that no longer fits (amortised growth), in every way of splitting.
#[test]
fn reserve_after_a_split_doubles_once_the_handle_is_unique_again() {
    for poisoned in [false, true] {
        let pool = AdaptiveAllocator::builder()
            .poison(poisoned)
            .build()
            .unwrap();
        for split in 0..3 {
            let mut b = pool.allocate(1024);
            let mut m = BytesMut::with_capacity(1024);
            let other = match split {
                0 => (b.split(), m.split()).0,
                1 => (b.split_off(0), m.split_off(0)).0,
                _ => (b.split_to(0), m.split_to(0)).0,
            };
            drop(other);
            b.reserve(1025);
            m.reserve(1025);
            assert!(
                b.capacity() >= m.capacity(),
                "split {split}, poison {poisoned}: {} < BytesMut's {}",
                b.capacity(),
                m.capacity()
            );
            assert!(b.capacity() >= 2048, "split {split}: {}", b.capacity());
        }
    }
}

/// With another handle alive, growth takes what is needed (with the shared region as a hint),
/// as `BytesMut` does: doubling there would keep the old region pinned by the other handle
/// and a second, twice as large, for this one.
#[test]
fn reserve_while_the_region_is_shared_grows_by_what_is_needed() {
    let pool = pool();
    let mut b = pool.allocate(1024);
    b.extend_from_slice(&[7; 512]);
    let front = b.split();
    b.reserve(1025);
    assert!(b.capacity() >= 1025);
    assert!(b.capacity() < 2048, "{}", b.capacity());
    assert_eq!(&front[..], &[7; 512][..]);
}

/// A loop of small reserves after a split moves the bytes at most logarithmically often in
/// the final size (amortised doubling), and keeps them.
#[test]
fn a_reserve_loop_after_a_split_moves_logarithmically() {
    let pool = pool();
    let mut b = pool.allocate(1024);
    b.extend_from_slice(b"head");
    drop(b.split());
    let rounds = if cfg!(miri) { 2_000 } else { 50_000 };
    let mut moves = 0;
    let mut at = b.as_ptr();
    for i in 0..rounds {
        b.reserve(8);
        if b.as_ptr() != at {
            moves += 1;
            at = b.as_ptr();
        }
        b.put_u64(i as u64);
    }
    let final_size = b.len();
    let log2 = usize::BITS - final_size.leading_zeros();
    assert!(
        moves <= log2 as usize + 2,
        "{moves} moves for {final_size} bytes (log2 {log2})"
    );
    for (i, chunk) in b.chunks(8).enumerate() {
        assert_eq!(chunk, (i as u64).to_be_bytes());
    }
}
