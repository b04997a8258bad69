//! Tessera's library OS.
//!
//! An app is a `no_std` binary crate that depends on `libos` and names its entry function with
//! [`main!`]; the app never touches boot code or linker scripts. `libos` brings the machine up
//! (console, logging, device tree, allocators, exceptions, timer) and then calls the app.
//!
//! The machine-independent core ([`mm`], [`bootargs`], [`devicetree`], [`memory::FrameAllocator`])
//! builds and is tested on the host; everything that needs the real machine is gated on
//! `target_os = "none"` and reaches the hardware only through the `arch` crate.
//!
//! Boot flow (target): `arch::boot` → [`runtime`]'s `__tessera_kernel_main` → app `main` →
//! [`exit`].

#![cfg_attr(not(test), no_std)]
#![deny(clippy::undocumented_unsafe_blocks)]

extern crate alloc;

pub mod bootargs;
pub mod devicetree;
pub mod exec;
pub mod files;
pub mod futex;
pub mod sched;
pub mod signals;

/// The memory manager (the `tessera-mm` crate).
pub use tessera_mm as mm;

#[cfg(all(target_os = "none", feature = "boot-tests"))]
mod boot_tests;
#[cfg(target_os = "none")]
pub mod console;
#[cfg(target_os = "none")]
pub mod platform;
#[cfg(target_os = "none")]
pub mod process;
#[cfg(target_os = "none")]
pub mod programs;
#[cfg(target_os = "none")]
pub mod random;
#[cfg(target_os = "none")]
pub mod runtime;
#[cfg(all(target_os = "none", feature = "boot-tests"))]
pub mod testing;
#[cfg(target_os = "none")]
pub mod ttbr0;
#[cfg(target_os = "none")]
pub mod user;
#[cfg(target_os = "none")]
pub mod vm;

#[cfg(target_os = "none")]
pub use arch;
#[cfg(target_os = "none")]
pub use runtime::{boot_config, exit, BootConfig};

/// Declares the app's entry function: `libos::main!(my_main);` where `my_main` is a
/// `fn() -> T` and `T: libos::runtime::Termination` (`()`, `u32`, or `Result<(), E: Debug>`).
#[macro_export]
macro_rules! main {
    ($entry:path) => {
        #[no_mangle]
        fn __tessera_app_main() -> u32 {
            $crate::runtime::Termination::report($entry())
        }
    };
}
