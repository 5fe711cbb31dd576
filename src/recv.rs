//! Receive sizing: [`RecvPredictor`], which guesses how many bytes the next read from a
//! connection will bring, so a receive buffer is neither too small (many short reads, many
//! wake-ups) nor much too large (memory held by every frame in flight).
//!
//! Owns: the prediction rule and the validation of its bounds. Pure arithmetic on read sizes:
//! no I/O, no allocation, no dependency on tokio, so it is always compiled and can drive any
//! read loop (the `io` module's tokio extension uses it). May import: `config`, for
//! [`ConfigError`]. Called by: `io`, and by applications with their own read loops.
//!
//! The rule follows Netty's `AdaptiveRecvByteBufAllocator` and hyper's adaptive read strategy:
//! grow fast, shrink slowly.
//! * A read that fills the offered buffer (`n >= next_size()`) means more data was probably
//!   waiting: the next prediction is [`RecvPredictor::GROW_FACTOR`] (4) times larger, capped
//!   at `max_read`.
//! * A read smaller than half the prediction is *small*. After
//!   [`RecvPredictor::SHRINK_AFTER`] (2) small reads in
//!   a row the prediction halves, floored at `min_read`. A read between half and full breaks
//!   the run of small reads, so traffic that sits near one size does not make the prediction
//!   oscillate.
//! * A read of zero bytes (end of stream, or a zero-length buffer) says nothing about message
//!   sizes and leaves the predictor as it was.
//!
//! Invariant: `min_read <= next_size() <= max_read` at all times, and `min_read >= 1`.

use std::fmt;

use crate::config::ConfigError;

/// Predicts the size of the next read from a connection: grows fast when reads fill the
/// buffer, shrinks slowly when they do not, always within `[min_read, max_read]`.
///
/// One predictor per connection (or per read loop); it is a few words, `Copy`, and does no
/// I/O. Ask [`next_size`](Self::next_size) for the size of the buffer to read into, read, and
/// tell it how many bytes came with [`record`](Self::record).
///
/// ```
/// use adaptive_pool::RecvPredictor;
///
/// let mut p = RecvPredictor::with_bounds(64, 1024, 16 << 10)?;
/// assert_eq!(p.next_size(), 1024);
/// p.record(1024); // the read filled the buffer: grow fast
/// assert_eq!(p.next_size(), 4096);
/// p.record(300); // small (under half), once: keep the size
/// assert_eq!(p.next_size(), 4096);
/// p.record(200); // small twice in a row: halve
/// assert_eq!(p.next_size(), 2048);
/// p.record(0); // end of stream: no evidence either way
/// assert_eq!(p.next_size(), 2048);
/// # Ok::<(), adaptive_pool::ConfigError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RecvPredictor {
    min: usize,
    initial: usize,
    max: usize,
    next: usize,
    /// Small reads in a row since the last change or the last read that was not small.
    small_reads: u32,
}

impl RecvPredictor {
    /// How much the prediction grows after a read that filled the buffer.
    pub const GROW_FACTOR: usize = 4;
    /// How many small reads in a row (each under half the prediction) halve the prediction.
    pub const SHRINK_AFTER: u32 = 2;
    /// Default smallest prediction: 64 bytes.
    pub const DEFAULT_MIN_READ: usize = 64;
    /// Default first prediction: 2 KiB, more than most request headers and small RPCs.
    pub const DEFAULT_INITIAL_READ: usize = 2 << 10;
    /// Default largest prediction: 64 KiB, the most a loopback or LAN socket usually hands
    /// over in one read; larger reads rarely save a wake-up and hold more memory per frame.
    pub const DEFAULT_MAX_READ: usize = 64 << 10;

    /// A predictor with the default bounds: 64 B, 2 KiB to start, 64 KiB.
    pub fn new() -> Self {
        RecvPredictor {
            min: Self::DEFAULT_MIN_READ,
            initial: Self::DEFAULT_INITIAL_READ,
            max: Self::DEFAULT_MAX_READ,
            next: Self::DEFAULT_INITIAL_READ,
            small_reads: 0,
        }
    }

