//! A class's chunk lists and their policy: [`Body`], the magazine's chunks and bookkeeping
//! apart from its link to the allocator. Refill (the allocation slow path), retirement, the
//! per-thread idle budget, adoption of parked chunks, the owner's release into a listed chunk,
//! and `take_idle` (what a trim, the sweep or the owner's `trim_thread` takes).
//!
//! Owns: `Body` and the list tags of an owned chunk's slot word. Runs only inside the
//! magazine's gate (the owner) or under a claim (a reclaimer). May import: `chunk`,
//! `size_class`, `config`, `stats`, `error`, `os` (the clock), `retention` (the idle budget and
//! when an empty chunk has been idle long enough: the policy is decided there), its sibling
//! `classes` (a class's state, list tags and cache), `gate` (`Reclaim`), and the parent's
//! `Link`.
//!
//! # The chunk lists
//! Each class has one *current* chunk that allocations carve from, and two lists of the other
//! owned chunks: *full* ones (no free space when they stopped being current, though remote
//! frees may have arrived since) and *spacious* ones (a region was freed into them locally
//! since). A local free moves a chunk from the full list to the spacious list, in O(1), with
//! no work at all while it stays spacious; if that chunk is older than the current one it
//! becomes current instead (the younger one is listed, or retired if empty). When the current
//! chunk runs out, the oldest of the last few spacious chunks becomes current; if there is
//! none (and every 16th time anyway), the full chunks' remote frees are drained first, which
//! makes some spacious and retires the fully free. Only then is a new chunk taken.
//! Allocations therefore lean toward older chunks: long-lived survivors collect there,
//! younger chunks empty out and are retired, and one small survivor does not pin a chunk for
//! long. No step scans a list on every refill.
//!
//! # Retirement and the per-thread budget
//! A chunk that is not current and has no live region is retired at once: handed to the
//! allocator, which caches it in the central queue if the byte budget allows and otherwise
//! gives it to the system. A current chunk that empties stays, so an allocate/free loop
//! never touches the central queue, but only within the magazine's budget of idle bytes
//! (`max_thread_idle_bytes`, summed over every class): the first time it empties it is
//! tagged *idle* and counted; past the budget the oldest idle chunks are retired (the one
//! that just emptied last). The count is kept lazily: a tagged chunk that is in use again
//! keeps its tag (the fast path writes nothing for it) and is found and untagged the next
//! time the budget is checked. So a thread keeps at most `max_thread_idle_bytes` of empty
//! chunks whatever the number of classes it touched.

use std::sync::Arc;

use crate::chunk::{ChunkPtr, Home, RemoteFree};
use crate::config::MIN_CHUNK_SIZE_FLOOR;
use crate::error::AllocError;
use crate::os;
use crate::retention;
use crate::size_class::{next_pow2, SizeClass};
use crate::stats::Shard;

use super::classes::{new_hot_stack, ClassState, CURRENT, FULL, HOT, IDLE, SPACIOUS, TAG_MASK};
use super::gate::Reclaim;
use super::{Carved, ChunkSource, FastCarved, Link, Magazine};

/// How many of the most recently listed spacious chunks the slow path compares to pick the
/// oldest (a bounded stand-in for "the oldest chunk with space").
const SPACIOUS_CANDIDATES: usize = 4;

/// Every this many refills of a class (or as many as it lists chunks, if more, so the check
/// costs O(1) per refill), its listed chunks are checked for remote frees even when a
/// spacious chunk is at hand, so chunks emptied by other threads are retired.
const RECLAIM_PERIOD: u32 = 16;

/// Every this many allocations of a class the fast path sends one to the slow path (see
/// [`Body::alloc_fast`]): often enough that light activity reaches the allocator's decay tick
/// and idle sweep within about a second (at one allocation a millisecond), rarely enough
/// that the slow path's clock read costs the fast path well under a nanosecond an
/// allocation. A power of two.
pub(super) const TICK: u64 = 1024;

/// The growth grade a class holding `owned` chunks besides its current one asks for: 2x
/// from 4 chunks, 4x from 12, 8x from 28.
fn grow(owned: usize) -> u32 {
    match owned {
        0..=3 => 0,
        4..=11 => 1,
        12..=27 => 2,
        _ => 3,
    }
}

