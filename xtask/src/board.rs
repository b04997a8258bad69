//! The boards Tessera builds for.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// A board: selects the `libos/board-*` feature, the linker script, the QEMU
/// machine and the image format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Board {
    QemuVirt,
    Raspi3,
    Raspi4,
}

impl Board {
    pub const ALL: [Board; 3] = [Board::QemuVirt, Board::Raspi3, Board::Raspi4];

    /// The name used on the command line, in feature names and file names.
    pub fn name(self) -> &'static str {
        match self {
            Board::QemuVirt => "qemu-virt",
            Board::Raspi3 => "raspi3",
            Board::Raspi4 => "raspi4",
        }
    }

    /// The cargo feature (on `libos`) that selects this board.
    pub fn feature(self) -> String {
        format!("libos/board-{}", self.name())
    }

    /// The linker script for this board.
    pub fn linker_script(self, root: &Path) -> PathBuf {
        root.join("linker").join(format!("{}.ld", self.name()))
    }

    /// The `-M` machine name QEMU uses for this board.
    pub fn qemu_machine(self) -> &'static str {
        match self {
            Board::QemuVirt => "virt",
            Board::Raspi3 => "raspi3b",
            Board::Raspi4 => "raspi4b",
        }
    }

    /// Raspberry Pi boards boot a raw `kernel8.img` plus a DTB we generate;
    /// `qemu-virt` boots the ELF and QEMU generates the DTB.
    pub fn is_raspi(self) -> bool {
        matches!(self, Board::Raspi3 | Board::Raspi4)
    }

    /// Root `compatible` of the generated DTB (raspi boards only).
    pub fn dtb_compatible(self) -> Option<[&'static str; 2]> {
        match self {
            Board::QemuVirt => None,
            Board::Raspi3 => Some(["raspberrypi,3-model-b", "brcm,bcm2837"]),
            Board::Raspi4 => Some(["raspberrypi,4-model-b", "brcm,bcm2711"]),
        }
    }

    /// Root `model` of the generated DTB (raspi boards only).
    pub fn dtb_model(self) -> Option<&'static str> {
        match self {
            Board::QemuVirt => None,
            Board::Raspi3 => Some("Raspberry Pi 3 Model B"),
            Board::Raspi4 => Some("Raspberry Pi 4 Model B"),
        }
    }

    pub fn valid_names() -> String {
        Board::ALL.iter().map(|b| b.name()).collect::<Vec<_>>().join(", ")
    }
}

impl fmt::Display for Board {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Board {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Accept the QEMU machine names as aliases.
        match s {
            "qemu-virt" | "virt" => Ok(Board::QemuVirt),
            "raspi3" | "raspi3b" => Ok(Board::Raspi3),
            "raspi4" | "raspi4b" => Ok(Board::Raspi4),
            _ => anyhow::bail!("unknown board '{s}'; valid boards: {}", Board::valid_names()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for b in Board::ALL {
            assert_eq!(b.name().parse::<Board>().unwrap(), b);
            assert_eq!(b.qemu_machine().parse::<Board>().unwrap(), b);
        }
    }

    #[test]
    fn unknown_board_lists_valid_ones() {
        let e = "raspi5".parse::<Board>().unwrap_err().to_string();
        assert!(e.contains("raspi5"), "{e}");
        assert!(e.contains("qemu-virt, raspi3, raspi4"), "{e}");
    }

    #[test]
    fn features_and_linker_scripts() {
        assert_eq!(Board::QemuVirt.feature(), "libos/board-qemu-virt");
        assert_eq!(Board::Raspi3.feature(), "libos/board-raspi3");
        assert_eq!(Board::Raspi4.feature(), "libos/board-raspi4");
        assert_eq!(
            Board::Raspi4.linker_script(Path::new("/w")),
            PathBuf::from("/w/linker/raspi4.ld")
        );
    }
}
