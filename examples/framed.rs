//! A length-prefixed framing server on the pool, written with `adaptive_pool::codec`: frames
//! are split off a pooled read buffer without copying and handed to another task as
//! `PooledBuf`s (tokio-util's would be `BytesMut`s).
//!
//! ```text
//! cargo run --release --features codec --example framed                 # self-driving run
//! cargo run --release --features codec --example framed -- --connections 8 --frames 2000
//! cargo run --release --features codec --example framed -- --server 127.0.0.1:7001
//! ```
//!
//! Protocol: each frame is a 4-byte big-endian length and that many payload bytes. For every
//! frame the server answers 12 bytes: the payload length (4 bytes) and its FNV-1a hash
//! (8 bytes), both big-endian.
//!
//! Per connection the server runs two tasks. The *reader* is a `FramedRead` with a
//! `LengthDelimitedCodec`, exactly as with `tokio_util::codec`, but its read buffer comes from
//! the pool: it grows with a `RecvPredictor`, is reused in place once the frames split off it
//! have dropped, and is given back while the connection waits for data. Each frame is a
//! `PooledBuf` on that pooled memory, no byte copied and nothing boxed (a frame is frozen
//! into `Bytes` only where one is needed); the reader sends it over a bounded channel
//! to the *processor*, which hashes it, drops it (on whatever thread it runs: the memory goes
//! back to the pool from there) and answers through a `FramedWrite` with a small `Encoder`
//! of its own, flushing whenever the channel runs dry.
//!
//! Zero-copy is right here because every frame is hashed and dropped at once: its read region
//! is reused as soon as the frames split off it are gone. **It is a bad idea for frames that
//! are kept** (a cache, a key-value store, a session's last message): each kept frame holds
//! its whole read region, and the pool then holds many times the bytes kept
//! (`Stats::pinned_bytes` counts them; issue 13 measured 6.4-13 times). The fix is one
//! call where a frame is kept: `frame.freeze_compact()` copies a frame that is under half
//! its region into a region of its own size (build the pool with
//! `AdaptiveAllocator::builder().compact_frozen_below(50)` and a plain `freeze()` does the
//! same). This example prints `pinned_bytes` with its statistics.
//!
//! Before the codec module, this reader was a hand-written loop around
//! `AsyncReadPoolExt::read_pooled_into` and a `split_frame` function (about forty lines),
//! because tokio-util's `FramedRead` reads into a `BytesMut` of its own.
//!
//! The self-driving run starts the server on 127.0.0.1 (an ephemeral port), connects clients
//! that send frames of random sizes (empty ones, small ones, and some large enough to span
//! many reads) in writes cut at random places, checks every answer, prints the pool's
//! statistics and exits; non-zero if an answer was wrong or missing, or if a buffer is still
//! alive after every connection closed.

use std::env;
use std::io;
use std::net::SocketAddr;
use std::process;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use adaptive_pool::codec::{Encoder, FramedRead, FramedWrite, LengthDelimitedCodec};
use adaptive_pool::{AdaptiveAllocator, PooledBuf, RecvPredictor};
use bytes::BufMut;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::{self, Runtime};
use tokio::sync::mpsc;

const USAGE: &str = "\
usage: framed [--server ADDR] [--connections N] [--frames N] [--max-frame BYTES]
              [--max-chunk-size BYTES] [--help]

A length-prefixed framing server that reads into adaptive_pool buffers and hands frames to
another task as PooledBufs without copying. With no --server, starts the server on
127.0.0.1 (an ephemeral port), drives it with clients, checks every answer, prints the
pool's statistics and exits.

options:
  --server ADDR       only serve, on ADDR (e.g. 127.0.0.1:7001), until killed
  --connections N     client connections (default 16)
  --frames N          frames per connection (default 1000)
  --max-frame BYTES   largest frame a client sends (default 262144); the server refuses
                      frames over 16 MiB
  --max-chunk-size B  the pool's max_chunk_size (default 4194304); buffers over a quarter
                      of it are served unpooled
  --help              print this help";

