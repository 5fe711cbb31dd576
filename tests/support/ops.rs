//! The operation language of the randomised state-machine tests, and the model they are
//! checked against. Shared, word for word, by the proptest state machine
//! (`tests/prop_state_machine.rs`) and the fuzz target `ops` (`fuzz/fuzz_targets/ops.rs`),
//! which include this file with `#[path]`; each brings its own generator of [`Op`]s.
//!
//! The model is deliberately simple: a list of live handles, each with the region it keeps
//! alive and the pattern its bytes must hold, and the set of live regions with their
//! capacities. After every operation:
//! * every live handle holds exactly its pattern (a byte that depends on the handle's seed and
//!   on the byte's position in the original buffer, so an overlap, a stale region or a move
//!   that copies from the wrong place is caught);
//! * the allocator is quiet apart from this thread (the other thread only drops, and is waited
//!   for), so `stats()` must match the model exactly: `live_buffers` is the number of live
//!   regions, `live_bytes` the sum of their capacities;
//! * `allocated_bytes <= max_memory`, `cached_bytes <= max_cached_bytes`, the chunk counters
//!   agree with each other;
//! * a new region overlaps no live region.
//!
//! At the end every handle is dropped: the allocator must be quiet, and `trim()` must give
//! every byte back.

#![allow(dead_code)]

use std::sync::mpsc;
use std::thread;

use adaptive_pool::{AdaptiveAllocator, AllocError, PooledBuf, Stats};
use bytes::{BufMut, Bytes};

/// One operation. Handle operands (`u8`) pick a live handle modulo their number; an operation
/// on no handle does nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Allocate a buffer; the size is decoded by [`decode_size`] (log-uniform up to 4 MiB,
    /// and a few sizes past `isize::MAX`), and filled with a fresh pattern.
    Allocate(u32),
    /// Rewrite a buffer's contents and fill its spare capacity, with a fresh pattern.
    Write(u8),
    /// `try_reserve(additional)`; the contents must survive, a failure changes nothing.
    Reserve(u8, u16),
    /// `split_to(at % (len + 1))` (a frozen handle: only strictly inside it, see below).
    SplitTo(u8, u32),
    /// `split_off(at % (capacity + 1))` (a frozen handle: `at % len`, strictly inside).
    SplitOff(u8, u32),
    /// Freeze a buffer into `Bytes` (no-op on a frozen handle).
    Freeze(u8),
    /// Clone: a frozen handle shares its region; a buffer is deep-copied into a new region
    /// (only when the copy cannot hit the memory limit, since `Clone` panics on failure).
    Clone(u8),
    /// Drop a handle here.
    Drop(u8),
    /// Drop a handle on another thread (a remote free), and wait until it is done.
    DropRemote(u8),
    /// `trim()`.
    Trim,
}

/// The largest pooled-or-not request made, apart from the overflowing ones.
pub const MAX_ALLOC: usize = 4 << 20;
/// At most this many live handles: an allocation past it drops the oldest handle first, and
/// a split or clone past it does nothing.
pub const MAX_LIVE: usize = 48;

/// Decodes a request size: the low 5 bits pick a bit width from 0 to 22, the rest the value,
/// so sizes of every magnitude up to 4 MiB are equally likely. A few top values ask for the
/// limits: exactly 4 MiB, and sizes that must fail with `CapacityOverflow`.
pub fn decode_size(raw: u32) -> usize {
    match raw {
        u32::MAX => MAX_ALLOC,
        0xFFFF_FFFE => usize::MAX,
        0xFFFF_FFFD => isize::MAX as usize + 1,
        0xFFFF_FFFC => isize::MAX as usize - 10,
        _ => {
            let bits = (raw & 31) % 23;
            ((raw >> 5) & ((1u32 << bits) - 1)) as usize
        }
    }
}

/// An allocator configuration, including the corners.
#[derive(Clone, Copy, Debug)]
pub struct Setup {
    pub min_chunk: usize,
    pub max_chunk: usize,
    pub max_cached: usize,
    pub max_memory: usize,
    pub zero_on_release: bool,
    pub poison: bool,
}

