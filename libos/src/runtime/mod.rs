//! The kernel runtime around the app: bringing the machine up ([`start`]), the frame allocator and
//! page metadata ([`frames`]), the kernel heap ([`heap`]), exceptions, interrupts and panics
//! ([`trap`]), one-shot timers ([`timer`]), the hooks a test harness registers ([`hooks`]), and
//! exit.
//!
//! Exit statuses (semihosting SYS_EXIT, visible as QEMU's exit status):
//! 0 success · 1 the app reported failure (e.g. a boot test failed) · 2 panic outside a test ·
//! 3 fatal exception · 4 boot configuration error.

mod frames;
mod heap;
pub mod hooks;
mod start;
mod timer;
mod trap;

#[cfg(feature = "boot-tests")]
mod boot_tests;

pub use frames::{alloc_frames, frame_counts, frames_free_or_heap, free_frames, free_frames_many, memmap};
pub use heap::heap_usage;
pub use hooks::{abandonable, set_hooks, Hooks};
pub use start::{boot_config, boot_to_main_ns, exit, BootConfig, RamSource};
pub use timer::{poll_timers, timer_arm, timer_cancel, timer_fired_count, TimerSlot};
pub use trap::{fault_hook, print_exception, set_fault_hook, set_user_hooks, FaultHook, UserHooks};

/// Exit status: the app reported failure.
pub const EXIT_APP_FAILURE: u32 = 1;
/// Exit status: panic outside a boot test.
pub const EXIT_PANIC: u32 = 2;
/// Exit status: unhandled exception.
pub const EXIT_FATAL_EXCEPTION: u32 = 3;
/// Exit status: the machine could not be brought up.
pub const EXIT_BOOT_ERROR: u32 = 4;

/// How the app's `main` result becomes an exit status.
pub trait Termination {
    /// The exit status (0 = success).
    fn report(self) -> u32;
}

impl Termination for () {
    fn report(self) -> u32 {
        0
    }
}

impl Termination for u32 {
    fn report(self) -> u32 {
        self
    }
}

impl<E: core::fmt::Debug> Termination for Result<(), E> {
    fn report(self) -> u32 {
        match self {
            Ok(()) => 0,
            Err(e) => {
                crate::println!("error: {e:?}");
                EXIT_APP_FAILURE
            }
        }
    }
}
