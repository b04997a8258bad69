//! `cargo xtask image`: kernel8.img + config.txt for a real Pi.

use tessera_tests::{scratch_dir, Board};
use xtask::sdcard;

fn image(board: Board) {
    let out = scratch_dir(&format!("image-{board}"));
    let dir = sdcard::write_image("hello", board, &[], Some(out.clone()), "log=debug")
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(dir, out);
    let kernel = std::fs::read(out.join("kernel8.img")).unwrap();
    assert!(
        !kernel.is_empty() && kernel.len() < 64 << 20,
        "kernel8.img is {} bytes",
        kernel.len()
    );
    assert_ne!(
        &kernel[..4],
        b"\x7fELF",
        "kernel8.img must be a raw binary, not an ELF"
    );
    let config = std::fs::read_to_string(out.join("config.txt")).unwrap();
    for line in [
        "arm_64bit=1",
        "kernel=kernel8.img",
        "kernel_address=0x80000",
        "enable_uart=1",
        "dtoverlay=disable-bt",
        "init_uart_clock=48000000",
    ] {
        assert!(
            config.lines().any(|l| l == line),
            "config.txt lacks {line}:\n{config}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(out.join("cmdline.txt")).unwrap(),
        "log=debug\n"
    );
    std::fs::remove_dir_all(out).unwrap();
}

#[test]
fn image_for_raspi3() {
    image(Board::Raspi3);
}

#[test]
fn image_for_raspi4() {
    image(Board::Raspi4);
}

/// An app image that is not the boot-test image links none of the boot-test harness: no runner,
/// no hooks, no test descriptors, not even the (empty) section's bounds.
#[test]
fn hello_carries_no_test_harness() {
    let image = tessera_tests::build("hello", Board::QemuVirt, &[]);
    let nm = xtask::toolchain::llvm_tool("llvm-nm").expect("llvm-nm (rustup component llvm-tools)");
    let out = std::process::Command::new(nm)
        .arg("-C")
        .arg(&image.elf)
        .output()
        .unwrap();
    assert!(out.status.success());
    let symbols = String::from_utf8_lossy(&out.stdout);
    assert!(
        symbols.lines().count() > 100,
        "too few symbols: is this the image?\n{symbols}"
    );
    let harness: Vec<&str> = symbols
        .lines()
        .filter(|l| l.contains("libos::testing") || l.contains("tessera_tests") || l.contains("boot_tests"))
        .collect();
    assert!(
        harness.is_empty(),
        "test harness symbols in hello:\n{}",
        harness.join("\n")
    );
    // The same check finds them in the boot-test image.
    let selftest = tessera_tests::build("selftest", Board::QemuVirt, &[]);
    let out = std::process::Command::new(xtask::toolchain::llvm_tool("llvm-nm").unwrap())
        .arg("-C")
        .arg(&selftest.elf)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("libos::testing::run_all"));
}
