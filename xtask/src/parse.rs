//! Parsers for test output: the boot-test protocol printed by the
//! `selftest` image on its serial console, and cargo's `test result:` lines.

/// The outcome of one boot test line `test <name> ... ok|FAILED`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestLine {
    pub name: String,
    pub ok: bool,
}

/// Everything recognised in the serial output of a `selftest` run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BootReport {
    /// `N` from `running N boot tests`.
    pub announced: Option<u64>,
    /// Every `test <name> ... ok|FAILED` line, in order.
    pub tests: Vec<TestLine>,
    /// The final `N passed, N failed` line (the last one, if several).
    pub summary: Option<(u64, u64)>,
    /// A test whose `test <name> ... ` line has no verdict (yet): where the
    /// run stopped if the output ends there.
    pub unfinished: Option<String>,
}

impl BootReport {
    pub fn passed_lines(&self) -> u64 {
        self.tests.iter().filter(|t| t.ok).count() as u64
    }

    pub fn failed_lines(&self) -> u64 {
        self.tests.iter().filter(|t| !t.ok).count() as u64
    }

    pub fn failed_names(&self) -> Vec<&str> {
        self.tests
            .iter()
            .filter(|t| !t.ok)
            .map(|t| t.name.as_str())
            .collect()
    }
}

/// Strips the serial line noise: `\r` and trailing whitespace.
fn clean(line: &str) -> &str {
    line.trim_end_matches(['\r', '\n', ' ', '\t'])
}

/// Parses the line `^(\d+) passed, (\d+) failed$`.
pub fn parse_summary_line(line: &str) -> Option<(u64, u64)> {
    let line = clean(line);
    let (passed, rest) = line.split_once(" passed, ")?;
    let failed = rest.strip_suffix(" failed")?;
    Some((parse_digits(passed)?, parse_digits(failed)?))
}

fn parse_digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Parses `running N boot tests`.
pub fn parse_running_line(line: &str) -> Option<u64> {
    let n = clean(line)
        .strip_prefix("running ")?
        .strip_suffix(" boot tests")?;
    parse_digits(n)
}

/// Parses `test <name> ... ok` / `test <name> ... FAILED`.
pub fn parse_test_line(line: &str) -> Option<TestLine> {
    let (name, rest) = parse_test_start(line)?;
    Some(TestLine {
        name: name.to_string(),
        ok: parse_verdict(rest)?,
    })
}

/// Splits `test <name> ... <rest>` into the name and whatever follows.
fn parse_test_start(line: &str) -> Option<(&str, &str)> {
    let line = clean(line).strip_prefix("test ")?;
    // `clean` drops the space after `...` when nothing follows it.
    let (name, rest) = match line.strip_suffix(" ...") {
        Some(name) => (name, ""),
        None => line.split_once(" ... ")?,
    };
    (!name.is_empty() && !name.contains(' ')).then_some((name, rest))
}

fn parse_verdict(s: &str) -> Option<bool> {
    match s {
        "ok" => Some(true),
        "FAILED" => Some(false),
        _ => None,
    }
}

/// Parses the serial output of a `selftest` image.
///
/// A test that prints something puts it between `test <name> ... ` and its
/// verdict, so the verdict may come later on a line of its own (`ok` /
/// `FAILED`, as libtest does with `--nocapture`).
pub fn parse_boot_output(output: &str) -> BootReport {
    let mut report = BootReport::default();
    for line in output.lines() {
        if let Some(n) = parse_running_line(line) {
            report.announced = Some(n);
            report.unfinished = None;
        } else if let Some((name, rest)) = parse_test_start(line) {
            match parse_verdict(rest) {
                Some(ok) => {
                    report.tests.push(TestLine {
                        name: name.to_string(),
                        ok,
                    });
                    report.unfinished = None;
                }
                None => report.unfinished = Some(name.to_string()),
            }
        } else if let Some(s) = parse_summary_line(line) {
            report.summary = Some(s);
            report.unfinished = None;
        } else if let Some(ok) = parse_verdict(clean(line).trim_start()) {
            if let Some(name) = report.unfinished.take() {
                report.tests.push(TestLine { name, ok });
            }
        }
    }
    report
}

/// One cargo/libtest `test result:` line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CargoResult {
    pub ok: bool,
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
    pub filtered_out: u64,
}

/// Parses `test result: ok. 5 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s`.
pub fn parse_cargo_result_line(line: &str) -> Option<CargoResult> {
    let rest = clean(line).trim_start().strip_prefix("test result: ")?;
    let (verdict, fields) = rest.split_once(". ")?;
    let mut r = CargoResult {
        ok: verdict == "ok",
        ..Default::default()
    };
    if !r.ok && verdict != "FAILED" {
        return None;
    }
    let mut saw_counts = false;
    for field in fields.split("; ") {
        let Some((n, what)) = field.trim().split_once(' ') else {
            continue;
        };
        let Some(n) = parse_digits(n) else { continue };
        match what {
            "passed" => (r.passed, saw_counts) = (n, true),
            "failed" => r.failed = n,
            "ignored" => r.ignored = n,
            "filtered out" => r.filtered_out = n,
            _ => {}
        }
    }
    saw_counts.then_some(r)
}

/// Totals over all `test result:` lines of a `cargo test` run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CargoTotals {
    pub result_lines: u64,
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
}