/// The largest frame the server accepts.
const MAX_FRAME: usize = 16 << 20;
/// Frames waiting for the processor, per connection: bounds the memory a slow processor
/// holds (and pushes back on the reader, hence on the client).
const CHANNEL_FRAMES: usize = 32;

struct Options {
    server: Option<SocketAddr>,
    connections: usize,
    frames: usize,
    max_frame: usize,
    max_chunk_size: usize,
}

fn fail(msg: &str) -> ! {
    eprintln!("framed: {msg}\n\n{USAGE}");
    process::exit(2)
}

fn parse_args() -> Options {
    let mut opts = Options {
        server: None,
        connections: 16,
        frames: 1000,
        max_frame: 256 << 10,
        max_chunk_size: adaptive_pool::DEFAULT_MAX_CHUNK_SIZE,
    };
    let mut args = env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| fail(&format!("{arg} needs a value")))
        };
        let number = |v: String, lo: usize, hi: usize| match v.parse::<usize>() {
            Ok(n) if (lo..=hi).contains(&n) => n,
            _ => fail(&format!("{arg}: not a number from {lo} to {hi}: {v}")),
        };
        match arg.as_str() {
            "--server" => {
                let v = value();
                opts.server = Some(v.parse().unwrap_or_else(|_| {
                    fail(&format!(
                        "--server: not an address like 127.0.0.1:7001: {v}"
                    ))
                }));
            }
            "--connections" => opts.connections = number(value(), 1, 10_000),
            "--frames" => opts.frames = number(value(), 1, 100_000_000),
            "--max-frame" => opts.max_frame = number(value(), 0, MAX_FRAME),
            "--max-chunk-size" => {
                opts.max_chunk_size = number(value(), 1, adaptive_pool::MAX_CHUNK_SIZE_CEILING)
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                process::exit(0);
            }
            other => fail(&format!("unknown argument {other}")),
        }
    }
    opts
}

/// 64-bit FNV-1a: a hash both sides compute, to check the frame arrived whole.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

// --- the server -----------------------------------------------------------------------------

#[derive(Default)]
struct ServerCounters {
    open: AtomicUsize,
    frames: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
}

/// The reader: frames decoded from pooled reads, sent to the processor.
async fn read_frames(
    rd: OwnedReadHalf,
    pool: &AdaptiveAllocator,
    tx: mpsc::Sender<PooledBuf>,
) -> io::Result<()> {
    let codec = LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME)
        .new_codec();
    let mut frames = FramedRead::with_pool(rd, codec, pool.clone(), RecvPredictor::new());
    // A stream that ends inside a frame is an error ("bytes remaining on stream").
    while let Some(frame) = frames.next().await {
        if tx.send(frame?).await.is_err() {
            return Ok(()); // the processor stopped (write error): it reports that
        }
    }
    Ok(())
}

/// An answer: the frame's length and hash, 12 bytes on the wire.
struct AnswerEncoder;

impl Encoder<(u32, u64)> for AnswerEncoder {
    type Error = io::Error;

    fn encode(&mut self, (len, hash): (u32, u64), dst: &mut PooledBuf) -> io::Result<()> {
        dst.reserve(12);
        dst.put_u32(len);
        dst.put_u64(hash);
        Ok(())
    }
}

/// The processor: hashes each frame and answers; the frame is dropped here.
async fn process_frames(
    wr: OwnedWriteHalf,
    pool: &AdaptiveAllocator,
    mut rx: mpsc::Receiver<PooledBuf>,
    counters: &ServerCounters,
) -> io::Result<()> {
    let mut answers = FramedWrite::with_pool(wr, AnswerEncoder, pool.clone());
    while let Some(frame) = rx.recv().await {
        let answer = (frame.len() as u32, fnv1a(&frame));
        counters.frames.fetch_add(1, Relaxed);
        counters.bytes.fetch_add(frame.len() as u64, Relaxed);
        drop(frame);
        // Buffer the answer; write the buffer out when no more frames wait.
        answers.feed(answer).await?;
        if rx.is_empty() {
            answers.flush().await?;
        }
    }
    // Flushes what is left and shuts the write half down.
    answers.close().await
}

