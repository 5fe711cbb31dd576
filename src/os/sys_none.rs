//! No system calls: the global allocator and `fence(SeqCst)` serve (`MemorySource::Os` is
//! refused by the builder).
use std::ptr::NonNull;

pub(super) fn page_size() -> usize {
    4096
}

#[cfg_attr(loom, allow(dead_code))]
pub(super) fn now_ns() -> u64 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(std::time::Instant::now);
    epoch.elapsed().as_nanos().min(u64::MAX as u128 / 2) as u64
}

pub(super) fn map(_len: usize) -> Option<NonNull<u8>> {
    unreachable!("MemorySource::Os is refused on this platform")
}

pub(super) unsafe fn unmap(_ptr: NonNull<u8>, _len: usize) {
    unreachable!("MemorySource::Os is refused on this platform")
}

pub(super) unsafe fn advise_huge(_ptr: NonNull<u8>, _len: usize) {}

pub(super) unsafe fn decommit(_ptr: NonNull<u8>, _len: usize) {}

pub(super) unsafe fn remap(_ptr: NonNull<u8>, _len: usize, _new_len: usize) -> Option<NonNull<u8>> {
    None
}

pub(super) fn register_membarrier() -> bool {
    false
}

pub(super) fn membarrier() {
    unreachable!("no membarrier registered")
}
