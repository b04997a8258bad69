//! Hardware random numbers: the CPU's `RNDR` (FEAT_RNG) where it exists, else the board's random
//! number generator: the BCM2835 RNG of the Pi 3 ("BCM2835 ARM Peripherals" has no chapter on it;
//! the layout is Linux's `bcm2835-rng` binding: CTRL, STATUS with the word count in bits 31:24,
//! DATA) or the Pi 4's iproc RNG200 (CTRL with RBGEN, FIFO_DATA, FIFO_COUNT).

use crate::board::{phys_to_virt, RngKind, BOARD};
use aarch64_cpu::registers::ID_AA64ISAR0_EL1;
use core::sync::atomic::{AtomicBool, Ordering};
use tock_registers::interfaces::Readable;

/// `ID_AA64ISAR0_EL1.RNDR` (bits 63:60) is non-zero when `RNDR`/`RNDRRS` exist.
fn has_rndr() -> bool {
    (ID_AA64ISAR0_EL1.get() >> 60) & 0xF != 0
}

fn rndr() -> Option<u64> {
    let (v, ok): (u64, u64);
    // SAFETY: reads the RNDR system register (encoded by number: the assembler needs no feature);
    // only called when ID_AA64ISAR0_EL1 says it exists. NZCV.Z reports a failure.
    unsafe {
        core::arch::asm!("mrs {v}, s3_3_c2_c4_0", "cset {ok}, ne", v = out(reg) v, ok = out(reg) ok,
            options(nomem, nostack))
    };
    (ok != 0).then_some(v)
}

fn reg(base: usize, off: usize) -> *mut u32 {
    (phys_to_virt(base) + off) as *mut u32
}

static STARTED: AtomicBool = AtomicBool::new(false);

fn board_word() -> Option<u32> {
    let (base, kind) = BOARD.rng?;
    // SAFETY: the board's RNG block, inside the Device window of the kernel map; only this module
    // touches it, from one core.
    unsafe {
        match kind {
            RngKind::Bcm2835 => {
                if !STARTED.swap(true, Ordering::Relaxed) {
                    reg(base, 0x04).write_volatile(0x4_0000); // discard the warm-up words
                    reg(base, 0x00).write_volatile(1); // RBGEN
                }
                for _ in 0..1_000_000 {
                    if reg(base, 0x04).read_volatile() >> 24 != 0 {
                        return Some(reg(base, 0x08).read_volatile());
                    }
                    core::hint::spin_loop();
                }
            }
            RngKind::Rng200 => {
                if !STARTED.swap(true, Ordering::Relaxed) {
                    let ctrl = reg(base, 0x00).read_volatile();
                    reg(base, 0x00).write_volatile(ctrl | 1); // RBGEN
                }
                for _ in 0..1_000_000 {
                    if reg(base, 0x24).read_volatile() & 0xFF != 0 {
                        return Some(reg(base, 0x20).read_volatile());
                    }
                    core::hint::spin_loop();
                }
            }
        }
    }
    None
}

/// 64 random bits from the CPU (`RNDR`), or `None` without FEAT_RNG (or when it keeps failing).
pub fn cpu_u64() -> Option<u64> {
    if !has_rndr() {
        return None;
    }
    (0..10).find_map(|_| rndr())
}

/// 64 random bits from the board's generator, or `None` when it failed to deliver in time.
///
/// Only call it when the firmware's device tree lists the generator: a board without one (QEMU's
/// raspi4b) answers the access with an external abort.
pub fn board_u64() -> Option<u64> {
    Some(u64::from(board_word()?) << 32 | u64::from(board_word()?))
}
