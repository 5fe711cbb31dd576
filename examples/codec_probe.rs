//! The ratio report's small-frame codec echo row alone, on one side: a whole-process probe for
//! callgrind, cachegrind and perf (the report runs both sides in one process).
//!
//! ```text
//! cargo build --release --features codec --example codec_probe
//! valgrind --tool=callgrind target/release/examples/codec_probe pool 200000
//! valgrind --tool=callgrind target/release/examples/codec_probe tokio-util 200000
//! ```
//!
//! `SIDE N [MIN MAX]`: SIDE is `pool` or `tokio-util`; N frames after a warm-up of N / 10;
//! frames of MIN..=MAX bytes (default 64 1500, the report's small-frame row). Prints the
//! nanoseconds a frame of the measured run. The work per frame is `(run(2N) - run(N)) / N`
//! in instructions, which leaves the warm-up and start-up out.

#[path = "../benches/workloads/mod.rs"]
mod workloads;

/// The report's codec rows; this probe runs the echo.
#[cfg(feature = "codec")]
#[allow(dead_code)]
#[path = "shared/codec_rows.rs"]
mod codec_rows;

#[cfg(feature = "codec")]
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: codec_probe pool|tokio-util N [MIN MAX]";
    let (side, n) = match (
        args.first(),
        args.get(1).and_then(|n| n.parse::<u64>().ok()),
    ) {
        (Some(side), Some(n)) => (side.clone(), n),
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    };
    let min = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(64);
    let max = args.get(3).and_then(|v| v.parse().ok()).unwrap_or(1500);
    let wire = codec_rows::wire(min, max);
    let pool = adaptive_pool::AdaptiveAllocator::new();
    // Several sides, comma-separated: run alternately, 9 rounds, medians.
    let sides: Vec<&str> = side.split(',').collect();
    let run = |side: &str, n| match side {
        "pool" => codec_rows::echo_pool(&pool, &wire, n),
        "tokio-util" => codec_rows::echo_tokio_util(&wire, n),
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    };
    if sides.len() == 1 {
        run(&side, n / 10);
        let t = run(&side, n);
        println!("{side}: {:.1} ns a frame", t.as_nanos() as f64 / n as f64);
        return;
    }
    let mut times = vec![Vec::new(); sides.len()];
    for s in &sides {
        run(s, n / 10);
    }
    for _ in 0..9 {
        for (i, s) in sides.iter().enumerate() {
            times[i].push(run(s, n).as_nanos() as f64 / n as f64);
        }
    }
    for (i, s) in sides.iter().enumerate() {
        times[i].sort_by(f64::total_cmp);
        println!("{s}: median {:.1} ns a frame", times[i][4]);
    }
}

#[cfg(not(feature = "codec"))]
fn main() {
    eprintln!("codec_probe needs --features codec");
    std::process::exit(2);
}