/// The magazine's chunks and bookkeeping (apart from `Link`, so that an operation can use
/// both without cloning the handles).
pub(super) struct Body {
    /// The owning thread's token.
    pub(super) token: usize,
    /// This magazine's own address (the chunks' owner context).
    pub(super) this: *const Magazine,
    pub(super) shard: Arc<Shard>,
    /// Empty once the magazine is dead, so the fast path finds nothing.
    pub(super) classes: Box<[ClassState]>,
    pub(super) min_chunk: usize,
    pub(super) max_chunk: usize,
    /// The sequence number the next adopted chunk gets (lower is older).
    pub(super) next_seq: u64,
    /// Current chunks tagged `IDLE`, oldest first, and their bytes.
    pub(super) idle: Vec<ChunkPtr>,
    pub(super) idle_bytes: usize,
    pub(super) idle_budget: usize,
    /// The class a stepped idle sweep looks at next ([`Body::take_idle_within`]).
    pub(super) sweep_from: usize,
    /// Set when a refill took a chunk from the allocator, or the fast path's tick was passed
    /// (cleared by `Magazine::alloc`): the activity after which the allocator looks whether
    /// its decay tick or idle sweep is due.
    pub(super) went_to_allocator: bool,
}

/// What is left to do after [`Body::free`].
pub(super) enum Freed {
    Done,
    /// The chunk is not current, or scrubs released regions: the region is not released yet
    /// ([`Body::free_listed`] does it).
    Slow,
    /// The current chunk just emptied.
    EmptiedCurrent,
}

impl Body {
    /// The slow path's half of the fast path's tick: if the class's next allocation is the
    /// one the fast path sent here, counts it as passed (so the fast path serves the next
    /// ones) and has the caller look whether the allocator's maintenance is due.
    pub(super) fn pass_tick(&mut self, class: SizeClass) {
        if let Some(cs) = self.classes.get_mut(class.index()) {
            if cs.allocs & (TICK - 1) == TICK - 1 {
                cs.allocs = cs.allocs.wrapping_add(1);
                self.went_to_allocator = true;
            }
        }
    }

    /// The fast path: carves one region of `class` from the class's current chunk, with plain
    /// loads and stores only. `None` when the class is not pooled here (its index is past the
    /// pooled classes, or the magazine is dead), has no current chunk, or the current chunk
    /// is full.
    ///
    /// Also `None` once every [`TICK`] allocations of the class: that one takes the slow
    /// path, which passes the tick ([`Body::pass_tick`]) and has the allocator run its due
    /// maintenance, so the decay and the idle sweep happen on time under fast-path-only
    /// activity.
    #[inline(always)]
    pub(super) fn alloc_fast(&mut self, class: SizeClass) -> Option<FastCarved> {
        let cs = self.classes.get_mut(class.index())?;
        if cs.allocs & (TICK - 1) == TICK - 1 {
            return None;
        }
        // The cache first: a chunk's free space that a release elsewhere in the class made is
        // reused before the current chunk is carved, and without looking at the current
        // chunk's remote stack (a line other threads write).
        if let (n @ 1.., Some(hot)) = (cs.hot_len, cs.hot.as_deref()) {
            cs.hot_len = n - 1;
            // The mask keeps the index in bounds without a check (`hot_len <= HOT`).
            let (c, idx) = hot[(n - 1) as usize & (HOT - 1)];
            // SAFETY: a segment of this magazine's cache, taken out of it here; its chunk is
            // owned by this magazine (the cache keeps only owned chunks' segments), so its
            // format is stable.
            let ptr = unsafe {
                c.take_cached();
                c.segment(idx)
            };
            cs.allocs = cs.allocs.wrapping_add(1);
            let seg = cs.seg_size;
            self.shard.add_owned(seg as i64, 1);
            return Some((c, idx, seg, ptr));
        }
        let c = cs.current?;
        // SAFETY: this magazine owns its current chunks, and we are inside its gate.
        let (idx, ptr) = unsafe { c.carve_local() }?;
        cs.allocs = cs.allocs.wrapping_add(1);
        let seg = cs.seg_size;
        self.shard.add_owned(seg as i64, 1);
        Some((c, idx, seg, ptr))
    }

