//! `cargo xtask bench <name>`: benchmarks boot an image under QEMU with
//! `-icount shift=0,sleep=off` (deterministic virtual time: one instruction
//! per virtual nanosecond, no sleeping) and report what the image prints.
//!
//! No benchmark exists yet. To add one (e.g. `fork`), add an entry to
//! [`BENCHMARKS`] naming the app, its features and bootargs, and teach
//! [`Benchmark::report`] (or a per-benchmark parser) how to read its output.

use std::time::Duration;

use anyhow::{bail, Result};

use crate::builder::{self, BuildRequest};
use crate::qemu::{self, QemuRunner};
use crate::Board;

/// A benchmark: an app booted with icount on a board.
#[derive(Clone, Copy, Debug)]
pub struct Benchmark {
    pub name: &'static str,
    pub app: &'static str,
    pub features: &'static [&'static str],
    pub bootargs: &'static str,
    pub board: Board,
    pub timeout: Duration,
}

/// The registered benchmarks.
pub const BENCHMARKS: &[Benchmark] = &[];

impl Benchmark {
    /// Builds, boots with icount, and returns the serial output.
    pub fn run(&self) -> Result<String> {
        qemu::require_board(self.board)?;
        let image = builder::build(
            &BuildRequest::new(self.app, self.board).features(self.features.iter().copied()),
        )?;
        let runner = QemuRunner::new(&image)
            .append(self.bootargs)
            .icount(true)
            .timeout(self.timeout);
        let o = runner.run_captured(true)?;
        if !o.success() {
            bail!("benchmark {} failed: {}", self.name, o.describe());
        }
        Ok(o.stdout)
    }

    /// The lines of the output that are benchmark results (`bench ...`).
    pub fn report(&self, output: &str) -> Vec<String> {
        output
            .lines()
            .map(|l| l.trim_end_matches('\r'))
            .filter(|l| l.starts_with("bench "))
            .map(str::to_string)
            .collect()
    }
}

pub fn find(name: &str) -> Result<&'static Benchmark> {
    if BENCHMARKS.is_empty() {
        bail!("no benchmarks yet: {name}");
    }
    BENCHMARKS.iter().find(|b| b.name == name).ok_or_else(|| {
        let valid: Vec<&str> = BENCHMARKS.iter().map(|b| b.name).collect();
        anyhow::anyhow!(
            "unknown benchmark '{name}'; valid benchmarks: {}",
            valid.join(", ")
        )
    })
}

pub fn run(name: &str) -> Result<()> {
    let bench = find(name)?;
    let output = bench.run()?;
    println!();
    for line in bench.report(&output) {
        println!("{line}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn no_benchmarks_yet() {
        assert_eq!(
            super::find("fork").unwrap_err().to_string(),
            "no benchmarks yet: fork"
        );
    }
}
