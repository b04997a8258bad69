//! Which user root TTBR0 translates on this core, and the ASIDs user roots run with: the switch
//! a process or an address space makes to run, and the retirement of a root about to be freed.

use crate::mm::{Activation, Asid, AsidAllocator, AsidContext};
use spin::{Mutex, Once};

/// ASIDs for this core (single core for now).
static ASIDS: Once<Mutex<AsidAllocator<{ arch::cpu::MAX_CPUS }>>> = Once::new();

fn asids() -> &'static Mutex<AsidAllocator<{ arch::cpu::MAX_CPUS }>> {
    ASIDS.call_once(|| Mutex::new(AsidAllocator::new(arch::mmu::asid_bits() as u8)))
}

/// The address space active in TTBR0 (its root's physical address), if any.
/// Per CPU (indexed by `arch::cpu::index`).
static ACTIVE: [Mutex<Option<u64>>; arch::cpu::MAX_CPUS] = [const { Mutex::new(None) }; arch::cpu::MAX_CPUS];

/// If the root at `root_pa` is the one TTBR0 translates, switches TTBR0 walks off (a root is
/// about to be destroyed).
pub fn retire_ttbr0(root_pa: u64) {
    let mut active = ACTIVE[arch::cpu::index()].lock();
    if *active == Some(root_pa) {
        arch::mmu::disable_ttbr0();
        *active = None;
    }
}

/// Makes the user root at `root_pa` the one TTBR0 translates, with an ASID of the current
/// generation from the global allocator (`ctx` is the address space's claim on it). The caller
/// must give the returned ASID to its root (`set_asid`) for the root's TLB maintenance.
///
/// # Safety
/// As for [`arch::mmu::set_ttbr0`]: `root_pa` is a live user root that stays live until
/// [`retire_ttbr0`] is called for it.
pub unsafe fn switch_ttbr0(root_pa: u64, ctx: &mut AsidContext) -> Asid {
    let act: Activation = asids().lock().activate(arch::cpu::index(), ctx);
    // SAFETY: the caller's contract.
    unsafe { install(root_pa, act) }
}

/// Installs the root at `root_pa` in TTBR0 with the activation's ASID, flushing first after a
/// rollover.
///
/// # Safety
/// As for [`switch_ttbr0`].
pub unsafe fn install(root_pa: u64, act: Activation) -> Asid {
    if act.flush_tlb {
        // A rollover: ASIDs of the previous generation may be reused; drop them all.
        arch::tlb::batch(arch::tlb::all);
    }
    // SAFETY: the caller's contract; the ASID comes from the allocator, which invalidated it
    // before handing it out again.
    unsafe { arch::mmu::set_ttbr0(root_pa, act.asid.0) };
    *ACTIVE[arch::cpu::index()].lock() = Some(root_pa);
    act.asid
}
