//! `cargo xtask test`: the house-style checks (`cargo fmt --check`, clippy with
//! `-D warnings` on the host crates and on the kernel target), host tests, then
//! the boot tests of `selftest` on every available board, then a closing
//! `N passed, N failed` line. Each check counts as one test.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::Result;

use crate::builder::{self, BuildRequest};
use crate::parse::{self, BootReport};
use crate::process::{self, Echo, Outcome};
use crate::qemu::{self, QemuRunner};
use crate::{toolchain, workspace_root, Board};

/// The host packages tested by the host phase (and linted on the host).
pub const HOST_PACKAGES: [&str; 5] = ["arch", "tessera-mm", "libos", "xtask", "tessera-tests"];
/// The apps, linted for the kernel target.
pub const TARGET_PACKAGES: [&str; 7] = [
    "hello",
    "selftest",
    "mmbench",
    "forkbench",
    "tour",
    "init",
    "procbench",
];
/// Apps without the boot-test harness, linted alone too: cargo unifies features, so linting them
/// with `selftest` would only see `libos` with its boot tests compiled in.
pub const PRODUCTION_PACKAGES: [&str; 4] = ["hello", "tour", "init", "procbench"];
/// The app whose boot tests the boot phase runs.
pub const SELFTEST_APP: &str = "selftest";
pub const DEFAULT_BOOT_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Clone, Debug)]
pub struct TestOptions {
    /// Boards given with `--board` (empty: all boards, unavailable ones skipped).
    pub boards: Vec<Board>,
    pub host: bool,
    pub boot: bool,
    /// Substrings: passed to libtest as filters and to the images as `tests=`.
    pub filters: Vec<String>,
    pub timeout: Duration,
}

impl Default for TestOptions {
    fn default() -> Self {
        TestOptions {
            boards: Vec::new(),
            host: true,
            boot: true,
            filters: Vec::new(),
            timeout: DEFAULT_BOOT_TIMEOUT,
        }
    }
}

/// Result of one phase (host, or one board).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhaseResult {
    pub label: String,
    pub passed: u64,
    pub failed: u64,
    /// `Err(reason)` for a skipped phase.
    pub skipped: Option<String>,
    /// Set when the run itself failed (build error, timeout, no summary...).
    pub error: Option<String>,
    pub detail: String,
}

impl PhaseResult {
    fn skipped(label: String, reason: String) -> Self {
        PhaseResult {
            label,
            passed: 0,
            failed: 0,
            skipped: Some(reason),
            error: None,
            detail: String::new(),
        }
    }

    pub fn ok(&self) -> bool {
        self.failed == 0 && self.error.is_none()
    }

    /// The per-phase summary line.
    pub fn line(&self) -> String {
        if let Some(reason) = &self.skipped {
            return format!("{}: skipped: {reason}", self.label);
        }
        let mut s = format!("{}: {} passed, {} failed", self.label, self.passed, self.failed);
        if !self.detail.is_empty() {
            s.push_str(&format!(" ({})", self.detail));
        }
        if let Some(e) = &self.error {
            s.push_str(&format!(" -- FAILED: {e}"));
        }
        s
    }
}

/// Runs the test command; returns whether everything passed. The last line
/// printed is `N passed, N failed`.
pub fn run(opts: &TestOptions) -> Result<bool> {
    let mut results = Vec::new();
    if opts.host {
        results.extend(
            check_commands()
                .into_iter()
                .map(|(label, mut cmd)| check_phase(label, &mut cmd)),
        );
        results.push(host_phase(&opts.filters));
    }
    if opts.boot {
        results.extend(boot_phase(opts));
    }

    println!();
    println!("summary:");
    for r in &results {
        println!("  {}", r.line());
    }
    let passed: u64 = results.iter().map(|r| r.passed).sum();
    let failed: u64 = results.iter().map(|r| r.failed).sum();
    let ok = results.iter().all(PhaseResult::ok);
    println!("{passed} passed, {failed} failed");
    Ok(ok)
}

/// The checks: formatting, then clippy with `-D warnings` on the host crates (all targets) and on
/// the apps for the kernel target (which covers `arch` and `libos` as the images use them).
pub fn check_commands() -> Vec<(String, Command)> {
    let cargo = || {
        let mut c = Command::new(toolchain::cargo());
        c.current_dir(workspace_root());
        c
    };
    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--check"]);
    let mut host = cargo();
    host.arg("clippy");
    for p in HOST_PACKAGES {
        host.args(["-p", p]);
    }
    host.args(["--all-targets", "--", "-D", "warnings"]);
    // Clippy over `packages` for the kernel target, in a target directory of its own.
    let kernel_clippy = |packages: &[&str], dir: &str| {
        let mut c = cargo();
        c.arg("clippy");
        for p in packages {
            c.args(["-p", p]);
        }
        c.args([
            "--target",
            crate::TARGET,
            "--features",
            &Board::QemuVirt.feature(),
        ])
        .args(["--", "-D", "warnings"])
        .env("CARGO_TARGET_DIR", crate::target_root().join(dir));
        c
    };
    let target = kernel_clippy(&TARGET_PACKAGES, "clippy");
    let production = kernel_clippy(&PRODUCTION_PACKAGES, "clippy-production");
    vec![
        ("cargo fmt --check".to_string(), fmt),
        ("clippy (host)".to_string(), host),
        (format!("clippy ({})", crate::TARGET), target),
        (
            format!("clippy ({}, without boot tests)", crate::TARGET),
            production,
        ),
    ]
}

