//! The memory manager on the machine.
//!
//! * [`init_kernel_map`]: replaces the coarse boot map with the kernel's own TTBR1 map: a linear
//!   map of all RAM at `KERNEL_OFFSET + pa` with 2 MiB / 1 GiB blocks where aligned, the image
//!   inside it mapped W^X with pages (text RX, rodata R, data/bss RW-NX), the stacks' guard pages
//!   left unmapped, and the board's MMIO window as Device memory. The switch runs from the boot
//!   identity map (no TLB conflict between the old blocks and the new pages), which is then
//!   retired: TTBR0 is free for address spaces.
//! * [`AddressSpace`]: a TTBR0 root with an ASID, which can be activated on this core.

use crate::devicetree::PhysRange;
use crate::mm::{
    Asid, AsidAllocator, AsidContext, Attrs, MapError, OutOfMemory, PhysAddr, Root, Stats, Translation,
    VirtAddr, PAGE_SIZE,
};
use crate::platform::TargetMachine;
use arch::board::{BOARD, KERNEL_OFFSET};
use spin::{Mutex, Once};

/// The kernel's TTBR1 root, once installed.
static KERNEL: Once<Mutex<Root>> = Once::new();

/// Statistics of the kernel root (descriptor writes, TLBIs, tables).
pub fn kernel_stats() -> Stats {
    KERNEL.get().map(|k| *k.lock().stats()).unwrap_or_default()
}

/// Translates a kernel virtual address with the memory manager's own walker.
pub fn kernel_translate(va: u64) -> Option<Translation> {
    KERNEL.get()?.lock().translate(&TargetMachine, VirtAddr(va))
}

/// Kernel map construction failed.
#[derive(Debug)]
pub struct KernelMapError {
    pub what: &'static str,
    pub range: (u64, u64),
    pub error: MapError,
}

fn map_kernel(
    root: &mut Root,
    what: &'static str,
    pa: u64,
    end: u64,
    attrs: Attrs,
    blocks: bool,
) -> Result<(), KernelMapError> {
    if end <= pa {
        return Ok(());
    }
    root.map(
        &mut TargetMachine,
        VirtAddr(pa + KERNEL_OFFSET as u64),
        PhysAddr(pa),
        end - pa,
        attrs,
        blocks,
    )
    .map_err(|error| KernelMapError {
        what,
        range: (pa, end),
        error,
    })
}

/// Builds the kernel map over `ram` and switches to it (see the module docs). `ram` is what the
/// linear map covers: RAM without the firmware's `no-map` regions, which stay unmapped.
pub fn init_kernel_map(ram: &[PhysRange]) -> Result<(), KernelMapError> {
    let mut root = Root::new_kernel(&mut TargetMachine).map_err(|_| KernelMapError {
        what: "root table",
        range: (0, 0),
        error: MapError::OutOfMemory,
    })?;
    let img = arch::boot::image_sections();
    let pa = |va: usize| (va - KERNEL_OFFSET) as u64;
    let (img_start, img_end) = (pa(img.text.0), pa(img.data.1));
    let page = PAGE_SIZE;

    // Linear map of RAM, skipping the image (mapped below with its own permissions).
    for r in ram {
        let (s, e) = (r.base.next_multiple_of(page), r.end() / page * page);
        map_kernel(
            &mut root,
            "RAM",
            s,
            e.min(img_start).max(s),
            Attrs::KERNEL_RW,
            true,
        )?;
        map_kernel(&mut root, "RAM", s.max(img_end), e, Attrs::KERNEL_RW, true)?;
    }
    // The image, W^X, with the guard pages left out of the data section.
    map_kernel(
        &mut root,
        "text",
        pa(img.text.0),
        pa(img.text.1),
        Attrs::KERNEL_RX,
        false,
    )?;
    map_kernel(
        &mut root,
        "rodata",
        pa(img.rodata.0),
        pa(img.rodata.1),
        Attrs::KERNEL_RO,
        false,
    )?;
    let mut guards = arch::boot::guard_pages().map(|(s, e)| (pa(s), pa(e)));
    guards.sort();
    let mut cursor = pa(img.data.0);
    for (gs, ge) in guards {
        map_kernel(&mut root, "data", cursor, gs, Attrs::KERNEL_RW, false)?;
        cursor = ge;
    }
    map_kernel(&mut root, "data", cursor, pa(img.data.1), Attrs::KERNEL_RW, false)?;
    // Devices.
    let (dlo, dhi) = BOARD.device_window;
    map_kernel(&mut root, "devices", dlo as u64, dhi as u64, Attrs::DEVICE, true)?;

    // SAFETY: the new root maps the image, all RAM (heap, frames, device tree) and the MMIO window
    // at the addresses the kernel already uses, and the boot identity map is still in TTBR0.
    unsafe { arch::mmu::replace_ttbr1(root.ttbr()) };
    arch::mmu::drop_identity_map();
    log::debug!("kernel map installed: {:?}", root.stats());
    KERNEL.call_once(|| Mutex::new(root));
    Ok(())
}

