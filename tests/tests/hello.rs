//! `hello` prints its greeting and exits 0 on every board.

use tessera_tests::{board_available, boot, build, Board};

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