async fn serve(listener: TcpListener, pool: AdaptiveAllocator, counters: Arc<ServerCounters>) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                eprintln!("framed: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        counters.open.fetch_add(1, Relaxed);
        let (rd, wr) = stream.into_split();
        let (tx, rx) = mpsc::channel(CHANNEL_FRAMES);
        let (pool, counters) = (pool.clone(), counters.clone());
        tokio::spawn(async move {
            let processor = {
                let (pool, counters) = (pool.clone(), counters.clone());
                tokio::spawn(async move { process_frames(wr, &pool, rx, &counters).await })
            };
            let read = read_frames(rd, &pool, tx).await;
            let processed = processor.await.map_err(io::Error::other).and_then(|r| r);
            if let Err(e) = read.and(processed) {
                eprintln!("framed: connection closed with an error: {e}");
                counters.errors.fetch_add(1, Relaxed);
            }
            counters.open.fetch_sub(1, Relaxed);
        });
    }
}

fn runtime(name: &str) -> Runtime {
    runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(name)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

fn server_pool(opts: &Options) -> AdaptiveAllocator {
    let min_chunk = adaptive_pool::DEFAULT_MIN_CHUNK_SIZE.min(opts.max_chunk_size);
    AdaptiveAllocator::builder()
        .max_memory(256 << 20)
        .min_chunk_size(min_chunk)
        .max_chunk_size(opts.max_chunk_size)
        .build()
        .unwrap_or_else(|e| fail(&format!("--max-chunk-size: {e}")))
}

// --- the clients ----------------------------------------------------------------------------

/// xorshift64*, so each connection's frames are reproducible.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n as u64) as usize
    }
}

/// One client: sends `frames` frames in randomly cut writes while a second task checks the
/// answers. Returns the frames answered correctly.
async fn client(addr: SocketAddr, conn: usize, frames: usize, max_frame: usize) -> io::Result<u64> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut rd, mut wr) = stream.into_split();
    let mut rng =
        Rng(0x9E37_79B9_7F4A_7C15 ^ (conn as u64 + 1).wrapping_mul(0xA24B_AED4_963E_E407));
    // The frames: mostly small, some empty, one in 16 up to `max_frame`.
    let mut expected = Vec::with_capacity(frames);
    let mut wire = Vec::new();
    for i in 0..frames {
        let len = match rng.below(16) {
            0 => rng.below(max_frame + 1),
            1 => 0,
            _ => rng.below(max_frame.min(1500) + 1),
        };
        let payload: Vec<u8> = (0..len).map(|j| (i * 31 + j * 7 + conn) as u8).collect();
        expected.push((len as u32, fnv1a(&payload)));
        wire.extend_from_slice(&(len as u32).to_be_bytes());
        wire.extend_from_slice(&payload);
    }
    let cuts: Vec<usize> = (0..wire.len() / 512 + 1)
        .map(|_| 1 + rng.below(16 << 10))
        .collect();
    let writer = tokio::spawn(async move {
        let mut rest = &wire[..];
        for cut in cuts.into_iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (now, later) = rest.split_at(cut.min(rest.len()));
            wr.write_all(now).await?;
            rest = later;
        }
        wr.shutdown().await
    });
    let mut answer = [0u8; 12];
    let mut good = 0u64;
    for (i, &(len, hash)) in expected.iter().enumerate() {
        rd.read_exact(&mut answer).await?;
        let got_len = u32::from_be_bytes(answer[..4].try_into().unwrap());
        let got_hash = u64::from_be_bytes(answer[4..].try_into().unwrap());
        if (got_len, got_hash) != (len, hash) {
            return Err(io::Error::other(format!(
                "connection {conn}, frame {i}: answer ({got_len}, {got_hash:#x}), expected ({len}, {hash:#x})"
            )));
        }
        good += 1;
    }
    if rd.read(&mut answer).await? != 0 {
        return Err(io::Error::other(format!(
            "connection {conn}: answers past the last frame"
        )));
    }
    writer.await.map_err(io::Error::other)??;
    Ok(good)
}