    pub(super) fn refill(&mut self, class: SizeClass, link: &Link) -> Result<Carved, AllocError> {
        let Link { src, home } = link;
        let idx = class.index();
        // 0. Segments the class's cache spilled to its list (the fast path takes only the hot
        //    stack, which is empty now).
        let cs = &mut self.classes[idx];
        if cs.hot_len == 0 && cs.cache.is_some() {
            cs.refill_hot();
            let (chunk, idx, cap, _) = self
                .alloc_fast(class)
                .expect("the hot stack was just refilled");
            return Ok((chunk, idx, cap));
        }
        // 1. The current chunk, once remote frees are drained, or if it has space the fast
        //    path left: a poisoning chunk's free list, whose segments are checked on this
        //    path ([`ChunkPtr::carve_local`]).
        if let Some(c) = self.classes[idx].current {
            // SAFETY: owned by this magazine.
            if unsafe { c.drain_remote() > 0 || c.has_local_space() } {
                return Ok(self.carve_from(c, class));
            }
            let c = self.take_current(idx).expect("checked above");
            self.classes[idx].push(c, FULL);
        }
        // 2. A chunk with space: first one a local free made spacious (the oldest of the
        //    last few, so allocations pack into older chunks and younger ones empty out);
        //    failing that, or now and then, full chunks that remote frees gave space to.
        let cs = &mut self.classes[idx];
        cs.refills += 1;
        if cs.lists[SPACIOUS].is_empty() || cs.refills >= RECLAIM_PERIOD.max(cs.listed() as u32) {
            cs.refills = 0;
            self.reclaim(idx, home);
        }
        let cs = &mut self.classes[idx];
        let oldest = cs.lists[SPACIOUS]
            .iter()
            .rev()
            .take(SPACIOUS_CANDIDATES)
            // SAFETY: owned by this magazine.
            .min_by_key(|c| unsafe { c.seq() })
            .copied();
        if let Some(c) = oldest {
            let c = cs.remove(c);
            cs.set_current(c);
            return Ok(self.carve_from(c, class));
        }
        // 3. A chunk from the allocator (central queue or system).
        let seg = class.size();
        let grade = grow(cs.listed()).max(cs.grade);
        cs.grade = grade;
        let want = self.chunk_size_for(seg, grade);
        // Under memory pressure the size halves down to one segment's power of two (below
        // `min_chunk_size` if need be, down to the 4 KiB floor).
        let least = next_pow2(seg)
            .unwrap_or(usize::MAX)
            .max(MIN_CHUNK_SIZE_FLOOR)
            .min(want);
        // Before a chunk is made, the full chunks of every class give up their remote frees:
        // the fully free ones go to the central queue, where this request may find one (and
        // this class may find one of its own with space). This keeps memory that other
        // threads freed from waiting in a class that has not refilled, while a new chunk is
        // made for another. It costs a load per full chunk, only on this path.
        // A chunk of this class that an exited thread parked with live regions: adopted
        // before any other chunk is taken, since its free space is otherwise unusable.
        if let Some(c) = self.adopt_parked(class, src, home) {
            return Ok(self.carve_from(c, class));
        }
        let cached = src.take_cached(want, least);
        if cached.is_none() {
            for i in 0..self.classes.len() {
                self.reclaim(i, home);
            }
            if let Some(c) = self.classes[idx].lists[SPACIOUS].last().copied() {
                let cs = &mut self.classes[idx];
                let c = cs.remove(c);
                cs.set_current(c);
                return Ok(self.carve_from(c, class));
            }
        }
        self.went_to_allocator = true;
        let acquired = match cached {
            Some(c) => Ok((c, true)),
            None => src.acquire(home, want, least),
        };
        let (c, from_cache) = match acquired {
            Err(e @ AllocError::MemoryLimit { .. }) => {
                // This thread's own idle chunks (empty current chunks of other classes) go
                // first; the allocator reclaims everywhere if that is not enough.
                let mut idle = Vec::new();
                self.take_idle(Reclaim::All, &mut idle);
                if idle.is_empty() {
                    return Err(e);
                }
                for c in idle {
                    // SAFETY: `take_idle` hands over fully free chunks held exclusively.
                    unsafe { c.free_to_system() };
                }
                src.acquire(home, want, least)?
            }
            other => other?,
        };
        // SAFETY: `acquire` hands over a chunk held exclusively with nothing live; this
        // magazine's thread becomes its owner.
        unsafe {
            c.format(class.0, seg);
            c.adopt(
                self.token,
                self.this.cast_mut().cast(),
                self.next_seq,
                from_cache,
            );
        }
        self.next_seq += 1;
        let cs = &mut self.classes[idx];
        cs.acquired = cs.acquired.saturating_add(1);
        cs.set_current(c);
        Ok(self.carve_from(c, class))
    }

