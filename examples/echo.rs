//! A tokio TCP echo server on the pool, and a client that drives it and measures throughput.
//!
//! ```text
//! cargo run --release --features tokio --example echo                  # server + clients, 5 s
//! cargo run --release --features tokio --example echo -- --compare     # pool, then BytesMut
//! cargo run --release --features tokio --example echo -- --server 127.0.0.1:7000
//! cargo run --release --features tokio --example echo -- --client 127.0.0.1:7000 --duration 3
//! ```
//!
//! The server reads each connection with `AsyncReadPoolExt::read_pooled`: one read into a
//! pooled buffer of the size a per-connection `RecvPredictor` expects, returned as that
//! `PooledBuf` and written back (no copy, and no `Bytes` box: nothing here needs a `Bytes`). It waits for `TcpStream::readable` before
//! each read, so that a connection with nothing to read holds no buffer. With `--bytesmut` it does the same with
//! `BytesMut::with_capacity` of the same predicted size, so the two differ only in where the
//! buffers come from.
//!
//! Echo has no framing, so it stays on `adaptive_pool::io` rather than the `codec` module: a
//! `FramedRead` with `BytesCodec` would read the same pooled buffers and hold nothing while
//! idle too, but the loop is no shorter, and this example exists to measure `read_pooled`
//! and the readiness wait (`--no-wait-readable`). `examples/framed.rs` shows the codec.
//!
//! The clients open N connections on loopback; on each, one task writes a byte pattern for
//! the given time and then half-closes, and another reads the echo, checks every byte against
//! the pattern, and counts. At the end the program prints the throughput, the server's read
//! sizes, and the pool's statistics: at their peak during the run, after every connection
//! closed, after the server's runtime shut down (its worker threads exit and hand their
//! chunks back), and after `trim()`. It exits non-zero if any byte came back wrong or missing,
//! or if a buffer is still alive after the connections closed.

use std::env;
use std::io;
use std::net::SocketAddr;
use std::process;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use adaptive_pool::io::AsyncReadPoolExt;
use adaptive_pool::{AdaptiveAllocator, RecvPredictor, Stats};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::{self, Runtime};

const USAGE: &str = "\
usage: echo [--server ADDR | --client ADDR] [--connections N] [--duration SECS]
            [--size BYTES] [--threads N] [--read-sizes MIN,INITIAL,MAX]
            [--bytesmut | --compare] [--no-wait-readable] [--help]

A tokio TCP echo server whose reads go into adaptive_pool buffers sized by a RecvPredictor,
and a client that drives it. With neither --server nor --client, runs both in one process on
127.0.0.1 (an ephemeral port) and prints the throughput and the pool's statistics.

options:
  --server ADDR        only serve, on ADDR (e.g. 127.0.0.1:7000), until killed; prints the
                       pool's statistics every 5 s
  --client ADDR        only drive the server at ADDR (a loopback address)
  --connections N      client connections (default 32)
  --duration SECS      how long the clients write, fractions allowed (default 5)
  --size BYTES         bytes per client write (default 16384)
  --threads N          server worker threads (default 2)
  --read-sizes M,I,X   the server's RecvPredictor bounds: min, initial, max bytes per read
                       (default 64,2048,65536; M=I=X gives fixed-size reads)
  --bytesmut           the server reads into BytesMut::with_capacity instead of the pool
  --compare            run the one-process benchmark twice: the pool, then BytesMut
  --no-wait-readable   read at once instead of waiting for TcpStream::readable first, so
                       every connection waiting for data holds a buffer (to see the cost)
  --help               print this help";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Both,
    Server(SocketAddr),
    Client(SocketAddr),
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Backend {
    Pool,
    BytesMut,
}

#[derive(Clone, Copy)]
struct Options {
    mode: Mode,
    connections: usize,
    duration: Duration,
    size: usize,
    threads: usize,
    read_sizes: RecvPredictor,
    backend: Backend,
    compare: bool,
    wait_readable: bool,
}

fn fail(msg: &str) -> ! {
    eprintln!("echo: {msg}\n\n{USAGE}");
    process::exit(2)
}

