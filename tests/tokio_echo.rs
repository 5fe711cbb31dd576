//! The tokio echo server on the pool, over real loopback sockets (feature `tokio`).
//!
//! A server on 127.0.0.1 (an ephemeral port) echoes every connection with
//! `AsyncReadPoolExt::read_pooled`: each read goes into a pooled buffer sized by the
//! connection's `RecvPredictor` and is written back from that `PooledBuf`. Against it run, all at
//! once and each for a bounded number of messages:
//! * ordinary clients, sending messages of random sizes and checking every byte of the echo;
//! * slow readers, which read the echo in small pieces with pauses, so the server's writes
//!   block on a full socket while it holds pooled frames;
//! * abrupt disconnects: connections reset (zero linger) with data in flight in both
//!   directions, or after reading part of the echo, and one that closes without sending.
//!
//! Then, with every connection closed and every server task finished, the pool must have no
//! live buffer and at most `max_cached_bytes` cached. The allocator is the test's own (not
//! `global()`), so these figures are exact.
//!
//! Then the memory comes back while the runtime lives: its worker threads, idle and parked,
//! keep at most their idle budget each (`max_thread_idle_bytes`), and a `trim()` from this
//! thread (which runs no task) reaches their magazines and leaves nothing allocated; later,
//! after `idle_release`, the idle sweep does the same without a call, on light activity (a
//! `stats()` now and then). Only at the end is the runtime shut down; its workers' exit hands
//! back the little they took meanwhile.

mod common;

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use adaptive_pool::io::AsyncReadPoolExt;
use adaptive_pool::{AdaptiveAllocator, RecvPredictor, Stats};
use common::Rng;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

const MAX_CACHED: usize = 1 << 20;
const PER_THREAD: usize = 256 << 10;
const IDLE_RELEASE: Duration = Duration::from_millis(300);
/// The runtime's worker threads.
const WORKERS: usize = 2;
/// Receive sizes: small bounds so that the predictor moves both ways within a short test.
const MIN_READ: usize = 256;
const INITIAL_READ: usize = 1024;
const MAX_READ: usize = 32 << 10;

const NORMAL_CLIENTS: usize = 6;
const MESSAGES: usize = 150;
const LARGEST_MESSAGE: usize = 48 << 10;
const SLOW_READERS: usize = 2;
const SLOW_BYTES: usize = 512 << 10;
const RESET_CLIENTS: usize = 4;
/// Everything must be over well within this.
const LIMIT: Duration = Duration::from_secs(60);

fn pool() -> AdaptiveAllocator {
    AdaptiveAllocator::builder()
        .max_memory(256 << 20)
        .max_cached_bytes(MAX_CACHED)
        .max_thread_idle_bytes(PER_THREAD)
        .idle_release(IDLE_RELEASE)
        .build()
        .expect("valid settings")
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// How one server connection ended.
#[derive(Debug)]
struct Served {
    echoed: io::Result<u64>,
    /// The largest read size the predictor offered, and the smallest after it.
    largest_offer: usize,
    smallest_offer_after_largest: usize,
}

/// The server side of one connection: read into pooled buffers, write back. Generic over the
/// stream, which checks that the futures of `AsyncReadPoolExt` are `Send` whenever the reader
/// is (this is spawned on a multi-thread runtime).
async fn echo<S>(mut stream: S, pool: AdaptiveAllocator) -> Served
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut predictor = RecvPredictor::with_bounds(MIN_READ, INITIAL_READ, MAX_READ).unwrap();
    let mut served = Served {
        echoed: Ok(0),
        largest_offer: 0,
        smallest_offer_after_largest: usize::MAX,
    };
    let result: io::Result<u64> = async {
        let mut echoed = 0u64;
        loop {
            let offer = predictor.next_size();
            if offer > served.largest_offer {
                served.largest_offer = offer;
                served.smallest_offer_after_largest = offer;
            }
            served.smallest_offer_after_largest = served.smallest_offer_after_largest.min(offer);
            let Some(frame) = stream.read_pooled(&pool, &mut predictor).await? else {
                break;
            };
            assert!(!frame.is_empty());
            stream.write_all(&frame).await?;
            echoed += frame.len() as u64;
        }
        stream.shutdown().await?;
        Ok(echoed)
    }
    .await;
    served.echoed = result;
    served
}

/// Accepts exactly `connections` connections, serves each in its own task, and returns how
/// each ended once all have.
async fn serve(listener: TcpListener, pool: AdaptiveAllocator, connections: usize) -> Vec<Served> {
    let mut tasks: Vec<JoinHandle<Served>> = Vec::new();
    for _ in 0..connections {
        let (stream, _) = listener.accept().await.expect("accept");
        tasks.push(tokio::spawn(echo(stream, pool.clone())));
    }
    let mut served = Vec::new();
    for t in tasks {
        served.push(t.await.expect("a server task panicked"));
    }
    served
}

/// The byte a client sends at `offset` of its stream.
fn pattern(client: usize, offset: usize) -> u8 {
    (offset.wrapping_mul(131) ^ (offset >> 9) ^ client.wrapping_mul(29)) as u8
}

