//! The parked set: chunks whose owning thread exited while they still held live buffers,
//! waiting for another thread of the allocator to adopt them.
//!
//! Owns: [`Parked`]. May import: `chunk`, `sync`. Knows nothing of magazines: the allocator
//! calls [`Parked::park`] from a magazine's hand-back at thread exit, [`Parked::adopt`] from a
//! magazine's refill, and [`Parked::emptied`] from the release that frees a parked chunk's
//! last live region.
//!
//! # Why
//! A thread that exits used to abandon such a chunk: its free space became unusable until its
//! last buffer came back, and the thread that took over the work (a thread pool replacing a
//! worker, the next connection's thread; the `larson` benchmark) started from fresh chunks,
//! releasing the dead thread's buffers with remote frees. Parking keeps the free space
//! usable: the adopter gets the chunk warm, and its releases become owner releases. mimalloc
//! does the same with the pages of abandoned segments.
//!
//! # Protocol (see `chunk` for the word, and DESIGN.md "Parked chunks" for the argument)
//! * Parking (the exiting owner), under the lock: [`ChunkPtr::park`] puts the live count
//!   into the chunk's `remote` word, then the chunk enters the set.
//! * A release into a parked chunk pushes its segment and counts down in one CAS. The one
//!   that reaches zero holds the chunk from that moment: no adopter can take it any more
//!   ([`ChunkPtr::unpark`] fails on a zero count, which never moves again). It removes the
//!   chunk from the set under the lock, if an adopter has not already dropped it from
//!   there, and recycles it. Until it recycles the chunk, the chunk cannot be parked again,
//!   so the entry it removes is this parking's.
//! * Adoption (a magazine's refill): pops a chunk and [`ChunkPtr::unpark`]s it under one
//!   hold of the lock. A chunk whose count reached zero meanwhile is simply dropped from the
//!   set (its last releaser, waiting for the lock in [`Parked::emptied`], then recycles it)
//!   and the next one is tried. Unparking after letting go of the lock would race that
//!   recycle: the chunk could be freed, or recycled and parked again, before the adopter's
//!   CAS (found by review, 2026-11-29, and reproduced under AddressSanitizer).
//!
//! So parking holds no memory that abandoning would not: a chunk nobody adopts comes back
//! by the release that would have recycled the abandoned chunk. The set's size is bounded
//! by `max_parked_chunks`; a chunk that would exceed it is abandoned as before.

use crate::chunk::ChunkPtr;
use crate::sync::{AtomicUsize, Mutex, Ordering::Relaxed};

/// The chunks of exited threads waiting for adoption, by size class.
pub(crate) struct Parked {
    /// Per size class, the parked chunks, most recently parked last.
    lists: Mutex<Vec<Vec<ChunkPtr>>>,
    /// How many chunks the lists hold (read without the lock by `Stats`).
    len: AtomicUsize,
    /// The most the lists may hold.
    cap: usize,
}

impl std::fmt::Debug for Parked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parked")
            .field("len", &self.len())
            .field("cap", &self.cap)
            .finish_non_exhaustive()
    }
}

impl Parked {
    /// An empty set for `classes` size classes holding at most `cap` chunks.
    pub(crate) fn new(classes: usize, cap: usize) -> Parked {
        Parked {
            lists: Mutex::new((0..classes).map(|_| Vec::new()).collect()),
            len: AtomicUsize::new(0),
            cap,
        }
    }

    /// Chunks parked now.
    pub(crate) fn len(&self) -> usize {
        self.len.load(Relaxed)
    }

    /// Parks `chunk`, of size class `class`, if the set has room and a region of it is live.
    /// `false`: nothing was done, the caller still owns the chunk and retires it.
    ///
    /// # Safety
    /// The calling thread owns `chunk`, formatted for `class`, and gives it up (its
    /// magazine is being handed back at thread exit).
    pub(crate) unsafe fn park(&self, chunk: ChunkPtr, class: usize) -> bool {
        if self.cap == 0 {
            return false;
        }
        self.lists.with(|lists| {
            if self.len.load(Relaxed) >= self.cap || class >= lists.len() {
                return false;
            }
            // SAFETY: owned by the caller, who gives it up; we hold the lock and enter the
            // chunk below, before releasing it.
            if !unsafe { chunk.park() } {
                return false;
            }
            lists[class].push(chunk);
            self.len.fetch_add(1, Relaxed);
            true
        })
    }

    /// A parked chunk of size class `class` for the calling thread to adopt, taken out of its
    /// parked state ([`ChunkPtr::unpark`]) and held exclusively; it then makes itself the
    /// owner with [`ChunkPtr::adopt`]. `None` if none of that class waits.
    pub(crate) fn adopt(&self, class: usize) -> Option<ChunkPtr> {
        if self.len.load(Relaxed) == 0 {
            return None;
        }
        self.lists.with(|lists| {
            let list = lists.get_mut(class)?;
            while let Some(c) = list.pop() {
                self.len.fetch_sub(1, Relaxed);
                // The unparking happens under the same hold of the lock as the pop: a release
                // that emptied the chunk meanwhile cannot recycle it (and so free or re-park
                // it) before it has taken the lock in `emptied`, so `c` is still this
                // parking's chunk here, whatever the outcome.
                // SAFETY: parked, and taken out of the set under the lock we hold.
                if unsafe { c.unpark() } {
                    return Some(c);
                }
                // Its last region was released meanwhile: that release recycles it once we
                // let go of the lock. We touch it no more.
            }
            None
        })
    }

    /// The release of the last live region of parked chunk `chunk` (of size class `class`)
    /// takes it out of the set, if no adopter has dropped it from there already. The caller
    /// then recycles it.
    ///
    /// # Safety
    /// The caller got [`RemoteFree::RecycleParked`](crate::chunk::RemoteFree::RecycleParked)
    /// for `chunk`, so it holds the chunk exclusively.
    pub(crate) unsafe fn emptied(&self, chunk: ChunkPtr, class: usize) {
        self.lists.with(|lists| {
            if let Some(list) = lists.get_mut(class) {
                if let Some(i) = list.iter().position(|&c| c == chunk) {
                    list.swap_remove(i);
                    self.len.fetch_sub(1, Relaxed);
                }
            }
        });
    }
}
