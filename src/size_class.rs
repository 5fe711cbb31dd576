//! Size classes: pure arithmetic from a request size to a class, and from a class to the
//! segment size that serves it.
//!
//! Owns: the class table, which is computed, not stored. May import: nothing of ours.
//!
//! Classes follow the "power of two and a bit more" scheme: 32, 48 and 64 bytes, then four
//! classes per doubling (`2^p + k * 2^(p-2)` for `k = 1..=4`), so a request is never rounded up
//! by more than 25 % (less than 50 % below 64 bytes). Every class size is a multiple of 16, so
//! every segment of a chunk is 16-byte aligned.

/// The smallest segment size, in bytes.
pub(crate) const MIN_SEGMENT: usize = 32;

/// Sizes up to this are classed by table lookup.
const SMALL_LIMIT: usize = 1024;

/// Sizes up to this (and above [`SMALL_LIMIT`]) are classed by a second, coarser table.
const MEDIUM_LIMIT: usize = 64 * 1024;

/// `SMALL_CLASSES[(size + 15) / 16]` is the class of `size` for `size <= SMALL_LIMIT`: every
/// small class size is a multiple of 16, so sizes in one 16-byte step share a class.
const SMALL_CLASSES: [u8; SMALL_LIMIT / 16 + 1] = class_table(16);

/// `MEDIUM_CLASSES[(size + 255) / 256]` is the class of `size` for
/// `SMALL_LIMIT < size <= MEDIUM_LIMIT`: every class size above 1 KiB is a multiple of 256
/// (the step of the doubling from 1 KiB to 2 KiB), so sizes in one 256-byte step share a
/// class. The lookup replaces a dozen instructions of bit arithmetic on the fast path.
const MEDIUM_CLASSES: [u8; MEDIUM_LIMIT / 256 + 1] = class_table(256);

/// A lookup table: entry `i` is the class of size `i * step` (computed at compile time).
const fn class_table<const N: usize>(step: usize) -> [u8; N] {
    let mut table = [0u8; N];
    let mut i = 0;
    while i < N {
        table[i] = SizeClass::compute(i * step).0 as u8;
        i += 1;
    }
    table
}

/// A size class: an index into the (computed) class table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct SizeClass(pub(crate) u16);

impl SizeClass {
    /// The class that serves a request of `size` bytes (`size` 0 is served by the smallest
    /// class). Total and monotonic over every `usize`, so a size above a class boundary
    /// always maps to a later class (the allocator's routing relies on this).
    #[inline(always)]
    pub(crate) const fn of(size: usize) -> SizeClass {
        if size <= SMALL_LIMIT {
            return SizeClass(SMALL_CLASSES[(size + 15) >> 4] as u16);
        }
        if size <= MEDIUM_LIMIT {
            return SizeClass(MEDIUM_CLASSES[(size + 255) >> 8] as u16);
        }
        Self::compute(size)
    }

    /// The arithmetic behind [`SizeClass::of`] (the table covers small sizes).
    const fn compute(size: usize) -> SizeClass {
        if size <= 64 {
            let s = if size < MIN_SEGMENT {
                MIN_SEGMENT
            } else {
                size
            };
            return SizeClass((s.div_ceil(16) - 2) as u16);
        }
        // 2^p < size <= 2^(p+1)
        let p = (usize::BITS - 1 - (size - 1).leading_zeros()) as usize;
        let step_shift = p - 2;
        let k = (size - (1usize << p) + (1usize << step_shift) - 1) >> step_shift; // 1..=4
        SizeClass((2 + (p - 6) * 4 + k) as u16)
    }

    /// The segment size of this class, in bytes.
    #[inline]
    pub(crate) const fn size(self) -> usize {
        let i = self.0 as usize;
        if i <= 2 {
            return MIN_SEGMENT + 16 * i;
        }
        let j = i - 3;
        let p = 6 + j / 4;
        let k = j % 4 + 1;
        (1usize << p) + (k << (p - 2))
    }