    /// Adopts parked chunks of `class` (module `parked`) until one has free space, which
    /// becomes current. One without free space is abandoned again at once: listed as full,
    /// its releases would wait on its remote stack for this magazine's next reclaim, where
    /// abandoned its last release recycles it (so parking holds nothing abandoning would
    /// not; review finding of 2026-11-29). `None` when none with space waits.
    fn adopt_parked(
        &mut self,
        class: SizeClass,
        src: &Arc<dyn ChunkSource>,
        home: &Arc<dyn Home>,
    ) -> Option<ChunkPtr> {
        let idx = class.index();
        loop {
            let c = src.adopt_parked(idx)?;
            // SAFETY: `adopt_parked` hands over a chunk held exclusively, formatted for this
            // class, with its free lists intact; this magazine's thread becomes its owner.
            let space = unsafe {
                c.adopt(self.token, self.this.cast_mut().cast(), self.next_seq, true);
                c.has_local_space()
            };
            self.next_seq += 1;
            if space {
                self.classes[idx].set_current(c);
                return Some(c);
            }
            Self::retire(home, c);
        }
    }

    fn carve_from(&mut self, c: ChunkPtr, class: SizeClass) -> Carved {
        // SAFETY: owned by this magazine, and the callers checked that it has space.
        let idx = unsafe { c.carve() }.expect("chunk chosen for its free space has none");
        let cs = &mut self.classes[class.index()];
        cs.allocs = cs.allocs.wrapping_add(1);
        let seg = cs.seg_size;
        self.shard.add_owned(seg as i64, 1);
        (c, idx, seg)
    }

    /// The chunk size for a class with `seg`-byte segments at growth `grade`: about 16
    /// segments for classes up to 1 KiB, 4 up to 16 KiB, 2 up to 256 KiB and 1 above,
    /// doubled `grade` times, within the bounds. Starting small keeps a class that holds few
    /// buffers from holding a large chunk (and the largest classes' chunks within the
    /// per-thread idle budget); growing keeps a busy class from refilling often.
    fn chunk_size_for(&self, seg: usize, grade: u32) -> usize {
        let target = if seg <= 1 << 10 {
            16
        } else if seg <= 16 << 10 {
            4
        } else if seg <= 256 << 10 {
            2
        } else {
            1
        };
        let base = next_pow2(seg.saturating_mul(target)).unwrap_or(self.max_chunk);
        base.checked_shl(grade)
            .unwrap_or(self.max_chunk)
            .clamp(self.min_chunk, self.max_chunk)
    }

    /// Gives up a chunk with nothing live that is not current (any more).
    pub(super) fn retire(home: &Arc<dyn Home>, c: ChunkPtr) {
        // SAFETY: owned by this magazine, which gives it up here and never touches it again.
        if unsafe { c.abandon() } == RemoteFree::Recycle {
            home.recycle(c);
        }
    }

    /// Takes the current chunk of class `class` out, removing its idle tag and count.
    fn take_current(&mut self, class: usize) -> Option<ChunkPtr> {
        let Body {
            classes,
            idle,
            idle_bytes,
            ..
        } = self;
        let c = classes[class].current.take()?;
        untag(idle, idle_bytes, c);
        Some(c)
    }

    /// Releases a region into an owned chunk when it is current: plain loads and stores onto
    /// the chunk's own list. Answers what is left to do: nothing; the release itself, for a
    /// chunk that is not current ([`Body::free_listed`]: the class's cache) or that scrubs
    /// released regions; or counting the current chunk against the idle budget, because it
    /// just emptied for the first time since it was counted.
    ///
    /// # Safety
    /// This magazine owns `chunk` and the caller gives up the last handle to region `idx`
    /// (and, on `Freed::Slow`, releases it with [`Body::free_listed`]).
    #[inline(always)]
    pub(super) unsafe fn free(&mut self, chunk: ChunkPtr, idx: u32) -> Freed {
        // SAFETY (whole block): owned, inside the gate; the region is the caller's.
        unsafe {
            let tag = chunk.slot() & TAG_MASK;
            if tag <= SPACIOUS {
                return self.free_to_hot(chunk, idx);
            }
            if chunk.scrubs() {
                return Freed::Slow;
            }
            let seg = chunk.seg_size();
            let live = chunk.free_local_unscrubbed(idx);
            self.shard.add_owned(-(seg as i64), -1);
            // A current chunk tagged `IDLE` is counted already.
            if tag == CURRENT && live == 0 {
                return Freed::EmptiedCurrent;
            }
            Freed::Done
        }
    }

