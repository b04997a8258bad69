//! Loading a static ELF into a fresh address space: its segments, its stack (with `argv`,
//! `envp` and the auxiliary vector as Linux lays them out) and the start of its heap.
//!
//! A program from the image's archive is mapped from the archive's own frames, through its file
//! object ([`crate::programs::file`]), as Linux maps an executable from the page cache:
//!
//! * a segment without write permission (text, read-only data) is a shared read-only mapping
//!   of the file: every process running the program maps the same frames, and nothing is
//!   copied or allocated for them;
//! * a writable segment (data) is a private mapping of the file: reads map the archive's page,
//!   the first write to a page copies it;
//! * the zero-filled rest of a segment past its file bytes (bss) is anonymous memory from the
//!   page after the last file page on; in the last file page itself the bytes after the
//!   segment's end are zeroed with a write, which gives the process its own copy of that one
//!   page.
//!
//! A segment is copied into anonymous memory instead (as every segment of a program that does
//! not lie in the archive is) when it cannot be mapped from the file: its file offset and
//! address differ modulo the page (static linkers never emit that: `p_offset ≡ p_vaddr` modulo
//! `p_align`), it shares a page with a neighbouring segment (one page cannot map two file
//! offsets), or it is read-only with a zero-filled part inside its last file page (which
//! cannot be zeroed through a shared read-only mapping).
//!
//! The heap (`brk`) and the stack are anonymous; the stack is placed for 64 KiB folios, with a
//! guard gap below it.

use super::uaccess;
use super::{ExecError, STACK_SIZE};
use crate::exec::elf::{Elf, Segment};
use crate::exec::stack;
use crate::mm::space::{Machine, Shm};
use crate::mm::vma::{MapAlign, Placement, VmProt, VmaKind};
use crate::mm::{PhysAddr, VirtAddr, PAGE_SIZE, USER_END};
use crate::platform::TargetMachine;
use crate::process::Process;

#[cfg(feature = "boot-tests")]
mod boot_tests;

/// Top of the stack: below the top of the user half, with a gap above it.
const STACK_TOP: u64 = USER_END - (1 << 30);
/// The stack guard gap: the 256 pages below the stack (Linux's `stack_guard_gap`) are reserved
/// by a region without access, so that no mapping is placed there and a stack overflowing into
/// them faults (`SIGSEGV`) instead of running into other memory.
const STACK_GUARD: u64 = 256 * PAGE_SIZE;

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

/// Zeroes for the part of a last file page past a segment's file bytes.
static ZEROES: [u8; PAGE_SIZE as usize] = [0; PAGE_SIZE as usize];

/// The pages segment `seg` occupies once loaded at `bias`.
fn pages(seg: &Segment, bias: u64) -> (u64, u64) {
    let r = seg.pages();
    (r.start + bias, r.end + bias)
}

/// Whether `seg` can be mapped from the program's file (see the module documentation).
fn maps_in_place(seg: &Segment) -> bool {
    let end_of_file_bytes = seg.vaddr + seg.filesz;
    seg.vaddr % PAGE_SIZE == seg.offset % PAGE_SIZE
        && (seg.flags.writable() || seg.memsz == seg.filesz || end_of_file_bytes.is_multiple_of(PAGE_SIZE))
}