impl Setup {
    /// The corner configurations, picked by `i % SETUPS`.
    pub fn corner(i: u8, poison: bool) -> Setup {
        let (min_chunk, max_chunk, max_cached, max_memory, zero_on_release) = match i % SETUPS {
            // Tiny chunks: 4 KiB only; requests above 1 KiB are unpooled.
            0 => (4 << 10, 4 << 10, 8 << 10, 256 << 10, false),
            // No cache at all.
            1 => (4 << 10, 64 << 10, 0, 1 << 20, false),
            // Roomy: chunks up to 1 MiB, a cache of 1 MiB, 8 MiB in all.
            2 => (64 << 10, 1 << 20, 1 << 20, 8 << 20, false),
            // A memory limit just above the least `build()` accepts for 4 KiB chunks (one
            // chunk for each of the 19 classes up to 1 KiB): most requests meet the limit.
            3 => (4 << 10, 4 << 10, 4 << 10, 80 << 10, false),
            // Zero on release, mid-sized chunks.
            _ => (16 << 10, 256 << 10, 256 << 10, 4 << 20, true),
        };
        Setup {
            min_chunk,
            max_chunk,
            max_cached,
            max_memory,
            zero_on_release,
            poison,
        }
    }

    pub fn build(&self) -> AdaptiveAllocator {
        AdaptiveAllocator::builder()
            .min_chunk_size(self.min_chunk)
            .max_chunk_size(self.max_chunk)
            .max_cached_bytes(self.max_cached)
            .max_memory(self.max_memory)
            .zero_on_release(self.zero_on_release)
            .poison(self.poison)
            .build()
            .expect("the corner setups are valid")
    }
}

/// The number of corner setups.
pub const SETUPS: u8 = 5;

/// The byte at position `k` of a buffer written with `seed`: period 251, so two handles that
/// overlap at any offset disagree unless their seeds and offsets happen to line up (1 in 251).
#[inline]
pub fn pattern(seed: u8, k: usize) -> u8 {
    ((seed as usize + k) % 251) as u8
}

/// Appends `n` bytes of `seed`'s pattern to an empty buffer.
fn put_pattern(buf: &mut PooledBuf, seed: u8, n: usize) {
    debug_assert!(buf.is_empty());
    let period: Vec<u8> = (0..251).map(|k| pattern(seed, k)).collect();
    let mut left = n;
    while left > 0 {
        let take = left.min(251);
        buf.put_slice(&period[..take]);
        left -= take;
    }
}

/// How thoroughly live handles are checked after each operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Depth {
    /// Every byte of every live handle.
    Full,
    /// Every byte of the handles the operation touched; a sample (every 97th byte and the
    /// last) of the others. Every handle is still checked in full when it is dropped.
    Touched,
}

enum Handle {
    Buf(PooledBuf),
    Frozen(Bytes),
}

impl Handle {
    fn bytes(&self) -> &[u8] {
        match self {
            Handle::Buf(b) => b,
            Handle::Frozen(b) => b,
        }
    }
}

struct Live {
    handle: Handle,
    /// The pattern: byte `i` of the handle is `pattern(seed, start + i)`.
    seed: u8,
    start: usize,
    /// The region this handle keeps alive (an index into `Harness::regions`).
    region: usize,
}

/// A live region: where it is, how large, and how many handles keep it.
#[derive(Clone, Copy, Debug)]
struct Region {
    base: usize,
    cap: usize,
    handles: usize,
}

