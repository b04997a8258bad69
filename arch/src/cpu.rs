//! CPU-level services: waiting, interrupt masking, Privileged Access Never, instruction-cache
//! synchronisation, and leaving the machine (semihosting exit, PSCI SYSTEM_OFF, or parking).
//!
//! Privileged Access Never (FEAT_PAN, Armv8.1): while `PSTATE.PAN` is set, an EL1 data access to
//! a page EL0 may access takes a permission fault. Where the CPU has it, [`enable_pan`] sets it
//! at boot and clears `SCTLR_EL1.SPAN`, so that every exception taken to EL1 sets it again; code
//! that must touch user memory by its user address opens a [`UserAccess`] window. Armv8.0 cores
//! (the Cortex-A53 of a Pi 3, the Cortex-A72 of a Pi 4) have no PAN: there every function here
//! that concerns it is a no-op, and [`pan_supported`] says so.
//!
//! Semihosting is probed by trapping: `HLT #0xF000` is the semihosting call when a debugger or
//! QEMU's `-semihosting` is attached, and an undefined instruction otherwise. The exception
//! dispatcher recognises that undefined `HLT`, records that semihosting is absent and skips it, so
//! the same image runs on QEMU (exit status reaches the host) and on a real Pi (falls back to PSCI
//! or parks).

use aarch64_cpu::asm;
use aarch64_cpu::registers::*;
use core::sync::atomic::{AtomicU8, Ordering};

/// Encoding of `HLT #0xF000`, the AArch64 semihosting trap.
pub const SEMIHOSTING_HLT: u32 = 0xD45E_0000;

const SH_UNKNOWN: u8 = 0;
const SH_ABSENT: u8 = 2;
static SEMIHOSTING: AtomicU8 = AtomicU8::new(SH_UNKNOWN);

/// The PSCI conduit, when the device tree names one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PsciConduit {
    Hvc,
    Smc,
}

static PSCI: AtomicU8 = AtomicU8::new(0);

/// Records the PSCI conduit read from the device tree (`/psci` `method`).
pub fn set_psci_conduit(conduit: Option<PsciConduit>) {
    PSCI.store(
        match conduit {
            None => 0,
            Some(PsciConduit::Hvc) => 1,
            Some(PsciConduit::Smc) => 2,
        },
        Ordering::Relaxed,
    );
}

/// Called by the exception dispatcher for an undefined-instruction exception: if it was the
/// semihosting trap, mark semihosting absent and tell the caller to skip the instruction.
pub(crate) fn is_semihosting_trap(elr: u64) -> bool {
    // SAFETY: ELR points at the instruction that raised the exception, in mapped kernel text.
    let insn = unsafe { core::ptr::read_volatile(elr as *const u32) };
    if insn == SEMIHOSTING_HLT {
        SEMIHOSTING.store(SH_ABSENT, Ordering::Relaxed);
        true
    } else {
        false
    }
}

/// Issues a semihosting call; returns `None` when semihosting is absent.
fn semihosting_call(op: u64, param: u64) -> Option<u64> {
    if SEMIHOSTING.load(Ordering::Relaxed) == SH_ABSENT {
        return None;
    }
    let mut ret: u64 = op;
    // SAFETY: the semihosting ABI reads x0/x1 and writes x0; the parameter block stays live for
    // the duration of the call. If semihosting is absent the trap is skipped by the dispatcher
    // (which then records SH_ABSENT) and x0 keeps `op`.
    unsafe { core::arch::asm!("hlt #0xf000", inout("x0") ret, in("x1") param, options(nostack)) };
    if SEMIHOSTING.load(Ordering::Relaxed) == SH_ABSENT {
        None
    } else {
        Some(ret)
    }
}

/// Leaves the machine with `status` (0 = success): [`semihosting_exit`], else [`system_off`], else
/// [`park`]. Prints nothing (it serves before the console exists too); `libos::exit` says on the
/// console how a real board stopped.
pub fn exit(status: u32) -> ! {
    semihosting_exit(status);
    system_off();
    park()
}