    /// A predictor that starts at `initial_read` bytes and stays within
    /// `[min_read, max_read]`.
    ///
    /// Refused with a [`ConfigError`] naming the setting: `min_read` of zero (a zero-length
    /// read cannot tell data from the end of the stream), `min_read > max_read`,
    /// `initial_read` outside `[min_read, max_read]`, or `max_read` above `isize::MAX`.
    ///
    /// Keep `max_read` at or below the pool's largest pooled request, a quarter of its
    /// `max_chunk_size` (1 MiB by default): larger reads are served *unpooled*, one region of
    /// their own each, which is slower and is not cached. The predictor does not know the
    /// pool, so this is not checked here.
    ///
    /// ```
    /// use adaptive_pool::RecvPredictor;
    ///
    /// let err = RecvPredictor::with_bounds(4096, 4096, 1024).unwrap_err();
    /// assert_eq!(err.setting(), "min_read");
    /// assert_eq!(err.to_string(), "invalid setting `min_read`: 4096 is larger than max_read 1024");
    /// ```
    pub fn with_bounds(
        min_read: usize,
        initial_read: usize,
        max_read: usize,
    ) -> Result<Self, ConfigError> {
        if min_read == 0 {
            return Err(ConfigError::new(
                "min_read",
                "must be greater than zero (a zero-length read cannot tell data from the end \
                 of the stream)",
            ));
        }
        if max_read > isize::MAX as usize {
            return Err(ConfigError::new("max_read", "must not exceed isize::MAX"));
        }
        if min_read > max_read {
            return Err(ConfigError::new(
                "min_read",
                format!("{min_read} is larger than max_read {max_read}"),
            ));
        }
        if !(min_read..=max_read).contains(&initial_read) {
            return Err(ConfigError::new(
                "initial_read",
                format!(
                    "{initial_read} is outside [min_read, max_read] = [{min_read}, {max_read}]"
                ),
            ));
        }
        Ok(RecvPredictor {
            min: min_read,
            initial: initial_read,
            max: max_read,
            next: initial_read,
            small_reads: 0,
        })
    }

    /// The number of bytes to offer the next read: the size of the buffer to read into.
    /// Always within `[min_read, max_read]`, so never zero.
    #[inline]
    pub fn next_size(&self) -> usize {
        self.next
    }

    /// Records a read of `bytes` bytes into a buffer of at least
    /// [`next_size`](Self::next_size) bytes, and adjusts the prediction (see the module rule:
    /// a full read grows it by [`GROW_FACTOR`](Self::GROW_FACTOR),
    /// [`SHRINK_AFTER`](Self::SHRINK_AFTER) small reads in a row halve
    /// it, zero changes nothing). `bytes` larger than the prediction (the buffer offered was
    /// larger) count as a full read.
    pub fn record(&mut self, bytes: usize) {
        if bytes == 0 {
            return;
        }
        if bytes >= self.next {
            self.next = self.next.saturating_mul(Self::GROW_FACTOR).min(self.max);
            self.small_reads = 0;
        } else if bytes < self.next / 2 {
            self.small_reads += 1;
            if self.small_reads >= Self::SHRINK_AFTER {
                self.next = (self.next / 2).max(self.min);
                self.small_reads = 0;
            }
        } else {
            self.small_reads = 0;
        }
    }

    /// Starts over from `initial_read`, e.g. when a pooled connection is handed to a new
    /// client.
    pub fn reset(&mut self) {
        self.next = self.initial;
        self.small_reads = 0;
    }

    /// The smallest prediction.
    pub fn min_read(&self) -> usize {
        self.min
    }

    /// The first prediction, and the one [`reset`](Self::reset) returns to.
    pub fn initial_read(&self) -> usize {
        self.initial
    }

    /// The largest prediction.
    pub fn max_read(&self) -> usize {
        self.max
    }
}

