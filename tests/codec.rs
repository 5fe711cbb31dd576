//! The `codec` feature: the behaviours of tokio-util's own codec tests (framed reads and
//! writes, length-delimited, lines, bytes), re-expressed against `adaptive_pool::codec`,
//! plus what the pool adds: frames on the pooled read buffer without copying, the read
//! buffer reused in place between frames, sized by the predictor, and given back while a
//! connection is idle.
//!
//! The transports are scripted mocks (`mock`), polled by hand with a no-op waker, so every
//! `Pending` is where the script puts it.

mod codec {
    pub mod mock;

    mod any_delimiter;
    mod bytes_codec;
    mod framed;
    mod framed_parts;
    mod framed_read;
    mod framed_write;
    mod length_delimited;
    mod lines;
    mod migration;
    mod oom;
}