/// Semihosting SYS_EXIT with `status`, where a host listens (QEMU with `-semihosting`): does not
/// return then. Returns when semihosting is absent (a real board).
pub fn semihosting_exit(status: u32) {
    const SYS_EXIT: u64 = 0x18;
    const ADP_STOPPED_APPLICATION_EXIT: u64 = 0x20026;
    let block = [ADP_STOPPED_APPLICATION_EXIT, status as u64];
    semihosting_call(SYS_EXIT, block.as_ptr() as u64);
}

/// Whether the device tree named a PSCI conduit, i.e. [`system_off`] can power the machine off.
pub fn has_psci() -> bool {
    PSCI.load(Ordering::Relaxed) != 0
}

/// PSCI SYSTEM_OFF through the device tree's conduit: does not return where it works. Returns when
/// there is no PSCI (the Pi's firmware provides none) or the call failed.
pub fn system_off() {
    match PSCI.load(Ordering::Relaxed) {
        1 => {
            let _ = smccc::psci::system_off::<smccc::Hvc>();
        }
        2 => {
            let _ = smccc::psci::system_off::<smccc::Smc>();
        }
        _ => {}
    }
}

/// Stops this core for good (interrupts masked, low-power wait).
pub fn park() -> ! {
    mask_interrupts();
    loop {
        asm::wfe();
    }
}

/// Exit path for an exception taken before libos installed its handlers: nothing can be printed
/// yet, so leave with a status that encodes the exception class (0x80 | EC).
pub(crate) fn exit_failure_early(_kind: u64, esr: u64, _elr: u64, _far: u64) -> ! {
    exit(0x80 | ((esr >> 26) & 0x3f) as u32)
}

/// Masks IRQs and FIQs on this core.
pub fn mask_interrupts() {
    DAIF.write(DAIF::I::Masked + DAIF::F::Masked);
}

/// Unmasks IRQs on this core.
pub fn unmask_interrupts() {
    DAIF.modify(DAIF::I::Unmasked);
}

/// True when IRQs are unmasked.
pub fn interrupts_enabled() -> bool {
    DAIF.matches_all(DAIF::I::Unmasked)
}

/// Waits for an interrupt.
pub fn wait_for_interrupt() {
    asm::wfi();
}