impl Default for RecvPredictor {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for RecvPredictor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecvPredictor")
            .field("next_size", &self.next)
            .field("bounds", &(self.min..=self.max))
            .field("initial_read", &self.initial)
            .field("small_reads", &self.small_reads)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `reads` and returns the prediction after each.
    fn trace(p: &mut RecvPredictor, reads: &[usize]) -> Vec<usize> {
        reads
            .iter()
            .map(|&n| {
                p.record(n);
                p.next_size()
            })
            .collect()
    }

    fn bounded(min: usize, initial: usize, max: usize) -> RecvPredictor {
        RecvPredictor::with_bounds(min, initial, max).expect("valid bounds")
    }

    #[test]
    fn defaults() {
        let p = RecvPredictor::new();
        assert_eq!(p, RecvPredictor::default());
        assert_eq!(
            (p.min_read(), p.initial_read(), p.max_read(), p.next_size()),
            (64, 2048, 65536, 2048)
        );
        assert_eq!(
            RecvPredictor::with_bounds(64, 2048, 65536).unwrap(),
            RecvPredictor::new()
        );
    }

    #[test]
    fn full_reads_grow_fast_up_to_max() {
        let mut p = bounded(64, 1024, 100_000);
        // Each read fills the buffer it was offered: x4 each time, then capped at max.
        let reads: Vec<usize> = vec![1024, 4096, 16384, 65536, 100_000, 100_000];
        assert_eq!(
            trace(&mut p, &reads),
            [4096, 16384, 65536, 100_000, 100_000, 100_000]
        );
    }

    #[test]
    fn a_read_larger_than_the_prediction_counts_as_full() {
        let mut p = bounded(64, 1024, 1 << 20);
        p.record(50_000);
        assert_eq!(
            p.next_size(),
            4096,
            "one step per read, not a jump to the read size"
        );
    }

    #[test]
    fn shrinks_only_after_two_small_reads_in_a_row() {
        let mut p = bounded(64, 4096, 65536);
        // One small read (under half of 4096): no change yet.
        assert_eq!(trace(&mut p, &[100]), [4096]);
        // A medium read (half or more, not full) breaks the run.
        assert_eq!(trace(&mut p, &[2048]), [4096]);
        assert_eq!(trace(&mut p, &[100]), [4096]);
        // Second small read in a row: halve once.
        assert_eq!(trace(&mut p, &[100]), [2048]);
        // The run starts over after a change: two more small reads per halving.
        assert_eq!(trace(&mut p, &[10, 10, 10, 10]), [2048, 1024, 1024, 512]);
    }

    #[test]
    fn a_full_read_resets_the_run_of_small_reads() {
        let mut p = bounded(64, 1024, 65536);
        assert_eq!(trace(&mut p, &[10, 1024, 10]), [1024, 4096, 4096]);
        assert_eq!(trace(&mut p, &[10]), [2048]);
    }

    #[test]
    fn shrinks_slowly_down_to_min_and_no_further() {
        let mut p = bounded(100, 1600, 65536);
        let t = trace(&mut p, &[1; 12]);
        assert_eq!(
            t,
            [1600, 800, 800, 400, 400, 200, 200, 100, 100, 100, 100, 100]
        );
        // At min, small reads (under 50) change nothing; a full read grows again.
        p.record(100);
        assert_eq!(p.next_size(), 400);
    }

    #[test]
    fn min_is_not_a_power_of_two_floor() {
        // Halving 1000 gives 500, under min 600: the floor is min itself.
        let mut p = bounded(600, 1000, 4000);
        assert_eq!(trace(&mut p, &[1, 1, 1, 1]), [1000, 600, 600, 600]);
    }

    #[test]
    fn traffic_near_one_size_does_not_oscillate() {
        // Messages of exactly half the prediction are not small: the size holds.
        let mut p = bounded(64, 2048, 65536);
        assert_eq!(trace(&mut p, &[1024; 6]), [2048; 6]);
        // Messages of 1000 B: shrink once to 1024, then hold (1000 is not under 512, and
        // does not fill 1024).
        assert_eq!(
            trace(&mut p, &[1000; 6]),
            [2048, 1024, 1024, 1024, 1024, 1024]
        );
    }

