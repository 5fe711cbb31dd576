//! The per-class state of a magazine: [`ClassState`] (the class's current chunk, its full and
//! spacious lists, its growth grade) and its *cache* of free segments, with the cache's spill
//! and flush.
//!
//! Owns: `ClassState`, the tags that say which of a class's lists holds an owned chunk, the
//! hot stack and the cache list threaded through free segments (`chunk::CachedSeg`). Runs only inside the magazine's gate or under a claim. May import:
//! `chunk`, `size_class`; nothing of its siblings (`body`, the policy over these lists, sits
//! above it and imports it).
//!
//! # The cache
//! Each class has a *cache* of free segments of its owned chunks (up to 64, tcache's idea;
//! the newest 8 in a stack in the magazine, the older in a list threaded through the segments):
//! the owner's frees into any chunk that is not current push there, and allocations pop
//! from there first, so a free anywhere in the class is reused by the next allocation in
//! O(1), whichever chunk it fell in. The chunks' `live` counts stay exact (a cached segment
//! is free); a chunk that becomes fully free is retired as below, its cached segments taken
//! out of the cache first, so the cache keeps no chunk alive by itself. A full cache gives
//! its older half back to the chunks' own lists. Poisoning and zeroing on release turn it off.

use std::ptr::NonNull;

use crate::chunk::{CachedSeg, ChunkPtr, NO_CHUNK};
use crate::size_class::SizeClass;

/// Which of its class's lists holds an owned chunk: the low two bits of the chunk's slot
/// word (the rest is its index in that list). `FULL` and `SPACIOUS` index
/// [`ClassState::lists`]; `CURRENT` and `IDLE` mark the class's current chunk, `IDLE` when it
/// is counted against the idle budget.
pub(super) const FULL: usize = 0;

pub(super) const SPACIOUS: usize = 1;

pub(super) const CURRENT: usize = 2;

pub(super) const IDLE: usize = 3;

pub(super) const TAG_BITS: u32 = 2;

pub(super) const TAG_MASK: usize = (1 << TAG_BITS) - 1;

/// The most free segments a class's cache holds (see [`ClassState::cache`]). When a free
/// finds it full, the older half goes back to the chunks' own lists.
pub(super) const CACHE_CAP: u32 = 64;

/// The newest free segments of a class's cache held in the magazine itself (see
/// [`ClassState::hot`]); a power of two.
pub(super) const HOT: usize = 8;

/// A class's hot stack: (chunk, segment index) pairs, the first `hot_len` in use.
type HotStack = [(ChunkPtr, u32); HOT];

/// One size class's chunks in one magazine.
pub(super) struct ClassState {
    /// The class's segment size (kept here so the fast path does not recompute it).
    pub(super) seg_size: usize,
    pub(super) current: Option<ChunkPtr>,
    /// Owned chunks that are not current. `lists[FULL]`: no local free space when they
    /// stopped being current (remote frees may have arrived since). `lists[SPACIOUS]`: a
    /// region was freed into them locally since, so they have space. Each chunk's slot word
    /// says which list holds it and where.
    pub(super) lists: [Vec<ChunkPtr>; 2],
    /// Refills since the last full reclaim.
    pub(super) refills: u32,
    /// How far this class's chunk size has grown (a doubling each): the most the class has
    /// needed lately, so the size does not swing with each burst and the chunks it gives
    /// back to the central queue fit its next request. It decays one step per idle sweep in
    /// which the class took no new chunk.
    pub(super) grade: u32,
    /// Chunks taken from the allocator since the last idle sweep.
    pub(super) acquired: u32,
    /// Regions carved from this class, ever (one plain increment per allocation): the idle
    /// sweep compares it with what it saw last, so a class in use is never thought idle, even
    /// when its current chunk is empty at every sweep (an allocate/free loop).
    pub(super) allocs: u64,
    /// `allocs` at the last idle sweep.
    pub(super) allocs_seen: u64,
    /// Free segments of this class's listed chunks, newest first: the owner's frees into a
    /// chunk that is not current push here, and allocations pop from here before they carve
    /// from the current chunk. So a free anywhere in the class is reused by the next
    /// allocation in O(1) (tcache's idea), instead of making its chunk spacious and the
    /// allocation refill from it. Cached segments count as free in their chunk's `live`
    /// (which stays exact): a chunk whose regions are all free is retired as before, its
    /// cached segments taken out of the cache first ([`ClassState::purge`]). So the cache
    /// keeps no chunk alive on its own, and the per-thread idle budget, which counts empty
    /// chunks, covers it.
    ///
    /// The newest of them are not here but in `hot`; this list holds the older ones, each
    /// node written over its segment's first bytes ([`CachedSeg`]).
    pub(super) cache: Option<NonNull<CachedSeg>>,
    /// Segments in `cache` (the list).
    cached: u32,
    /// The most the cache (`hot` and the list) may hold: [`CACHE_CAP`], or 0 when released
    /// regions are scrubbed (poison or zeroing: a node would stay in the released bytes).
    pub(super) cache_cap: u32,
    /// The newest cached segments (chunk, index), the newest last: the first `hot_len`
    /// entries. A release pushes here and an allocation pops from here without touching the
    /// segment's memory (as jemalloc's thread cache keeps pointers in an array): a list node
    /// written into a freed segment makes the next allocation wait for that segment's cache
    /// line before it can pop, and under random replacement the line is cold. When full, its
    /// older half is spilled to the list. Made on the class's first cached release (boxed,
    /// so a magazine's classes that never cache cost 8 bytes each, not 128).
    pub(super) hot: Option<Box<HotStack>>,
    pub(super) hot_len: u32,
    /// [`HOT`], or 0 when the cache is off (`cache_cap == 0`): one test on the release path.
    pub(super) hot_cap: u32,
}

