//! Relinks images when a board's linker script changes (cargo does not track `-T` scripts), and
//! puts the EL0 program archive where `src/programs.rs` includes it: `$OUT_DIR/programs.cpio` is a
//! copy of the newc cpio file named by `TESSERA_PROGRAMS` (set by `cargo xtask` for `--program`),
//! or, without that variable, the empty archive (only the trailer).

use std::path::PathBuf;

/// The newc archive with no members: the `TRAILER!!!` header (nlink 1, namesize 11) and its name,
/// padded to 4 bytes.
fn empty_archive() -> Vec<u8> {
    let mut a = b"070701".to_vec();
    for field in [0u32, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 11, 0] {
        a.extend_from_slice(format!("{field:08X}").as_bytes());
    }
    a.extend_from_slice(b"TRAILER!!!\0\0\0\0");
    a
}

fn main() {
    println!("cargo:rerun-if-changed=../linker");
    println!("cargo:rerun-if-env-changed=TESSERA_PROGRAMS");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("programs.cpio");
    let archive = match std::env::var_os("TESSERA_PROGRAMS").filter(|p| !p.is_empty()) {
        Some(path) => {
            let path = PathBuf::from(path);
            println!("cargo:rerun-if-changed={}", path.display());
            std::fs::read(&path)
                .unwrap_or_else(|e| panic!("TESSERA_PROGRAMS={}: cannot read: {e}", path.display()))
        }
        None => empty_archive(),
    };
    // Only rewritten when different, so an unchanged archive does not recompile libos.
    if std::fs::read(&out).ok().as_deref() != Some(&archive[..]) {
        std::fs::write(&out, &archive).unwrap_or_else(|e| panic!("writing {}: {e}", out.display()));
    }
}