    #[test]
    fn zero_length_reads_change_nothing() {
        let mut p = bounded(64, 4096, 65536);
        p.record(100); // one small read pending
        p.record(0); // end of stream: neither full nor small
        assert_eq!(p.next_size(), 4096);
        // The pending small read still counts: the run was not broken by the zero read.
        p.record(100);
        assert_eq!(p.next_size(), 2048);
        // Many zero reads (a peer that keeps closing) never shrink or grow it.
        for _ in 0..100 {
            p.record(0);
        }
        assert_eq!(p.next_size(), 2048);
    }

    #[test]
    fn a_fixed_size_predictor_never_moves() {
        let mut p = bounded(1500, 1500, 1500);
        assert_eq!(trace(&mut p, &[1500, 1, 1, 1, 9000, 0]), [1500; 6]);
    }

    #[test]
    fn growth_saturates_instead_of_overflowing() {
        let max = isize::MAX as usize;
        let mut p = bounded(1, max / 2, max);
        p.record(max / 2);
        assert_eq!(p.next_size(), max);
        p.record(usize::MAX);
        assert_eq!(p.next_size(), max);
    }

    #[test]
    fn reset_returns_to_initial() {
        let mut p = bounded(64, 512, 65536);
        trace(&mut p, &[512, 2048, 8192]);
        assert_eq!(p.next_size(), 32768);
        p.record(1); // a pending small read is forgotten too
        p.reset();
        assert_eq!(p.next_size(), 512);
        p.record(1);
        assert_eq!(
            p.next_size(),
            512,
            "one small read after reset: no shrink yet"
        );
    }

    #[test]
    fn bounds_always_hold_on_random_reads() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut rand = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..200 {
            let min = 1 + (rand() % 5000) as usize;
            let max = min + (rand() % 100_000) as usize;
            let initial = min + (rand() as usize % (max - min + 1));
            let mut p = bounded(min, initial, max);
            for _ in 0..200 {
                let n = match rand() % 4 {
                    0 => 0,
                    1 => p.next_size(),
                    _ => (rand() % (2 * p.next_size() as u64 + 1)) as usize,
                };
                let before = p.next_size();
                p.record(n);
                let after = p.next_size();
                assert!(
                    (min..=max).contains(&after),
                    "{after} outside [{min}, {max}]"
                );
                if n >= before {
                    assert!(
                        after >= before,
                        "a full read must not shrink: {before} -> {after}"
                    );
                }
                if n == 0 {
                    assert_eq!(after, before);
                }
            }
        }
    }

    #[test]
    fn bad_bounds_are_refused_naming_the_setting() {
        let err = |min, initial, max| RecvPredictor::with_bounds(min, initial, max).unwrap_err();
        let e = err(0, 1024, 4096);
        assert_eq!(e.setting(), "min_read");
        assert!(e.reason().contains("greater than zero"), "{e}");
        let e = err(8192, 8192, 4096);
        assert_eq!(e.setting(), "min_read");
        assert_eq!(e.reason(), "8192 is larger than max_read 4096");
        let e = err(64, 32, 4096);
        assert_eq!(e.setting(), "initial_read");
        assert_eq!(
            e.reason(),
            "32 is outside [min_read, max_read] = [64, 4096]"
        );
        assert_eq!(err(64, 8192, 4096).setting(), "initial_read");
        let e = err(64, 1024, usize::MAX);
        assert_eq!(e.setting(), "max_read");
        assert_eq!(
            e.to_string(),
            "invalid setting `max_read`: must not exceed isize::MAX"
        );
        // The edges are accepted.
        assert!(RecvPredictor::with_bounds(1, 1, 1).is_ok());
        assert!(RecvPredictor::with_bounds(1, 1, isize::MAX as usize).is_ok());
    }
}
