//! Running an example again under another global allocator: a process has one global
//! allocator, so the reports that compare allocators (`ratio`, `zeropool`, `latency`) run
//! themselves through cargo once per allocator feature and read the child's standard output.

use std::env;
use std::process::{self, Command};

/// Runs `cargo run --quiet --release --example NAME --features FEATURES -- ARGS` in this
/// crate and answers the child's standard output (its standard error goes to ours), or why
/// it could not be had.
pub fn run_example(name: &str, features: &[&str], args: &[&str]) -> Result<String, String> {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(env!("CARGO_MANIFEST_DIR")).args([
        "run",
        "--quiet",
        "--release",
        "--example",
        name,
    ]);
    if !features.is_empty() {
        cmd.args(["--features", &features.join(",")]);
    }
    cmd.arg("--").args(args);
    eprintln!("==> {cmd:?}");
    let out = cmd
        .stderr(process::Stdio::inherit())
        .output()
        .map_err(|e| format!("could not start cargo: {e}"))?;
    if !out.status.success() {
        return Err(format!("exited with {}", out.status));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
