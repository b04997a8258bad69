//! The EL0 program archive: a read-only newc cpio archive of static Linux arm64 programs, carried
//! in the kernel image's `.tessera_programs` section.
//!
//! `cargo xtask build|run|image --program PATH[=NAME]` writes the archive and hands it to
//! `build.rs` through `TESSERA_PROGRAMS`; without programs the archive is empty (only the
//! `TRAILER!!!` member). The section lies inside the image's read-only data, page aligned at both
//! ends, so the kernel map covers it read-only and never-execute; the archive is used where it
//! lies (mapped, not copied): [`archive`] reads it through the kernel map, [`archive_phys`] gives
//! its physical pages, e.g. to map a program's file-backed segments.

/// Page alignment for the archive, so its pages hold nothing else.
#[repr(C, align(4096))]
struct Aligned<T: ?Sized>(T);

/// Bytes in the archive (without the padding to the page).
const LEN: usize = include_bytes!(concat!(env!("OUT_DIR"), "/programs.cpio")).len();

#[link_section = ".tessera_programs"]
#[used]
static ARCHIVE: Aligned<[u8; LEN]> = Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/programs.cpio")));

/// The archive's bytes (a newc cpio archive ending with `TRAILER!!!`), through the kernel map.
pub fn archive() -> &'static [u8] {
    &ARCHIVE.0
}

/// The archive's physical address (page aligned) and length in bytes. The kernel runs at
/// `KERNEL_OFFSET + pa` once the MMU is on (as it is for any caller after boot).
pub fn archive_phys() -> (u64, usize) {
    let va = ARCHIVE.0.as_ptr() as usize;
    (arch::board::virt_to_phys(va) as u64, LEN)
}
