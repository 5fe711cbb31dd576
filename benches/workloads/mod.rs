//! The benchmark workloads, written once and shared by the criterion benches
//! (`benches/alloc.rs`, `benches/threads.rs`) and the ratio report (`examples/ratio.rs`), which
//! include this file with `#[path]` (it lives in a directory so cargo does not take it for a
//! bench target of its own).
//!
//! Every workload is generic over a [`Backend`]: [`Pool`] (an `AdaptiveAllocator`) or [`Plain`]
//! (`bytes::BytesMut` on the global allocator), so the two do exactly the same work. A
//! workload takes an iteration count and answers the time its measured part took, which is
//! what criterion's `iter_custom` and the ratio report both want.
//!
//! The global allocator of every binary that includes this file is chosen here by cargo
//! feature: the system allocator (default), `mimalloc`, or `jemalloc` (tikv-jemallocator).
//! Row names follow SPEC section 7 (B1 to B6, plus the xmalloc and larson ports).

#![allow(dead_code)]

pub mod child;

use std::hint::black_box;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use adaptive_pool::{AdaptiveAllocator, PooledBuf, Stats};
use bytes::{BufMut, Bytes, BytesMut};

#[cfg(all(feature = "mimalloc", feature = "jemalloc"))]
compile_error!("features `mimalloc` and `jemalloc` each pick the global allocator: enable one");

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The global allocator this binary was built with (what `BytesMut` runs on).
pub const GLOBAL_ALLOCATOR: &str = if cfg!(feature = "mimalloc") {
    "mimalloc"
} else if cfg!(feature = "jemalloc") {
    "jemalloc"
} else {
    "system"
};

/// Bytes to fill buffers with (the largest size any workload fills).
pub static SRC: [u8; 64 << 10] = [0xA5; 64 << 10];

/// B1 sizes.
pub const B1_SIZES: [usize; 4] = [64, 1 << 10, 16 << 10, 64 << 10];
/// B2 sizes.
pub const B2_SIZES: [usize; 2] = [1 << 10, 16 << 10];

/// "64B", "1KiB", ...
pub fn label(size: usize) -> String {
    if size >= 1 << 10 {
        format!("{}KiB", size >> 10)
    } else {
        format!("{size}B")
    }
}

/// What a workload allocates with.
pub trait Backend: Clone + Send + Sync + 'static {
    /// The buffer type.
    type Buf: BufMut + Deref<Target = [u8]> + DerefMut + Send + 'static;
    /// Name in reports.
    const NAME: &'static str;
    /// An empty buffer with room for `capacity` bytes.
    fn alloc(&self, capacity: usize) -> Self::Buf;
    /// Freezes into `Bytes`.
    fn freeze(buf: Self::Buf) -> Bytes;
    /// Room for `additional` more bytes.
    fn reserve(buf: &mut Self::Buf, additional: usize);
    /// The pool's statistics (`None` for `BytesMut`).
    fn stats(&self) -> Option<Stats>;
}

/// The pool under test.
#[derive(Clone)]
pub struct Pool(pub AdaptiveAllocator);

impl Pool {
    /// A pool with the default settings.
    pub fn new() -> Self {
        Pool(AdaptiveAllocator::new())
    }
}

impl Backend for Pool {
    type Buf = PooledBuf;
    const NAME: &'static str = "pool";
    #[inline]
    fn alloc(&self, capacity: usize) -> PooledBuf {
        self.0.allocate(capacity)
    }
    #[inline]
    fn freeze(buf: PooledBuf) -> Bytes {
        buf.freeze()
    }
    #[inline]
    fn reserve(buf: &mut PooledBuf, additional: usize) {
        buf.reserve(additional)
    }
    fn stats(&self) -> Option<Stats> {
        Some(self.0.stats())
    }
}

/// `bytes::BytesMut` on the global allocator.
#[derive(Clone)]
pub struct Plain;

impl Backend for Plain {
    type Buf = BytesMut;
    const NAME: &'static str = "BytesMut";
    #[inline]
    fn alloc(&self, capacity: usize) -> BytesMut {
        BytesMut::with_capacity(capacity)
    }
    #[inline]
    fn freeze(buf: BytesMut) -> Bytes {
        buf.freeze()
    }
    #[inline]
    fn reserve(buf: &mut BytesMut, additional: usize) {
        buf.reserve(additional)
    }
    fn stats(&self) -> Option<Stats> {
        None
    }
}