impl ClassState {
    pub(super) const fn new(class: SizeClass, cache_cap: u32) -> Self {
        ClassState {
            cache: None,
            cached: 0,
            cache_cap,
            hot: None,
            hot_len: 0,
            hot_cap: if cache_cap == 0 { 0 } else { HOT as u32 },
            seg_size: class.size(),
            current: None,
            lists: [Vec::new(), Vec::new()],
            refills: 0,
            grade: 0,
            acquired: 0,
            allocs: 0,
            allocs_seen: 0,
        }
    }

    pub(super) fn push(&mut self, c: ChunkPtr, list: usize) {
        let l = &mut self.lists[list];
        // SAFETY: the magazine's thread (or its claimer) owns every chunk of its classes.
        unsafe { c.set_slot(l.len() << TAG_BITS | list) };
        l.push(c);
    }

    /// Takes `c` out of the list that holds it.
    pub(super) fn remove(&mut self, c: ChunkPtr) -> ChunkPtr {
        // SAFETY: owned by this magazine.
        let slot = unsafe { c.slot() };
        let (list, i) = (slot & TAG_MASK, slot >> TAG_BITS);
        let l = &mut self.lists[list];
        debug_assert_eq!(l.get(i), Some(&c));
        let c = l.swap_remove(i);
        if let Some(&moved) = l.get(i) {
            // SAFETY: owned by this magazine.
            unsafe { moved.set_slot(i << TAG_BITS | list) };
        }
        c
    }

    pub(super) fn set_current(&mut self, c: ChunkPtr) {
        self.current = Some(c);
        // SAFETY: owned by this magazine.
        unsafe { c.set_slot(CURRENT) };
    }

    /// Owned chunks besides the current one.
    pub(super) fn listed(&self) -> usize {
        self.lists[FULL].len() + self.lists[SPACIOUS].len()
    }

    /// Takes every cached segment of chunk `c` out of the cache (it is about to leave the
    /// magazine). The segments need no other home: `c` has no live region, or is abandoned
    /// with its live regions only.
    pub(super) fn purge(&mut self, c: ChunkPtr) {
        self.purge_all(std::slice::from_ref(&c));
    }

    /// [`ClassState::purge`] for every chunk of `leaving` (sorted by address), in one walk of
    /// the cache: a reclaim that retires many chunks of a class at once (remote frees emptied
    /// them) reads each cached segment once, not once per chunk. Each node of the list is a
    /// free segment in some chunk's memory, so a walk is up to 56 cache misses; a walk per
    /// chunk made an idle sweep that took 200 chunks last 0.5-1 ms.
    pub(super) fn purge_all(&mut self, leaving: &[ChunkPtr]) {
        debug_assert!(leaving.windows(2).all(|w| w[0] < w[1]), "sorted, distinct");
        if leaving.is_empty() || self.cached == 0 && self.hot_len == 0 {
            return;
        }
        let leaves = |c: &ChunkPtr| leaving.binary_search(c).is_ok();
        if let Some(hot) = self.hot.as_deref_mut() {
            let mut kept = 0;
            for i in 0..self.hot_len as usize {
                if !leaves(&hot[i].0) {
                    hot[kept] = hot[i];
                    kept += 1;
                }
            }
            self.hot_len = kept as u32;
        }
        let mut prev: Option<NonNull<CachedSeg>> = None;
        let mut node = self.cache;
        while let Some(n) = node {
            // SAFETY: a node of this magazine's cache.
            let (chunk, _, next) = unsafe { CachedSeg::read(n) };
            if leaves(&chunk) {
                match prev {
                    // SAFETY: as above.
                    Some(p) => unsafe { CachedSeg::set_next(p, next) },
                    None => self.cache = next,
                }
                self.cached -= 1;
            } else {
                prev = node;
            }
            node = next;
        }
    }