fn payload(client: usize, from: usize, len: usize) -> Vec<u8> {
    (from..from + len).map(|i| pattern(client, i)).collect()
}

/// Reads until EOF, checking every byte against the pattern; pauses after each read if slow.
async fn read_echo(
    mut rd: impl AsyncRead + Unpin,
    client: usize,
    piece: usize,
    pause: Option<Duration>,
) -> io::Result<usize> {
    let mut buf = vec![0u8; piece];
    let mut offset = 0;
    loop {
        let n = rd.read(&mut buf).await?;
        if n == 0 {
            return Ok(offset);
        }
        for (i, &b) in buf[..n].iter().enumerate() {
            assert_eq!(
                b,
                pattern(client, offset + i),
                "client {client}: wrong byte at offset {}",
                offset + i
            );
        }
        offset += n;
        if let Some(p) = pause {
            tokio::time::sleep(p).await;
        }
    }
}

/// Sends `MESSAGES` messages of random sizes (mostly small, every tenth large), half-closes,
/// and checks the whole echo. Even-numbered clients wait for each message's echo before the
/// next (request-response: the server's reads follow the message sizes, so its predictor
/// grows on the large ones and shrinks on the small ones); odd-numbered ones stream, with a
/// separate task reading. Returns the bytes sent.
async fn normal_client(addr: SocketAddr, client: usize) -> usize {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let mut rng = Rng(0x5EED ^ ((client as u64 + 1) << 20));
    let sizes: Vec<usize> = (0..MESSAGES)
        .map(|m| {
            if m % 10 == 9 {
                1 + rng.below(LARGEST_MESSAGE)
            } else {
                1 + rng.below(600)
            }
        })
        .collect();
    let total: usize = sizes.iter().sum();
    let (mut rd, mut wr) = stream.into_split();
    if client % 2 == 0 {
        let mut sent = 0;
        let mut echo = vec![0u8; LARGEST_MESSAGE];
        for len in sizes {
            let message = payload(client, sent, len);
            wr.write_all(&message).await.expect("write");
            rd.read_exact(&mut echo[..len])
                .await
                .expect("read the echo");
            assert_eq!(echo[..len], message[..], "client {client}: echo at {sent}");
            sent += len;
        }
        wr.shutdown().await.expect("half-close");
        assert_eq!(rd.read(&mut echo).await.expect("EOF"), 0, "nothing more");
    } else {
        let reader = tokio::spawn(read_echo(rd, client, 8 << 10, None));
        let mut sent = 0;
        for len in sizes {
            wr.write_all(&payload(client, sent, len))
                .await
                .expect("write");
            sent += len;
        }
        wr.shutdown().await.expect("half-close");
        let received = reader.await.unwrap().expect("read the echo");
        assert_eq!(received, sent, "client {client}: every byte must come back");
    }
    total
}

/// Sends `SLOW_BYTES` at full speed and reads the echo 1 KiB at a time with pauses.
async fn slow_reader(addr: SocketAddr, client: usize) -> usize {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (rd, mut wr) = stream.into_split();
    let reader = tokio::spawn(read_echo(
        rd,
        client,
        1024,
        Some(Duration::from_micros(300)),
    ));
    let data = payload(client, 0, SLOW_BYTES);
    for piece in data.chunks(8 << 10) {
        wr.write_all(piece).await.expect("write");
    }
    wr.shutdown().await.expect("half-close");
    let received = reader.await.unwrap().expect("read the echo");
    assert_eq!(
        received, SLOW_BYTES,
        "slow client {client}: every byte must come back"
    );
    SLOW_BYTES
}

/// Disconnects abruptly. Kinds 0 and 1 reset the connection (zero linger) with data in flight:
/// 0 without reading anything, 1 after reading part of the echo. Kind 2 connects and closes
/// without sending.
async fn abrupt_client(addr: SocketAddr, client: usize, kind: usize) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    match kind {
        0 | 1 => {
            // Small enough for the socket buffers both ways: this client never reads it all.
            stream
                .write_all(&payload(client, 0, 32 << 10))
                .await
                .expect("write");
            if kind == 1 {
                let mut part = vec![0u8; 4096];
                stream
                    .read_exact(&mut part)
                    .await
                    .expect("part of the echo");
                assert_eq!(part, payload(client, 0, 4096));
            }
            // Data still unread and in flight: the close sends a reset.
            stream.set_zero_linger().expect("SO_LINGER 0");
            drop(stream);
        }
        _ => drop(stream),
    }
}

fn quiet_within(pool: &AdaptiveAllocator, what: &str) -> Stats {
    let s = pool.stats();
    assert_eq!(s.live_buffers, 0, "{what}: live buffers remain: {s}");
    assert_eq!(s.live_bytes, 0, "{what}: {s}");
    assert!(
        s.cached_bytes <= MAX_CACHED,
        "{what}: cache over max_cached_bytes: {s}"
    );
    s
}