/// xorshift64*: small and fast; workloads are reproducible from their seed.
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    /// The next 64 random bits.
    #[inline]
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `0..n`.
    #[inline]
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// Log-uniform in `lo..=hi` (both powers of two): a power of two picked uniformly, then a
    /// uniform size within its doubling.
    #[inline]
    pub fn log_uniform(&mut self, lo: usize, hi: usize) -> usize {
        let (a, b) = (lo.trailing_zeros(), hi.trailing_zeros());
        let base = 1usize << (a + self.below((b - a) as usize) as u32);
        base + self.below(base + 1)
    }
}

/// A network-like request size: mostly 64 B .. 16 KiB log-uniform, 3 % 64 KiB frames.
#[inline]
pub fn network_size(rng: &mut Rng) -> usize {
    if rng.below(100) < 97 {
        rng.log_uniform(64, 16 << 10)
    } else {
        64 << 10
    }
}

/// Writes a small header (up to 64 bytes), so every buffer is touched without the copy
/// dominating the row.
#[inline]
fn touch<B: BufMut>(buf: &mut B, size: usize) {
    buf.put_slice(&SRC[..size.min(64)]);
}

// --- single-thread rows -----------------------------------------------------------------

/// B1: allocate `size`, fill it, drop.
pub fn b1<B: Backend>(b: &B, size: usize, iters: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        let mut buf = b.alloc(black_box(size));
        buf.put_slice(&SRC[..size]);
        black_box(&buf);
    }
    start.elapsed()
}

/// B2: allocate `size`, fill, freeze, clone twice, drop all three.
pub fn b2<B: Backend>(b: &B, size: usize, iters: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        let mut buf = b.alloc(black_box(size));
        buf.put_slice(&SRC[..size]);
        let frozen = B::freeze(buf);
        let c1 = frozen.clone();
        let c2 = c1.clone();
        black_box((&frozen, &c1, &c2));
    }
    start.elapsed()
}

/// B6: start at 256 B filled, then double by `reserve` (filling each time) up to 64 KiB.
pub fn b6<B: Backend>(b: &B, iters: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        let mut buf = b.alloc(black_box(256));
        buf.put_slice(&SRC[..256]);
        while buf.len() < 64 << 10 {
            let n = buf.len();
            B::reserve(&mut buf, n);
            buf.put_slice(&SRC[..n]);
        }
        black_box(&buf);
    }
    start.elapsed()
}

/// Live slots of B4.
pub const B4_SLOTS: usize = 8192;

/// B4 (Netty's live-set churn): 8,192 live buffers, each iteration replaces a random one
/// (seed 42) with a new buffer of 256 B .. 64 KiB (log-uniform). The slots are filled before
/// the clock starts and dropped after it stops.
pub fn b4<B: Backend>(b: &B, iters: u64) -> Duration {
    churn(b, iters, |rng| rng.log_uniform(256, 64 << 10), usize::MAX)
}

/// B7 (live-set churn at one small size): B4's 8,192 slots and random replacement (seed 42),
/// every buffer 256 B with 64 B written.
pub fn b7<B: Backend>(b: &B, iters: u64) -> Duration {
    churn(b, iters, |_| 256, 64)
}

/// Live-set churn over [`B4_SLOTS`] slots: sizes from `size`, at most `fill` bytes written.
fn churn<B: Backend>(b: &B, iters: u64, size: impl Fn(&mut Rng) -> usize, fill: usize) -> Duration {
    let mut rng = Rng::new(42);
    let mut slots: Vec<B::Buf> = (0..B4_SLOTS)
        .map(|_| {
            let size = size(&mut rng);
            let mut buf = b.alloc(size);
            touch(&mut buf, size.min(fill));
            buf
        })
        .collect();
    let start = Instant::now();
    for _ in 0..iters {
        let i = rng.below(B4_SLOTS);
        let size = size(&mut rng);
        let mut buf = b.alloc(size);
        touch(&mut buf, size.min(fill));
        slots[i] = buf;
    }
    let t = start.elapsed();
    drop(slots);
    t
}

// --- multi-thread rows ------------------------------------------------------------------

/// Buffers per batch on B3's hand-off.
const B3_BATCH: usize = 64;

/// B3 (cross-thread, xmalloc pattern with one pair): this thread allocates 1 KiB buffers,
/// fills and freezes them and sends them in batches of 64 over a bounded channel; another
/// thread drops them. Time until the last one is dropped.
pub fn b3<B: Backend>(b: &B, iters: u64) -> Duration {
    hand_off(b, iters, B::freeze)
}