/// Maps the program's segments, its stack and the start of its heap into `p`; returns the
/// initial stack pointer and the heap's start.
pub(super) fn load(
    p: &mut Process,
    elf: &Elf,
    argv: &[&str],
    envp: &[&str],
) -> Result<(u64, u64, u64), ExecError> {
    let bias = if elf.is_pie() { PIE_BASE } else { 0 };
    let file = crate::programs::file(elf.bytes());
    let segs = elf.segments();
    let overlap = |a: &Segment, b: &Segment| pages(a, bias).1 > pages(b, bias).0;
    let mut brk = 0;
    let mut copied = alloc::vec![false; segs.len()];
    for (i, seg) in segs.iter().enumerate() {
        let alone =
            (i == 0 || !overlap(&segs[i - 1], seg)) && segs.get(i + 1).is_none_or(|next| !overlap(seg, next));
        match &file {
            Some(obj) if alone && maps_in_place(seg) => map_from_file(p, obj, seg, bias)?,
            _ => {
                copy_segment(p, elf, seg, bias, brk)?;
                copied[i] = true;
            }
        }
        brk = brk.max(pages(seg, bias).1);
    }
    // A copied segment's pages get its protection once every segment is written; a page two
    // segments share gets both.
    let mut prev: Option<(u64, VmProt)> = None;
    for (seg, _) in segs.iter().zip(&copied).filter(|(_, &c)| c) {
        let (start, end) = pages(seg, bias);
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
        Placement::FixedNoReplace(VirtAddr(STACK_TOP - STACK_SIZE - STACK_GUARD)),
        STACK_GUARD,
        VmProt::NONE,
        VmaKind::AnonPrivate,
        MapAlign::Page,
    )
    .map_err(ExecError::Space)?;
    p.map(
        Placement::FixedNoReplace(VirtAddr(STACK_TOP - STACK_SIZE)),
        STACK_SIZE,
        VmProt::RW,
        VmaKind::AnonPrivate,
        MapAlign::Size64K,
    )
    .map_err(ExecError::Space)?;
    map_sigpage(p)?;
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

/// The page holding the signal trampoline, mapped read-only and executable into every process
/// (Linux's vDSO offers the same code; Tessera maps no vDSO).
pub const SIGPAGE: u64 = STACK_TOP + 16 * PAGE_SIZE;
/// Where a handler whose action has no `SA_RESTORER` returns (glibc sets none on arm64):
/// `mov x8, #139; svc #0`, `rt_sigreturn`, as Linux's `__kernel_rt_sigreturn` (after a `nop`
/// for unwinders, as there).
pub const SIGRETURN_TRAMPOLINE: u64 = SIGPAGE + 4;

#[repr(C, align(4096))]
struct CodePage([u32; PAGE_SIZE as usize / 4]);

static SIGPAGE_CODE: CodePage = {
    let mut code = [0u32; PAGE_SIZE as usize / 4];
    code[0] = 0xd503_201f; // nop
    code[1] = 0xd280_1168; // mov x8, #139
    code[2] = 0xd400_0001; // svc #0
    CodePage(code)
};

/// The trampoline page as a file object every process maps (built once).
static SIGPAGE_OBJECT: spin::Once<Option<Shm>> = spin::Once::new();

/// Maps the signal trampoline page at [`SIGPAGE`]; without it, only handlers with
/// `SA_RESTORER` can return.
fn map_sigpage(p: &mut Process) -> Result<(), ExecError> {
    let obj = SIGPAGE_OBJECT.call_once(|| {
        let pa = arch::board::virt_to_phys(SIGPAGE_CODE.0.as_ptr() as usize) as u64;
        // SAFETY: the page is an immutable static of the image (read-only data, page-aligned
        // and page-sized): nothing writes or frees it for the life of the image, it is not the
        // frame allocator's, and this is the only object made of it (built once).
        match unsafe { Shm::from_frames(&mut TargetMachine, PAGE_SIZE, PhysAddr(pa), None) } {
            Ok(obj) => Some(obj),
            Err(e) => {
                log::warn!("no signal trampoline page: {e}");
                None
            }
        }
    });
    let Some(obj) = obj else {
        return Ok(());
    };
    p.map(
        Placement::FixedNoReplace(VirtAddr(SIGPAGE)),
        PAGE_SIZE,
        VmProt::READ.union(VmProt::EXEC),
        VmaKind::Shared {
            obj: obj.clone(),
            offset: 0,
        },
        MapAlign::Page,
    )
    .map_err(ExecError::Space)?;
    Ok(())
}

/// Maps `seg` from the program's file object `obj`: the file pages shared read-only or, for a
/// writable segment, private; the rest anonymous (see the module documentation).
fn map_from_file(p: &mut Process, obj: &Shm, seg: &Segment, bias: u64) -> Result<(), ExecError> {
    let va = seg.vaddr + bias;
    let (start, end) = pages(seg, bias);
    let prot = vm_prot(seg.flags);
    let file_end = va + seg.filesz;
    let mut anon_start = start;
    if seg.filesz > 0 {
        let file_pages_end = file_end.next_multiple_of(PAGE_SIZE);
        let offset = seg.offset - (va - start);
        let kind = if seg.flags.writable() {
            VmaKind::FilePrivate {
                obj: obj.clone(),
                offset,
            }
        } else {
            VmaKind::Shared {
                obj: obj.clone(),
                offset,
            }
        };
        p.map(
            Placement::FixedNoReplace(VirtAddr(start)),
            file_pages_end - start,
            prot,
            kind,
            MapAlign::Page,
        )
        .map_err(ExecError::Space)?;
        if seg.memsz > seg.filesz && file_pages_end > file_end {
            // Only a writable segment gets here with bytes to zero (`maps_in_place`).
            write_into(p, file_end, &ZEROES[..(file_pages_end - file_end) as usize])?;
        }
        anon_start = file_pages_end;
    }
    if end > anon_start {
        p.map(
            Placement::FixedNoReplace(VirtAddr(anon_start)),
            end - anon_start,
            prot,
            VmaKind::AnonPrivate,
            MapAlign::Page,
        )
        .map_err(ExecError::Space)?;
    }
    Ok(())
}

/// Copies `seg` into anonymous memory, mapped writable from `mapped_end` (the end of what the
/// previous segments mapped) on: a page it shares with the previous segment is mapped already.
/// The caller sets the protection once every segment is written.
fn copy_segment(
    p: &mut Process,
    elf: &Elf,
    seg: &Segment,
    bias: u64,
    mapped_end: u64,
) -> Result<(), ExecError> {
    let (start, end) = pages(seg, bias);
    let start = start.max(mapped_end);
    if start < end {
        p.map(
            Placement::FixedNoReplace(VirtAddr(start)),
            end - start,
            VmProt::RW,
            VmaKind::AnonPrivate,
            MapAlign::Page,
        )
        .map_err(ExecError::Space)?;
    }
    write_into(p, seg.vaddr + bias, elf.segment_data(seg))?;
    if seg.flags.executable() {
        // Code written through the kernel's alias of its frames: clean it to the point of
        // unification and drop stale instructions, whatever the instruction cache's indexing.
        sync_written_code(p, seg.vaddr + bias, elf.segment_data(seg).len())?;
    }
    Ok(())
}

/// Makes the code just written at `[va, va + len)` of `p` visible to instruction fetch.
fn sync_written_code(p: &mut Process, va: u64, len: usize) -> Result<(), ExecError> {
    if len == 0 {
        return Ok(());
    }
    let pin = p.pin(VirtAddr(va), len as u64, false).map_err(ExecError::Fault)?;
    uaccess::for_each_piece(pin.pages(), va, len, |pa, _, n| {
        // SAFETY: `pa` is a pinned RAM frame, mapped readable through the kernel's linear map.
        unsafe { arch::cpu::clean_dcache_to_pou(arch::board::phys_to_virt(pa as usize), n) }
    });
    p.unpin(pin);
    arch::cpu::invalidate_icache_all();
    Ok(())
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
