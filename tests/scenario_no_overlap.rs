//! SPEC section 5, scenario 9: no overlap.
//!
//! A random sequence of allocate / fill with a distinct byte / reserve / split_to / split_off /
//! split / freeze / clone of a frozen buffer / advance / truncate / extend / drop. Every live
//! handle is filled with a byte no other live handle uses (frozen clones share their region
//! and their byte), and after every step every live handle's length and every byte are
//! verified, so two handles that overlap, a region reused while live, or contents lost in a
//! move are caught at the step that causes them. Sizes run from 0 to about 200 KiB, with an
//! occasional 2 MiB (unpooled) buffer. A tiny xorshift generator with fixed seeds drives it.
//! At the end, with every handle dropped, the allocator is quiet.

use adaptive_pool::{AdaptiveAllocator, PooledBuf};
use bytes::{Buf, BufMut, Bytes};

mod common;
use common::{default_allocator, Rng, POISON};

/// A request size: log-uniform from 0 to 200 KiB, and 2 MiB one time in 64.
fn size(rng: &mut Rng) -> usize {
    if rng.below(64) == 0 {
        return 2 << 20;
    }
    let e = rng.upto(17);
    rng.upto(1 << e).min(200 << 10)
}

enum Handle {
    Mut(PooledBuf),
    Frozen(Bytes),
}

impl Handle {
    fn bytes(&self) -> &[u8] {
        match self {
            Handle::Mut(b) => b,
            Handle::Frozen(b) => b,
        }
    }
}

struct Entry {
    h: Handle,
    byte: u8,
    len: usize,
}

/// Compares long runs against a block of the expected byte (a `memcmp`, fast even unoptimised).
struct Patterns(Vec<Vec<u8>>);

const BLOCK: usize = 64 << 10;

impl Patterns {
    fn new() -> Self {
        Patterns((0..=255u8).map(|b| vec![b; BLOCK]).collect())
    }

    fn all(&self, bytes: &[u8], byte: u8) -> bool {
        let p = &self.0[byte as usize];
        bytes.chunks(BLOCK).all(|c| c == &p[..c.len()])
    }
}

/// Bytes in use by live handles, so each new handle gets one nobody else has.
struct Bytepool {
    uses: [u32; 256],
    cursor: usize,
}

impl Bytepool {
    fn take(&mut self) -> u8 {
        for _ in 0..256 {
            self.cursor = (self.cursor + 1) % 256;
            if self.uses[self.cursor] == 0 {
                self.uses[self.cursor] = 1;
                return self.cursor as u8;
            }
        }
        panic!("more than 256 live handles");
    }

    fn share(&mut self, b: u8) {
        self.uses[b as usize] += 1;
    }

    fn release(&mut self, b: u8) {
        self.uses[b as usize] -= 1;
    }
}

const MAX_LIVE: usize = 48;

fn steps() -> usize {
    if cfg!(miri) {
        150
    } else if cfg!(debug_assertions) {
        20_000
    } else {
        30_000
    }
}

/// Fills `b` up to its capacity with `byte`, checking the capacity is writable.
fn fill_to_capacity(b: &mut PooledBuf, byte: u8) {
    let cap = b.capacity();
    b.resize(cap, byte);
    assert_eq!(b.len(), cap);
}