fn check_phase(label: String, cmd: &mut Command) -> PhaseResult {
    println!("==> {label}: {}", process::render(cmd));
    let (passed, failed, error) = match process::run_captured(cmd, None, Echo::None, Echo::None) {
        Ok(o) if o.success() => (1, 0, None),
        Ok(o) => {
            // Show what failed: rustfmt's diff or clippy's diagnostics.
            print!("{}", o.stdout);
            eprint!("{}", o.stderr);
            (0, 1, Some(o.describe()))
        }
        Err(e) => (0, 1, Some(format!("{e:#}"))),
    };
    PhaseResult {
        label,
        passed,
        failed,
        skipped: None,
        error,
        detail: String::new(),
    }
}

/// `cargo test -p arch -p tessera-mm -p libos -p xtask -p tessera-tests --no-fail-fast [-- filters]`.
pub fn host_command(filters: &[String]) -> Command {
    let mut cmd = Command::new(toolchain::cargo());
    cmd.current_dir(workspace_root()).arg("test");
    for p in HOST_PACKAGES {
        cmd.args(["-p", p]);
    }
    cmd.arg("--no-fail-fast");
    if !filters.is_empty() {
        cmd.arg("--").args(filters);
    }
    cmd
}

fn host_phase(filters: &[String]) -> PhaseResult {
    let label = "host tests".to_string();
    let mut cmd = host_command(filters);
    println!("==> host tests: {}", process::render(&cmd));
    let outcome = match process::run_captured(&mut cmd, None, Echo::Stdout, Echo::Stderr) {
        Ok(o) => o,
        Err(e) => {
            return PhaseResult {
                label,
                passed: 0,
                failed: 1,
                skipped: None,
                error: Some(format!("{e:#}")),
                detail: String::new(),
            }
        }
    };
    host_result(label, &outcome)
}

/// Turns a finished `cargo test` into a phase result: the sum of its
/// `test result:` lines; a cargo failure without failing tests (e.g. a build
/// error) counts as one failure.
pub fn host_result(label: String, o: &Outcome) -> PhaseResult {
    let t = parse::parse_cargo_test_output(&o.stdout);
    let mut r = PhaseResult {
        label,
        passed: t.passed,
        failed: t.failed,
        skipped: None,
        error: None,
        detail: format!("{} test binaries, {} ignored", t.result_lines, t.ignored),
    };
    // tessera-tests prints `SKIPPED <test>: <reason>` (to stderr) for tests
    // that could not boot; libtest counts them as passed.
    let skipped: Vec<&str> = o
        .stderr
        .lines()
        .filter_map(|l| l.strip_prefix("SKIPPED ")?.split(':').next())
        .collect();
    if !skipped.is_empty() {
        r.detail
            .push_str(&format!("; {} skipped: {}", skipped.len(), skipped.join(", ")));
    }
    if !o.success() {
        if t.failed == 0 {
            r.failed = 1;
        }
        r.error = Some(format!("cargo test: {}", o.describe()));
    }
    r
}

fn boot_phase(opts: &TestOptions) -> Vec<PhaseResult> {
    let explicit = !opts.boards.is_empty();
    let boards: Vec<Board> = if explicit {
        opts.boards.clone()
    } else {
        Board::ALL.to_vec()
    };
    // A board that cannot run is skipped, unless it was asked for by name
    // or TESSERA_REQUIRE_QEMU=1 (CI, after setup) demands every board.
    let strict = explicit || std::env::var_os("TESSERA_REQUIRE_QEMU").is_some_and(|v| v == "1");
    let qemu = qemu::detect();
    // The selftest image carries the example programs, which its boot tests run at EL0.
    let programs = crate::programs::build_examples(true).map_err(|e| format!("building the programs: {e:#}"));
    boards
        .into_iter()
        .map(|board| {
            let label = format!("boot tests on {board}");
            let available = qemu
                .as_ref()
                .map_err(Clone::clone)
                .and_then(|q| q.check_board(board));
            let r = match (available, &programs) {
                (Ok(()), Ok(programs)) => run_board(board, opts, label, programs),
                (Ok(()), Err(e)) => PhaseResult {
                    label,
                    passed: 0,
                    failed: 1,
                    skipped: None,
                    error: Some(e.clone()),
                    detail: String::new(),
                },
                (Err(reason), _) if strict => PhaseResult {
                    label,
                    passed: 0,
                    failed: 1,
                    skipped: None,
                    error: Some(reason),
                    detail: String::new(),
                },
                (Err(reason), _) => PhaseResult::skipped(label, reason),
            };
            println!("{}", r.line());
            r
        })
        .collect()
}