    /// A release into a listed chunk that keeps a live region: pushed on the class's hot
    /// stack, if it has room (and the cache is on). `Freed::Slow` otherwise (a full stack, the
    /// chunk's last region, no cache): [`Body::free_listed`] does it.
    ///
    /// # Safety
    /// As for [`Body::free`], and `chunk` is listed.
    #[inline(always)]
    unsafe fn free_to_hot(&mut self, chunk: ChunkPtr, idx: u32) -> Freed {
        // SAFETY (whole block): owned, inside the gate; the region is the caller's.
        unsafe {
            let Some(cs) = self.classes.get_mut(chunk.class() as usize) else {
                return Freed::Slow;
            };
            let Some(hot) = cs.hot.as_deref_mut() else {
                return Freed::Slow;
            };
            if cs.hot_len >= cs.hot_cap || chunk.live() <= 1 {
                return Freed::Slow;
            }
            chunk.release_cached();
            hot[cs.hot_len as usize & (HOT - 1)] = (chunk, idx);
            cs.hot_len += 1;
            self.shard.add_owned(-(cs.seg_size as i64), -1);
            Freed::Done
        }
    }

    /// Releases a region of a listed chunk (tagged `FULL` or `SPACIOUS`) into its class's
    /// cache, flushing the older half of the cache first if it is full. If every region of
    /// the chunk is now free, the chunk is retired instead. Without the cache (scrubbing is
    /// on: then it also takes the releases into the current chunk, with their scrub), or when
    /// a flush made the chunk current, the region goes on the chunk's own list.
    ///
    /// # Safety
    /// As for [`Body::free`], and `chunk` is listed or scrubs.
    // Out of line: inlined, its registers would cost the release into the current chunk
    // (the allocate/free loop) a tenth more instructions.
    #[inline(never)]
    pub(super) unsafe fn free_listed(&mut self, chunk: ChunkPtr, idx: u32, link: Option<&Link>) {
        // SAFETY: owned by this magazine.
        let class = unsafe { chunk.class() } as usize;
        let Some(link) = link else {
            // No allocator any more (cannot happen for an owned chunk, which a dying
            // magazine abandons first): keep the accounting exact all the same.
            // SAFETY: as the caller guarantees.
            unsafe { self.free_local_counted(chunk, idx) };
            return;
        };
        let home = &link.home;
        let cs = &mut self.classes[class];
        if cs.cache_cap != 0 && cs.hot_len as usize == HOT {
            self.spill(class, home);
        }
        let cs = &mut self.classes[class];
        // SAFETY: owned by this magazine (read after the spill, which may move the chunk).
        let tag = unsafe { chunk.slot() } & TAG_MASK;
        if cs.cache_cap != 0 && tag <= SPACIOUS {
            // SAFETY: owned; the caller gives up the region, which the cache takes.
            let live = unsafe { chunk.release_cached() };
            self.shard.add_owned(-(cs.seg_size as i64), -1);
            if live != 0 {
                let hot = cs.hot.get_or_insert_with(new_hot_stack);
                hot[cs.hot_len as usize & (HOT - 1)] = (chunk, idx);
                cs.hot_len += 1;
            } else {
                // Every region of the listed chunk is free: it is retired (with the segment,
                // which the cache never took).
                self.after_free_slow(chunk, 0, tag, home);
            }
            return;
        }
        // SAFETY: as the caller guarantees.
        let live = unsafe { self.free_local_counted(chunk, idx) };
        if tag != IDLE && (live == 0 || tag == FULL) {
            self.after_free_slow(chunk, live, tag, home);
        }
    }

    /// Puts region `idx` on its chunk's own free list and counts the release; answers the
    /// live regions left.
    ///
    /// # Safety
    /// As for [`Body::free`].
    unsafe fn free_local_counted(&mut self, chunk: ChunkPtr, idx: u32) -> u32 {
        // SAFETY: as the caller guarantees.
        unsafe {
            let seg = chunk.seg_size();
            let live = chunk.free_local(idx);
            self.shard.add_owned(-(seg as i64), -1);
            live
        }
    }