/// Drops handles on its own thread, one at a time, and says when each is done.
struct Remote {
    to: Option<mpsc::Sender<Handle>>,
    done: mpsc::Receiver<()>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Remote {
    fn new() -> Remote {
        let (to, rx) = mpsc::channel::<Handle>();
        let (tx, done) = mpsc::channel();
        let thread = thread::spawn(move || {
            for h in rx {
                drop(h);
                if tx.send(()).is_err() {
                    break;
                }
            }
        });
        Remote {
            to: Some(to),
            done,
            thread: Some(thread),
        }
    }

    fn drop_there(&self, h: Handle) {
        self.to
            .as_ref()
            .unwrap()
            .send(h)
            .expect("the remote thread lives");
        self.done.recv().expect("the remote thread dropped it");
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        self.to = None;
        if let Some(t) = self.thread.take() {
            // A panic there has already been reported; do not panic twice.
            let _ = t.join();
        }
    }
}

/// The allocator under test, the handles, and the model.
pub struct Harness {
    setup: Setup,
    depth: Depth,
    live: Vec<Live>,
    /// Live regions, by index; `None` once freed (indices are not reused).
    regions: Vec<Option<Region>>,
    /// Regions still in `regions` with a `Some` (kept to make the stats check O(1)).
    live_regions: usize,
    live_bytes: usize,
    next_seed: u8,
    /// Handles touched by the current operation (checked in full under `Depth::Touched`).
    touched: Vec<usize>,
    remote: Remote,
    // Dropped last: the handles and the remote thread go first.
    pool: AdaptiveAllocator,
}

impl Harness {
    pub fn new(setup: Setup, depth: Depth) -> Harness {
        Harness {
            pool: setup.build(),
            setup,
            depth,
            live: Vec::new(),
            regions: Vec::new(),
            live_regions: 0,
            live_bytes: 0,
            next_seed: 0,
            touched: Vec::new(),
            remote: Remote::new(),
        }
    }

    pub fn stats(&self) -> Stats {
        self.pool.stats()
    }

    fn fresh_seed(&mut self) -> u8 {
        let s = self.next_seed;
        self.next_seed = ((s as usize + 37) % 251) as u8;
        s
    }

    fn pick(&self, i: u8) -> Option<usize> {
        (!self.live.is_empty()).then(|| i as usize % self.live.len())
    }

    /// Records a new region for a buffer fresh from the allocator, checking that it overlaps
    /// no live region.
    fn new_region(&mut self, buf: &PooledBuf) -> usize {
        self.new_region_at(buf.as_ptr() as usize, buf.capacity())
    }

    fn new_region_at(&mut self, base: usize, cap: usize) -> usize {
        for r in self.regions.iter().flatten() {
            assert!(
                base + cap <= r.base || r.base + r.cap <= base || cap == 0 || r.cap == 0,
                "a new region [{base:#x}, +{cap}) overlaps a live one [{:#x}, +{})",
                r.base,
                r.cap
            );
        }
        self.regions.push(Some(Region {
            base,
            cap,
            handles: 1,
        }));
        self.live_regions += 1;
        self.live_bytes += cap;
        self.regions.len() - 1
    }

    fn add_handle(&mut self, region: usize) {
        self.regions[region].as_mut().expect("live region").handles += 1;
    }

    fn release_handle(&mut self, region: usize) {
        let r = self.regions[region].as_mut().expect("live region");
        r.handles -= 1;
        if r.handles == 0 {
            self.live_bytes -= r.cap;
            self.live_regions -= 1;
            self.regions[region] = None;
        }
    }

    fn check_handle(&self, i: usize, full: bool, what: &str) {
        let l = &self.live[i];
        let bytes = l.handle.bytes();
        let bad = if full {
            // Compare runs against the pattern's period (a `memcmp` per 251 bytes).
            let period: Vec<u8> = (0..251).map(|k| pattern(l.seed, l.start + k)).collect();
            let mut bad = None;
            for (n, run) in bytes.chunks(251).enumerate() {
                // Run `n` starts at offset `251 n`, whose pattern repeats every 251 bytes.
                if run != &period[..run.len()] {
                    let j = run
                        .iter()
                        .zip(&period)
                        .position(|(a, b)| a != b)
                        .expect("a run differs");
                    bad = Some(n * 251 + j);
                    break;
                }
            }
            bad
        } else {
            let last = bytes.len().checked_sub(1);
            (0..bytes.len())
                .step_by(97)
                .chain(last)
                .find(|&k| bytes[k] != pattern(l.seed, l.start + k))
        };
        if let Some(k) = bad {
            panic!(
                "{what}: byte {k} of a {}-byte handle is {:#04x}, expected {:#04x} \
                 (seed {}, start {})",
                bytes.len(),
                bytes[k],
                pattern(l.seed, l.start + k),
                l.seed,
                l.start
            );
        }
    }

