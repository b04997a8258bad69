//! The `selftest` image: failures (assertion, fault, hang) are reported and
//! do not stop the run; the `tests=` bootarg selects tests.

use std::sync::OnceLock;

use tessera_tests::{board_available, boot, build, Board, Boot};

/// The tests added by the `deliberate-failure` feature (`module::path::name`
/// names contain these).
const DELIBERATE: [&str; 3] = [
    "deliberate_assertion_failure",
    "deliberate_data_abort",
    "deliberate_hang",
];

/// One unfiltered boot of the plain selftest image per board, shared by the
/// tests of this file.
fn plain_run(board: Board) -> &'static Boot {
    static RUNS: [OnceLock<Boot>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    let i = Board::ALL.iter().position(|b| *b == board).unwrap();
    RUNS[i].get_or_init(|| boot(&build("selftest", board, &[]), ""))
}

fn deliberate_failures(test: &str, board: Board) {
    if !board_available(test, board) {
        return;
    }
    let run = boot(&build("selftest", board, &["deliberate-failure"]), "");
    let log = run.log();
    let r = &run.report;
    assert!(
        !run.outcome.timed_out,
        "the watchdog did not end the hanging test on {board}\n{log}"
    );
    let (passed, failed) = r
        .summary
        .unwrap_or_else(|| panic!("no 'N passed, N failed' line on {board}\n{log}"));
    assert!(
        matches!(run.code(), Some(c) if c != 0),
        "must exit non-zero on {board}\n{log}"
    );

    // Each deliberate test is reported as FAILED.
    for name in DELIBERATE {
        let line = r.tests.iter().find(|t| t.name.contains(name));
        let line = line.unwrap_or_else(|| panic!("no 'test ...{name} ...' line on {board}\n{log}"));
        assert!(!line.ok, "{} must be FAILED on {board}\n{log}", line.name);
    }
    assert_eq!(failed, 3, "exactly the deliberate tests fail on {board}\n{log}");
    assert!(passed > 0, "{log}");

    // Every test ran and was reported once, faults and hangs notwithstanding.
    assert_eq!(r.announced, Some(passed + failed), "{log}");
    assert_eq!(r.tests.len() as u64, passed + failed, "{log}");
    assert_eq!((r.passed_lines(), r.failed_lines()), (passed, failed), "{log}");

    // The ordinary tests still pass after the failing ones: same passes as
    // the plain image.
    let plain = plain_run(board);
    assert_eq!(
        Some((passed, 0)),
        plain.report.summary,
        "plain selftest on {board}\n{}",
        plain.log()
    );
}

#[test]
fn deliberate_failures_are_reported_on_qemu_virt() {
    deliberate_failures("deliberate_failures_are_reported_on_qemu_virt", Board::QemuVirt);
}

#[test]
fn deliberate_failures_are_reported_on_raspi3() {
    deliberate_failures("deliberate_failures_are_reported_on_raspi3", Board::Raspi3);
}

#[test]
fn deliberate_failures_are_reported_on_raspi4() {
    deliberate_failures("deliberate_failures_are_reported_on_raspi4", Board::Raspi4);
}

fn filter(test: &str, board: Board) {
    if !board_available(test, board) {
        return;
    }
    let all = plain_run(board);
    assert_eq!(all.code(), Some(0), "plain selftest on {board}\n{}", all.log());
    let names: Vec<&str> = all.report.tests.iter().map(|t| t.name.as_str()).collect();
    assert!(names.len() >= 3, "need a few tests to filter\n{}", all.log());
    let image = build("selftest", board, &[]);

    // One substring: exactly the tests whose name contains it.
    let pick = names[0];
    let expect: Vec<&str> = names.iter().copied().filter(|n| n.contains(pick)).collect();
    let run = boot(&image, &format!("tests={pick}"));
    let got: Vec<&str> = run.report.tests.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(got, expect, "tests={pick} on {board}\n{}", run.log());
    assert!(got.len() < names.len());
    assert_eq!(run.report.announced, Some(expect.len() as u64), "{}", run.log());
    assert_eq!(
        run.report.summary,
        Some((expect.len() as u64, 0)),
        "{}",
        run.log()
    );
    assert_eq!(run.code(), Some(0), "{}", run.log());

    // Several substrings (with log= alongside): the union.
    let (a, b) = (names[1], names[names.len() - 1]);
    let expect: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| n.contains(a) || n.contains(b))
        .collect();
    let run = boot(&image, &format!("tests={a},{b} log=info"));
    let got: Vec<&str> = run.report.tests.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(got, expect, "tests={a},{b} on {board}\n{}", run.log());
    assert_eq!(run.report.announced, Some(expect.len() as u64), "{}", run.log());

    // No match: nothing runs, and that is a success.
    let run = boot(&image, "tests=no-such-boot-test");
    assert_eq!(run.report.announced, Some(0), "{}", run.log());
    assert_eq!(run.report.summary, Some((0, 0)), "{}", run.log());
    assert_eq!(run.code(), Some(0), "{}", run.log());
}

#[test]
fn tests_filter_selects_boot_tests_on_qemu_virt() {
    filter("tests_filter_selects_boot_tests_on_qemu_virt", Board::QemuVirt);
}

#[test]
fn tests_filter_selects_boot_tests_on_raspi3() {
    // raspi boards get bootargs through our generated DTB.
    filter("tests_filter_selects_boot_tests_on_raspi3", Board::Raspi3);
}
