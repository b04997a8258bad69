//! One-shot timer slots multiplexed on the EL1 virtual timer.

use arch::exception::Disposition;
use core::sync::atomic::{AtomicU64, Ordering};

/// One-shot timer slots multiplexed on the EL1 virtual timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerSlot {
    /// The boot-test watchdog.
    Watchdog = 0,
    /// General use (apps, tests).
    User = 1,
    /// The process scheduler: the end of a time slice, or a sleeper's deadline.
    Scheduler = 2,
}

const NO_DEADLINE: u64 = u64::MAX;
static DEADLINES: [AtomicU64; 3] = [const { AtomicU64::new(NO_DEADLINE) }; 3];
static TIMER_FIRED: [AtomicU64; 3] = [const { AtomicU64::new(0) }; 3];

fn rearm() {
    let next = DEADLINES
        .iter()
        .map(|d| d.load(Ordering::Acquire))
        .min()
        .unwrap_or(NO_DEADLINE);
    if next == NO_DEADLINE {
        arch::timer::disarm();
    } else {
        arch::timer::arm_at(next);
    }
}

/// Arms `slot` to fire `ns` nanoseconds from now (replacing its previous deadline).
pub fn timer_arm(slot: TimerSlot, ns: u64) {
    let masked = !arch::cpu::interrupts_enabled();
    arch::cpu::mask_interrupts();
    DEADLINES[slot as usize].store(
        arch::timer::ticks() + arch::timer::ns_to_ticks(ns),
        Ordering::Release,
    );
    rearm();
    if !masked {
        arch::cpu::unmask_interrupts();
    }
}

/// Cancels `slot`.
pub fn timer_cancel(slot: TimerSlot) {
    let masked = !arch::cpu::interrupts_enabled();
    arch::cpu::mask_interrupts();
    DEADLINES[slot as usize].store(NO_DEADLINE, Ordering::Release);
    rearm();
    if !masked {
        arch::cpu::unmask_interrupts();
    }
}

/// How many times `slot` has fired since boot.
pub fn timer_fired_count(slot: TimerSlot) -> u64 {
    TIMER_FIRED[slot as usize].load(Ordering::Acquire)
}

/// Handles the slots whose time has come without an interrupt (code that waits with interrupts
/// masked, e.g. an idle CPU in an exception handler, calls this after `WFI`): what the watchdog
/// decided, if it fired.
pub fn poll_timers() -> Option<Disposition> {
    timers_fired()
}

pub(super) fn timers_fired() -> Option<Disposition> {
    let now = arch::timer::ticks();
    let mut result = None;
    for (i, d) in DEADLINES.iter().enumerate() {
        if d.load(Ordering::Acquire) <= now {
            d.store(NO_DEADLINE, Ordering::Release);
            TIMER_FIRED[i].fetch_add(1, Ordering::AcqRel);
            if i == TimerSlot::Watchdog as usize {
                result = super::hooks::hooks().and_then(|h| (h.watchdog)());
            }
        }
    }
    rearm();
    result
}
