//! The system calls, Linux.
use std::ptr::NonNull;

const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_int = 1 << 3;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_int = 1 << 4;

pub(super) fn page_size() -> usize {
    static PAGE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *PAGE.get_or_init(|| {
        // SAFETY: `sysconf` has no preconditions.
        let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if p > 0 {
            p as usize
        } else {
            4096
        }
    })
}

/// Maps `len` bytes (a multiple of the page size) of zeroed, private memory.
pub(super) fn map(len: usize) -> Option<NonNull<u8>> {
    // SAFETY: an anonymous private mapping at an address of the kernel's choice touches
    // no existing memory.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        None
    } else {
        NonNull::new(p.cast())
    }
}

/// # Safety
/// `ptr..ptr + len` is a whole mapping made by [`map`] that nothing refers to.
pub(super) unsafe fn unmap(ptr: NonNull<u8>, len: usize) {
    // SAFETY: by the caller's guarantee.
    let r = unsafe { libc::munmap(ptr.as_ptr().cast(), len) };
    debug_assert_eq!(r, 0, "munmap failed");
}

/// Resizes the mapping `ptr..ptr + len` to `new_len` bytes (page multiples), moving it if
/// need be: the kernel moves the pages, no byte is copied. `None` if it cannot (the mapping
/// is then unchanged).
///
/// # Safety
/// `ptr..ptr + len` is a whole mapping made by [`map`]; nothing refers to it but through the
/// pointer returned (it may move).
pub(super) unsafe fn remap(ptr: NonNull<u8>, len: usize, new_len: usize) -> Option<NonNull<u8>> {
    // SAFETY: by the caller's guarantee; MREMAP_MAYMOVE lets the kernel pick a new address
    // and leaves the old one unmapped on success.
    let p = unsafe { libc::mremap(ptr.as_ptr().cast(), len, new_len, libc::MREMAP_MAYMOVE) };
    if p == libc::MAP_FAILED {
        None
    } else {
        NonNull::new(p.cast())
    }
}

/// Asks the kernel to back the mapping `ptr..ptr + len` with transparent huge pages where
/// it can (`MADV_HUGEPAGE`): the 2 MiB-aligned parts of it, on the faults to come. Advice
/// only: a kernel without THP, or with THP off, refuses or ignores it, and nothing changes.
///
/// # Safety
/// `ptr..ptr + len` is a mapping made by [`map`].
pub(super) unsafe fn advise_huge(ptr: NonNull<u8>, len: usize) {
    // SAFETY: advice on a range of a mapping the caller owns; it changes no contents.
    let _ = unsafe { libc::madvise(ptr.as_ptr().cast(), len, libc::MADV_HUGEPAGE) };
}

/// Gives the pages wholly inside `ptr..ptr + len` back to the kernel; they read as zeros
/// afterwards.
///
/// # Safety
/// The range is mapped, and nothing refers to its contents.
pub(super) unsafe fn decommit(ptr: NonNull<u8>, len: usize) {
    let page = page_size();
    let start = (ptr.as_ptr() as usize).next_multiple_of(page);
    let end = (ptr.as_ptr() as usize + len) & !(page - 1);
    if end > start {
        // SAFETY: a page-aligned range inside a mapping whose contents are unused.
        let r = unsafe {
            libc::madvise(
                ptr.as_ptr().add(start - ptr.as_ptr() as usize).cast(),
                end - start,
                libc::MADV_DONTNEED,
            )
        };
        debug_assert_eq!(r, 0, "madvise failed");
    }
}

pub(super) fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; the coarse monotonic clock is always there on
    // Linux (2.6.32 and later).
    let r = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    debug_assert_eq!(r, 0);
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

pub(super) fn register_membarrier() -> bool {
    // SAFETY: the registration command takes no pointers.
    let r = unsafe {
        libc::syscall(
            libc::SYS_membarrier,
            MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED,
            0,
        )
    };
    r == 0
}

pub(super) fn membarrier() {
    // SAFETY: as above.
    let r = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0) };
    // Registered successfully, so this cannot fail; if it ever did, going on would break
    // the magazine protocol.
    assert_eq!(r, 0, "adaptive-pool: membarrier failed after registration");
}