/// B3 without the freeze, a diagnostic (not a row of the report): the same hand-off, but the
/// buffers themselves cross the channel and are dropped on the other side. The difference
/// from [`b3`] is what freezing costs across threads: for the pool, the box that
/// `Bytes::from_owner` allocates on this thread and frees on the consumer's.
pub fn b3_unfrozen<B: Backend>(b: &B, iters: u64) -> Duration {
    hand_off(b, iters, |buf| buf)
}

/// B3's hand-off: `iters` filled 1 KiB buffers, each passed through `wrap`, sent in batches
/// to another thread that drops them.
fn hand_off<B: Backend, T: Send>(b: &B, iters: u64, wrap: impl Fn(B::Buf) -> T) -> Duration {
    let (tx, rx) = mpsc::sync_channel::<Vec<T>>(16);
    let start = Instant::now();
    thread::scope(|s| {
        s.spawn(move || {
            for batch in rx {
                drop(black_box(batch));
            }
        });
        let mut left = iters as usize;
        while left > 0 {
            let n = left.min(B3_BATCH);
            let mut batch = Vec::with_capacity(n);
            for _ in 0..n {
                let mut buf = b.alloc(1024);
                buf.put_slice(&SRC[..1024]);
                batch.push(wrap(buf));
            }
            tx.send(batch).expect("consumer alive");
            left -= n;
        }
        drop(tx);
    });
    start.elapsed()
}

/// Peak memory seen while a workload ran (pool only).
#[derive(Clone, Copy, Debug, Default)]
pub struct Peaks {
    /// Peak `allocated_bytes`.
    pub allocated: usize,
    /// Peak `live_bytes`.
    pub live: usize,
    /// Peak of `allocated_bytes - cached_bytes` (memory in chunks that magazines hold).
    pub in_use: usize,
}

impl Peaks {
    /// Peak allocated / peak live.
    pub fn ratio(&self) -> f64 {
        self.allocated as f64 / self.live.max(1) as f64
    }
    /// Peak of (allocated - cached) / peak live: the ratio without the idle cache.
    pub fn in_use_ratio(&self) -> f64 {
        self.in_use as f64 / self.live.max(1) as f64
    }
}

/// Samples `stats` every millisecond until `done`.
fn sample_peaks(stats: impl Fn() -> Option<Stats>, done: &AtomicBool) -> Peaks {
    let mut p = Peaks::default();
    while !done.load(Ordering::Acquire) {
        if let Some(s) = stats() {
            p.allocated = p.allocated.max(s.allocated_bytes);
            p.live = p.live.max(s.live_bytes);
            p.in_use = p.in_use.max(s.allocated_bytes - s.cached_bytes);
        }
        thread::sleep(Duration::from_millis(1));
    }
    p
}

/// Ring slots per B5 thread.
const B5_RING: usize = 256;
/// Frames per cross-thread batch in B5.
const B5_BATCH: usize = 32;

/// B5: mixed network sizes and lifetimes on `threads` threads, `iters` operations in all.
/// Each operation allocates a network-sized buffer and writes its header; 70 % are dropped
/// at once (a short request), 25 % replace a random slot of a 256-slot ring (connection
/// state living a while), 5 % are frozen and sent, in batches, to the next thread, which
/// drops them (a response handed to another task). Answers the time and, for the pool, the
/// peak `allocated_bytes` and `live_bytes` sampled every millisecond.
pub fn b5<B: Backend>(b: &B, threads: usize, iters: u64) -> (Duration, Peaks) {
    let per_thread = (iters as usize).div_ceil(threads);
    let mut txs = Vec::new();
    let mut rxs = Vec::new();
    for _ in 0..threads {
        let (tx, rx) = mpsc::channel::<Vec<Bytes>>();
        txs.push(tx);
        rxs.push(rx);
    }
    let done = AtomicBool::new(false);
    let running = AtomicUsize::new(threads);
    let start = Instant::now();
    let peaks = thread::scope(|s| {
        for (id, rx) in rxs.into_iter().enumerate() {
            let tx = txs[(id + 1) % threads].clone();
            let (b, running, done) = (b.clone(), &running, &done);
            s.spawn(move || {
                let mut rng = Rng::new(0xB5 + id as u64);
                let mut ring: Vec<Option<B::Buf>> = (0..B5_RING).map(|_| None).collect();
                let mut batch = Vec::with_capacity(B5_BATCH);
                for op in 0..per_thread {
                    let size = network_size(&mut rng);
                    let mut buf = b.alloc(size);
                    touch(&mut buf, size);
                    match rng.below(100) {
                        0..=69 => drop(black_box(buf)),
                        70..=94 => ring[rng.below(B5_RING)] = Some(buf),
                        _ => {
                            batch.push(B::freeze(buf));
                            if batch.len() == B5_BATCH {
                                // The receiver may be gone at the very end; then drop here.
                                let _ = tx.send(std::mem::take(&mut batch));
                            }
                        }
                    }
                    if op % 64 == 0 {
                        while let Ok(frames) = rx.try_recv() {
                            drop(black_box(frames));
                        }
                    }
                }
                drop(tx);
                drop(batch);
                drop(ring);
                if running.fetch_sub(1, Ordering::AcqRel) == 1 {
                    done.store(true, Ordering::Release);
                }
                // Drain what the previous thread still sends until it hangs up.
                for frames in rx {
                    drop(frames);
                }
            });
        }
        drop(txs);
        let (bb, done) = (b.clone(), &done);
        s.spawn(move || sample_peaks(|| bb.stats(), done))
            .join()
            .expect("sampler")
    });
    (start.elapsed(), peaks)
}