fn parse_args() -> Options {
    let mut opts = Options {
        mode: Mode::Both,
        connections: 32,
        duration: Duration::from_secs(5),
        size: 16 << 10,
        threads: 2,
        read_sizes: RecvPredictor::new(),
        backend: Backend::Pool,
        compare: false,
        wait_readable: true,
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
        let addr = |v: String| match v.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => fail(&format!("{arg}: not an address like 127.0.0.1:7000: {v}")),
        };
        match arg.as_str() {
            "--server" => opts.mode = Mode::Server(addr(value())),
            "--client" => {
                let a = addr(value());
                if !a.ip().is_loopback() {
                    fail(&format!("--client: {a} is not a loopback address"));
                }
                opts.mode = Mode::Client(a);
            }
            "--connections" => opts.connections = number(value(), 1, 10_000),
            "--duration" => {
                let v = value();
                match v.parse::<f64>() {
                    Ok(s) if s.is_finite() && s > 0.0 && s <= 3600.0 => {
                        opts.duration = Duration::from_secs_f64(s)
                    }
                    _ => fail(&format!(
                        "--duration: not a number of seconds in (0, 3600]: {v}"
                    )),
                }
            }
            "--size" => opts.size = number(value(), 1, 16 << 20),
            "--threads" => opts.threads = number(value(), 1, 256),
            "--read-sizes" => {
                let v = value();
                let parts: Vec<usize> = v
                    .split(',')
                    .map(|p| {
                        p.trim()
                            .parse()
                            .unwrap_or_else(|_| fail(&format!("--read-sizes: {v}")))
                    })
                    .collect();
                let [min, initial, max] = parts[..] else {
                    fail(&format!(
                        "--read-sizes: three numbers MIN,INITIAL,MAX, got {v}"
                    ))
                };
                opts.read_sizes = RecvPredictor::with_bounds(min, initial, max)
                    .unwrap_or_else(|e| fail(&format!("--read-sizes: {e}")));
            }
            "--bytesmut" => opts.backend = Backend::BytesMut,
            "--compare" => opts.compare = true,
            "--no-wait-readable" => opts.wait_readable = false,
            "-h" | "--help" => {
                println!("{USAGE}");
                process::exit(0);
            }
            other => fail(&format!("unknown argument {other}")),
        }
    }
    if opts.compare && opts.mode != Mode::Both {
        fail("--compare runs server and clients in one process: drop --server/--client");
    }
    opts
}

// --- the server -----------------------------------------------------------------------------

/// What the server counts, shared by its connection tasks.
#[derive(Default)]
struct ServerCounters {
    /// Connections being served now.
    open: AtomicUsize,
    /// Connections served and closed.
    closed: AtomicU64,
    /// Connections that ended with an error (reset by the peer, ...).
    errors: AtomicU64,
    /// Reads that returned data, and their bytes.
    reads: AtomicU64,
    bytes: AtomicU64,
    /// Largest read seen, and the sum of the predictor's sizes offered (for the mean).
    largest_read: AtomicUsize,
    offered: AtomicU64,
}

/// Echoes one connection: read into a pooled buffer of the predicted size, write it back.
async fn echo_pooled(
    stream: &mut TcpStream,
    pool: &AdaptiveAllocator,
    mut predictor: RecvPredictor,
    wait_readable: bool,
    counters: &ServerCounters,
) -> io::Result<()> {
    loop {
        // Take a buffer only once there is something to read: an idle connection then holds
        // no pooled memory (`read_pooled` allocates before it reads).
        if wait_readable {
            stream.readable().await?;
        }
        let offered = predictor.next_size();
        let Some(frame) = stream.read_pooled(pool, &mut predictor).await? else {
            break;
        };
        counters.note_read(frame.len(), offered);
        stream.write_all(&frame).await?;
    }
    stream.shutdown().await
}

