//! An adaptive pooling allocator of byte buffers for network code.
//!
//! Threads carve buffers out of large chunks held by per-thread *magazines*; fully free chunks
//! are recycled through a central queue bounded in bytes. Buffers ([`PooledBuf`]) work like
//! `bytes::BytesMut`: they implement [`bytes::BufMut`] and [`bytes::Buf`], split without
//! copying, and freeze zero-copy into [`bytes::Bytes`]. Memory returns to the pool when the
//! last handle drops, on whatever thread that is.
//!
//! The design fixes, by construction, the traps of Netty's `AdaptivePoolingAllocator`:
//! separate allocation cursor and usage accounting in every chunk (freed space is reused and
//! the statistics do not drift), a central queue bounded by a byte budget rather than the core
//! count, oldest-first allocation so a small survivor does not pin a chunk, RAII guards that
//! roll back every multi-step initialisation, a hard memory limit with a clear error, and idle
//! memory given back ([`AdaptiveAllocator::trim`], `idle_release`). See [`implementation`] for
//! the design.
//!
//! # Example
//! ```
//! use adaptive_pool::AdaptiveAllocator;
//! use bytes::{Buf, BufMut};
//!
//! let pool = AdaptiveAllocator::builder()
//!     .max_memory(64 << 20)
//!     .build()
//!     .expect("valid settings");
//!
//! // Read a length-prefixed frame into a pooled buffer.
//! let mut buf = pool.allocate(4096);
//! buf.put_u32(5);
//! buf.put_slice(b"hello");
//! let n = buf.get_u32() as usize;
//! let frame = buf.split_to(n).freeze(); // a `bytes::Bytes`, no copy
//! assert_eq!(frame, "hello");
//!
//! // Hand it to another thread; the memory returns to the pool when the last handle drops.
//! std::thread::spawn(move || assert_eq!(frame.len(), 5)).join().unwrap();
//! drop(buf);
//! assert!(pool.stats().is_quiet());
//! ```
//!
//! # Statistics and limits
//! [`AdaptiveAllocator::stats`] returns a [`Stats`] snapshot: bytes held from the system,
//! bytes cached, live bytes and buffers, chunk counters. `max_memory` is a hard limit:
//! past it, [`AdaptiveAllocator::try_allocate`] returns [`AllocError::MemoryLimit`] (and
//! `allocate` panics with that message), never an abort.
//!
//! # Network receive
//! [`RecvPredictor`] guesses the size of the next read from a connection (grow fast when
//! reads fill the buffer, shrink slowly when they do not, within bounds). With the `tokio`
//! feature, `io::AsyncReadPoolExt` reads any `tokio::io::AsyncRead` into pooled buffers of
//! the predicted size: `read_pooled` returns the data as a [`PooledBuf`] (`freeze()` it for
//! a `bytes::Bytes` on the same memory, without copying), `read_pooled_into` appends it to
//! one. With the `codec` feature, `codec` frames a connection on the same pooled buffers, a
//! drop-in for `tokio_util::codec`. See `examples/echo.rs` and `examples/framed.rs` in the
//! repository, and `docs/TUNING.md`.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]

mod allocator;
mod buf;
mod central;
mod chunk;
#[cfg(feature = "codec")]
pub mod codec;
mod config;
mod error;
#[cfg(feature = "tokio")]
pub mod io;
mod magazine;
mod os;
mod parked;
mod ready;
mod recv;
mod retention;
mod size_class;
mod stats;
mod sync;
mod tracking;
mod waiters;

pub use allocator::{global, AdaptiveAllocator};
pub use buf::PooledBuf;
pub use config::{
    Builder, ConfigError, DEFAULT_COMPACT_PERCENT, DEFAULT_IDLE_RELEASE, DEFAULT_MAX_CACHED_BYTES,
    DEFAULT_MAX_CHUNK_SIZE, DEFAULT_MAX_PARKED_CHUNKS, DEFAULT_MAX_THREAD_IDLE_BYTES,
    DEFAULT_MIN_CHUNK_SIZE, MAX_CHUNK_SIZE_CEILING, MAX_PARKED_CHUNKS_CEILING,
    MIN_CHUNK_SIZE_FLOOR,
};
pub use error::{AllocError, InitError};
pub use os::{mapped_bytes, MemorySource};
pub use ready::Ready;
pub use recv::RecvPredictor;
pub use stats::Stats;
pub use tracking::{LiveBuffer, ReportOrder};

#[doc = include_str!("../docs/DESIGN.md")]
pub mod implementation {}