/// Buffers per xmalloc batch.
pub const XMALLOC_BATCH: usize = 4096;

/// The xmalloc port: `pairs` producer threads allocate batches of 4,096 buffers of 64 B ..
/// 64 KiB (log-uniform, header written) and hand each batch through a bounded channel to
/// their consumer thread, which drops it. `iters` buffers in all; the time is until the
/// last is dropped.
pub fn xmalloc<B: Backend>(b: &B, pairs: usize, iters: u64) -> Duration {
    let per_producer = (iters as usize).div_ceil(pairs);
    let start = Instant::now();
    thread::scope(|s| {
        for p in 0..pairs {
            let (tx, rx) = mpsc::sync_channel::<Vec<B::Buf>>(2);
            s.spawn(move || {
                for batch in rx {
                    drop(black_box(batch));
                }
            });
            let b = b.clone();
            s.spawn(move || {
                let mut rng = Rng::new(0x3A11 + p as u64);
                let mut left = per_producer;
                while left > 0 {
                    let n = left.min(XMALLOC_BATCH);
                    let mut batch = Vec::with_capacity(n);
                    for _ in 0..n {
                        let size = rng.log_uniform(64, 32 << 10);
                        let mut buf = b.alloc(size);
                        touch(&mut buf, size);
                        batch.push(buf);
                    }
                    tx.send(batch).expect("consumer alive");
                    left -= n;
                }
            });
        }
    });
    start.elapsed()
}

/// Slots per larson thread.
pub const LARSON_SLOTS: usize = 5000;
/// Operations a larson thread does before handing its slots to a successor and exiting.
pub const LARSON_LIFETIME: usize = 20_000;

/// The larson port: `threads` lineages, each holding 5,000 slots and replacing a random slot
/// with a new buffer of 64 B .. 4 KiB per operation. After 20,000 operations a thread starts
/// a successor thread, hands it the slots and exits, so a dead thread's buffers are freed by
/// another. `iters` operations in all.
pub fn larson<B: Backend>(b: &B, threads: usize, iters: u64) -> Duration {
    type Slots<B> = Vec<Option<<B as Backend>::Buf>>;
    /// One thread's life: its operations on the slots it inherited; it hands them on.
    fn generation<B: Backend>(b: &B, mut slots: Slots<B>, rng: &mut Rng, n: usize) -> Slots<B> {
        for _ in 0..n {
            let size = rng.log_uniform(64, 2 << 10);
            let mut buf = b.alloc(size);
            touch(&mut buf, size);
            slots[rng.below(LARSON_SLOTS)] = Some(buf);
        }
        slots
    }
    let per_thread = (iters as usize).div_ceil(threads);
    let start = Instant::now();
    thread::scope(|s| {
        for t in 0..threads {
            let b = b.clone();
            // The lineage's driver: starts each generation once the previous one has exited,
            // handing it the slots (so a dead thread's buffers are dropped by its successor).
            s.spawn(move || {
                let mut slots: Slots<B> = (0..LARSON_SLOTS).map(|_| None).collect();
                let mut rng = Rng::new(0x1A25 + t as u64);
                let mut left = per_thread;
                while left > 0 {
                    let n = left.min(LARSON_LIFETIME);
                    let b = b.clone();
                    let (returned, r) = thread::spawn(move || {
                        let slots = generation(&b, slots, &mut rng, n);
                        (slots, rng)
                    })
                    .join()
                    .expect("larson generation");
                    slots = returned;
                    rng = r;
                    left -= n;
                }
                drop(slots);
            });
        }
    });
    start.elapsed()
}
