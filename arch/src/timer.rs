//! The Arm generic timer: the virtual counter (`CNTVCT_EL0`) as the clock, and the EL1 virtual
//! timer (`CNTV_*_EL0`) as the one-shot deadline used by the test watchdog.
//!
//! Under `-icount shift=0` QEMU advances the counter by one nanosecond per instruction, so
//! [`now_ns`] is deterministic virtual time: benchmarks report it.

use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::*;

/// Counter frequency in Hz.
pub fn frequency() -> u64 {
    match CNTFRQ_EL0.get() {
        0 => 62_500_000, // unset by firmware: QEMU's default
        f => f,
    }
}

/// Current counter value (ticks).
pub fn ticks() -> u64 {
    barrier::isb(barrier::SY);
    CNTVCT_EL0.get()
}

/// Converts ticks to nanoseconds without overflow for any uptime below centuries.
pub fn ticks_to_ns(ticks: u64) -> u64 {
    ((ticks as u128 * 1_000_000_000) / frequency() as u128) as u64
}

/// Converts nanoseconds to ticks (rounding up).
pub fn ns_to_ticks(ns: u64) -> u64 {
    ((ns as u128 * frequency() as u128).div_ceil(1_000_000_000)) as u64
}

/// Time since the counter started, in nanoseconds.
pub fn now_ns() -> u64 {
    ticks_to_ns(ticks())
}

/// Arms the virtual timer to fire once the counter reaches `deadline` (ticks).
pub fn arm_at(deadline: u64) {
    CNTV_CVAL_EL0.set(deadline);
    CNTV_CTL_EL0.write(CNTV_CTL_EL0::ENABLE::SET + CNTV_CTL_EL0::IMASK::CLEAR);
    barrier::isb(barrier::SY);
}

/// Arms the virtual timer `ns` nanoseconds from now.
pub fn arm_after_ns(ns: u64) {
    arm_at(ticks() + ns_to_ticks(ns))
}

/// Disables the virtual timer (no further interrupt).
pub fn disarm() {
    CNTV_CTL_EL0.write(CNTV_CTL_EL0::ENABLE::CLEAR + CNTV_CTL_EL0::IMASK::SET);
    barrier::isb(barrier::SY);
}

/// True when the timer condition is met (the interrupt is asserted if unmasked).
pub fn is_pending() -> bool {
    CNTV_CTL_EL0.matches_all(CNTV_CTL_EL0::ENABLE::SET + CNTV_CTL_EL0::ISTATUS::SET)
}

/// Busy-waits for `ns` nanoseconds.
pub fn spin_ns(ns: u64) {
    let end = ticks() + ns_to_ticks(ns);
    while ticks() < end {
        core::hint::spin_loop();
    }
}

/// What EL0 may use of the generic timer: the virtual counter (`CNTVCT_EL0`, and `CNTFRQ_EL0`)
/// and nothing else. The physical counter, the timers and the event stream trap.
pub fn limit_el0_access() {
    CNTKCTL_EL1.write(CNTKCTL_EL1::EL0VCTEN::TrappedNone);
    barrier::isb(barrier::SY);
}