    /// The hot stack is empty and the list holds segments: up to half a stack of them (the
    /// newest) move back into it. The fast path looks only at the hot stack; the slow path
    /// ([`Body::refill`]) calls this before it looks for a chunk.
    pub(super) fn refill_hot(&mut self) {
        debug_assert_eq!(self.hot_len, 0);
        let n = (self.cached as usize).min(HOT / 2);
        let hot = self.hot.get_or_insert_with(new_hot_stack);
        for i in (0..n).rev() {
            let node = self.cache.expect("the list holds `cached` nodes");
            // SAFETY: a node of this magazine's cache, unlinked here.
            let (c, idx, next) = unsafe { CachedSeg::read(node) };
            hot[i] = (c, idx);
            self.cache = next;
        }
        self.cached -= n as u32;
        self.hot_len = n as u32;
    }

    /// Puts every cached segment back on its chunk's own free list, as a local release would
    /// have, and empties the cache (its chunks are being parked, with their free space).
    pub(super) fn uncache_all(&mut self) {
        if let Some(hot) = self.hot.as_deref() {
            for &(c, idx) in &hot[..self.hot_len as usize] {
                // SAFETY: owned by this magazine; the segment was cached, so it is free.
                unsafe { c.uncache(idx) };
            }
        }
        self.hot_len = 0;
        let mut node = self.cache.take();
        while let Some(n) = node {
            // SAFETY: a node of this magazine's cache, taken out of it here.
            let (c, idx, next) = unsafe { CachedSeg::read(n) };
            // SAFETY: owned by this magazine; the segment was cached, so it is free.
            unsafe { c.uncache(idx) };
            node = next;
        }
        self.cached = 0;
    }

    /// Forgets the whole cache (its chunks are all being given up).
    pub(super) fn clear_cache(&mut self) {
        self.hot_len = 0;
        self.cache = None;
        self.cached = 0;
    }

    pub(super) fn owned(&self) -> impl Iterator<Item = ChunkPtr> + '_ {
        self.current
            .into_iter()
            .chain(self.lists.iter().flatten().copied())
    }
}

/// An empty hot stack (see [`ClassState::hot`]).
pub(super) fn new_hot_stack() -> Box<HotStack> {
    Box::new([(NO_CHUNK, 0); HOT])
}

impl ClassState {
    /// Whether the cache must give its older half back ([`ClassState::flush_older_half`])
    /// before the hot stack spills: it would exceed its cap otherwise.
    pub(super) fn spill_needs_flush(&self) -> bool {
        self.cached as usize + HOT + HOT / 2 > self.cache_cap as usize
    }

    /// The hot stack is full: its older half becomes nodes of the cache's list (the caller
    /// flushed first if [`ClassState::spill_needs_flush`]).
    pub(super) fn spill_hot(&mut self) {
        const HALF: usize = HOT / 2;
        // The flush can retire the current chunk (`made_spacious`), whose `purge` would
        // compact the hot stack; that chunk holds no hot entry here (a chunk holds hot
        // entries while current only after a flush or a refill made it current, and those
        // entries leave the stack at the next spill, which comes before the list can fill up
        // to the next flush), so the stack is still full. Checked, not assumed:
        debug_assert_eq!(
            self.hot_len as usize, HOT,
            "the flush changed the hot stack"
        );
        if self.hot_len as usize != HOT {
            return;
        }
        let hot = self.hot.as_deref_mut().expect("a full hot stack exists");
        for &(c, idx) in &hot[..HALF] {
            // SAFETY: a cached segment of an owned chunk (which does not scrub: the cache is
            // off for scrubbing chunks); `self.cache` is the list's head.
            self.cache = Some(unsafe { CachedSeg::write(c, idx, self.cache) });
        }
        self.cached += HALF as u32;
        hot.copy_within(HALF.., 0);
        self.hot_len = (HOT - HALF) as u32;
    }

    /// The cache is full: its older half goes back to the chunks' own lists. Answers the
    /// chunks among them that were on the full list, each once (the caller moves them:
    /// `Body::flush_cache`).
    pub(super) fn flush_older_half(&mut self) -> Vec<ChunkPtr> {
        let keep = self.cached / 2;
        let mut node = self.cache;
        let mut last_kept = None;
        for _ in 0..keep {
            let n = node.expect("the cache holds `cached` nodes");
            last_kept = Some(n);
            // SAFETY: a node of this magazine's cache.
            node = unsafe { CachedSeg::read(n) }.2;
        }
        match last_kept {
            // SAFETY: as above.
            Some(n) => unsafe { CachedSeg::set_next(n, None) },
            None => self.cache = None,
        }
        self.cached = keep;
        // Every segment goes home (none of these chunks can leave the magazine meanwhile);
        // the chunks that were full are answered, for the caller to move each once.
        let mut were_full: Vec<ChunkPtr> = Vec::new();
        while let Some(n) = node {
            // SAFETY: a node of the part just cut off the cache.
            let (c, idx, next) = unsafe { CachedSeg::read(n) };
            // SAFETY: owned by this magazine; the segment was cached, so it is free.
            unsafe { c.uncache(idx) };
            // SAFETY: owned by this magazine.
            if unsafe { c.slot() } & TAG_MASK == FULL && !were_full.contains(&c) {
                were_full.push(c);
            }
            node = next;
        }
        were_full
    }
}
