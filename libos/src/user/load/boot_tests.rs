//! Boot tests of the loader on the real MMU: a program's text and read-only data are the
//! archive's own frames in the image, shared by every process running it; its data is a private
//! copy-on-write mapping of the same frames; its bss reads zero, even in the last file page; the
//! stack has a guard gap below it. (The runner's leak check covers each test: every frame comes
//! back when the processes exit.)

use super::*;
use crate::mm::space::Peek;
use crate::programs::for_test as program;
use crate::user::{self, signal, Exit};

/// A process with the program `elf` loaded into it.
fn loaded(elf: &Elf) -> Process {
    let mut p = Process::new().expect("a process");
    load(&mut p, elf, &["prog"], &[]).expect("the program loads");
    p
}

/// The physical address of the archive byte `bytes[offset]`, through the kernel's own map.
fn image_pa(bytes: &[u8], offset: u64) -> u64 {
    let va = bytes.as_ptr() as u64 + offset;
    crate::vm::kernel_translate(va)
        .expect("the archive is in the kernel map")
        .pa
        .0
}

fn peek(p: &Process, va: u64) -> Option<u64> {
    match p.peek(VirtAddr(va)) {
        Peek::Page(pa) => Some(pa.0),
        _ => None,
    }
}

/// Reads the byte at `va` in `p` (faulting it in as the program would).
fn read_byte(p: &mut Process, va: u64) -> u8 {
    // SAFETY: `va` lies in a readable region of `p`, which `run` switches to; faults are resolved
    // on demand.
    p.run(|| unsafe { core::ptr::read_volatile(va as *const u8) })
        .expect("readable")
}

crate::boot_test! {
    /// Two processes loaded from the same program map the same physical frames for its text
    /// and read-only data, and those frames are the program's bytes in the archive in the image:
    /// nothing was copied.
    fn program_text_is_the_archives_frames_shared_by_every_process() {
        let Some(bytes) = program("c-hello") else { return };
        let elf = Elf::parse(bytes).expect("c-hello parses");
        let bias = if elf.is_pie() { PIE_BASE } else { 0 };
        let (archive_pa, archive_len) = crate::programs::archive_phys();
        let archive = archive_pa..archive_pa + archive_len as u64;
        assert_eq!(image_pa(crate::programs::archive(), 0), archive_pa);
        let mut a = loaded(&elf);
        let b = loaded(&elf);
        let mut mapped = 0;
        for seg in elf.segments().iter().filter(|s| !s.flags.writable() && s.filesz > 0) {
            let (start, _) = pages(seg, bias);
            let file_start = seg.offset & !(PAGE_SIZE - 1);
            for page in (0..seg.filesz.next_multiple_of(PAGE_SIZE)).step_by(PAGE_SIZE as usize) {
                let va = start + page;
                let want = image_pa(bytes, file_start + page);
                assert_eq!(peek(&a, va), Some(want), "{va:#x} is not the archive's frame");
                assert_eq!(peek(&b, va), Some(want), "{va:#x} is not shared");
                assert!(archive.contains(&want));
                mapped += 1;
            }
            // Executing or reading faults the very frame in, read-only.
            let first = read_byte(&mut a, seg.vaddr + bias);
            assert_eq!(first, bytes[seg.offset as usize]);
            assert_eq!(peek(&a, seg.vaddr + bias), peek(&b, seg.vaddr + bias));
        }
        assert!(mapped >= 16, "c-hello has at least 64 KiB of text ({mapped} pages)");
        a.exit();
        b.exit();
    }
}

