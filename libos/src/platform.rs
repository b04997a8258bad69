//! The one adapter from the memory manager to the machine: [`TargetMachine`] implements the
//! engine's [`Platform`] (descriptors through the kernel's linear map, table frames from the frame
//! allocator, TLB maintenance and barriers through `arch::tlb`), the folio [`FrameSource`] (the
//! buddy allocator) and the address-space [`Machine`] (the page metadata carved at boot, data
//! access through the linear map, ASIDs given at every switch).

use crate::mm::folio::{FolioOrder, FrameSource, MemMap};
use crate::mm::space::Machine;
use crate::mm::{Asid, Descriptor, Level, OutOfMemory, PhysAddr, Platform, Root, TlbOp, PAGE_SIZE};
use crate::runtime;
use arch::board::phys_to_virt;

/// The real machine, as the memory manager sees it. Stateless: the frame allocator, the page
/// metadata and the TLB are global.
#[derive(Clone, Copy, Debug, Default)]
pub struct TargetMachine;

// SAFETY: descriptors are read and written in table frames the engine owns, through the linear
// map; table frames come zeroed from the frame allocator; TLB maintenance is the architecture's
// instructions bracketed by the barriers the contract names.
unsafe impl Platform for TargetMachine {
    fn read(&self, table: PhysAddr, index: usize) -> Descriptor {
        debug_assert!(index < 512);
        let p = (phys_to_virt(table.0 as usize) as *const u64).wrapping_add(index);
        // SAFETY: `table` is a table frame owned by the engine (from `alloc_table`, or a root),
        // inside RAM and so inside the linear map; the index is within the 4 KiB frame. A 64-bit
        // aligned load is single-copy atomic.
        Descriptor(unsafe { p.read_volatile() })
    }

    fn write(&mut self, table: PhysAddr, index: usize, desc: Descriptor) {
        debug_assert!(index < 512);
        let p = (phys_to_virt(table.0 as usize) as *mut u64).wrapping_add(index);
        // SAFETY: as for `read`; the engine serialises writers of one root, and a 64-bit aligned
        // store is single-copy atomic for the concurrent hardware walker.
        unsafe { p.write_volatile(desc.0) }
    }

    fn alloc_table(&mut self) -> Result<PhysAddr, OutOfMemory> {
        let pa = runtime::alloc_frames(0).map_err(|_| OutOfMemory)?;
        // SAFETY: the frame was just allocated for us and is Normal memory in the linear map.
        unsafe { arch::cpu::zero(phys_to_virt(pa as usize), PAGE_SIZE as usize) };
        Ok(PhysAddr(pa))
    }

    fn free_table(&mut self, table: PhysAddr) {
        runtime::free_frames(table.0, 0).expect("table frames are single, aligned frames");
    }

    fn tlb_maintenance(&mut self, ops: &[TlbOp]) {
        arch::tlb::dsb_ishst();
        for op in ops {
            issue(op);
        }
        arch::tlb::dsb_ish_isb();
    }

    fn publish(&mut self) {
        arch::tlb::dsb_ishst();
        arch::tlb::isb();
    }

    fn has_tlbi_range(&self) -> bool {
        arch::tlb::has_tlbi_range()
    }
}

fn ttl(level: Option<Level>) -> u8 {
    level.map_or(0, |l| l.number())
}

fn issue(op: &TlbOp) {
    match *op {
        TlbOp::Va {
            va,
            asid,
            leaf_only,
            level,
        } => arch::tlb::by_va(va.0, asid.0, leaf_only, ttl(level)),
        TlbOp::VaAllAsids { va, leaf_only, level } => arch::tlb::by_va_all_asids(va.0, leaf_only, ttl(level)),
        TlbOp::Range(r) => arch::tlb::range(arch::tlb::RangeOperand {
            base: r.base.0,
            scale: r.scale,
            num: r.num,
            asid: r.asid.map(|a| a.0),
            leaf_only: r.leaf_only,
            ttl: ttl(r.level),
        }),
        TlbOp::Asid(asid) => arch::tlb::by_asid(asid.0),
        TlbOp::All => arch::tlb::all(),
    }
}

impl FrameSource for TargetMachine {
    fn alloc(&mut self, order: FolioOrder) -> Result<PhysAddr, OutOfMemory> {
        runtime::alloc_frames(order.get() as usize)
            .map(PhysAddr)
            .map_err(|_| OutOfMemory)
    }
    fn free(&mut self, pa: PhysAddr, order: FolioOrder) {
        runtime::free_frames(pa.0, order.get() as usize)
            .expect("folio frames returned with a bad order or alignment");
    }
    fn free_many(&mut self, blocks: &[(PhysAddr, FolioOrder)]) {
        runtime::free_frames_many(blocks.iter().map(|&(pa, order)| (pa.0, order.get() as usize)))
            .expect("folio frames returned with a bad order or alignment");
    }
}

/// A pointer into the linear map for `len` bytes of RAM at `pa`.
fn linear(pa: PhysAddr, len: u64) -> *mut u8 {
    let cfg = runtime::boot_config();
    assert!(
        cfg.ram
            .iter()
            .any(|r| r.base <= pa.0 && pa.0.saturating_add(len) <= r.end()),
        "data access outside RAM: {:#x}+{len:#x}",
        pa.0
    );
    phys_to_virt(pa.0 as usize) as *mut u8
}

// SAFETY: data access checks that the range is RAM (`linear`), which the kernel map covers
// read-write; the page metadata covers every frame the frame allocator hands out; a retiring root
// is switched away from TTBR0 before it returns.
unsafe impl Machine<'static> for TargetMachine {
    fn mem(&self) -> &'static MemMap<'static> {
        runtime::memmap()
    }

    fn zero(&mut self, pa: PhysAddr, len: u64) {
        // SAFETY: `linear` checked the range is RAM, mapped read-write Normal memory by the kernel
        // map; the address-space layer only zeroes frames it owns and has not mapped yet.
        unsafe { arch::cpu::zero(linear(pa, len) as usize, len as usize) }
    }

    fn copy(&mut self, dst: PhysAddr, src: PhysAddr, len: u64) {
        let (d, s) = (linear(dst, len), linear(src, len));
        if (d as usize | s as usize | len as usize).is_multiple_of(arch::cpu::COPY_PAGES_STEP) {
            // Whole frames (the folio copies of copy-on-write): the page-copy loop.
            // SAFETY: both ranges are RAM in the linear map (checked), in distinct frames (the
            // contract), aligned as `copy_pages` needs (tested above), and no writable user
            // mapping reaches `src` during the copy.
            unsafe { arch::cpu::copy_pages(d as usize, s as usize, len as usize) }
        } else {
            // SAFETY: as above, without the alignment.
            unsafe { core::ptr::copy_nonoverlapping(s, d, len as usize) }
        }
    }

    fn read_bytes(&self, pa: PhysAddr, buf: &mut [u8]) {
        // SAFETY: RAM in the linear map (checked); plain byte reads.
        unsafe { core::ptr::copy_nonoverlapping(linear(pa, buf.len() as u64), buf.as_mut_ptr(), buf.len()) }
    }

    fn write_bytes(&mut self, pa: PhysAddr, data: &[u8]) {
        // SAFETY: RAM in the linear map (checked); the caller owns the frame.
        unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), linear(pa, data.len() as u64), data.len()) }
    }

    fn new_asid(&mut self) -> Asid {
        // A process gets its ASID from the allocator each time `run` switches to it.
        Asid::RESERVED
    }

    fn root_retiring(&mut self, root: &Root) {
        crate::ttbr0::retire_ttbr0(root.pa().0);
    }
}
