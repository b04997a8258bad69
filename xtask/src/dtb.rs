//! The minimal device tree passed to QEMU for the Raspberry Pi boards.
//!
//! QEMU's raspi machines do not generate a DTB; with `-dtb` they load ours
//! and edit it: `/chosen` `bootargs` gets `-append`, and the RAM size goes
//! into the memory node (QEMU 10 replaces `/memory` by a fresh
//! `/memory@0` with `device_type = "memory"` and the real `reg`: 0x3c000000
//! bytes on raspi3b, 2 GiB on raspi4b). The root's
//! `#address-cells`/`#size-cells` tell QEMU the cell widths.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use vm_fdt::FdtWriter;

use crate::Board;

/// The placeholder `/memory` `reg` (base 0, 1 GiB); QEMU overwrites it.
pub const PLACEHOLDER_MEMORY: [u32; 2] = [0, 0x4000_0000];

/// Builds the DTB blob for a raspi board.
pub fn generate(board: Board) -> Result<Vec<u8>> {
    let (compatible, model) = board
        .dtb_compatible()
        .zip(board.dtb_model())
        .ok_or_else(|| anyhow!("board {board} does not use a generated DTB (QEMU provides one)"))?;
    let fdt_err = |e: vm_fdt::Error| anyhow!("building the {board} DTB: {e}");

    // Node order matters: QEMU (10.0 at least) turns `/memory` into FDT_NOP tokens
    // and inserts a new `/memory@0` as the first child of the root. The
    // `fdt` crate (0.1.5) stops looking for siblings at a NOP, so anything
    // after the old `/memory` becomes invisible to `find_node`. `/chosen`
    // therefore comes first and `/memory` last.
    let mut w = FdtWriter::new().map_err(fdt_err)?;
    let root = w.begin_node("").map_err(fdt_err)?;
    w.property_u32("#address-cells", 1).map_err(fdt_err)?;
    w.property_u32("#size-cells", 1).map_err(fdt_err)?;
    w.property_string_list("compatible", compatible.iter().map(|s| s.to_string()).collect())
        .map_err(fdt_err)?;
    w.property_string("model", model).map_err(fdt_err)?;

    let chosen = w.begin_node("chosen").map_err(fdt_err)?;
    w.property_string("bootargs", "").map_err(fdt_err)?;
    // Entropy for the kernel's random numbers, as boot firmware and loaders provide it (the
    // Devicetree spec's `/chosen/rng-seed`): fresh from the host for every generated tree.
    w.property("rng-seed", &host_random_seed()?).map_err(fdt_err)?;
    w.end_node(chosen).map_err(fdt_err)?;
    if board == Board::Raspi3 {
        // QEMU's raspi3b models the BCM2835 RNG; its raspi4b has no RNG200, so that tree lists none.
        let rng = w.begin_node("rng@7e104000").map_err(fdt_err)?;
        w.property_string("compatible", "brcm,bcm2835-rng")
            .map_err(fdt_err)?;
        w.property_array_u32("reg", &[0x7e10_4000, 0x10])
            .map_err(fdt_err)?;
        w.end_node(rng).map_err(fdt_err)?;
    }

    let memory = w.begin_node("memory").map_err(fdt_err)?;
    w.property_string("device_type", "memory").map_err(fdt_err)?;
    w.property_array_u32("reg", &PLACEHOLDER_MEMORY)
        .map_err(fdt_err)?;
    w.end_node(memory).map_err(fdt_err)?;

    w.end_node(root).map_err(fdt_err)?;
    w.finish().map_err(fdt_err)
}

/// Where the DTB of a board lives: `target/boards/<board>/<board>.dtb`.
/// 32 bytes from the host's random number generator.
fn host_random_seed() -> Result<Vec<u8>> {
    use std::io::Read;
    let mut seed = vec![0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut seed))
        .context("reading /dev/urandom for the device tree's rng-seed")?;
    Ok(seed)
}

pub fn path(target_root: &Path, board: Board) -> PathBuf {
    target_root
        .join("boards")
        .join(board.name())
        .join(format!("{}.dtb", board.name()))
}

/// Writes the DTB of `board` to `path` (atomically: concurrent builds may
/// write the same file) unless it already has the same content.
pub fn write(board: Board, path: &Path) -> Result<()> {
    let blob = generate(board)?;
    if std::fs::read(path).is_ok_and(|old| old == blob) {
        return Ok(());
    }
    crate::process::write_atomic(path, &blob).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn be32(b: &[u8], off: usize) -> u32 {
        u32::from_be_bytes(b[off..off + 4].try_into().unwrap())
    }

    #[test]
    fn header_and_strings() {
        for board in [Board::Raspi3, Board::Raspi4] {
            let b = generate(board).unwrap();
            assert_eq!(be32(&b, 0), 0xd00d_feed, "FDT magic");
            assert_eq!(be32(&b, 4) as usize, b.len(), "totalsize");
            assert_eq!(be32(&b, 20), 17, "version");
            let text = String::from_utf8_lossy(&b);
            for s in [
                "memory",
                "chosen",
                "bootargs",
                "device_type",
                "#address-cells",
                "#size-cells",
                "model",
            ] {
                assert!(text.contains(s), "{board}: missing {s}");
            }
            let compat = board.dtb_compatible().unwrap();
            assert!(
                text.contains(&format!("{}\0{}\0", compat[0], compat[1])),
                "{board}"
            );
        }
    }

    #[test]
    fn qemu_virt_has_no_generated_dtb() {
        assert!(generate(Board::QemuVirt).is_err());
    }
}