fn run(pool: &AdaptiveAllocator, seed: u64) {
    let mut rng = Rng(seed);
    let pats = Patterns::new();
    let mut bytes = Bytepool {
        uses: [0; 256],
        cursor: 0,
    };
    let mut live: Vec<Entry> = Vec::new();
    let mut counts = [0usize; 12];
    for step in 0..steps() {
        let op = rng.below(12);
        let n = live.len();
        let pick = if n > 0 { rng.below(n) } else { 0 };
        // Operations on a mutable handle fall back to allocate when there is none.
        let is_mut = n > 0 && matches!(live[pick].h, Handle::Mut(_));
        let op = match op {
            _ if n == 0 => 0,
            0 | 1 if n >= MAX_LIVE => 11,
            2..=8 if !is_mut => 9 + rng.below(3),
            3..=5 if n >= MAX_LIVE => 11,
            _ => op,
        };
        counts[op] += 1;
        match op {
            // Allocate and fill, either to the request or to the whole capacity.
            0 | 1 => {
                let size = size(&mut rng);
                let mut b = pool.allocate(size);
                assert!(b.capacity() >= size, "step {step}");
                assert!(b.is_empty());
                let byte = bytes.take();
                if op == 0 {
                    fill_to_capacity(&mut b, byte);
                } else {
                    b.put_bytes(byte, size);
                }
                let len = b.len();
                live.push(Entry {
                    h: Handle::Mut(b),
                    byte,
                    len,
                });
            }
            // Reserve, then fill the new room with the same byte.
            2 => {
                let e = &mut live[pick];
                let Handle::Mut(b) = &mut e.h else {
                    unreachable!()
                };
                let additional = rng.upto(b.capacity() * 2 + 64);
                b.reserve(additional);
                assert!(b.capacity() >= e.len + additional, "step {step}: reserve");
                assert_eq!(b.len(), e.len, "step {step}: reserve changed the length");
                assert!(
                    pats.all(b, e.byte),
                    "step {step}: reserve lost the contents"
                );
                if rng.below(2) == 0 {
                    fill_to_capacity(b, e.byte);
                } else {
                    b.put_bytes(e.byte, additional);
                }
                e.len = b.len();
            }
            // split_to: the front becomes a new handle with a new byte.
            3 => {
                let e = &mut live[pick];
                let Handle::Mut(b) = &mut e.h else {
                    unreachable!()
                };
                let (len, cap) = (b.len(), b.capacity());
                let at = rng.upto(len);
                let mut front = b.split_to(at);
                assert_eq!((front.len(), front.capacity()), (at, at), "step {step}");
                assert_eq!((b.len(), b.capacity()), (len - at, cap - at), "step {step}");
                assert!(pats.all(&front, e.byte), "step {step}: split_to front");
                e.len = len - at;
                let nb = bytes.take();
                front.fill(nb);
                live.push(Entry {
                    h: Handle::Mut(front),
                    byte: nb,
                    len: at,
                });
            }
            // split_off: the back becomes a new handle with a new byte, filled to capacity.
            4 => {
                let e = &mut live[pick];
                let Handle::Mut(b) = &mut e.h else {
                    unreachable!()
                };
                let (len, cap) = (b.len(), b.capacity());
                let at = rng.upto(cap);
                let mut back = b.split_off(at);
                assert_eq!(back.len(), len.saturating_sub(at), "step {step}");
                assert_eq!(back.capacity(), cap - at, "step {step}");
                assert_eq!((b.len(), b.capacity()), (len.min(at), at), "step {step}");
                assert!(pats.all(&back, e.byte), "step {step}: split_off back");
                e.len = len.min(at);
                let nb = bytes.take();
                back.fill(nb);
                fill_to_capacity(&mut back, nb);
                let blen = back.len();
                live.push(Entry {
                    h: Handle::Mut(back),
                    byte: nb,
                    len: blen,
                });
            }
            // split: the contents move to a new handle; the old one, now empty, gets a new
            // byte and is filled to its remaining capacity.
            5 => {
                let e = &mut live[pick];
                let Handle::Mut(b) = &mut e.h else {
                    unreachable!()
                };
                let (len, cap) = (b.len(), b.capacity());
                let taken = b.split();
                assert_eq!((taken.len(), taken.capacity()), (len, len), "step {step}");
                assert_eq!((b.len(), b.capacity()), (0, cap - len), "step {step}");
                let old = e.byte;
                let nb = bytes.take();
                fill_to_capacity(b, nb);
                e.byte = nb;
                e.len = b.len();
                live.push(Entry {
                    h: Handle::Mut(taken),
                    byte: old,
                    len,
                });
            }
            // Freeze, zero-copy.
            6 => {
                let e = live.swap_remove(pick);
                let Handle::Mut(b) = e.h else { unreachable!() };
                let ptr = b.as_ptr();
                let frozen = b.freeze();
                assert_eq!(frozen.len(), e.len, "step {step}");
                if !frozen.is_empty() {
                    assert_eq!(frozen.as_ptr(), ptr, "step {step}: freeze copied");
                }
                live.push(Entry {
                    h: Handle::Frozen(frozen),
                    ..e
                });
            }
            // Advance, truncate or extend a mutable handle.
            7 => {
                let e = &mut live[pick];
                let Handle::Mut(b) = &mut e.h else {
                    unreachable!()
                };
                match rng.below(3) {
                    0 => {
                        let cnt = rng.upto(b.len());
                        b.advance(cnt);
                    }
                    1 => b.truncate(rng.upto(b.len())),
                    _ => {
                        let more = rng.upto(5000);
                        b.extend_from_slice(&pats.0[e.byte as usize][..more]);
                    }
                }
                e.len = b.len();
            }
            // Clear and refill with a new byte.
            8 => {
                let e = &mut live[pick];
                let Handle::Mut(b) = &mut e.h else {
                    unreachable!()
                };
                b.clear();
                bytes.release(e.byte);
                e.byte = bytes.take();
                fill_to_capacity(b, e.byte);
                e.len = b.len();
            }
            // Clone or slice a frozen handle (same region, same byte).
            9 if n < MAX_LIVE => {
                if let Handle::Frozen(f) = &live[pick].h {
                    let (byte, flen) = (live[pick].byte, live[pick].len);
                    let (h, len) = if rng.below(2) == 0 {
                        (f.clone(), flen)
                    } else {
                        let a = rng.upto(flen);
                        let z = a + rng.upto(flen - a);
                        (f.slice(a..z), z - a)
                    };
                    bytes.share(byte);
                    live.push(Entry {
                        h: Handle::Frozen(h),
                        byte,
                        len,
                    });
                }
            }
            // Drop.
            _ => {
                let e = live.swap_remove(pick);
                bytes.release(e.byte);
                drop(e);
            }
        }
        // Verify every live handle.
        for (i, e) in live.iter().enumerate() {
            let got = e.h.bytes();
            assert_eq!(got.len(), e.len, "step {step} (op {op}): handle {i} length");
            if !pats.all(got, e.byte) {
                let pos = got.iter().position(|&x| x != e.byte).unwrap();
                panic!(
                    "step {step} (op {op}): handle {i} of {} byte {pos} holds {:#04x}, expected \
                     {:#04x}: overlapping or reused memory ({})",
                    e.len,
                    got[pos],
                    e.byte,
                    pool.stats()
                );
            }
        }
    }
    println!(
        "scenario 9 (seed {seed:#x}): {} steps, op counts {counts:?}, {} live at the end; {}",
        steps(),
        live.len(),
        pool.stats()
    );
    drop(live);
    let s = pool.stats();
    assert!(s.is_quiet(), "not quiet after dropping every handle: {s}");
    pool.trim();
    let s = pool.stats();
    assert_eq!(s.allocated_bytes, 0, "after trim: {s}");
}

#[test]
fn no_overlap_default_allocator() {
    for seed in [1, 0xDEAD_BEEF, 0x1234_5678_9ABC_DEF0] {
        run(&default_allocator(), seed);
    }
}

#[test]
fn no_overlap_small_chunks_no_cache_zeroing() {
    // Small chunks (so many chunks and many unpooled buffers), no cache, zeroing on release.
    let pool = AdaptiveAllocator::builder()
        .min_chunk_size(4 << 10)
        .max_chunk_size(64 << 10)
        .max_cached_bytes(0)
        .zero_on_release(true)
        .poison(POISON)
        .build()
        .unwrap();
    run(&pool, 42);
}

#[test]
fn no_overlap_one_allocator_many_seeds() {
    // One allocator across runs: memory recycled from earlier runs must not leak into later.
    let pool = AdaptiveAllocator::builder()
        .max_memory(64 << 20)
        .poison(POISON)
        .build()
        .unwrap();
    for seed in [7, 8, 9] {
        run(&pool, seed);
    }
}