/// A user address space: a TTBR0 translation table tree tagged with an ASID.
pub struct AddressSpace {
    root: Option<Root>,
    asid: AsidContext,
}

impl AddressSpace {
    /// An empty address space (one table frame).
    pub fn new() -> Result<AddressSpace, OutOfMemory> {
        let root = Root::new_user(&mut TargetMachine, Asid::RESERVED)?;
        Ok(AddressSpace {
            root: Some(root),
            asid: AsidContext::new(),
        })
    }

    /// The translation table tree.
    pub fn root(&self) -> &Root {
        self.root.as_ref().expect("address space destroyed")
    }

    fn root_mut(&mut self) -> &mut Root {
        self.root.as_mut().expect("address space destroyed")
    }

    /// Maps `[va, va + len)` to physical `[pa, pa + len)`, with 2 MiB / 1 GiB blocks where VA and
    /// PA are aligned.
    pub fn map(&mut self, va: u64, pa: u64, len: u64, attrs: Attrs) -> Result<(), MapError> {
        self.root_mut()
            .map(&mut TargetMachine, VirtAddr(va), PhysAddr(pa), len, attrs, true)
    }

    /// Like [`map`](Self::map), with 4 KiB pages only.
    pub fn map_pages(&mut self, va: u64, pa: u64, len: u64, attrs: Attrs) -> Result<(), MapError> {
        self.root_mut()
            .map(&mut TargetMachine, VirtAddr(va), PhysAddr(pa), len, attrs, false)
    }

    /// Removes the mappings in `[va, va + len)`.
    pub fn unmap(&mut self, va: u64, len: u64) -> Result<(), MapError> {
        self.root_mut().unmap(&mut TargetMachine, VirtAddr(va), len)
    }

    /// Changes the attributes of the mappings in `[va, va + len)`.
    pub fn protect(&mut self, va: u64, len: u64, attrs: Attrs) -> Result<(), MapError> {
        self.root_mut()
            .protect(&mut TargetMachine, VirtAddr(va), len, attrs)
    }

    /// Translates `va` with the memory manager's walker.
    pub fn translate(&self, va: u64) -> Option<Translation> {
        self.root().translate(&TargetMachine, VirtAddr(va))
    }

    /// Runs `f` on this address space's translation-table root with the machine platform, for
    /// operations this wrapper does not offer (CONTPTE batches, leaf iteration, benchmarks).
    pub fn with_root<R>(&mut self, f: impl FnOnce(&mut Root, &mut TargetMachine) -> R) -> R {
        f(self.root_mut(), &mut TargetMachine)
    }

    /// Counters of this address space's root.
    pub fn stats(&self) -> &Stats {
        self.root().stats()
    }

    /// Makes this address space the one TTBR0 translates, with an ASID of the current generation.
    pub fn activate(&mut self) {
        // SAFETY: the root is this address space's own; `deactivate` and `Drop` retire it from
        // TTBR0 before it is destroyed.
        let asid = unsafe { crate::ttbr0::switch_ttbr0(self.root().pa().0, &mut self.asid) };
        self.root_mut().set_asid(asid);
    }

    /// Like [`activate`](Self::activate) with a caller-provided ASID allocator (tests of ASID
    /// rollover on the real MMU use a tiny one).
    pub fn activate_in(&mut self, allocator: &mut AsidAllocator<1>) {
        let act = allocator.activate(0, &mut self.asid);
        // SAFETY: as in `activate`.
        let asid = unsafe { crate::ttbr0::install(self.root().pa().0, act) };
        self.root_mut().set_asid(asid);
    }

    /// Stops translating through this address space if it is active (TTBR0 walks disabled).
    pub fn deactivate(&mut self) {
        crate::ttbr0::retire_ttbr0(self.root().pa().0);
    }

    /// Frees every table; returns how many frames that was.
    pub fn destroy(mut self) -> usize {
        self.deactivate();
        self.root.take().map_or(0, |r| r.destroy(&mut TargetMachine))
    }
}

impl Drop for AddressSpace {
    fn drop(&mut self) {
        if let Some(root) = self.root.take() {
            // Destroy rather than leak the tables.
            let mut s = AddressSpace {
                root: Some(root),
                asid: self.asid,
            };
            s.deactivate();
            if let Some(r) = s.root.take() {
                r.destroy(&mut TargetMachine);
            }
        }
    }
}