    /// Called after the owner freed a region into `c` (see [`State::free`]). A current chunk
    /// that emptied is counted against the idle budget. A listed chunk that is now fully free
    /// is retired (its cached segments leave the cache with it). One that was on the full
    /// list is moved ([`Body::made_spacious`]). This happens once per chunk each time it
    /// fills, never per free.
    #[cold]
    #[inline(never)]
    pub(super) fn after_free_slow(
        &mut self,
        c: ChunkPtr,
        live: u32,
        tag: usize,
        home: &Arc<dyn Home>,
    ) {
        if tag == CURRENT {
            self.note_idle(c, home);
            return;
        }
        if live == 0 {
            // SAFETY: owned by this magazine.
            let class = unsafe { c.class() as usize };
            let cs = &mut self.classes[class];
            let c = cs.remove(c);
            cs.purge(c);
            Self::retire(home, c);
            return;
        }
        self.made_spacious(c, home);
    }

    /// A chunk on the full list got free space: it becomes current if it is older than the
    /// current chunk (which is listed, or retired if empty), and spacious otherwise.
    pub(super) fn made_spacious(&mut self, c: ChunkPtr, home: &Arc<dyn Home>) {
        // SAFETY: owned by this magazine.
        let class = unsafe { c.class() as usize };
        // One borrow of the class (and of the idle list beside it), not an index per step.
        let Body {
            classes,
            idle,
            idle_bytes,
            ..
        } = self;
        let cs = &mut classes[class];
        let c = cs.remove(c);
        match cs.current {
            // SAFETY: owned by this magazine.
            Some(cur) if unsafe { c.seq() < cur.seq() } => {
                // The older chunk takes over, so allocations fill its holes before the
                // younger one's (this is what packs survivors together).
                untag(idle, idle_bytes, cur);
                cs.set_current(c);
                // SAFETY: owned by this magazine.
                let (cur_live, cur_space) = unsafe { (cur.live(), cur.has_local_space()) };
                if cur_live == 0 {
                    cs.purge(cur);
                    Self::retire(home, cur);
                } else {
                    cs.push(cur, if cur_space { SPACIOUS } else { FULL });
                }
            }
            _ => cs.push(c, SPACIOUS),
        }
    }

    /// The current chunk `c` just emptied: tag it idle and count it; past the budget, give
    /// back idle chunks, oldest first and `c` last.
    fn note_idle(&mut self, c: ChunkPtr, home: &Arc<dyn Home>) {
        // Idle from now: stamped, and the class's allocations counted from here, so the first
        // idle sweep `idle_release` later takes it if nothing used it meanwhile (not a first
        // sweep that stamps and a later one that takes). Once per idle episode (the tag stays
        // while the chunk is reused), so the clock is read rarely.
        // SAFETY: owned by this magazine.
        let class = unsafe {
            c.set_slot(IDLE);
            c.set_idle_since(os::now_ns());
            c.class() as usize
        };
        let cs = &mut self.classes[class];
        cs.allocs_seen = cs.allocs;
        self.idle.push(c);
        self.idle_bytes += c.bytes();
        if retention::within_idle_budget(self.idle_bytes, self.idle_budget) {
            return;
        }
        // Untag the chunks that are in use again (the count is lazy).
        let mut i = 0;
        while i < self.idle.len() {
            let x = self.idle[i];
            // SAFETY: owned by this magazine.
            let live = unsafe {
                x.drain_remote();
                x.live()
            };
            if live > 0 {
                // SAFETY: owned by this magazine.
                unsafe { x.set_slot(CURRENT) };
                self.idle.remove(i);
                self.idle_bytes -= x.bytes();
            } else {
                i += 1;
            }
        }
        while !retention::within_idle_budget(self.idle_bytes, self.idle_budget)
            && !self.idle.is_empty()
        {
            let victim = self.idle.iter().copied().find(|&x| x != c).unwrap_or(c);
            // SAFETY: owned by this magazine.
            let class = unsafe { victim.class() as usize };
            let taken = self.take_current(class);
            debug_assert_eq!(taken, Some(victim));
            let cs = &mut self.classes[class];
            cs.purge(victim);
            // The class's chunks were sized for a burst (its grade) that is over: a chunk of
            // that size cannot stay idle within the budget, so the next refill would take one
            // back from the central queue only for it to come straight back here when its
            // buffer does (after B4's burst, B6's allocate/grow/release loop sent eight chunks
            // through the queue per iteration and ran 1.5x slower). Its size falls back to
            // what the class holds now, as a full reclaim sets it.
            cs.grade = grow(cs.listed());
            Self::retire(home, victim);
        }
    }