/// The `tests=` bootarg for the filters.
pub fn bootargs(filters: &[String]) -> String {
    if filters.is_empty() {
        String::new()
    } else {
        format!("tests={}", filters.join(","))
    }
}

fn run_board(board: Board, opts: &TestOptions, label: String, programs: &[(String, PathBuf)]) -> PhaseResult {
    println!("==> boot tests on {board} (QEMU -M {})", board.qemu_machine());
    let fail = |label: String, e: String| PhaseResult {
        label,
        passed: 0,
        failed: 1,
        skipped: None,
        error: Some(e),
        detail: String::new(),
    };
    let request = BuildRequest::new(SELFTEST_APP, board).programs(programs.iter().cloned());
    let image = match builder::build(&request) {
        Ok(i) => i,
        Err(e) => return fail(label, format!("build: {e:#}")),
    };
    let runner = QemuRunner::new(&image)
        .append(bootargs(&opts.filters))
        .timeout(opts.timeout);
    match runner.command() {
        Ok(cmd) => println!("{}", process::render(&cmd)),
        Err(e) => return fail(label, format!("{e:#}")),
    }
    let outcome = match runner.run_captured(true) {
        Ok(o) => o,
        Err(e) => return fail(label, format!("{e:#}")),
    };
    // The guest may end without a newline.
    if !outcome.stdout.is_empty() && !outcome.stdout.ends_with('\n') {
        println!();
    }
    boot_result(label, &parse::parse_boot_output(&outcome.stdout), &outcome)
}