    /// Takes handle `i` out of the model, checked in full.
    fn take(&mut self, i: usize) -> Handle {
        self.check_handle(i, true, "when dropped");
        let l = self.live.swap_remove(i);
        self.release_handle(l.region);
        l.handle
    }

    fn push(&mut self, handle: Handle, seed: u8, start: usize, region: usize) -> bool {
        if self.live.len() >= MAX_LIVE {
            return false;
        }
        self.live.push(Live {
            handle,
            seed,
            start,
            region,
        });
        self.touched.push(self.live.len() - 1);
        true
    }

    /// Applies one operation, then checks the model.
    pub fn apply(&mut self, op: &Op) {
        self.touched.clear();
        match *op {
            Op::Allocate(raw) => self.allocate(decode_size(raw)),
            Op::Write(i) => {
                if let Some(i) = self.pick(i) {
                    let seed = self.fresh_seed();
                    if let Handle::Buf(buf) = &mut self.live[i].handle {
                        buf.clear();
                        let cap = buf.capacity();
                        put_pattern(buf, seed, cap);
                        assert_eq!(buf.capacity(), cap, "writing within capacity moved");
                        assert_eq!(buf.len(), cap);
                        self.live[i].seed = seed;
                        self.live[i].start = 0;
                        self.touched.push(i);
                    }
                }
            }
            Op::Reserve(i, add) => {
                if let Some(i) = self.pick(i) {
                    self.reserve(i, add as usize);
                }
            }
            Op::SplitTo(i, at) => {
                if let Some(i) = self.pick(i) {
                    self.split(i, at as usize, true);
                }
            }
            Op::SplitOff(i, at) => {
                if let Some(i) = self.pick(i) {
                    self.split(i, at as usize, false);
                }
            }
            Op::Freeze(i) => {
                if let Some(i) = self.pick(i) {
                    let l = &mut self.live[i];
                    let h = std::mem::replace(&mut l.handle, Handle::Frozen(Bytes::new()));
                    l.handle = match h {
                        Handle::Buf(buf) => {
                            let (ptr, len) = (buf.as_ptr(), buf.len());
                            let frozen = buf.freeze();
                            assert_eq!(
                                (frozen.as_ptr(), frozen.len()),
                                (ptr, len),
                                "freeze copied or changed the length"
                            );
                            Handle::Frozen(frozen)
                        }
                        frozen => frozen,
                    };
                    self.touched.push(i);
                }
            }
            Op::Clone(i) => {
                if let Some(i) = self.pick(i) {
                    self.clone_handle(i);
                }
            }
            Op::Drop(i) => {
                if let Some(i) = self.pick(i) {
                    drop(self.take(i));
                }
            }
            Op::DropRemote(i) => {
                if let Some(i) = self.pick(i) {
                    let h = self.take(i);
                    self.remote.drop_there(h);
                }
            }
            Op::Trim => {
                let before = self.stats();
                let freed = self.pool.trim();
                let after = self.stats();
                assert!(
                    freed <= before.allocated_bytes,
                    "trim freed {freed} of {before}"
                );
                assert_eq!(
                    after.allocated_bytes,
                    before.allocated_bytes - freed,
                    "trim's answer disagrees with the stats: {before} -> {after}"
                );
                assert_eq!(after.cached_bytes, 0, "trim left cached chunks: {after}");
            }
        }
        self.check(&format!("after {op:?}"));
    }

