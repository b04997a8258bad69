//! Tessera's AArch64 layer.
//!
//! Everything that touches system registers, runs assembly, or knows a board's addresses lives in
//! this crate, so that the machine-independent parts of the OS (`libos`, in particular its memory
//! manager) build and are tested on the host with the same code that runs on the target.
//!
//! * [`boot`]: first instructions, EL2→EL1, FP enable, boot map, MMU on, jump to the high half.
//! * [`exception`]: vectors, trap frame, hooks, abandonable calls for the test runner.
//! * [`board`]: per-board constants (UART, interrupt controller, RAM, device window).
//! * [`cpu`]: exit/shutdown (semihosting, PSCI), interrupt masking.
//! * [`timer`]: generic timer clock and deadline.
//! * [`irq`]: GICv2 / BCM2836 local interrupt routing for the timer.
//! * [`mmu`]: TTBR1/TTBR0 switching, ASID width, hardware address translation.
//! * [`tlb`]: TLB maintenance instructions.

#![no_std]
#![cfg(target_arch = "aarch64")]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod board;
pub mod boot;
pub mod cpu;
pub mod exception;
pub mod irq;
pub mod mmu;
pub mod timer;
pub mod tlb;

pub use board::BOARD;