#[test]
fn echo_server_on_the_pool_returns_every_byte_and_every_buffer() {
    let pool = pool();
    let rt = runtime();
    let started = Instant::now();

    let served = rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let total = NORMAL_CLIENTS + SLOW_READERS + RESET_CLIENTS;
        let server = tokio::spawn(serve(listener, pool.clone(), total));

        let mut clients: Vec<JoinHandle<usize>> = Vec::new();
        for c in 0..NORMAL_CLIENTS {
            clients.push(tokio::spawn(normal_client(addr, c)));
        }
        for c in 0..SLOW_READERS {
            clients.push(tokio::spawn(slow_reader(addr, 100 + c)));
        }
        for c in 0..RESET_CLIENTS {
            clients.push(tokio::spawn(async move {
                abrupt_client(addr, 200 + c, c % 3).await;
                0
            }));
        }
        let work = async {
            let mut sent = 0;
            for c in clients {
                sent += c.await.expect("a client task panicked");
            }
            (sent, server.await.expect("the server task panicked"))
        };
        tokio::time::timeout(LIMIT, work)
            .await
            .expect("the clients and the server finish in time")
    });
    let (sent, served) = served;

    // Every connection's server task has ended: the ordinary and slow ones cleanly, having
    // echoed exactly what was sent; the reset ones with a reset or broken pipe.
    assert_eq!(served.len(), NORMAL_CLIENTS + SLOW_READERS + RESET_CLIENTS);
    let mut echoed = 0;
    let (mut clean, mut reset, mut empty) = (0, 0, 0);
    for s in &served {
        match &s.echoed {
            Ok(0) => empty += 1,
            Ok(n) => {
                echoed += n;
                clean += 1;
            }
            Err(e) => {
                assert!(
                    matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
                    ),
                    "unexpected server error: {e}"
                );
                reset += 1;
            }
        }
    }
    assert_eq!(
        echoed, sent as u64,
        "the server echoed exactly what clients sent"
    );
    assert_eq!(clean, NORMAL_CLIENTS + SLOW_READERS);
    assert_eq!(reset, 3, "kinds 0, 1 and 0 again reset");
    assert_eq!(empty, 1, "kind 2 closes without data");

    // The predictor followed the traffic: it grew past its start on the large messages and
    // shrank again afterwards on the small ones.
    let largest = served.iter().map(|s| s.largest_offer).max().unwrap();
    assert!(
        largest > INITIAL_READ,
        "the predictor never grew: {served:?}"
    );
    assert!(
        served
            .iter()
            .any(|s| s.smallest_offer_after_largest < s.largest_offer),
        "the predictor never shrank: {served:?}"
    );

    // All connections are closed and their tasks done: no buffer alive, cache within budget,
    // and what the idle workers keep within their budgets.
    let closed = quiet_within(&pool, "after all connections closed");
    assert!(closed.chunk_allocations > 0, "the pool was used: {closed}");
    assert!(
        closed.magazines >= 1,
        "worker threads hold magazines: {closed}"
    );
    // The test's threads: the runtime's workers, and this one (which ran `block_on`).
    let threads = WORKERS + 1;
    assert!(
        closed.allocated_bytes <= MAX_CACHED + threads * PER_THREAD,
        "idle workers keep more than their budgets: {closed}"
    );

    // The runtime lives on, its workers parked. A trim from this thread reaches their
    // magazines: nothing stays allocated.
    let freed = pool.trim();
    let trimmed = quiet_within(&pool, "after trim() with the runtime alive");
    assert_eq!(trimmed.allocated_bytes, 0, "freed {freed}: {trimmed}");
    assert_eq!(trimmed.chunks, 0, "{trimmed}");

    // Another round of traffic, then no trim: after `idle_release`, light activity here (a
    // `stats()` now and then) runs the idle sweep, which gives the workers' chunks back.
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener, pool.clone(), 2));
        let a = tokio::spawn(normal_client(addr, 300));
        let b = tokio::spawn(normal_client(addr, 301));
        let work = async {
            a.await.unwrap();
            b.await.unwrap();
            server.await.unwrap()
        };
        tokio::time::timeout(LIMIT, work).await.expect("in time");
    });
    let busy = quiet_within(&pool, "after the second round");
    assert!(busy.allocated_bytes > 0, "{busy}");
    let deadline = Instant::now() + IDLE_RELEASE * 10;
    let mut decayed = pool.stats();
    while decayed.allocated_bytes > 0 && Instant::now() < deadline {
        std::thread::sleep(IDLE_RELEASE / 10);
        decayed = pool.stats();
    }
    assert_eq!(
        decayed.allocated_bytes,
        0,
        "idle workers' memory did not decay within {:?} of light activity (after the round: \
         {busy}): {decayed}",
        IDLE_RELEASE * 10
    );

    // Shut the runtime down: its worker threads exit; nothing was left to hand back.
    drop(rt);
    let deadline = Instant::now() + Duration::from_secs(10);
    while pool.stats().magazines > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let after = quiet_within(&pool, "after the runtime shut down");
    assert_eq!(
        after.magazines, 0,
        "every worker magazine handed back: {after}"
    );
    assert_eq!(after.allocated_bytes, 0, "{after}");
    assert!(started.elapsed() < LIMIT, "took {:?}", started.elapsed());
}