    /// The index of this class, for tables.
    #[inline]
    pub(crate) const fn index(self) -> usize {
        self.0 as usize
    }

    /// How many classes serve sizes up to and including `max_size`.
    pub(crate) const fn count_up_to(max_size: usize) -> usize {
        SizeClass::of(max_size).index() + 1
    }
}

/// `n` rounded up to a power of two, or `None` on overflow.
#[inline]
pub(crate) const fn next_pow2(n: usize) -> Option<usize> {
    n.checked_next_power_of_two()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_classes() {
        let sizes: Vec<usize> = (0..12).map(|i| SizeClass(i).size()).collect();
        assert_eq!(
            sizes,
            [32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320]
        );
        assert_eq!(SizeClass::of(0), SizeClass(0));
        assert_eq!(SizeClass::of(1), SizeClass(0));
        assert_eq!(SizeClass::of(32), SizeClass(0));
        assert_eq!(SizeClass::of(33), SizeClass(1));
        assert_eq!(SizeClass::of(65), SizeClass(3));
        assert_eq!(SizeClass::of(1024).size(), 1024);
        assert_eq!(SizeClass::of(659_225).size(), 786_432);
        assert_eq!(SizeClass::of(100_000).size(), 114_688);
    }

    /// Every size up to 1 MiB (and a sample of larger ones) maps to the smallest class that
    /// holds it, and classes are strictly increasing multiples of 16.
    #[test]
    fn exhaustive_smallest_fit() {
        let limit = if cfg!(miri) { 1 << 12 } else { 1 << 20 };
        let mut prev_class = SizeClass::of(1);
        for size in 1..=limit {
            let c = SizeClass::of(size);
            assert!(c.size() >= size, "size {size} class {c:?}");
            if c.0 > 0 {
                assert!(
                    SizeClass(c.0 - 1).size() < size,
                    "size {size} not smallest fit"
                );
            }
            assert!(c >= prev_class);
            assert_eq!(c.size() % 16, 0);
            prev_class = c;
        }
        for shift in 20..40 {
            for size in [(1usize << shift) - 1, 1 << shift, (1 << shift) + 1] {
                let c = SizeClass::of(size);
                assert!(c.size() >= size && SizeClass(c.0 - 1).size() < size);
                assert_eq!(SizeClass::of(c.size()), c);
            }
        }
    }

    #[test]
    fn tables_match_arithmetic() {
        let limit = if cfg!(miri) {
            SMALL_LIMIT + 4096
        } else {
            MEDIUM_LIMIT + 512
        };
        for size in 0..=limit {
            assert_eq!(SizeClass::of(size), SizeClass::compute(size), "size {size}");
        }
    }

    /// The allocator routes a request to the unpooled path when its class index is at or past
    /// the number of pooled classes; that is right only if every size above a power-of-two
    /// `max_pooled` maps past `count_up_to(max_pooled)`, and every size up to it maps before.
    #[test]
    fn class_index_routes_like_the_size() {
        for shift in 10..=30 {
            let max_pooled = 1usize << shift;
            let count = SizeClass::count_up_to(max_pooled);
            for size in [
                max_pooled - 1,
                max_pooled,
                max_pooled + 1,
                max_pooled * 3,
                usize::MAX,
            ] {
                assert_eq!(
                    SizeClass::of(size).index() < count,
                    size <= max_pooled,
                    "max_pooled {max_pooled} size {size}"
                );
            }
        }
    }

    #[test]
    fn waste_bounded() {
        for size in 65..(1 << 16) {
            let waste = SizeClass::of(size).size() - size;
            assert!(waste * 4 < size, "size {size} wastes {waste}");
        }
    }

    #[test]
    fn counts() {
        assert_eq!(SizeClass::count_up_to(32), 1);
        assert_eq!(SizeClass::count_up_to(64), 3);
        assert_eq!(SizeClass::count_up_to(128), 7);
        assert_eq!(
            SizeClass(SizeClass::count_up_to(1 << 20) as u16 - 1).size(),
            1 << 20
        );
    }
}
