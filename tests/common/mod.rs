//! Helpers shared by the integration tests (each test file includes this with `mod common;`).

#![allow(dead_code)]

use adaptive_pool::AdaptiveAllocator;

/// Debug builds poison released regions and scan the poison when a region is reused. Miri
/// checks every access itself, and interpreting that scan over the large regions here would
/// take hours, so under Miri these allocators run without poisoning (elsewhere the setting is
/// the default: on in debug builds, off in release builds).
pub const POISON: bool = cfg!(debug_assertions) && !cfg!(miri);

/// The default allocator (`AdaptiveAllocator::new()`), without poisoning under Miri.
pub fn default_allocator() -> AdaptiveAllocator {
    if cfg!(miri) {
        AdaptiveAllocator::builder().poison(POISON).build().unwrap()
    } else {
        AdaptiveAllocator::new()
    }
}
