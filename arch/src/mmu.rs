//! MMU control beyond the boot map: installing a new kernel root in TTBR1 without TLB conflicts,
//! switching the user root in TTBR0 with its ASID, and asking the hardware to translate an
//! address (`AT S1E1R` / `AT S1E1W`), which boot-time tests use to check the memory manager's own
//! walker against the real MMU.

use crate::board::KERNEL_OFFSET;
use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::*;

/// ASID width implemented by this CPU (8 or 16 bits).
pub fn asid_bits() -> u32 {
    if ID_AA64MMFR0_EL1.matches_all(ID_AA64MMFR0_EL1::ASIDBits::Bits_16) {
        16
    } else {
        8
    }
}

/// Physical address width (bits) the translation regime is configured for (at most 48).
pub fn pa_bits() -> u32 {
    match ID_AA64MMFR0_EL1.read(ID_AA64MMFR0_EL1::PARange) {
        0 => 32,
        1 => 36,
        2 => 40,
        3 => 42,
        4 => 44,
        _ => 48,
    }
}

core::arch::global_asm!(
    r#"
.section .text.idmap, "ax"
// __tessera_replace_ttbr1(x0 = new TTBR1_EL1 value). Runs from its *physical* address through the
// TTBR0 identity map, so no TTBR1 translation is used between the switch and the invalidation:
// old and new tables may map the same VA with different block sizes without a TLB conflict.
.global __tessera_replace_ttbr1
__tessera_replace_ttbr1:
    dsb     ishst
    msr     ttbr1_el1, x0
    isb
    tlbi    vmalle1
    dsb     nsh
    isb
    ret
"#
);

/// Installs `root_pa` as the kernel's TTBR1 root and invalidates the whole TLB of this core.
///
/// # Safety
/// `root_pa` must be a complete kernel translation table that maps, at the same virtual addresses,
/// everything the kernel uses from here on (its text, data, stacks, heap and devices), and the boot
/// identity map must still be installed in TTBR0 (it is until [`set_ttbr0`] or [`disable_ttbr0`]).
pub unsafe fn replace_ttbr1(root_pa: u64) {
    extern "C" {
        fn __tessera_replace_ttbr1(root: u64);
    }
    let phys_fn = __tessera_replace_ttbr1 as *const () as usize - KERNEL_OFFSET;
    let daif = DAIF.get();
    crate::cpu::mask_interrupts();
    // SAFETY: the routine is position-independent, uses no stack, clobbers only x0 and the link
    // register, and runs at its physical address under the identity map the caller guarantees.
    unsafe {
        core::arch::asm!("blr {f}", f = in(reg) phys_fn, inout("x0") root_pa => _, out("x30") _, options(nostack));
    }
    DAIF.set(daif);
}

/// Installs a user root and its ASID in TTBR0 and enables TTBR0 walks. No TLB maintenance is
/// needed: entries are tagged by ASID (the ASID allocator invalidates an ASID before reusing it).
///
/// # Safety
/// `root_pa` must be a valid level-0 translation table that stays live (and its tables with it)
/// until TTBR0 is switched away or disabled, mapping only memory the user half may reach; `asid`
/// must not be in use by another live root (or be invalidated before reuse).
pub unsafe fn set_ttbr0(root_pa: u64, asid: u16) {
    // The root's (zeroed, then filled) contents must be visible to the walker first.
    crate::tlb::dsb_ishst();
    TTBR0_EL1.write(TTBR0_EL1::BADDR.val(root_pa >> 1) + TTBR0_EL1::ASID.val(asid as u64));
    barrier::isb(barrier::SY);
    TCR_EL1.modify(TCR_EL1::EPD0::EnableTTBR0Walks);
    barrier::isb(barrier::SY);
}

/// Disables TTBR0 walks: every user-half access faults (translation fault, level 0). Entries
/// already in the TLB are not affected (see [`drop_identity_map`]).
pub fn disable_ttbr0() {
    TCR_EL1.modify(TCR_EL1::EPD0::DisableTTBR0Walks);
    barrier::isb(barrier::SY);
}

/// Retires the boot identity map once the kernel runs from its own TTBR1 map: disables TTBR0
/// walks and invalidates this core's TLB, which may hold the identity map's (global) entries.
pub fn drop_identity_map() {
    disable_ttbr0();
    // SAFETY: TLB invalidation has no memory-safety effect; the barriers order it.
    unsafe { core::arch::asm!("tlbi vmalle1", "dsb nsh", "isb", options(nostack)) };
}

/// Current TTBR0 root (physical) and ASID.
pub fn ttbr0() -> (u64, u16) {
    (
        TTBR0_EL1.read(TTBR0_EL1::BADDR) << 1,
        TTBR0_EL1.read(TTBR0_EL1::ASID) as u16,
    )
}

/// Asks the MMU to translate `va` for an EL1 read (or write): the physical address, or `None` if
/// the stage-1 walk faults. Uses the TLB like any access would.
pub fn hw_translate(va: u64, write: bool) -> Option<u64> {
    let daif = DAIF.get();
    crate::cpu::mask_interrupts();
    // SAFETY: AT only performs a translation and writes PAR_EL1; interrupts are masked so PAR_EL1
    // is not clobbered before it is read.
    unsafe {
        if write {
            core::arch::asm!("at s1e1w, {va}", va = in(reg) va, options(nostack));
        } else {
            core::arch::asm!("at s1e1r, {va}", va = in(reg) va, options(nostack));
        }
    }
    barrier::isb(barrier::SY);
    let par = PAR_EL1.get();
    DAIF.set(daif);
    if par & 1 != 0 {
        None
    } else {
        Some((par & 0x0000_FFFF_FFFF_F000) | (va & 0xFFF))
    }
}
