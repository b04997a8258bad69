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
        "enable_uart=1",
        "dtoverlay=disable-bt",
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