/// `CTR_EL0`: the cache type (line sizes), as EL0 would read it.
pub fn cache_type() -> u64 {
    let v: u64;
    // SAFETY: reading CTR_EL0 (not named by aarch64-cpu) has no side effect.
    unsafe { core::arch::asm!("mrs {}, ctr_el0", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// The exception level the code runs at now.
pub fn current_el() -> u8 {
    CurrentEL.read(CurrentEL::EL) as u8
}

/// The block `DC ZVA` zeroes, in bytes (`4 << DCZID_EL0.BS`), or `None` where the instruction is
/// prohibited (`DCZID_EL0.DZP`). Read once.
pub fn zva_block_size() -> Option<usize> {
    // 0: not read yet; 1: prohibited; else the block size.
    static BLOCK: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);
    use core::sync::atomic::Ordering::Relaxed;
    match BLOCK.load(Relaxed) {
        0 => {
            let dczid: u64;
            // SAFETY: reading DCZID_EL0 has no side effect.
            unsafe {
                core::arch::asm!("mrs {}, dczid_el0", out(reg) dczid, options(nomem, nostack, preserves_flags))
            };
            let block = (dczid & (1 << 4) == 0).then(|| 4usize << (dczid & 0xf));
            BLOCK.store(block.unwrap_or(1), Relaxed);
            block
        }
        1 => None,
        b => Some(b),
    }
}

/// Bytes [`copy_pages`] moves per loop iteration.
pub const COPY_PAGES_STEP: usize = 256;

/// Copies `len` bytes from `src` to `dst`, both 256-byte aligned, `len` a multiple of 256:
/// whole frames. 256 bytes per iteration with load/store pairs of general registers (the kernel
/// never touches FP/SIMD registers), four groups of four pairs through eight registers, the
/// last pair of each side post-indexed so that the loop needs no separate address updates:
/// 34 instructions per 256 bytes, against 56 for `memcpy`'s 64-byte loop.
///
/// # Safety
/// `[src, src + len)` must be readable and `[dst, dst + len)` writable Normal memory, not
/// overlapping, `dst` owned by the caller.
pub unsafe fn copy_pages(dst: usize, src: usize, len: usize) {
    assert!(
        dst.is_multiple_of(COPY_PAGES_STEP)
            && src.is_multiple_of(COPY_PAGES_STEP)
            && len.is_multiple_of(COPY_PAGES_STEP),
        "copy_pages: {dst:#x} <- {src:#x}, {len:#x} bytes: not 256-byte aligned"
    );
    if len == 0 {
        return;
    }
    let end = src + len;
    // SAFETY: the caller's contract: both ranges are Normal memory it may read / write, and
    // the loop touches exactly `[src, end)` and `[dst, dst + len)`, 256 bytes at a time (`len`
    // is a nonzero multiple of 256, so it stops at `end`).
    unsafe {
        core::arch::asm!(
            "2:",
            "ldp {a}, {b}, [{s}, #64]",
            "ldp {c}, {d}, [{s}, #80]",
            "ldp {e}, {f}, [{s}, #96]",
            "ldp {g}, {h}, [{s}, #112]",
            "stp {a}, {b}, [{t}, #64]",
            "stp {c}, {d}, [{t}, #80]",
            "stp {e}, {f}, [{t}, #96]",
            "stp {g}, {h}, [{t}, #112]",
            "ldp {a}, {b}, [{s}, #128]",
            "ldp {c}, {d}, [{s}, #144]",
            "ldp {e}, {f}, [{s}, #160]",
            "ldp {g}, {h}, [{s}, #176]",
            "stp {a}, {b}, [{t}, #128]",
            "stp {c}, {d}, [{t}, #144]",
            "stp {e}, {f}, [{t}, #160]",
            "stp {g}, {h}, [{t}, #176]",
            "ldp {a}, {b}, [{s}, #192]",
            "ldp {c}, {d}, [{s}, #208]",
            "ldp {e}, {f}, [{s}, #224]",
            "ldp {g}, {h}, [{s}, #240]",
            "stp {a}, {b}, [{t}, #192]",
            "stp {c}, {d}, [{t}, #208]",
            "stp {e}, {f}, [{t}, #224]",
            "stp {g}, {h}, [{t}, #240]",
            "ldp {c}, {d}, [{s}, #16]",
            "ldp {e}, {f}, [{s}, #32]",
            "ldp {g}, {h}, [{s}, #48]",
            "ldp {a}, {b}, [{s}], #256",
            "stp {c}, {d}, [{t}, #16]",
            "stp {e}, {f}, [{t}, #32]",
            "stp {g}, {h}, [{t}, #48]",
            "stp {a}, {b}, [{t}], #256",
            "cmp {s}, {end}",
            "b.lo 2b",
            s = inout(reg) src => _,
            t = inout(reg) dst => _,
            end = in(reg) end,
            a = out(reg) _,
            b = out(reg) _,
            c = out(reg) _,
            d = out(reg) _,
            e = out(reg) _,
            f = out(reg) _,
            g = out(reg) _,
            h = out(reg) _,
            options(nostack),
        )
    };
}

/// Zeroes `[va, va + len)`: with `DC ZVA`, a block per instruction, where the CPU allows it and
/// the range is block aligned; with ordinary stores otherwise.
///
/// # Safety
/// The range must be writable Normal memory (the MMU on) that the caller owns.
pub unsafe fn zero(va: usize, len: usize) {
    match zva_block_size() {
        Some(block) if va.is_multiple_of(block) && len.is_multiple_of(block) => {
            let end = va + len;
            let mut p = va;
            // Eight blocks per iteration (two instructions a block), then one at a time.
            let unrolled = va + len / (8 * block) * (8 * block);
            if p < unrolled {
                // SAFETY: the caller's contract: every block of `[va, unrolled)` is aligned memory
                // it may write; the loop stops at `unrolled`, a multiple of eight blocks on.
                unsafe {
                    core::arch::asm!(
                        "2:",
                        "dc zva, {p}", "add {p}, {p}, {b}",
                        "dc zva, {p}", "add {p}, {p}, {b}",
                        "dc zva, {p}", "add {p}, {p}, {b}",
                        "dc zva, {p}", "add {p}, {p}, {b}",
                        "dc zva, {p}", "add {p}, {p}, {b}",
                        "dc zva, {p}", "add {p}, {p}, {b}",
                        "dc zva, {p}", "add {p}, {p}, {b}",
                        "dc zva, {p}", "add {p}, {p}, {b}",
                        "cmp {p}, {end}",
                        "b.lo 2b",
                        p = inout(reg) p,
                        b = in(reg) block,
                        end = in(reg) unrolled,
                        options(nostack),
                    )
                };
            }
            while p < end {
                // SAFETY: the caller's contract: `p` is an aligned block of memory it may write.
                unsafe { core::arch::asm!("dc zva, {}", in(reg) p, options(nostack, preserves_flags)) };
                p += block;
            }
        }
        // SAFETY: the caller's contract.
        _ => unsafe { core::ptr::write_bytes(va as *mut u8, 0, len) },
    }
}

/// `SCTLR_EL1.SPAN` (bit 23; RES1 without FEAT_PAN): when 0, taking an exception to EL1 sets
/// `PSTATE.PAN`.
const SCTLR_SPAN: u64 = 1 << 23;
/// `PSTATE.PAN` in the `PAN` system register and in `SPSR_EL1` (bit 22).
pub const PSTATE_PAN: u64 = 1 << 22;

/// Whether the CPU implements Privileged Access Never (`ID_AA64MMFR1_EL1.PAN` non-zero). Read once.
pub fn pan_supported() -> bool {
    // 0: not read yet; 1: absent; 2: present.
    static PAN: AtomicU8 = AtomicU8::new(0);
    match PAN.load(Ordering::Relaxed) {
        0 => {
            // The field's named values in `aarch64-cpu` are mistyped (0xb0001 for 0b0001): compare
            // the raw field.
            let present = ID_AA64MMFR1_EL1.read(ID_AA64MMFR1_EL1::PAN) != 0;
            PAN.store(if present { 2 } else { 1 }, Ordering::Relaxed);
            present
        }
        v => v == 2,
    }
}

/// `PSTATE.PAN` now: whether EL1 data accesses to EL0-accessible pages fault. Always false on a
/// CPU without PAN.
pub fn pan_enabled() -> bool {
    if !pan_supported() {
        return false;
    }
    let v: u64;
    // SAFETY: reads the `PAN` system register (S3_0_C4_C2_3, named by number because the
    // assembler only knows the name with FEAT_PAN enabled); it exists, as checked above, and
    // reading it has no side effect.
    unsafe { core::arch::asm!("mrs {}, S3_0_C4_C2_3", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v & PSTATE_PAN != 0
}

/// Sets or clears `PSTATE.PAN`; does nothing on a CPU without PAN.
pub fn set_pan(on: bool) {
    if !pan_supported() {
        return;
    }
    let v = if on { PSTATE_PAN } else { 0 };
    // SAFETY: writes the `PAN` system register, which exists (checked above). It only changes
    // whether EL1 may access EL0-accessible pages; the "memory" clobber (no `nomem`) keeps the
    // compiler from moving memory accesses across the change.
    unsafe { core::arch::asm!("msr S3_0_C4_C2_3, {}", in(reg) v, options(nostack, preserves_flags)) };
}

/// Turns Privileged Access Never on where the CPU has it: clears `SCTLR_EL1.SPAN`, so that every
/// exception taken to EL1 sets `PSTATE.PAN`, and sets `PSTATE.PAN` now. Returns whether PAN is on.
/// Called once at boot, before anything maps user memory.
pub fn enable_pan() -> bool {
    if !pan_supported() {
        // SPAN is RES1 here and stays as the boot code wrote it.
        return false;
    }
    SCTLR_EL1.set(SCTLR_EL1.get() & !SCTLR_SPAN);
    asm::barrier::isb(asm::barrier::SY);
    set_pan(true);
    true
}

/// An open window for EL1 accesses to user memory by user address: `PSTATE.PAN` is cleared while
/// it lives and put back as it was when it is dropped. Exceptions taken inside the window run with
/// PAN set (the CPU sets it on entry) and return into the window with it clear again (`eret`
/// restores PSTATE from `SPSR_EL1`). An abandoned [`try_call`](crate::exception::try_call) puts
/// back the PAN state it started with, so a window left by abandoning does not stay open.
pub struct UserAccess {
    was_on: bool,
}

impl UserAccess {
    /// Opens the window (clears `PSTATE.PAN`; nothing to do on a CPU without PAN).
    pub fn open() -> UserAccess {
        let was_on = pan_enabled();
        if was_on {
            set_pan(false);
        }
        UserAccess { was_on }
    }
}

impl Drop for UserAccess {
    fn drop(&mut self) {
        if self.was_on {
            set_pan(true);
        }
    }
}

/// Makes instructions written as data to `[va, va + len)` visible to instruction fetch: cleans
/// the data cache to the point of unification by address and invalidates the instruction cache
/// by address, line by line (sizes from `CTR_EL0`), then synchronises the context.
///
/// # Safety
/// The range must be mapped readable at EL1 now (with PAN clear for user memory).
pub unsafe fn sync_code(va: usize, len: usize) {
    // SAFETY: the caller's contract.
    unsafe { clean_dcache_to_pou(va, len) };
    let ctr = cache_type();
    let iline = 4usize << (ctr & 0xf);
    let end = va + len;
    let mut p = va & !(iline - 1);
    while p < end {
        // SAFETY: as above; invalidating instruction-cache lines changes no data.
        unsafe { core::arch::asm!("ic ivau, {}", in(reg) p, options(nostack, preserves_flags)) };
        p += iline;
    }
    asm::barrier::dsb(asm::barrier::ISH);
    asm::barrier::isb(asm::barrier::SY);
}

/// Cleans the data cache lines of `[va, va + len)` to the point of unification, so that
/// instruction fetches (through any alias) see what was written there.
///
/// # Safety
/// The range must be mapped readable at EL1 now.
pub unsafe fn clean_dcache_to_pou(va: usize, len: usize) {
    let ctr = cache_type();
    let dline = 4usize << ((ctr >> 16) & 0xf);
    let end = va + len;
    let mut p = va & !(dline - 1);
    while p < end {
        // SAFETY: the caller's contract: `p` is in a readable mapping; cleaning a line changes no
        // data.
        unsafe { core::arch::asm!("dc cvau, {}", in(reg) p, options(nostack, preserves_flags)) };
        p += dline;
    }
    asm::barrier::dsb(asm::barrier::ISH);
}

/// Invalidates this core's whole instruction cache (to the point of unification): code written
/// through one address and run through another (a user alias of a frame the kernel wrote) is
/// fetched afresh, whatever the instruction cache's indexing.
pub fn invalidate_icache_all() {
    // SAFETY: invalidating the instruction cache changes no data; the barriers complete it.
    unsafe { core::arch::asm!("ic iallu", "dsb nsh", "isb", options(nostack, preserves_flags)) };
}

/// CPUs the kernel runs on: one for now (secondary cores are parked at boot). Per-CPU state is
/// kept in arrays of this length, indexed by [`index`].
pub const MAX_CPUS: usize = 1;

/// This CPU's index in per-CPU arrays (`0..MAX_CPUS`).
pub fn index() -> usize {
    0
}