    /// Drains the remote frees waiting in the class's listed chunks: those now fully free are
    /// retired (chunks emptied by other threads are given back), full ones with space become
    /// spacious.
    fn reclaim(&mut self, class: usize, home: &Arc<dyn Home>) {
        let cs = &mut self.classes[class];
        // Allocates only if a chunk emptied.
        let mut emptied = Vec::new();
        for list in [FULL, SPACIOUS] {
            let mut i = cs.lists[list].len();
            while i > 0 {
                i -= 1;
                let p = cs.lists[list][i];
                if !p.has_remote() {
                    continue;
                }
                // SAFETY: owned by this magazine.
                let live = unsafe {
                    p.drain_remote();
                    p.live()
                };
                if live == 0 {
                    emptied.push(cs.remove(p));
                } else if list == FULL {
                    let p = cs.remove(p);
                    cs.push(p, SPACIOUS);
                }
            }
        }
        // The emptied chunks leave the class's cache in one walk, then go (still owned until
        // they are retired, so nothing frees into them meanwhile: they have no live region).
        if !emptied.is_empty() {
            emptied.sort_unstable();
            cs.purge_all(&emptied);
            for p in emptied {
                Self::retire(home, p);
            }
        }
    }

    /// Takes the chunks of this magazine that hold no live region, as `how` says, out of it,
    /// abandoned and held exclusively by the caller (into `out`), and lets chunk sizes decay.
    /// Run by the owner, or by a reclaimer holding the claim.
    pub(super) fn take_idle(&mut self, how: Reclaim, out: &mut Vec<ChunkPtr>) {
        for class in 0..self.classes.len() {
            self.take_idle_class(class, how, out);
        }
    }

    /// [`Body::take_idle`] within `budget` (one unit a chunk a class holds, a class with none
    /// costing nothing;
    /// spent from the caller's count, shared by every magazine of one sweep step), from the
    /// class where the last step stopped: answers `true` once it has looked at the last class
    /// (the next step starts again at the first), `false` if the budget ran out first (the
    /// next step goes on from here). A class is looked at whole, so one holding more chunks
    /// than the budget is still looked at in one step.
    pub(super) fn take_idle_within(
        &mut self,
        how: Reclaim,
        budget: &mut usize,
        out: &mut Vec<ChunkPtr>,
    ) -> bool {
        let mut class = self.sweep_from.min(self.classes.len());
        while class < self.classes.len() {
            if *budget == 0 {
                self.sweep_from = class;
                return false;
            }
            let cs = &self.classes[class];
            let cost = cs.listed() + usize::from(cs.current.is_some());
            *budget = budget.saturating_sub(cost);
            self.take_idle_class(class, how, out);
            class += 1;
        }
        self.sweep_from = 0;
        true
    }

    /// [`Body::take_idle`] for one class.
    fn take_idle_class(&mut self, class: usize, how: Reclaim, out: &mut Vec<ChunkPtr>) {
        {
            // Allocations of this class since the last sweep: if any, its current chunk is in
            // use even if it is empty now; its idle time starts again.
            let cs = &mut self.classes[class];
            let used = cs.allocs != cs.allocs_seen;
            if let Reclaim::Expired { .. } = how {
                cs.allocs_seen = cs.allocs;
            }
            if let Some(c) = cs.current {
                // SAFETY (whole block): owned by this magazine (we are its owner or claimer).
                let take = unsafe {
                    c.drain_remote();
                    if c.live() != 0 {
                        c.set_idle_since(0);
                        false
                    } else {
                        match how {
                            Reclaim::All => true,
                            Reclaim::Expired { now, idle_ns } => match c.idle_since() {
                                since if since == 0 || used => {
                                    c.set_idle_since(now);
                                    false
                                }
                                since => retention::expired(since, now, idle_ns),
                            },
                        }
                    }
                };
                if take {
                    let c = self.take_current(class).expect("checked above");
                    self.classes[class].purge(c);
                    // SAFETY: owned, nothing live: abandoning hands it over at once.
                    if unsafe { c.abandon() } == RemoteFree::Recycle {
                        out.push(c);
                    }
                }
            }
            let cs = &mut self.classes[class];
            let mut emptied = Vec::new();
            for list in [FULL, SPACIOUS] {
                let mut i = cs.lists[list].len();
                while i > 0 {
                    i -= 1;
                    let p = cs.lists[list][i];
                    // SAFETY: owned by this magazine.
                    if unsafe {
                        p.drain_remote();
                        p.live()
                    } == 0
                    {
                        emptied.push(cs.remove(p));
                    }
                }
            }
            // Out of the cache in one walk (see `reclaim`), then abandoned: a chunk must
            // leave the cache before it is handed over.
            if !emptied.is_empty() {
                emptied.sort_unstable();
                cs.purge_all(&emptied);
                for p in emptied {
                    // SAFETY: owned by this magazine, nothing live.
                    if unsafe { p.abandon() } == RemoteFree::Recycle {
                        out.push(p);
                    }
                }
            }
            match how {
                Reclaim::All => cs.grade = grow(cs.listed()),
                Reclaim::Expired { .. } => {
                    if cs.acquired == 0 {
                        cs.grade = cs.grade.saturating_sub(1).max(grow(cs.listed()));
                    }
                    cs.acquired = 0;
                }
            }
        }
    }

