//! `hello` prints its greeting and exits 0 on every board.

use std::time::Duration;

use tessera_tests::{board_available, boot, boot_with, build, Board};
use xtask::qemu::QemuRunner;

fn hello(test: &str, board: Board) {
    if !board_available(test, board) {
        return;
    }
    let image = build("hello", board, &[]);
    let run = boot(&image, "");
    assert!(
        !run.outcome.timed_out,
        "hello did not exit on {board}\n{}",
        run.log()
    );
    assert!(
        run.outcome.stdout.contains("Hello from Tessera"),
        "no greeting on {board}'s serial console\n{}",
        run.log()
    );
    assert_eq!(
        run.code(),
        Some(0),
        "hello's exit status on {board}\n{}",
        run.log()
    );
}

#[test]
fn hello_on_qemu_virt() {
    hello("hello_on_qemu_virt", Board::QemuVirt);
}

#[test]
fn hello_on_raspi3() {
    hello("hello_on_raspi3", Board::Raspi3);
}

#[test]
fn hello_on_raspi4() {
    hello("hello_on_raspi4", Board::Raspi4);
}

/// Booted as on a real board, without semihosting: the probe must not print an exception report;
/// `qemu-virt` powers off through PSCI (QEMU exits 0), a Pi, which has no PSCI, says it halted and
/// parks (QEMU keeps running until the test stops it).
fn halts_without_semihosting(test: &str, board: Board) {
    if !board_available(test, board) {
        return;
    }
    let image = build("hello", board, &[]);
    let parks = board.is_raspi();
    let limit = Duration::from_secs(if parks { 20 } else { 120 });
    let run = boot_with(QemuRunner::new(&image).semihosting(false).timeout(limit));
    let log = run.log();
    assert!(
        !run.outcome.stdout.contains("FATAL"),
        "exception report at exit on {board}\n{log}"
    );
    assert!(run.outcome.stdout.contains("Hello from Tessera"), "{log}");
    if parks {
        assert!(run.outcome.timed_out, "a parked Pi keeps QEMU running\n{log}");
        assert!(
            run.outcome
                .stdout
                .contains("tessera: halted with exit status 0; reset or power-cycle the board"),
            "{log}"
        );
    } else {
        assert_eq!(run.code(), Some(0), "PSCI SYSTEM_OFF ends QEMU cleanly\n{log}");
        assert!(
            run.outcome.stdout.contains("powering off (PSCI SYSTEM_OFF)"),
            "{log}"
        );
    }
}

#[test]
fn halts_without_semihosting_on_qemu_virt() {
    halts_without_semihosting("halts_without_semihosting_on_qemu_virt", Board::QemuVirt);
}

#[test]
fn halts_without_semihosting_on_raspi3() {
    halts_without_semihosting("halts_without_semihosting_on_raspi3", Board::Raspi3);
}

#[test]
fn halts_without_semihosting_on_raspi4() {
    halts_without_semihosting("halts_without_semihosting_on_raspi4", Board::Raspi4);
}

/// RAM is whatever the device tree says, not a size built into the image: `qemu-virt` with
/// 1536 MiB reports (and uses) 1536 MiB.
#[test]
fn ram_size_follows_the_device_tree() {
    let test = "ram_size_follows_the_device_tree";
    if !board_available(test, Board::QemuVirt) {
        return;
    }
    let image = build("hello", Board::QemuVirt, &[]);
    let run = boot_with(
        QemuRunner::new(&image)
            .memory_mib(1536)
            .append("log=debug")
            .timeout(Duration::from_secs(120)),
    );
    let log = run.log();
    assert_eq!(run.code(), Some(0), "{log}");
    assert!(
        log.contains("RAM [PhysRange { base: 1073741824, size: 1610612736 }] from DeviceTree"),
        "{log}"
    );
}

/// The README's process example is the `tour` app word for word, and it runs: the child reads
/// the parent's byte through copy-on-write page tables and every frame comes back at exit.
#[test]
fn the_readme_tour_is_the_tour_app_and_runs() {
    let root = xtask::workspace_root();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let app = std::fs::read_to_string(root.join("apps/tour/src/main.rs")).unwrap();
    let between = |text: &str, start: &str, end: &str| -> String {
        let from = text.find(start).unwrap_or_else(|| panic!("no {start:?}")) + start.len();
        let to = from + text[from..].find(end).unwrap_or_else(|| panic!("no {end:?}"));
        text[from..to].to_string()
    };
    let in_app = between(&app, "// tour: begin\n", "// tour: end");
    let section = between(&readme, "## Memory manager", "## Running on a real Raspberry Pi");
    let in_readme = between(&section, "```rust\n", "```");
    assert_eq!(in_readme, in_app, "README.md's example and apps/tour differ");

    let test = "the_readme_tour_is_the_tour_app_and_runs";
    if !board_available(test, Board::QemuVirt) {
        return;
    }
    let run = boot(&build("tour", Board::QemuVirt, &[]), "");
    let log = run.log();
    assert_eq!(run.code(), Some(0), "{log}");
    let line = run
        .outcome
        .stdout
        .lines()
        .find(|l| l.starts_with("the child reads"))
        .expect(&log);
    assert!(line.starts_with("the child reads 1 at 0x"), "{line}");
    // 1 MiB of 64 KiB folios touched at one page: one 64 KiB folio (16 frames) plus tables.
    let returned: u64 = line
        .rsplit("returned ")
        .next()
        .unwrap()
        .trim_end_matches(" frames")
        .parse()
        .unwrap();
    assert!(returned >= 16, "exit gave back only {returned} frames\n{log}");
}
