//! Loading a static ELF into a fresh address space: its segments, its stack (with `argv`,
//! `envp` and the auxiliary vector as Linux lays them out) and the start of its heap.

use super::uaccess;
use super::{ExecError, STACK_SIZE};
use crate::exec::elf::Elf;
use crate::exec::stack;
use crate::mm::space::Machine;
use crate::mm::vma::{MapAlign, Placement, VmProt, VmaKind};
use crate::mm::{PhysAddr, VirtAddr, PAGE_SIZE, USER_END};
use crate::platform::TargetMachine;
use crate::process::Process;

/// Top of the stack: below the top of the user half, with a guard gap above it.
const STACK_TOP: u64 = USER_END - (1 << 30);
fn vm_prot(flags: crate::exec::elf::Flags) -> VmProt {
    let mut p = VmProt::NONE;
    if flags.readable() {
        p = p.union(VmProt::READ);
    }
    if flags.writable() {
        p = p.union(VmProt::WRITE);
    }
    if flags.executable() {
        p = p.union(VmProt::EXEC);
    }
    p
}

/// Where a position-independent static program is loaded (its addresses are offsets from here).
const PIE_BASE: u64 = 0x4000_0000;

/// Maps the program's segments, its stack and the start of its heap into `p`; returns the
/// initial stack pointer and the heap's start.
pub(super) fn load(
    p: &mut Process,
    elf: &Elf,
    argv: &[&str],
    envp: &[&str],
) -> Result<(u64, u64, u64), ExecError> {
    let bias = if elf.is_pie() { PIE_BASE } else { 0 };
    let mut brk = 0;
    for seg in elf.segments() {
        // Two segments may share the page at their boundary: map it once.
        let start = ((seg.vaddr + bias) & !(PAGE_SIZE - 1)).max(brk);
        let end = (seg.vaddr + bias + seg.memsz).next_multiple_of(PAGE_SIZE);
        if start >= end {
            write_into(p, seg.vaddr + bias, elf.segment_data(seg))?;
            continue;
        }
        p.map(
            Placement::FixedNoReplace(VirtAddr(start)),
            end - start,
            VmProt::RW,
            VmaKind::AnonPrivate,
            MapAlign::Page,
        )
        .map_err(ExecError::Space)?;
        write_into(p, seg.vaddr + bias, elf.segment_data(seg))?;
        brk = brk.max(end);
    }
    // Each segment's pages get its protection; a page two segments share gets both.
    let mut prev: Option<(u64, VmProt)> = None;
    for seg in elf.segments() {
        let start = (seg.vaddr + bias) & !(PAGE_SIZE - 1);
        let end = (seg.vaddr + bias + seg.memsz).next_multiple_of(PAGE_SIZE);
        let prot = vm_prot(seg.flags);
        p.mprotect(VirtAddr(start), end - start, prot)
            .map_err(ExecError::Space)?;
        if let Some((prev_end, prev_prot)) = prev {
            if prev_end > start {
                p.mprotect(VirtAddr(start), PAGE_SIZE, prot.union(prev_prot))
                    .map_err(ExecError::Space)?;
            }
        }
        prev = Some((end, prot));
    }
    p.map(
        Placement::FixedNoReplace(VirtAddr(STACK_TOP - STACK_SIZE)),
        STACK_SIZE,
        VmProt::RW,
        VmaKind::AnonPrivate,
        MapAlign::Size64K,
    )
    .map_err(ExecError::Space)?;
    let mut random = [0u8; 16];
    crate::random::fill(&mut random).map_err(|_| ExecError::NoEntropy)?;
    const AT_PHDR: u64 = 3;
    const AT_PHENT: u64 = 4;
    const AT_PHNUM: u64 = 5;
    const AT_PAGESZ: u64 = 6;
    const AT_BASE: u64 = 7;
    const AT_ENTRY: u64 = 9;
    const AT_UID: u64 = 11;
    const AT_EUID: u64 = 12;
    const AT_GID: u64 = 13;
    const AT_EGID: u64 = 14;
    const AT_HWCAP: u64 = 16;
    const AT_CLKTCK: u64 = 17;
    const AT_SECURE: u64 = 23;
    const HWCAP_FP: u64 = 1 << 0;
    const HWCAP_ASIMD: u64 = 1 << 1;
    let aux = [
        (AT_PHDR, elf.phdr_vaddr().map_or(0, |a| a + bias)),
        (AT_PHENT, u64::from(elf.phent())),
        (AT_PHNUM, u64::from(elf.phnum())),
        (AT_PAGESZ, PAGE_SIZE),
        (AT_BASE, 0),
        (AT_ENTRY, elf.entry() + bias),
        (AT_UID, 0),
        (AT_EUID, 0),
        (AT_GID, 0),
        (AT_EGID, 0),
        (AT_HWCAP, HWCAP_FP | HWCAP_ASIMD),
        (AT_CLKTCK, 100),
        (AT_SECURE, 0),
    ];
    // Linux runs a program given no arguments with an empty argv[0].
    let argv: &[&str] = if argv.is_empty() { &[""] } else { argv };
    let st = stack::build(STACK_TOP, argv, envp, &aux, random).map_err(ExecError::Stack)?;
    write_into(p, st.sp, &st.bytes)?;
    Ok((st.sp, brk, elf.entry() + bias))
}

/// Writes `bytes` at `va` in `p`'s memory through a pin (no fault can happen).
pub(super) fn write_into(p: &mut Process, va: u64, bytes: &[u8]) -> Result<(), ExecError> {
    if bytes.is_empty() {
        return Ok(());
    }
    let pin = p
        .pin(VirtAddr(va), bytes.len() as u64, true)
        .map_err(ExecError::Fault)?;
    uaccess::for_each_piece(pin.pages(), va, bytes.len(), |pa, off, n| {
        TargetMachine.write_bytes(PhysAddr(pa), &bytes[off..off + n])
    });
    p.unpin(pin);
    Ok(())
}