/// Judges a boot-test run from its parsed serial output and how QEMU ended.
pub fn boot_result(label: String, report: &BootReport, o: &Outcome) -> PhaseResult {
    let mut detail = format!("{}, {:.1} s", o.describe(), o.elapsed.as_secs_f64());
    let failed_names = report.failed_names();
    if !failed_names.is_empty() {
        detail.push_str(&format!("; failed: {}", failed_names.join(", ")));
    }
    let (passed, failed, error) = match report.summary {
        Some((passed, failed)) => {
            let error = if o.timed_out {
                Some(format!("printed its summary but did not exit ({})", o.describe()))
            } else if failed == 0 && !o.success() {
                Some(format!(
                    "reported no failures but QEMU ended with {}",
                    o.describe()
                ))
            } else if failed > 0 && o.success() {
                Some("reported failures but exited with status 0".to_string())
            } else {
                None
            };
            // A run that is wrong apart from its tests counts as a failure.
            (passed, failed + u64::from(error.is_some() && failed == 0), error)
        }
        None => {
            let mut why = format!("no 'N passed, N failed' line ({})", o.describe());
            if let Some(t) = &report.unfinished {
                why.push_str(&format!("; stopped in test {t}"));
            }
            let tail = builder::tail(&o.stdout, 1);
            if !tail.trim().is_empty() {
                why.push_str(&format!("; last output: {:?}", tail.trim()));
            }
            (report.passed_lines(), report.failed_lines() + 1, Some(why))
        }
    };
    if let (Some(n), Some((p, f))) = (report.announced, report.summary) {
        if n != p + f {
            detail.push_str(&format!(
                "; warning: announced {n} tests but summary counts {}",
                p + f
            ));
        }
    }
    PhaseResult {
        label,
        passed,
        failed,
        skipped: None,
        error,
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::process::ExitStatus;

    fn outcome(code: Option<i32>, stdout: &str) -> Outcome {
        Outcome {
            status: code.map(|c| ExitStatus::from_raw(c << 8)),
            timed_out: code.is_none(),
            elapsed: Duration::from_secs(2),
            stdout: stdout.into(),
            stderr: String::new(),
        }
    }

    fn judge(code: Option<i32>, stdout: &str) -> PhaseResult {
        boot_result(
            "b".into(),
            &parse::parse_boot_output(stdout),
            &outcome(code, stdout),
        )
    }

    #[test]
    fn boot_pass() {
        let r = judge(
            Some(0),
            "running 2 boot tests\ntest a ... ok\ntest b ... ok\n2 passed, 0 failed\n",
        );
        assert!(r.ok(), "{r:?}");
        assert_eq!((r.passed, r.failed), (2, 0));
        assert!(
            r.line().starts_with("b: 2 passed, 0 failed (exit status 0"),
            "{}",
            r.line()
        );
    }

    #[test]
    fn boot_failures() {
        let r = judge(
            Some(1),
            "running 2 boot tests\ntest a ... FAILED\n  boom\ntest b ... ok\n1 passed, 1 failed\n",
        );
        assert_eq!((r.passed, r.failed, r.error.is_none()), (1, 1, true));
        assert!(!r.ok());
        assert!(r.line().contains("failed: a"), "{}", r.line());
    }

    #[test]
    fn boot_timeout_without_summary() {
        let r = judge(None, "running 3 boot tests\ntest a ... ok\ntest b ... ");
        assert_eq!((r.passed, r.failed), (1, 1));
        let e = r.error.unwrap();
        assert!(e.contains("no 'N passed, N failed' line (timed out"), "{e}");
        assert!(e.contains("stopped in test b"), "{e}");
    }

    #[test]
    fn boot_inconsistent_exit() {
        let r = judge(Some(3), "1 passed, 0 failed\n");
        assert_eq!((r.passed, r.failed), (1, 1));
        assert!(r.error.unwrap().contains("exit status 3"));
        let r = judge(Some(0), "1 passed, 2 failed\n");
        assert_eq!(r.failed, 2);
        assert!(r.error.is_some());
        let r = judge(None, "1 passed, 0 failed\n");
        assert_eq!(r.failed, 1);
        assert!(r.error.unwrap().contains("did not exit"));
    }

    #[test]
    fn host_results() {
        let out =
            "test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.00s\n";
        let r = host_result("h".into(), &outcome(Some(0), out));
        assert!(r.ok());
        assert_eq!((r.passed, r.failed), (3, 0));
        // build error: no result lines, cargo fails
        let r = host_result(
            "h".into(),
            &outcome(Some(101), "error[E0425]: cannot find value\n"),
        );
        assert_eq!((r.passed, r.failed), (0, 1));
        assert!(!r.ok());
        let out = "test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s\n";
        let r = host_result("h".into(), &outcome(Some(101), out));
        assert_eq!((r.passed, r.failed), (3, 2));
        let mut o = outcome(
            Some(0),
            "test result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s\n",
        );
        o.stderr = "SKIPPED hello_on_raspi4: qemu has no machine 'raspi4b'; run 'cargo xtask setup'\n".into();
        let r = host_result("h".into(), &o);
        assert!(r.ok());
        assert_eq!(
            r.line(),
            "h: 2 passed, 0 failed (1 test binaries, 0 ignored; 1 skipped: hello_on_raspi4)"
        );
    }

    #[test]
    fn host_command_line() {
        let cmd = host_command(&["parse".into(), "dtb".into()]);
        let args: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(
            args,
            [
                "test",
                "-p",
                "arch",
                "-p",
                "tessera-mm",
                "-p",
                "libos",
                "-p",
                "xtask",
                "-p",
                "tessera-tests",
                "--no-fail-fast",
                "--",
                "parse",
                "dtb"
            ]
        );
        assert_eq!(bootargs(&["parse".into(), "dtb".into()]), "tests=parse,dtb");
        assert_eq!(bootargs(&[]), "");
    }

    #[test]
    fn checks_are_fmt_and_clippy_with_denied_warnings() {
        let cmds = check_commands();
        let line = |i: usize| {
            cmds[i]
                .1
                .get_args()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(line(0), "fmt --all --check");
        assert_eq!(
            line(1),
            "clippy -p arch -p tessera-mm -p libos -p xtask -p tessera-tests --all-targets -- -D warnings"
        );
        assert_eq!(
            line(2),
            "clippy -p hello -p selftest -p mmbench -p forkbench -p tour -p init -p procbench --target \
             aarch64-unknown-none-softfloat --features libos/board-qemu-virt -- -D warnings"
        );
        assert_eq!(
            line(3),
            "clippy -p hello -p tour -p init -p procbench --target aarch64-unknown-none-softfloat --features \
             libos/board-qemu-virt -- -D warnings"
        );
        let r = check_phase("sh".into(), Command::new("sh").args(["-c", "echo bad; exit 1"]));
        assert_eq!((r.passed, r.failed, r.ok()), (0, 1, false));
        let r = check_phase("sh".into(), Command::new("true").arg(""));
        assert_eq!((r.passed, r.failed, r.ok()), (1, 0, true));
    }

    #[test]
    fn skipped_line() {
        let r = PhaseResult::skipped("boot tests on raspi4".into(), "no machine 'raspi4b'".into());
        assert!(r.ok());
        assert_eq!(r.line(), "boot tests on raspi4: skipped: no machine 'raspi4b'");
    }
}
