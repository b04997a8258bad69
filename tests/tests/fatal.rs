//! Fatal paths outside any boot test: an unhandled exception prints its class, syndrome, FAR, ELR
//! and registers and exits with status 3; a panic prints its location and message and exits with
//! status 2 (see README, "Exit status").

use tessera_tests::{board_available, boot, build, Board};

fn fatal_exception(test: &str, board: Board) {
    if !board_available(test, board) {
        return;
    }
    let run = boot(&build("selftest", board, &[]), "crash=fault");
    let log = run.log();
    assert_eq!(
        run.code(),
        Some(3),
        "unhandled exception must exit with status 3 on {board}\n{log}"
    );
    assert!(log.contains("FATAL: data abort"), "{log}");
    assert!(log.contains("EC=0x25"), "{log}");
    assert!(log.contains("translation fault (read)"), "{log}");
    assert!(log.contains("FAR=0x0000700000000008"), "{log}");
    assert!(
        log.contains("ELR=0xffff"),
        "ELR in the high-half kernel text\n{log}"
    );
    assert!(log.contains("x30="), "registers printed\n{log}");
    assert!(!log.contains("running "), "no test ran after the fault\n{log}");
}

fn fatal_panic(test: &str, board: Board) {
    if !board_available(test, board) {
        return;
    }
    let run = boot(&build("selftest", board, &[]), "crash=panic");
    let log = run.log();
    assert_eq!(
        run.code(),
        Some(2),
        "panic must exit with status 2 on {board}\n{log}"
    );
    assert!(
        log.contains("panicked: panicked at apps/selftest/src/main.rs:"),
        "{log}"
    );
    assert!(log.contains("deliberate panic outside a test"), "{log}");
}

#[test]
fn fatal_exception_reported_on_qemu_virt() {
    fatal_exception("fatal_exception_reported_on_qemu_virt", Board::QemuVirt);
}

#[test]
fn fatal_exception_reported_on_raspi3() {
    fatal_exception("fatal_exception_reported_on_raspi3", Board::Raspi3);
}

#[test]
fn fatal_exception_reported_on_raspi4() {
    fatal_exception("fatal_exception_reported_on_raspi4", Board::Raspi4);
}

#[test]
fn panic_reported_on_qemu_virt() {
    fatal_panic("panic_reported_on_qemu_virt", Board::QemuVirt);
}

#[test]
fn panic_reported_on_raspi4() {
    fatal_panic("panic_reported_on_raspi4", Board::Raspi4);
}
