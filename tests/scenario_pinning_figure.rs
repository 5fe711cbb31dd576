//! Issue 13, parts 1 and 2: pinning is a number (`Stats::pinned_bytes`), and avoiding it is one
//! call (`PooledBuf::freeze_compact`) or one setting (`Builder::compact_frozen_below`).
//!
//! The scenario is the key-value server of the issue in miniature: one large read buffer
//! receives many 4 KiB values; each is stored as `split_to(n).freeze()` (zero-copy) under a
//! random key, overwriting the key's previous value; a read buffer that cannot take another
//! value is replaced. Each stored value then keeps its whole read region alive.
//!
//! The test keeps its own model of the regions (each read buffer's capacity and the values of
//! it still stored) and checks the allocator's figure against it exactly: `pinned_bytes` is
//! the capacity of the live regions minus the views of their live handles. It also asserts the
//! scenario's claim, that the pinned bytes exceed the bytes stored, and that the figure goes
//! back to exactly zero when everything drops. The copying variant (each value copied into its
//! own exact-size buffer) pins nothing; so do the compacting variants.

use std::collections::HashMap;

use adaptive_pool::{AdaptiveAllocator, PooledBuf, Stats};
use bytes::Bytes;

mod common;
use common::Rng;

/// Smaller sizes under Miri (the same assertions).
const SMALL: bool = cfg!(miri);
/// Size of one stored value.
const VALUE: usize = if SMALL { 512 } else { 4096 };
/// Size asked for each read buffer (the pool rounds it to its class).
const READ: usize = if SMALL { 8 << 10 } else { 128 << 10 };
/// Distinct keys.
const KEYS: usize = if SMALL { 12 } else { 256 };
/// Values received.
const MESSAGES: usize = if SMALL { 64 } else { 4096 };

/// How the server stores a received value.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Store {
    /// `split_to(VALUE).freeze()`: zero-copy, pins the read region.
    ZeroCopy,
    /// Copied into a buffer of its own size; the read buffer is cleared and reused.
    Copy,
    /// `split_to(VALUE).freeze_compact()`.
    CompactCall,
    /// `split_to(VALUE).freeze()` on an allocator built with `compact_frozen_below(50)`.
    CompactSetting,
}

/// One stored value and the read region it came from (for the model).
struct Stored {
    value: Bytes,
    region: usize,
}

struct Server {
    pool: AdaptiveAllocator,
    store: Store,
    read: PooledBuf,
    /// Number of the current read region.
    region: usize,
    /// Capacity of every read region made, by number.
    region_cap: Vec<usize>,
    values: HashMap<usize, Stored>,
}

impl Server {
    fn new(store: Store) -> Server {
        let mut b = AdaptiveAllocator::builder();
        if store == Store::CompactSetting {
            b = b.compact_frozen_below(50);
        }
        let pool = b.build().expect("valid settings");
        let read = pool.allocate(READ);
        let region_cap = vec![read.capacity()];
        Server {
            pool,
            store,
            read,
            region: 0,
            region_cap,
            values: HashMap::new(),
        }
    }

    /// Receives one value for `key` (filled with a byte derived from the message number) and
    /// stores it.
    fn receive(&mut self, key: usize, n: usize) {
        if self.read.capacity() - self.read.len() < VALUE {
            self.read = self.pool.allocate(READ);
            self.region += 1;
            self.region_cap.push(self.read.capacity());
        }
        let fill = (n % 251) as u8;
        self.read.resize(self.read.len() + VALUE, fill);
        let value = match self.store {
            Store::ZeroCopy | Store::CompactSetting => self.read.split_to(VALUE).freeze(),
            Store::CompactCall => self.read.split_to(VALUE).freeze_compact(),
            Store::Copy => {
                let mut own = self.pool.allocate(VALUE);
                own.extend_from_slice(&self.read[..VALUE]);
                self.read.clear();
                own.freeze()
            }
        };
        assert_eq!(value.len(), VALUE);
        assert!(value.iter().all(|&b| b == fill), "value {n} intact");
        self.values.insert(
            key,
            Stored {
                value,
                region: self.region,
            },
        );
    }

    /// The model's pinned bytes, for the zero-copy store: every read region that is still
    /// live (it has a stored value, or it is the current read buffer), less the views of its
    /// live handles (its stored values, and the read buffer's remaining capacity), for
    /// regions that were split.
    fn model_pinned(&self) -> usize {
        let mut live: HashMap<usize, usize> = HashMap::new();
        for v in self.values.values() {
            *live.entry(v.region).or_default() += VALUE;
        }
        let mut pinned = 0;
        for (&region, &covered) in &live {
            let mut covered = covered;
            if region == self.region {
                covered += self.read.capacity();
            }
            pinned += self.region_cap[region] - covered;
        }
        pinned
    }

    fn stored_bytes(&self) -> usize {
        self.values.len() * VALUE
    }
}

