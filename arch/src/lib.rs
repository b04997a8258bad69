//! Tessera's AArch64 layer.
//!
//! Everything that touches system registers, runs assembly, or knows a board's addresses lives in
//! this crate, so that the machine-independent parts of the OS (`libos`, in particular its memory
//! manager) build and are tested on the host with the same code that runs on the target. The
//! logic here that needs no hardware (syndrome decoding, TLBI operands, the GIC and GPIO register
//! sequences) is tested on the host too: only the instructions and the boot code are gated on the
//! kernel target.
//!
//! * [`boot`]: first instructions, EL2→EL1, FP enable, boot map, MMU on, jump to the high half.
//! * [`exception`]: vectors, trap frame, hooks, abandonable calls for the test runner.
//! * [`esr`]: exception syndrome decoding (class, fault status, access).
//! * [`board`]: per-board constants (UART, GPIO, interrupt controller, RAM, device window).
//! * [`cpu`]: exit/shutdown (semihosting, PSCI), interrupt masking.
//! * [`timer`]: generic timer clock and deadline.
//! * [`gic`], [`irq`]: the GICv2 and the BCM2836 local block, reset and timer routing.
//! * [`gpio`]: the Pi's GPIO block, pins for the UART.
//! * [`mmu`]: TTBR1/TTBR0 switching, ASID width, hardware address translation.
//! * [`rng`]: hardware random numbers (`RNDR`, or the board's generator).
//! * [`tlb`]: TLB maintenance instructions and their operands.

#![cfg_attr(not(test), no_std)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod board;
pub mod esr;
pub mod exception;
pub mod fpu;
pub mod gic;
pub mod gpio;
#[cfg(target_os = "none")]
mod mem;
pub mod tlb;

#[cfg(target_os = "none")]
pub mod boot;
#[cfg(target_os = "none")]
pub mod cpu;
#[cfg(target_os = "none")]
pub mod irq;
#[cfg(target_os = "none")]
pub mod mmu;
#[cfg(target_os = "none")]
pub mod rng;
#[cfg(target_os = "none")]
pub mod timer;

#[cfg(target_os = "none")]
pub use board::BOARD;