    fn allocate(&mut self, size: usize) {
        let before = self.stats();
        match self.pool.try_allocate(size) {
            Ok(mut buf) => {
                assert!(size <= MAX_ALLOC, "{size} bytes allocated");
                assert!(buf.capacity() >= size, "capacity below the request");
                assert!(buf.is_empty(), "a new buffer is not empty");
                let seed = self.fresh_seed();
                let cap = buf.capacity();
                put_pattern(&mut buf, seed, size);
                assert_eq!(buf.capacity(), cap, "writing within capacity moved");
                if self.live.len() == MAX_LIVE {
                    drop(self.take(0));
                }
                let region = self.new_region(&buf);
                self.push(Handle::Buf(buf), seed, 0, region);
            }
            Err(AllocError::CapacityOverflow { requested }) => {
                assert_eq!(requested, size);
                assert!(
                    size > isize::MAX as usize - 4096,
                    "CapacityOverflow for {size} bytes"
                );
            }
            Err(AllocError::MemoryLimit { limit, .. }) => {
                assert!(size <= MAX_ALLOC, "{size} bytes: expected CapacityOverflow");
                assert_eq!(
                    limit, self.setup.max_memory,
                    "the error names another limit"
                );
                // With nothing live, every byte held is idle and must be given back to make
                // room: a request that fits the limit on its own must succeed.
                let pooled = size <= self.setup.max_chunk / 4;
                let unpooled_bytes = (size.max(32) + 15) & !15;
                assert!(
                    self.live_regions != 0 || !(pooled || unpooled_bytes <= limit),
                    "MemoryLimit for {size} bytes with nothing live: {before} -> {}",
                    self.stats()
                );
            }
            Err(e) => panic!("unexpected error for {size} bytes: {e}"),
        }
    }

    fn reserve(&mut self, i: usize, add: usize) {
        let region = self.live[i].region;
        let Handle::Buf(buf) = &mut self.live[i].handle else {
            return;
        };
        let (ptr, len, cap) = (buf.as_ptr(), buf.len(), buf.capacity());
        match buf.try_reserve(add) {
            Ok(()) => {
                assert_eq!(buf.len(), len, "reserve changed the length");
                assert!(buf.capacity() - len >= add, "reserve made too little room");
                let p = buf.as_ptr() as usize;
                let r = self.regions[region].expect("live region");
                // A zero-capacity handle may point just past its region (the start of a
                // neighbour's); only a pointer that changed and left the region means a move.
                if p != ptr as usize && !(r.base..r.base + r.cap.max(1)).contains(&p) {
                    // Moved to a new region: the buffer is its only handle.
                    let (base, fresh) = (p, buf.capacity());
                    self.release_handle(region);
                    self.live[i].region = self.new_region_at(base, fresh);
                } else {
                    assert!(
                        p + buf.capacity() <= r.base + r.cap,
                        "grown in place past its region"
                    );
                }
            }
            Err(AllocError::MemoryLimit { .. }) => {
                assert_eq!(
                    (buf.as_ptr(), buf.len(), buf.capacity()),
                    (ptr, len, cap),
                    "a failed reserve changed the buffer"
                );
            }
            Err(e) => panic!("unexpected error growing by {add}: {e}"),
        }
        self.touched.push(i);
    }

    fn split(&mut self, i: usize, at: usize, to: bool) {
        if self.live.len() >= MAX_LIVE {
            return;
        }
        let (seed, start, region) = (self.live[i].seed, self.live[i].start, self.live[i].region);
        let (piece, piece_start) = match &mut self.live[i].handle {
            Handle::Buf(buf) => {
                let (len, cap) = (buf.len(), buf.capacity());
                if to {
                    let at = at % (len + 1);
                    let front = buf.split_to(at);
                    assert_eq!((front.len(), front.capacity()), (at, at));
                    assert_eq!((buf.len(), buf.capacity()), (len - at, cap - at));
                    self.live[i].start = start + at;
                    (Handle::Buf(front), start)
                } else {
                    let at = at % (cap + 1);
                    let back = buf.split_off(at);
                    assert_eq!(back.len(), len.saturating_sub(at));
                    assert_eq!(back.capacity(), cap - at);
                    assert_eq!((buf.len(), buf.capacity()), (len.min(at), at));
                    (Handle::Buf(back), start + at)
                }
            }
            // `Bytes` returns an empty handle that keeps no region when split at either end,
            // so frozen handles are split strictly inside only.
            Handle::Frozen(b) => {
                let len = b.len();
                if len < 2 {
                    return;
                }
                let at = 1 + at % (len - 1);
                if to {
                    let front = b.split_to(at);
                    self.live[i].start = start + at;
                    (Handle::Frozen(front), start)
                } else {
                    (Handle::Frozen(b.split_off(at)), start + at)
                }
            }
        };
        self.touched.push(i);
        self.add_handle(region);
        assert!(self.push(piece, seed, piece_start, region));
    }