/// Runs the scenario; returns the server (everything still live) and its stats.
fn run(store: Store) -> (Server, Stats) {
    let mut server = Server::new(store);
    let mut rng = Rng(42);
    for n in 0..MESSAGES {
        server.receive(rng.below(KEYS), n);
    }
    for v in server.values.values() {
        assert_eq!(v.value.len(), VALUE);
    }
    let s = server.pool.stats();
    eprintln!(
        "{store:?}: {} values stored ({} B) in {} read regions; allocated {} B, live {} B, \
         pinned {} B",
        server.values.len(),
        server.stored_bytes(),
        server.region + 1,
        s.allocated_bytes,
        s.live_bytes,
        s.pinned_bytes
    );
    (server, s)
}

/// Drops everything and checks that the figure comes back to exactly zero.
fn finish(server: Server) {
    let pool = server.pool.clone();
    drop(server);
    let s = pool.stats();
    assert_eq!(s.pinned_bytes, 0, "no drift once everything dropped: {s}");
    assert!(s.is_quiet(), "{s}");
    pool.trim();
    assert_eq!(pool.stats().allocated_bytes, 0, "{}", pool.stats());
}

#[test]
fn zero_copy_values_pin_their_read_regions_and_the_figure_shows_it() {
    let (server, s) = run(Store::ZeroCopy);
    let stored = server.stored_bytes();
    assert_eq!(
        s.pinned_bytes,
        server.model_pinned(),
        "pinned_bytes is exactly the uncovered part of the live split regions: {s}"
    );
    // The scenario's claim: stored values keep far more memory alive than they hold.
    assert!(
        s.pinned_bytes > stored,
        "pinned {} B should exceed the {stored} B stored: {s}",
        s.pinned_bytes
    );
    assert!(
        s.live_bytes >= stored + s.pinned_bytes,
        "pinned bytes are part of live bytes: {s}"
    );
    finish(server);
}

#[test]
fn copied_values_pin_nothing() {
    let (server, s) = run(Store::Copy);
    assert_eq!(s.pinned_bytes, 0, "{s}");
    let stored = server.stored_bytes();
    // The read buffer, and each value in a region of its own class.
    assert!(
        s.live_bytes <= stored + stored / 4 + server.read.capacity(),
        "copied values hold about what they store: {s}"
    );
    finish(server);
}

/// The figure across the handle operations that change what a region's handles cover.
#[test]
fn the_figure_follows_splits_drops_unsplits_and_reclaims() {
    let pool = AdaptiveAllocator::new();
    let mut buf = pool.allocate(4096);
    let cap = buf.capacity();
    buf.resize(3000, 7);
    assert_eq!(
        pool.stats().pinned_bytes,
        0,
        "an unshared buffer pins nothing"
    );

    // Splitting changes nothing; dropping one side while the other lives pins its view.
    let front = buf.split_to(1000);
    assert_eq!(pool.stats().pinned_bytes, 0);
    let back = buf.split_off(1000);
    assert_eq!(pool.stats().pinned_bytes, 0);
    let back_cap = back.capacity();
    drop(back);
    assert_eq!(pool.stats().pinned_bytes, back_cap);
    let frozen = front.freeze();
    let clone = frozen.clone();
    drop(frozen);
    assert_eq!(
        pool.stats().pinned_bytes,
        back_cap,
        "a clone still holds the view"
    );
    drop(clone);
    assert_eq!(pool.stats().pinned_bytes, back_cap + 1000);

    // The only handle left takes the region back: covered again but for the bytes before it.
    assert!(buf.try_reclaim(cap - 1000 - buf.len()));
    assert_eq!(buf.capacity(), cap - 1000);
    assert_eq!(pool.stats().pinned_bytes, 1000);
    // Moved to the region's start: nothing uncovered.
    assert!(buf.try_reclaim(cap - buf.len()));
    assert_eq!(buf.capacity(), cap);
    assert_eq!(pool.stats().pinned_bytes, 0);

    // try_unsplit gives a view back to its neighbour: nothing uncovered.
    let tail = buf.split_off(500);
    buf.truncate(500);
    let mut head = buf;
    head.try_unsplit(tail).expect("contiguous");
    assert_eq!(pool.stats().pinned_bytes, 0);

    // Growth that moves a handle of a shared region is a drop of its old view.
    let mut rest = head.split_off(2000);
    let rest_cap = rest.capacity();
    rest.reserve(rest_cap + 1);
    assert_eq!(pool.stats().pinned_bytes, rest_cap, "{}", pool.stats());
    drop(head);
    assert_eq!(pool.stats().pinned_bytes, 0, "the old region was released");
    drop(rest);
    assert!(pool.stats().is_quiet());
    assert_eq!(pool.stats().pinned_bytes, 0);
}

