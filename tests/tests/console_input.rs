//! Console input: bytes sent to the serial line (QEMU's stdin, `-serial stdio`) reach
//! `libos::console::read_available` on every board, more of them than the PL011's RX FIFO holds
//! (the `selftest` boot test `console_input_arrives` says when it is ready, then reads and echoes
//! what it received), and reach a user program's blocking `read(0, ...)` (the example program
//! `read-input`, run by the `init` app).

use std::io::{Read, Write};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tessera_tests::{board_available, build, Board, BOOT_TIMEOUT};
use xtask::qemu::QemuRunner;

/// 96 bytes, printable, no newline: three times the FIFO's depth on QEMU's PL011.
fn input() -> String {
    (0..96u8).map(|i| (b'a' + i % 26) as char).collect()
}

/// Collects everything `r` produces into a shared string, on a thread of its own.
fn collect(mut r: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let out = Arc::new(Mutex::new(String::new()));
    let sink = out.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    out
}

/// Boots `image` with `append`, waits for `ready` on the console, types `sent`, and expects
/// `echo` back and exit status 0.
fn type_into(
    board: Board,
    image: &xtask::builder::BuiltImage,
    append: String,
    ready: &str,
    sent: &str,
    echo: &str,
) {
    let runner = QemuRunner::new(image).append(append);
    let mut cmd = runner.command().expect("QEMU command line");
    let command = xtask::process::render(&cmd);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{command}: {e}"));
    let stdout = collect(child.stdout.take().unwrap());
    let stderr = collect(child.stderr.take().unwrap());
    let mut stdin = child.stdin.take().unwrap();
    let log = || {
        format!(
            "$ {command}\n--- serial (stdout) ---\n{}\n--- stderr ---\n{}",
            stdout.lock().unwrap(),
            stderr.lock().unwrap()
        )
    };
    let deadline = Instant::now() + BOOT_TIMEOUT;
    let mut written = false;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for QEMU") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        // The bytes go out once the guest waits for them; stdin stays open until QEMU exits, so
        // QEMU sees no end of input.
        if !written && stdout.lock().unwrap().contains(ready) {
            stdin.write_all(sent.as_bytes()).expect("write to QEMU's stdin");
            stdin.flush().unwrap();
            written = true;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(stdin);
    // Let the reader threads take the last output.
    std::thread::sleep(Duration::from_millis(200));
    let status = status.unwrap_or_else(|| panic!("timed out on {board}\n{}", log()));
    assert!(written, "the guest never said it was ready on {board}\n{}", log());
    assert!(
        stdout.lock().unwrap().contains(echo),
        "the guest did not echo what was sent on {board}\n{}",
        log()
    );
    assert_eq!(status.code(), Some(0), "exit status on {board}\n{}", log());
}

fn console_input(test: &str, board: Board) {
    if !board_available(test, board) {
        return;
    }
    let image = build("selftest", board, &[]);
    let sent = input();
    let append = format!("tests=console_input_arrives console_input={}", sent.len());
    let echo = format!("console input: received {} bytes: {sent}", sent.len());
    type_into(board, &image, append, "console input: ready", &sent, &echo);
}

/// A program's `read(0, ...)` waits for console input (its process blocks; the CPU idles) and
/// gets what was typed.
#[test]
fn a_program_reads_the_console() {
    let board = Board::QemuVirt;
    if !board_available("a_program_reads_the_console", board) {
        return;
    }
    let root = xtask::workspace_root();
    let program = xtask::programs::examples(&root)
        .unwrap()
        .into_iter()
        .find(|p| p.name == "read-input")
        .expect("the read-input example");
    let path = xtask::programs::build(&program, true).unwrap_or_else(|e| panic!("{e:#}"));
    let req = xtask::builder::BuildRequest::new("init", board)
        .programs([("read-input", path)])
        .quiet(true);
    let image = xtask::builder::build(&req).unwrap_or_else(|e| panic!("{e:#}"));
    type_into(
        board,
        &image,
        "init=read-input".into(),
        "read-input: ready",
        "hello from the host\nend\n",
        "read-input: HELLO FROM THE HOST",
    );
}

#[test]
fn console_input_on_qemu_virt() {
    console_input("console_input_on_qemu_virt", Board::QemuVirt);
}

#[test]
fn console_input_on_raspi3() {
    console_input("console_input_on_raspi3", Board::Raspi3);
}

#[test]
fn console_input_on_raspi4() {
    console_input("console_input_on_raspi4", Board::Raspi4);
}