crate::boot_test! {
    /// A write to writable data gives the writer a private copy (the other process and the
    /// archive keep the file's bytes); bss reads zero, also in the last page holding file bytes,
    /// which the loader copied and zeroed.
    fn program_data_is_copy_on_write_and_bss_reads_zero() {
        for name in ["c-hello", "rust-hello"] {
            let Some(bytes) = program(name) else { return };
            let elf = Elf::parse(bytes).expect("the program parses");
            let bias = if elf.is_pie() { PIE_BASE } else { 0 };
            let mut a = loaded(&elf);
            let mut b = loaded(&elf);
            let data = elf
                .segments()
                .iter()
                .rev()
                .find(|s| s.flags.writable() && s.filesz > 0)
                .copied()
                .expect("a data segment");
            let va = data.vaddr + bias;
            let file_end = va + data.filesz;
            // The first data byte: the archive's frame until written, then a private copy.
            let first = image_pa(bytes, data.offset);
            if va & !(PAGE_SIZE - 1) != file_end & !(PAGE_SIZE - 1) {
                assert_eq!(peek(&a, va), Some(first), "{name}: data is mapped from the archive");
            }
            let old = read_byte(&mut a, va);
            assert_eq!(old, bytes[data.offset as usize]);
            // SAFETY: `va` is in the writable data of `a`, which `run` switches to.
            a.run(|| unsafe { core::ptr::write_volatile(va as *mut u8, !old) })
                .expect("data is writable");
            assert_eq!(read_byte(&mut a, va), !old);
            assert_ne!(peek(&a, va), Some(first), "{name}: the writer has its own copy");
            assert_eq!(read_byte(&mut b, va), old, "{name}: the other process is unchanged");
            assert_eq!(bytes[data.offset as usize], old, "{name}: the archive is unchanged");
            // The last file page: the file's bytes, then zeroes to the page's end (bss).
            let last = file_end - 1;
            assert_eq!(read_byte(&mut b, last), bytes[(data.offset + data.filesz - 1) as usize]);
            if data.memsz > data.filesz {
                let (archive_pa, archive_len) = crate::programs::archive_phys();
                let archive = archive_pa..archive_pa + archive_len as u64;
                assert!(
                    peek(&b, last).is_some_and(|pa| !archive.contains(&pa)),
                    "{name}: the last file page is a copy"
                );
                for v in file_end..(file_end.next_multiple_of(PAGE_SIZE)).min(va + data.memsz) {
                    assert_eq!(read_byte(&mut b, v), 0, "{name}: bss at {v:#x}");
                }
                assert_eq!(read_byte(&mut b, va + data.memsz - 1), 0);
            }
            a.exit();
            b.exit();
        }
    }
}

crate::boot_test! {
    /// The 256 pages below the stack are reserved (nothing can be mapped there without
    /// `MAP_FIXED`), and a program whose stack overflows dies there with SIGSEGV.
    fn an_overflowing_stack_dies_in_the_guard_gap() {
        let Some(bytes) = program("stack-guard") else { return };
        let bottom = STACK_TOP - STACK_SIZE;
        let elf = Elf::parse(bytes).expect("stack-guard parses");
        let mut p = loaded(&elf);
        let below = p.map(
            Placement::FixedNoReplace(VirtAddr(bottom - PAGE_SIZE)),
            PAGE_SIZE,
            VmProt::RW,
            VmaKind::AnonPrivate,
            MapAlign::Page,
        );
        assert!(below.is_err(), "the guard gap is reserved");
        // SAFETY: the guard gap is a region without access; the read faults and `run` reports it.
        let fault = p.run(|| unsafe { core::ptr::read_volatile((bottom - 8) as *const u8) });
        assert!(fault.is_err(), "the guard gap is not readable");
        p.exit();
        let mut exit = None;
        let out = crate::console::capture(|| exit = Some(user::run(bytes, &["stack-guard"], &[])));
        assert!(out.starts_with("stack-guard: recursing\n"), "{out}");
        match exit.expect("ran") {
            Ok(Exit::Signal { signal: signal::SIGSEGV, address }) => assert!(
                (bottom - STACK_GUARD..bottom).contains(&address),
                "fault at {address:#x}, not in the guard gap below {bottom:#x}"
            ),
            other => panic!("{other:?}\n{out}"),
        }
    }
}