pub fn parse_cargo_test_output(output: &str) -> CargoTotals {
    let mut t = CargoTotals::default();
    for r in output.lines().filter_map(parse_cargo_result_line) {
        t.result_lines += 1;
        t.passed += r.passed;
        t.failed += r.failed;
        t.ignored += r.ignored;
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_line() {
        assert_eq!(parse_summary_line("12 passed, 0 failed"), Some((12, 0)));
        assert_eq!(parse_summary_line("0 passed, 3 failed\r"), Some((0, 3)));
        assert_eq!(parse_summary_line("12 passed, 0 failed\r\n"), Some((12, 0)));
        assert_eq!(parse_summary_line(" 12 passed, 0 failed"), None);
        assert_eq!(parse_summary_line("x12 passed, 0 failed"), None);
        assert_eq!(parse_summary_line("12 passed, 0 failed!"), None);
        assert_eq!(parse_summary_line("12 passed,  0 failed"), None);
        assert_eq!(parse_summary_line("12 passed; 0 failed"), None);
        assert_eq!(parse_summary_line("-1 passed, 0 failed"), None);
        assert_eq!(parse_summary_line("passed, failed"), None);
        // cargo's line is not a boot summary
        assert_eq!(
            parse_summary_line("test result: ok. 1 passed; 0 failed; 0 ignored"),
            None
        );
    }

    #[test]
    fn test_lines() {
        assert_eq!(
            parse_test_line("test mm::buddy_alloc ... ok"),
            Some(TestLine {
                name: "mm::buddy_alloc".into(),
                ok: true
            })
        );
        assert_eq!(
            parse_test_line("test deliberate_data_abort ... FAILED\r"),
            Some(TestLine {
                name: "deliberate_data_abort".into(),
                ok: false
            })
        );
        assert_eq!(parse_test_line("test x ... ignored"), None);
        assert_eq!(parse_test_line("test x ... value=1 ok"), None);
        assert_eq!(parse_test_line("test x ...ok"), None);
        assert_eq!(parse_test_line("test  ... ok"), None);
        assert_eq!(
            parse_test_line("    test x ... ok"),
            None,
            "indented detail lines are not tests"
        );
        assert_eq!(parse_running_line("running 17 boot tests\r"), Some(17));
        assert_eq!(parse_running_line("running 17 tests"), None);
    }

    #[test]
    fn boot_output() {
        let out = "\
Tessera 0.1.0 booting on raspi3\r
[INFO] mm: 1 GiB\r
running 4 boot tests\r
test alloc::small ... ok\r
test deliberate::fail ... FAILED\r
    assertion failed: 1 == 2 at libos/src/x.rs:3\r
test deliberate::data_abort ... FAILED\r
    data abort at 0xdead0000\r
test alloc::large ... ok\r
2 passed, 2 failed\r
";
        let r = parse_boot_output(out);
        assert_eq!(r.announced, Some(4));
        assert_eq!(r.summary, Some((2, 2)));
        assert_eq!(r.passed_lines(), 2);
        assert_eq!(r.failed_lines(), 2);
        assert_eq!(r.failed_names(), ["deliberate::fail", "deliberate::data_abort"]);
    }

    #[test]
    fn boot_output_with_test_output() {
        let out = "\
running 3 boot tests\r
test console::println ... value=42 hex=0xff\r
[   245.777] INFO  probe: logged line\r
ok\r
test console::quiet ... ok\r
test console::noisy ... partial\r
FAILED\r
    detail\r
1 passed, 1 failed\r
";
        let r = parse_boot_output(out);
        assert_eq!(
            r.tests,
            [
                TestLine {
                    name: "console::println".into(),
                    ok: true
                },
                TestLine {
                    name: "console::quiet".into(),
                    ok: true
                },
                TestLine {
                    name: "console::noisy".into(),
                    ok: false
                },
            ]
        );
        assert_eq!(r.unfinished, None);
    }

    #[test]
    fn boot_output_truncated() {
        let r = parse_boot_output("running 3 boot tests\ntest a ... ok\ntest b ... ");
        assert_eq!(r.announced, Some(3));
        assert_eq!(r.summary, None);
        assert_eq!(r.tests.len(), 1);
        assert_eq!(r.unfinished.as_deref(), Some("b"));
        // A stray `ok` without a started test is not a test.
        assert_eq!(parse_boot_output("ok\nFAILED\n").tests, []);
        assert_eq!(parse_boot_output(""), BootReport::default());
    }

    #[test]
    fn cargo_result_lines() {
        assert_eq!(
            parse_cargo_result_line(
                "test result: ok. 5 passed; 0 failed; 1 ignored; 0 measured; 2 filtered out; finished in 0.01s"
            ),
            Some(CargoResult { ok: true, passed: 5, failed: 0, ignored: 1, filtered_out: 2 })
        );
        assert_eq!(
            parse_cargo_result_line(
                "test result: FAILED. 3 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 2.50s"
            ),
            Some(CargoResult { ok: false, passed: 3, failed: 1, ignored: 0, filtered_out: 0 })
        );
        assert_eq!(
            parse_cargo_result_line("test result: maybe. 1 passed; 0 failed"),
            None
        );
        assert_eq!(parse_cargo_result_line("running 5 tests"), None);
    }

    #[test]
    fn cargo_output_totals() {
        let out = "\
     Running unittests src/lib.rs (target/debug/deps/libos-0123)

running 2 tests
test a ... ok
test b ... ok

test result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s

     Running tests/boot.rs (target/debug/deps/boot-4567)

running 3 tests
test c ... ok
test d ... FAILED
test e ... ignored

failures:
    d

test result: FAILED. 1 passed; 1 failed; 1 ignored; 0 measured; 0 filtered out; finished in 9.10s

error: test failed, to rerun pass `-p tessera-tests --test boot`
";
        let t = parse_cargo_test_output(out);
        assert_eq!(
            t,
            CargoTotals {
                result_lines: 2,
                passed: 3,
                failed: 1,
                ignored: 1
            }
        );
    }
}