    /// Rolls back an initialisation: takes every chunk adopted since `mark` that now has
    /// nothing live out of the magazine, abandoned and held exclusively by the caller, with
    /// whether it came from the central queue.
    ///
    /// It looks only at the chunks the magazine holds now, so a chunk that left it meanwhile
    /// (trimmed, retired, freed under the memory limit) is not touched: no pointer to a chunk
    /// is kept across the initialisation.
    pub(super) fn take_back_since(&mut self, mark: u64) -> Vec<(ChunkPtr, bool)> {
        let mut out = Vec::new();
        for class in 0..self.classes.len() {
            let young: Vec<ChunkPtr> = self.classes[class]
                .owned()
                // SAFETY: owned by this magazine.
                .filter(|c| unsafe { c.seq() } >= mark)
                .collect();
            for c in young {
                // SAFETY: owned by this magazine.
                let (live, from_cache) = unsafe {
                    c.drain_remote();
                    (c.live(), c.came_from_cache())
                };
                if live != 0 {
                    continue;
                }
                if self.classes[class].current == Some(c) {
                    self.take_current(class);
                } else {
                    self.classes[class].remove(c);
                }
                self.classes[class].purge(c);
                // SAFETY: owned, nothing live: abandoning hands it over at once.
                if unsafe { c.abandon() } == RemoteFree::Recycle {
                    out.push((c, from_cache));
                }
            }
        }
        out
    }
}

/// A current chunk `c` stops being current: if it was counted as idle, it no longer is.
#[inline]
fn untag(idle: &mut Vec<ChunkPtr>, idle_bytes: &mut usize, c: ChunkPtr) {
    // SAFETY: owned by this magazine (its owner or claimer calls).
    if unsafe { c.slot() } & TAG_MASK == IDLE {
        let i = idle
            .iter()
            .position(|&x| x == c)
            .expect("an idle-tagged chunk is in the idle list");
        idle.remove(i);
        *idle_bytes -= c.bytes();
    }
}

impl Body {
    /// The class's hot stack is full: its older half becomes nodes of the cache's list (whose
    /// own older half goes back to the chunks first, if the cache would exceed its cap).
    #[cold]
    #[inline(never)]
    pub(super) fn spill(&mut self, class: usize, home: &Arc<dyn Home>) {
        if self.classes[class].spill_needs_flush() {
            self.flush_cache(class, home);
        }
        self.classes[class].spill_hot();
    }

    /// The class's cache is full: its older half goes back to the chunks' own lists, and
    /// chunks on the full list that got space become spacious (see
    /// [`Body::made_spacious`]).
    #[cold]
    #[inline(never)]
    fn flush_cache(&mut self, class: usize, home: &Arc<dyn Home>) {
        // First every segment goes home, then the chunks that were full are moved, each
        // once: moving one may retire the current chunk, which is then no longer touched.
        for c in self.classes[class].flush_older_half() {
            // SAFETY: owned by this magazine (the moves below retire only a current chunk,
            // and these were listed).
            if unsafe { c.slot() } & TAG_MASK == FULL {
                self.made_spacious(c, home);
            }
        }
    }
}
