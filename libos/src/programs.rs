//! The EL0 program archive: a read-only newc cpio archive of static Linux arm64 programs, carried
//! in the kernel image's `.tessera_programs` section.
//!
//! `cargo xtask build|run|image --program PATH[=NAME]` writes the archive and hands it to
//! `build.rs` through `TESSERA_PROGRAMS`; without programs the archive is empty (only the
//! `TRAILER!!!` member). The section lies inside the image's read-only data, 64 KiB aligned and
//! page aligned at its end, so the kernel map covers it read-only and never-execute; the archive
//! is used where it lies (mapped, not copied): [`archive`] reads it through the kernel map,
//! [`archive_phys`] gives its physical pages, and [`file`] makes a program's bytes a memory object
//! whose pages are the archive's own frames, which the loader maps into every process running the
//! program.
//!
//! xtask's archive writer starts every file's data on a page (on 64 KiB for files of 64 KiB or
//! more), so a file's pages are whole frames of the image (and whole 64 KiB blocks where the file
//! is large enough).

use alloc::boxed::Box;
use alloc::collections::BTreeMap;

use spin::Mutex;

use crate::mm::space::Shm;
use crate::mm::{PhysAddr, PAGE_SIZE};
use crate::platform::TargetMachine;

/// 64 KiB alignment for the archive, so its pages hold nothing else and the files it aligns to
/// 64 KiB lie on physical 64 KiB blocks.
#[repr(C, align(65536))]
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

/// The archive's physical address (64 KiB aligned) and length in bytes. The kernel runs at
/// `KERNEL_OFFSET + pa` once the MMU is on (as it is for any caller after boot).
pub fn archive_phys() -> (u64, usize) {
    let va = ARCHIVE.0.as_ptr() as usize;
    (arch::board::virt_to_phys(va) as u64, LEN)
}

/// The program `name` for a boot test: `None` in an image built without programs (its archive
/// is empty); an image that has programs must hold `name`.
#[cfg(feature = "boot-tests")]
pub fn for_test(name: &str) -> Option<&'static [u8]> {
    let archive = crate::exec::cpio::Archive::new(archive()).expect("the program archive is valid");
    archive.entries().next()?;
    Some(find(name).unwrap_or_else(|| panic!("the image's program archive has no '{name}'")))
}

/// The archive's entries by name (as stored, without a leading `./` or `/`), read once.
static INDEX: spin::Once<BTreeMap<&'static str, &'static [u8]>> = spin::Once::new();

/// The contents of the program `name` in the archive (a leading `/` or `./` is ignored); the
/// archive is parsed once, on the first call. An archive that does not parse holds nothing.
pub fn find(name: &str) -> Option<&'static [u8]> {
    let index = INDEX.call_once(|| {
        let mut index = BTreeMap::new();
        if let Ok(archive) = crate::exec::cpio::Archive::new(archive()) {
            for e in archive.entries() {
                index.insert(crate::exec::cpio::normalize(e.name), e.data);
            }
        }
        index
    });
    index.get(crate::exec::cpio::normalize(name)).copied()
}

/// The objects [`file`] made: (offset in the archive, length) → object. They live as long as
/// the image: nothing removes them.
static FILES: Mutex<BTreeMap<(usize, usize), Shm>> = Mutex::new(BTreeMap::new());

/// One page, page aligned.
#[repr(C, align(4096))]
struct Page([u8; PAGE_SIZE as usize]);

/// The read-only file object of `bytes`, a program's contents in the archive (an entry's
/// `data`), made on the first call for those bytes and the same object (a new handle) on every
/// later one: every process running the program maps the same frames.
///
/// The file's whole pages are the archive's own frames, adopted in place
/// ([`Shm::from_frames`]): nothing is copied or allocated for them. Its last partial page is not:
/// in the image the bytes after the file's end are the next member's header and name, and a
/// mapping of that page past the end of the file must read zero. That page is copied once, with
/// a zero tail, into a page of the kernel heap that is never freed (so the object uses no frame
/// of the frame allocator, and a process's frames all come back when it exits).
///
/// `None` when `bytes` does not lie in the archive or does not start on a page (an archive
/// xtask did not write), or its frames are already adopted as part of another object (a slice
/// overlapping one given before): the caller then copies the bytes.
pub fn file(bytes: &[u8]) -> Option<Shm> {
    let base = ARCHIVE.0.as_ptr() as usize;
    let offset = (bytes.as_ptr() as usize).checked_sub(base)?;
    if offset.checked_add(bytes.len())? > LEN || !(offset as u64).is_multiple_of(PAGE_SIZE) {
        return None;
    }
    let mut files = FILES.lock();
    if let Some(obj) = files.get(&(offset, bytes.len())) {
        return Some(obj.clone());
    }
    let whole = bytes.len() & !(PAGE_SIZE as usize - 1);
    let tail = (whole < bytes.len()).then(|| {
        let mut page = Box::new(Page([0; PAGE_SIZE as usize]));
        page.0[..bytes.len() - whole].copy_from_slice(&bytes[whole..]);
        let page: &'static Page = Box::leak(page);
        PhysAddr(arch::board::virt_to_phys(page.0.as_ptr() as usize) as u64)
    });
    let body = PhysAddr(arch::board::virt_to_phys(bytes.as_ptr() as usize) as u64);
    // SAFETY: the body is `bytes`' pages in the image's read-only data: mapped read-only in the
    // kernel map, written by nothing, and outside the frame allocator (the image is reserved at
    // boot) for the life of the image. The tail is a page of the kernel heap leaked above, so
    // nothing frees, reuses or writes it after it was filled with the file's last bytes and
    // zeroes. Both are covered by the page metadata (which spans the image and all usable RAM).
    let obj = unsafe { Shm::from_frames(&mut TargetMachine, bytes.len() as u64, body, tail) };
    match obj {
        Ok(obj) => {
            files.insert((offset, bytes.len()), obj.clone());
            Some(obj)
        }
        Err(e) => {
            log::warn!("program bytes at archive offset {offset:#x} not mapped in place: {e}");
            None
        }
    }
}