/// Handles dropped on other threads add and remove the same bytes: no drift. Each thread
/// counts what it pins in its own stats shard; one dropping thread has exited when the figure
/// is read (its shard folded into the allocator's), the other still lives (its shard read
/// where it is), and the last handle unpins on this thread. (`Bytes` frozen from the views
/// are dropped on other threads in scenario 7 and the operation model.)
#[test]
fn the_figure_is_exact_across_threads() {
    let pool = AdaptiveAllocator::new();
    let rounds = if cfg!(miri) { 4 } else { 200 };
    for _ in 0..rounds {
        let mut buf = pool.allocate(8192);
        let region = buf.capacity();
        buf.resize(8192, 1);
        // Views kept as `PooledBuf`s: frozen ones this small would be compacted (copied out
        // of the region) by the default `compact_frozen_below`, and pin nothing.
        let mut a: Vec<PooledBuf> = (0..8).map(|_| buf.split_to(1024)).collect();
        let b = a.split_off(4);
        let t1 = std::thread::spawn(move || drop(a));
        let (dropped_tx, dropped) = std::sync::mpsc::channel();
        let (exit_tx, exit) = std::sync::mpsc::channel::<()>();
        let t2 = std::thread::spawn(move || {
            drop(b);
            dropped_tx.send(()).unwrap();
            exit.recv().unwrap();
        });
        t1.join().unwrap();
        dropped.recv().unwrap();
        // Every split-off view dropped, on two other threads: only `buf` covers its region.
        assert_eq!(pool.stats().pinned_bytes, region - buf.capacity());
        exit_tx.send(()).unwrap();
        t2.join().unwrap();
        assert_eq!(pool.stats().pinned_bytes, region - buf.capacity());
        drop(buf);
        assert_eq!(pool.stats().pinned_bytes, 0);
    }
    assert!(pool.stats().is_quiet());
}

/// Compacting, by the call or by the setting: a value's region is its own, so once the read
/// buffer goes nothing is pinned and every read region is freed.
#[test]
fn compacted_values_pin_nothing_once_the_read_buffer_goes() {
    for store in [Store::CompactCall, Store::CompactSetting] {
        let (mut server, s) = run(store);
        let stored = server.stored_bytes();
        // Only the consumed part of the current read buffer is uncovered (its values were
        // copied out and their views dropped); older read regions are gone.
        let current = server.region_cap[server.region];
        assert_eq!(
            s.pinned_bytes,
            current - server.read.capacity(),
            "{store:?}: {s}"
        );
        server.read = PooledBuf::new();
        let s = server.pool.stats();
        assert_eq!(s.pinned_bytes, 0, "{store:?}: {s}");
        assert_eq!(
            s.live_buffers,
            server.values.len(),
            "{store:?}: one region per value, no read region left: {s}"
        );
        assert!(
            s.live_bytes <= stored + stored / 4,
            "{store:?}: live bytes are the stored bytes, rounded to a class: {s}"
        );
        finish(server);
    }
}

/// What is copied and what is not.
#[test]
fn compaction_copies_only_small_views_of_split_regions() {
    let pool = AdaptiveAllocator::new();
    let mut buf = pool.allocate(4096);
    buf.resize(4096, 1);
    let base = buf.as_ptr();
    // 3000 of 4096 bytes: over the default 50 %, stays zero-copy.
    let big = buf.split_to(3000).freeze_compact();
    assert_eq!(big.as_ptr(), base);
    // 100 bytes of the 4096: copied.
    let small = buf.split_to(100).freeze_compact();
    assert_ne!(small.as_ptr(), base.wrapping_add(3000));
    assert_eq!(&small[..], &[1u8; 100][..]);
    // Plain `freeze` never copies without the setting.
    let plain = buf.split_to(100).freeze();
    assert_eq!(plain.as_ptr(), base.wrapping_add(3100));
    drop((big, small, plain, buf));
    assert!(pool.stats().is_quiet());

    // With the setting, `freeze` copies a small view of a split region, but never touches a
    // buffer that was not split.
    let pool = AdaptiveAllocator::builder()
        .compact_frozen_below(100)
        .build()
        .unwrap();
    let mut buf = pool.allocate(4096);
    buf.extend_from_slice(b"short");
    let base = buf.as_ptr();
    let whole = buf.freeze();
    assert_eq!(
        whole.as_ptr(),
        base,
        "a buffer never split is frozen in place"
    );
    let mut buf = pool.allocate(4096);
    buf.resize(4096, 2);
    let base = buf.as_ptr();
    let part = buf.split_to(1000).freeze();
    assert_ne!(part.as_ptr(), base, "a split view is copied out");
    assert_eq!(&part[..], &[2u8; 1000][..]);
    assert_eq!(
        pool.stats().pinned_bytes,
        1000,
        "its old view, until the rest goes"
    );
    drop(buf);
    let s = pool.stats();
    assert_eq!((s.pinned_bytes, s.live_buffers), (0, 2), "{s}");
    drop((whole, part));
    assert!(pool.stats().is_quiet());
}
