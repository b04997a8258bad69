//! Helpers for Tessera's host-side integration tests (`tests/tests/*.rs`).
//!
//! The tests build images with the xtask library and boot them under QEMU.
//! When QEMU (or a board's machine) is missing, a test *skips*: it prints
//! `SKIPPED <test>: <reason>` straight to the process's stderr (libtest does
//! not capture that, so the skip is visible in `cargo test` output) and
//! returns. With `TESSERA_REQUIRE_QEMU=1` (set by `.ci/run`) a skip is a
//! failure instead.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use xtask::builder::{self, BuildRequest, BuiltImage};
use xtask::parse::{self, BootReport};
use xtask::process::Outcome;
use xtask::qemu::{self, QemuRunner};

pub use xtask::Board;

/// Per-boot timeout used by the tests (the watchdog of the hanging
/// deliberate-failure test must fire well within it).
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

/// Reports a skipped test visibly (or fails under `TESSERA_REQUIRE_QEMU=1`).
pub fn skip(test: &str, reason: &str) {
    if std::env::var_os("TESSERA_REQUIRE_QEMU").is_some_and(|v| v == "1") {
        panic!("{test}: cannot run ({reason}) and TESSERA_REQUIRE_QEMU=1");
    }
    // Not eprintln!: libtest captures that; a direct write to stderr is not.
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED {test}: {reason}");
}

/// `true` if `board` can be booted; otherwise reports the skip of `test`.
pub fn board_available(test: &str, board: Board) -> bool {
    match qemu::detect().and_then(|q| q.check_board(board)) {
        Ok(()) => true,
        Err(reason) => {
            skip(test, &reason);
            false
        }
    }
}

/// Builds `app` for `board` with `features` (cargo output shown only on
/// failure). Panics with the build log on failure.
pub fn build(app: &str, board: Board, features: &[&str]) -> BuiltImage {
    let req = BuildRequest::new(app, board)
        .features(features.iter().copied())
        .quiet(true);
    match builder::build(&req) {
        Ok(image) => image,
        Err(e) => panic!("{e:#}"),
    }
}

/// A finished boot: how QEMU ended, and the parsed serial output.
#[derive(Debug)]
pub struct Boot {
    pub outcome: Outcome,
    pub report: BootReport,
    pub command: String,
}

impl Boot {
    pub fn code(&self) -> Option<i32> {
        self.outcome.code()
    }

    /// Context for assertion messages: the command and all output.
    pub fn log(&self) -> String {
        format!(
            "$ {}\n-> {}\n--- serial (stdout) ---\n{}\n--- stderr ---\n{}",
            self.command,
            self.outcome.describe(),
            self.outcome.stdout,
            self.outcome.stderr
        )
    }
}

/// Boots `image` with `bootargs`, capturing output.
pub fn boot(image: &BuiltImage, bootargs: &str) -> Boot {
    boot_with(QemuRunner::new(image).append(bootargs).timeout(BOOT_TIMEOUT))
}

/// Boots with `runner` (the command line `cargo xtask run` would use, adjusted), capturing output.
pub fn boot_with(runner: QemuRunner) -> Boot {
    let command = xtask::process::render(&runner.command().expect("QEMU command line"));
    let outcome = runner
        .run_captured(false)
        .unwrap_or_else(|e| panic!("{command}: {e:#}"));
    let report = parse::parse_boot_output(&outcome.stdout);
    Boot {
        outcome,
        report,
        command,
    }
}

/// A fresh scratch directory under `target/tessera-tests/<name>`.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = xtask::target_root()
        .join("tessera-tests")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}