/// The same with plain `BytesMut`, sized by the same predictor.
async fn echo_bytesmut(
    stream: &mut TcpStream,
    mut predictor: RecvPredictor,
    wait_readable: bool,
    counters: &ServerCounters,
) -> io::Result<()> {
    loop {
        if wait_readable {
            stream.readable().await?;
        }
        let offered = predictor.next_size();
        let mut buf = BytesMut::with_capacity(offered);
        let n = stream.read_buf(&mut buf).await?;
        predictor.record(n);
        if n == 0 {
            break;
        }
        let frame: Bytes = buf.freeze();
        counters.note_read(frame.len(), offered);
        stream.write_all(&frame).await?;
    }
    stream.shutdown().await
}

impl ServerCounters {
    fn note_read(&self, n: usize, offered: usize) {
        self.reads.fetch_add(1, Relaxed);
        self.bytes.fetch_add(n as u64, Relaxed);
        self.largest_read.fetch_max(n, Relaxed);
        self.offered.fetch_add(offered as u64, Relaxed);
    }
}

/// Accepts connections for ever, one task each.
async fn serve(
    listener: TcpListener,
    backend: Backend,
    pool: AdaptiveAllocator,
    read_sizes: RecvPredictor,
    wait_readable: bool,
    counters: Arc<ServerCounters>,
) {
    loop {
        let (mut stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("echo: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        counters.open.fetch_add(1, Relaxed);
        let (pool, counters) = (pool.clone(), counters.clone());
        tokio::spawn(async move {
            let result = match backend {
                Backend::Pool => {
                    echo_pooled(&mut stream, &pool, read_sizes, wait_readable, &counters).await
                }
                Backend::BytesMut => {
                    echo_bytesmut(&mut stream, read_sizes, wait_readable, &counters).await
                }
            };
            if result.is_err() {
                counters.errors.fetch_add(1, Relaxed);
            }
            drop(stream);
            counters.closed.fetch_add(1, Relaxed);
            counters.open.fetch_sub(1, Relaxed);
        });
    }
}

fn server_runtime(threads: usize) -> Runtime {
    runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("echo-server")
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// The allocator the server uses: its own, so its statistics count the server alone.
fn server_pool() -> AdaptiveAllocator {
    AdaptiveAllocator::builder()
        .max_memory(512 << 20)
        .build()
        .expect("valid settings")
}

// --- the clients ----------------------------------------------------------------------------

/// The byte pattern: connection `c` sends `PATTERN[(offset + 7 c) % 251]` at stream offset
/// `offset`; `pattern` holds enough of it that any write or read is one slice of it.
const PERIOD: usize = 251;

fn pattern(len: usize) -> Bytes {
    (0..PERIOD + len).map(|i| (i % PERIOD) as u8).collect()
}

fn pattern_start(conn: usize, offset: u64) -> usize {
    ((offset + 7 * conn as u64) % PERIOD as u64) as usize
}

/// What the clients count.
#[derive(Default)]
struct ClientCounters {
    sent: AtomicU64,
    received: AtomicU64,
    failures: Mutex<Vec<String>>,
}

/// One connection: a writer for `duration`, then a half-close; a reader checking the echo.
async fn client(
    addr: SocketAddr,
    conn: usize,
    size: usize,
    deadline: Instant,
    pattern: Bytes,
    counters: Arc<ClientCounters>,
) {
    let result: io::Result<(u64, u64)> = async {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (mut rd, mut wr) = stream.into_split();
        let writer_pattern = pattern.clone();
        let writer = tokio::spawn(async move {
            let mut sent = 0u64;
            while Instant::now() < deadline {
                let start = pattern_start(conn, sent);
                wr.write_all(&writer_pattern[start..start + size]).await?;
                sent += size as u64;
            }
            wr.shutdown().await?;
            Ok::<u64, io::Error>(sent)
        });
        let mut buf = vec![0u8; 64 << 10];
        let mut received = 0u64;
        loop {
            let n = rd.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            let start = pattern_start(conn, received);
            if buf[..n] != pattern[start..start + n] {
                return Err(io::Error::other(format!(
                    "wrong bytes at offset {received}..{}",
                    received + n as u64
                )));
            }
            received += n as u64;
        }
        let sent = writer.await.map_err(io::Error::other)??;
        Ok((sent, received))
    }
    .await;
    match result {
        Ok((sent, received)) => {
            counters.sent.fetch_add(sent, Relaxed);
            counters.received.fetch_add(received, Relaxed);
            if sent != received {
                counters.failures.lock().unwrap().push(format!(
                    "connection {conn}: sent {sent} bytes, {received} came back"
                ));
            }
        }
        Err(e) => counters
            .failures
            .lock()
            .unwrap()
            .push(format!("connection {conn}: {e}")),
    }
}

/// Runs the clients; returns their counters and how long they took (until the last echo).
fn run_clients(addr: SocketAddr, opts: &Options) -> (Arc<ClientCounters>, Duration) {
    let rt = runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("echo-client")
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let counters = Arc::new(ClientCounters::default());
    let pattern = pattern(opts.size.max(64 << 10));
    let started = Instant::now();
    let deadline = started + opts.duration;
    rt.block_on(async {
        let tasks: Vec<_> = (0..opts.connections)
            .map(|conn| {
                tokio::spawn(client(
                    addr,
                    conn,
                    opts.size,
                    deadline,
                    pattern.clone(),
                    counters.clone(),
                ))
            })
            .collect();
        for t in tasks {
            t.await.expect("a client task panicked");
        }
    });
    (counters, started.elapsed())
}

// --- one process: server and clients ------------------------------------------------------

/// Samples the pool's statistics in the background, keeping the peak.
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<(Stats, Stats)>,
}

impl Sampler {
    fn start(pool: AdaptiveAllocator) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::spawn(move || {
            let (mut peak_allocated, mut peak_live) = (Stats::default(), Stats::default());
            while !flag.load(Relaxed) {
                let s = pool.stats();
                if s.allocated_bytes > peak_allocated.allocated_bytes {
                    peak_allocated = s;
                }
                if s.live_bytes > peak_live.live_bytes {
                    peak_live = s;
                }
                thread::sleep(Duration::from_millis(20));
            }
            (peak_allocated, peak_live)
        });
        Sampler { stop, thread }
    }

    fn finish(self) -> (Stats, Stats) {
        self.stop.store(true, Relaxed);
        self.thread.join().expect("the sampler panicked")
    }
}

struct Outcome {
    backend: Backend,
    mib_per_s: f64,
    echoed: u64,
    reads: u64,
    ok: bool,
}

fn mib(bytes: impl Into<u64>) -> String {
    format!("{:.1} MiB", bytes.into() as f64 / (1u64 << 20) as f64)
}

fn run_both(backend: Backend, opts: &Options) -> Outcome {
    let pool = server_pool();
    let server = server_runtime(opts.threads);
    let counters = Arc::new(ServerCounters::default());
    let listener = server
        .block_on(TcpListener::bind("127.0.0.1:0"))
        .expect("bind 127.0.0.1");
    let addr = listener.local_addr().expect("a local address");
    server.spawn(serve(
        listener,
        backend,
        pool.clone(),
        opts.read_sizes,
        opts.wait_readable,
        counters.clone(),
    ));
    println!(
        "echo: {backend:?} server on {addr} ({} worker threads, reads {}..{} B starting at {}), \
         {} connections writing {} B at a time for {:.1} s",
        opts.threads,
        opts.read_sizes.min_read(),
        opts.read_sizes.max_read(),
        opts.read_sizes.initial_read(),
        opts.connections,
        opts.size,
        opts.duration.as_secs_f64()
    );
    let sampler = Sampler::start(pool.clone());
    let (clients, elapsed) = run_clients(addr, opts);
    // The clients saw every echo, but the server tasks may still be dropping their streams.
    let wait_from = Instant::now();
    while counters.open.load(Relaxed) > 0 && wait_from.elapsed() < Duration::from_secs(10) {
        thread::sleep(Duration::from_millis(5));
    }
    let (peak_allocated, peak_live) = sampler.finish();
    let closed = pool.stats();
    drop(server); // worker threads exit; their magazines hand their chunks back
    let after_shutdown = pool.stats();
    pool.trim();
    let after_trim = pool.stats();

    let echoed = clients.received.load(Relaxed);
    let reads = counters.reads.load(Relaxed);
    let mib_per_s = echoed as f64 / elapsed.as_secs_f64() / (1u64 << 20) as f64;
    let failures = clients.failures.lock().unwrap();
    println!(
        "  echoed {} of {} sent in {:.2} s: {mib_per_s:.0} MiB/s each way; {} connections, \
         {} ended in error",
        mib(echoed),
        mib(clients.sent.load(Relaxed)),
        elapsed.as_secs_f64(),
        counters.closed.load(Relaxed),
        counters.errors.load(Relaxed),
    );
    if let Some(mean) = counters.bytes.load(Relaxed).checked_div(reads) {
        println!(
            "  server reads: {reads}, mean {mean} B into buffers of mean {} B offered, \
             largest {} B",
            counters.offered.load(Relaxed) / reads,
            counters.largest_read.load(Relaxed)
        );
    }
    let mut ok = failures.is_empty();
    for f in failures.iter().take(10) {
        println!("  FAILED: {f}");
    }
    if backend == Backend::Pool {
        println!("  pool at peak allocated:  {peak_allocated}");
        println!("  pool at peak live:       {peak_live}");
        if peak_live.live_bytes > 0 {
            println!(
                "  peak allocated / peak live: {:.2}",
                peak_allocated.allocated_bytes as f64 / peak_live.live_bytes as f64
            );
        }
        println!("  after connections closed: {closed}");
        println!("  after runtime shutdown:   {after_shutdown}");
        println!("  after trim():             {after_trim}");
        if !closed.is_quiet() {
            println!("  FAILED: buffers still alive after every connection closed");
            ok = false;
        }
    }
    Outcome {
        backend,
        mib_per_s,
        echoed,
        reads,
        ok,
    }
}

// --- the other modes ------------------------------------------------------------------------

fn run_server(addr: SocketAddr, opts: &Options) -> ! {
    let pool = server_pool();
    let rt = server_runtime(opts.threads);
    let counters = Arc::new(ServerCounters::default());
    let listener = rt
        .block_on(TcpListener::bind(addr))
        .unwrap_or_else(|e| fail(&format!("bind {addr}: {e}")));
    println!(
        "echo: {:?} server on {addr}; stop it with Ctrl-C",
        opts.backend
    );
    rt.spawn(serve(
        listener,
        opts.backend,
        pool.clone(),
        opts.read_sizes,
        opts.wait_readable,
        counters.clone(),
    ));
    loop {
        thread::sleep(Duration::from_secs(5));
        println!(
            "  {} open, {} closed, {} echoed; pool: {}",
            counters.open.load(Relaxed),
            counters.closed.load(Relaxed),
            mib(counters.bytes.load(Relaxed)),
            pool.stats()
        );
    }
}

fn run_client(addr: SocketAddr, opts: &Options) -> bool {
    let (clients, elapsed) = run_clients(addr, opts);
    let echoed = clients.received.load(Relaxed);
    println!(
        "echo: echoed {} of {} sent in {:.2} s: {:.0} MiB/s each way",
        mib(echoed),
        mib(clients.sent.load(Relaxed)),
        elapsed.as_secs_f64(),
        echoed as f64 / elapsed.as_secs_f64() / (1u64 << 20) as f64
    );
    let failures = clients.failures.lock().unwrap();
    for f in failures.iter().take(10) {
        println!("  FAILED: {f}");
    }
    failures.is_empty()
}

fn main() {
    let opts = parse_args();
    let ok = match opts.mode {
        Mode::Server(addr) => run_server(addr, &opts),
        Mode::Client(addr) => run_client(addr, &opts),
        Mode::Both if opts.compare => {
            let runs = [
                run_both(Backend::Pool, &opts),
                run_both(Backend::BytesMut, &opts),
            ];
            println!("\n  backend     MiB/s   echoed      reads");
            for r in &runs {
                println!(
                    "  {:<9} {:>7.0} {:>10} {:>10}",
                    format!("{:?}", r.backend),
                    r.mib_per_s,
                    mib(r.echoed),
                    r.reads
                );
            }
            runs.iter().all(|r| r.ok)
        }
        Mode::Both => run_both(opts.backend, &opts).ok,
    };
    if !ok {
        process::exit(1);
    }
}