fn run_self_driving(opts: &Options) -> bool {
    let pool = server_pool(opts);
    let server = runtime("framed-server");
    let counters = Arc::new(ServerCounters::default());
    let listener = server
        .block_on(TcpListener::bind("127.0.0.1:0"))
        .expect("bind 127.0.0.1");
    let addr = listener.local_addr().expect("a local address");
    server.spawn(serve(listener, pool.clone(), counters.clone()));
    println!(
        "framed: server on {addr}; {} connections sending {} frames each, up to {} B; \
         max_chunk_size {} B",
        opts.connections, opts.frames, opts.max_frame, opts.max_chunk_size
    );

    let clients = runtime("framed-client");
    let started = Instant::now();
    let results: Vec<io::Result<u64>> = clients.block_on(async {
        let tasks: Vec<_> = (0..opts.connections)
            .map(|conn| tokio::spawn(client(addr, conn, opts.frames, opts.max_frame)))
            .collect();
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.unwrap_or_else(|e| Err(io::Error::other(e))));
        }
        results
    });
    let elapsed = started.elapsed();
    drop(clients);
    let wait_from = Instant::now();
    while counters.open.load(Relaxed) > 0 && wait_from.elapsed() < Duration::from_secs(10) {
        thread::sleep(Duration::from_millis(5));
    }
    let closed = pool.stats();
    drop(server); // worker threads exit; their magazines hand their chunks back
    let after_shutdown = pool.stats();

    let mut ok = true;
    let answered: u64 = results.iter().filter_map(|r| r.as_ref().ok()).sum();
    for e in results.iter().filter_map(|r| r.as_ref().err()) {
        println!("  FAILED: {e}");
        ok = false;
    }
    let bytes = counters.bytes.load(Relaxed);
    println!(
        "  {answered} frames ({:.1} MiB of payload) answered correctly in {:.2} s: \
         {:.0} frames/s, {:.0} MiB/s; {} connections ended in error",
        bytes as f64 / (1u64 << 20) as f64,
        elapsed.as_secs_f64(),
        answered as f64 / elapsed.as_secs_f64(),
        bytes as f64 / elapsed.as_secs_f64() / (1u64 << 20) as f64,
        counters.errors.load(Relaxed)
    );
    println!("  pool after connections closed: {closed}");
    println!("  pool after runtime shutdown:   {after_shutdown}");
    if answered != (opts.connections * opts.frames) as u64 {
        println!(
            "  FAILED: {answered} of {} frames answered",
            opts.connections * opts.frames
        );
        ok = false;
    }
    if !closed.is_quiet() {
        println!("  FAILED: buffers still alive after every connection closed");
        ok = false;
    }
    ok
}

fn run_server(addr: SocketAddr, opts: &Options) -> ! {
    let pool = server_pool(opts);
    let rt = runtime("framed-server");
    let counters = Arc::new(ServerCounters::default());
    let listener = rt
        .block_on(TcpListener::bind(addr))
        .unwrap_or_else(|e| fail(&format!("bind {addr}: {e}")));
    println!("framed: server on {addr}; stop it with Ctrl-C");
    rt.spawn(serve(listener, pool.clone(), counters.clone()));
    loop {
        thread::sleep(Duration::from_secs(5));
        println!(
            "  {} open, {} frames; pool: {}",
            counters.open.load(Relaxed),
            counters.frames.load(Relaxed),
            pool.stats()
        );
    }
}

fn main() {
    let opts = parse_args();
    if let Some(addr) = opts.server {
        run_server(addr, &opts);
    }
    if !run_self_driving(&opts) {
        process::exit(1);
    }
}
