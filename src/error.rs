//! Errors of allocation and of buffer initialisation.
//!
//! Owns: [`AllocError`] and [`InitError`]. May import: nothing of ours.

use std::fmt;

/// Why an allocation failed.
///
/// The `try_` methods return it; the panicking methods (`allocate`, `with_capacity`, growth
/// through `reserve`) panic with its message, as `Vec` does on capacity overflow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AllocError {
    /// Serving the request would take the allocator past its `max_memory` limit.
    MemoryLimit {
        /// Bytes the allocator needed from the system to serve the request.
        requested: usize,
        /// The configured limit, in bytes.
        limit: usize,
    },
    /// The requested capacity is larger than `isize::MAX` minus 1 MiB (the room a region may
    /// need to be rounded up to whole pages), or overflows when rounded up.
    CapacityOverflow {
        /// The capacity asked for.
        requested: usize,
    },
    /// The system allocator refused a request of `size` bytes.
    System {
        /// Bytes asked of the system allocator.
        size: usize,
    },
}

impl fmt::Display for AllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            AllocError::MemoryLimit { requested, limit } => write!(
                f,
                "memory limit reached: {requested} more bytes would exceed the limit of {limit} bytes"
            ),
            AllocError::CapacityOverflow { requested } => {
                write!(f, "capacity overflow: {requested} bytes cannot be allocated")
            }
            AllocError::System { size } => {
                write!(f, "the system allocator failed to provide {size} bytes")
            }
        }
    }
}

impl std::error::Error for AllocError {}

/// Why [`AdaptiveAllocator::allocate_with`](crate::AdaptiveAllocator::allocate_with) failed.
///
/// In both cases the allocation was rolled back completely: the buffer was returned and any
/// chunk created for it was released again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InitError<E> {
    /// The buffer could not be allocated; the initialiser did not run.
    Alloc(AllocError),
    /// The initialiser returned this error.
    Init(E),
}

impl<E: fmt::Display> fmt::Display for InitError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InitError::Alloc(e) => write!(f, "buffer allocation failed: {e}"),
            InitError::Init(e) => write!(f, "buffer initialisation failed: {e}"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for InitError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            InitError::Alloc(e) => Some(e),
            InitError::Init(e) => Some(e),
        }
    }
}

impl<E> From<AllocError> for InitError<E> {
    fn from(e: AllocError) -> Self {
        InitError::Alloc(e)
    }
}
