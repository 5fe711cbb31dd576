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

/// xorshift64*: a tiny deterministic generator for the randomised tests (no dependencies).
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Uniform in `0..=n`.
    pub fn upto(&mut self, n: usize) -> usize {
        self.below(n + 1)
    }
}