    fn clone_handle(&mut self, i: usize) {
        if self.live.len() >= MAX_LIVE {
            return;
        }
        let l = &self.live[i];
        let (seed, start, region) = (l.seed, l.start, l.region);
        match &l.handle {
            Handle::Frozen(b) => {
                let copy = b.clone();
                assert_eq!(copy.as_ptr(), b.as_ptr(), "a Bytes clone copied");
                self.add_handle(region);
                self.push(Handle::Frozen(copy), seed, start, region);
            }
            Handle::Buf(buf) => {
                // `Clone` panics if the allocation fails: clone only when the copy cannot
                // reach the limit (one new chunk or one unpooled region at most).
                let s = self.pool.stats();
                let need = buf.len().max(self.setup.max_chunk) + 64;
                if s.allocated_bytes + need > self.setup.max_memory {
                    return;
                }
                let copy = buf.clone();
                assert_eq!(&copy[..], &buf[..], "a clone differs");
                // `new_region` checks that the copy's region overlaps no live region.
                let region = self.new_region(&copy);
                self.push(Handle::Buf(copy), seed, start, region);
            }
        }
    }

    /// Checks every live handle and the stats against the model.
    pub fn check(&self, what: &str) {
        for i in 0..self.live.len() {
            let full = self.depth == Depth::Full || self.touched.contains(&i);
            self.check_handle(i, full, what);
        }
        let s = self.stats();
        let ctx = || {
            format!(
                "{what}: {s}; model: {} regions of {} B",
                self.live_regions, self.live_bytes
            )
        };
        assert_eq!(s.live_buffers, self.live_regions, "live_buffers, {}", ctx());
        assert_eq!(s.live_bytes, self.live_bytes, "live_bytes, {}", ctx());
        assert!(
            s.allocated_bytes <= self.setup.max_memory,
            "over max_memory, {}",
            ctx()
        );
        assert!(
            s.cached_bytes <= self.setup.max_cached,
            "over max_cached_bytes, {}",
            ctx()
        );
        assert!(
            s.cached_bytes <= s.allocated_bytes,
            "cache larger than held, {}",
            ctx()
        );
        assert!(
            s.live_bytes <= s.allocated_bytes,
            "live larger than held, {}",
            ctx()
        );
        assert_eq!(
            s.chunk_allocations - s.chunk_releases,
            s.chunks as u64,
            "chunk counters disagree, {}",
            ctx()
        );
        assert!(s.magazines <= 1, "only this thread allocates, {}", ctx());
    }

    /// Drops every handle (alternately here and on the other thread); the allocator must be
    /// quiet, and `trim()` must give back every byte.
    pub fn finish(mut self) {
        let mut k = 0;
        while !self.live.is_empty() {
            let h = self.take(self.live.len() - 1);
            if k % 2 == 0 {
                drop(h);
            } else {
                self.remote.drop_there(h);
            }
            k += 1;
        }
        self.check("after dropping everything");
        let s = self.stats();
        assert!(s.is_quiet(), "everything dropped but not quiet: {s}");
        self.pool.trim();
        let s = self.stats();
        assert_eq!(
            s.allocated_bytes, 0,
            "trim() after dropping everything left memory: {s}"
        );
        assert_eq!(
            (s.cached_bytes, s.chunks),
            (0, 0),
            "trim() left chunks: {s}"
        );
    }
}
