//! The DTB generated for the raspi boards: a valid FDT with the nodes QEMU
//! edits, and QEMU really fills in `/memory` and `/chosen/bootargs`.

use std::time::Duration;

use tessera_tests::{board_available, scratch_dir, Board};
use xtask::builder::BuiltImage;
use xtask::dtb;
use xtask::qemu::QemuRunner;

fn check_generated(board: Board) {
    let dir = scratch_dir(&format!("dtb-{board}"));
    let path = dir.join(format!("{board}.dtb"));
    dtb::write(board, &path).unwrap();
    let blob = std::fs::read(&path).unwrap();
    let fdt = fdt::Fdt::new(&blob).unwrap_or_else(|e| panic!("{board}: not a valid FDT: {e:?}"));

    let root = fdt.find_node("/").expect("root node");
    let cell = |name: &str| root.property(name).and_then(|p| p.as_usize());
    assert_eq!(cell("#address-cells"), Some(1));
    assert_eq!(cell("#size-cells"), Some(1));
    let compatible: Vec<&str> = fdt.root().compatible().all().collect();
    assert_eq!(compatible, board.dtb_compatible().unwrap());
    assert_eq!(fdt.root().model(), board.dtb_model().unwrap());

    let memory = fdt.find_node("/memory").expect("/memory node (exact name)");
    assert_eq!(memory.name, "memory", "QEMU edits the node at exactly /memory");
    assert_eq!(
        memory.property("device_type").and_then(|p| p.as_str()),
        Some("memory")
    );
    let reg: Vec<(usize, Option<usize>)> = memory
        .reg()
        .expect("memory reg")
        .map(|r| (r.starting_address as usize, r.size))
        .collect();
    assert_eq!(reg, [(0, Some(0x4000_0000))]);

    let chosen = fdt.find_node("/chosen").expect("/chosen node");
    assert_eq!(chosen.property("bootargs").and_then(|p| p.as_str()), Some(""));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn raspi3_dtb_is_a_valid_fdt() {
    check_generated(Board::Raspi3);
}

#[test]
fn raspi4_dtb_is_a_valid_fdt() {
    check_generated(Board::Raspi4);
}

/// What QEMU 10 puts in the memory node on raspi3b and raspi4b alike: the
/// RAM below the VideoCore carve-out (1 GiB - 64 MiB; raspi4b's RAM above
/// 1 GiB is not described).
const RASPI_RAM: usize = 0x3c00_0000;

/// Boots QEMU with our DTB and `-machine dumpdtb=` (which writes the final
/// DTB and exits before running anything) and checks what QEMU made of it.
fn check_qemu_edits(test: &str, board: Board, ram: usize) {
    if !board_available(test, board) {
        return;
    }
    let dir = scratch_dir(test);
    let ours = dir.join("in.dtb");
    dtb::write(board, &ours).unwrap();
    // QEMU needs some -kernel to load a DTB at all; contents do not matter.
    let kernel = dir.join("kernel8.img");
    std::fs::write(&kernel, [0u8; 64]).unwrap();
    let dumped = dir.join("out.dtb");
    let bootargs = "tests=alloc,mm log=debug";
    // The command line `cargo xtask run` uses, plus `dumpdtb`.
    let mut runner = QemuRunner::new(&BuiltImage {
        app: "none".into(),
        board,
        features: vec![],
        elf: kernel.clone(),
        kernel,
        dtb: Some(ours),
    })
    .append(bootargs)
    .timeout(Duration::from_secs(60));
    runner.extra_args = vec!["-machine".into(), format!("dumpdtb={}", dumped.display()).into()];
    let out = runner.run_captured(false).unwrap();
    assert!(
        out.success(),
        "QEMU rejected the {board} DTB: {}\n{}",
        out.describe(),
        out.stderr
    );
    let blob = std::fs::read(&dumped).unwrap();
    let fdt = fdt::Fdt::new(&blob).unwrap();
    // `find_node` (what the kernel uses for /chosen) must still work after
    // QEMU's edits; see the node-order note in xtask/src/dtb.rs.
    let chosen = fdt
        .find_node("/chosen")
        .expect("find_node(\"/chosen\") after QEMU's edits");
    assert_eq!(
        chosen.property("bootargs").and_then(|p| p.as_str()),
        Some(bootargs)
    );
    // QEMU replaces our /memory by /memory@0 (old node NOPed out): exactly
    // one memory node must remain, holding the board's RAM.
    let memory: Vec<_> = fdt
        .all_nodes()
        .filter(|n| n.property("device_type").and_then(|p| p.as_str()) == Some("memory"))
        .collect();
    assert_eq!(memory.len(), 1, "one memory node");
    let reg: Vec<(usize, Option<usize>)> = memory[0]
        .reg()
        .unwrap()
        .map(|r| (r.starting_address as usize, r.size))
        .collect();
    assert_eq!(
        reg,
        [(0, Some(ram))],
        "QEMU sets the memory reg to the board's RAM"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn qemu_fills_in_raspi3_dtb() {
    check_qemu_edits("qemu_fills_in_raspi3_dtb", Board::Raspi3, RASPI_RAM);
}

#[test]
fn qemu_fills_in_raspi4_dtb() {
    check_qemu_edits("qemu_fills_in_raspi4_dtb", Board::Raspi4, RASPI_RAM);
}
