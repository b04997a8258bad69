//! The boot-time test image: runs every test registered with `libos::boot_test!` (in libos and
//! here), prints `N passed, N failed`, and exits 0 only when all passed.
//!
//! With the `deliberate-failure` feature it also registers a failing, a faulting and a hanging
//! test, so the host tests can check that failures are reported and the runner survives them.
//! `crash=fault` or `crash=panic` on the command line triggers the fatal paths outside any test.

#![no_std]
#![no_main]

libos::main!(main);

fn main() -> u32 {
    // `crash=fault` / `crash=panic` on the command line exercise the fatal paths outside any test
    // (used by the host tests to check the report and the exit status).
    match libos::boot_config().bootargs.get("crash") {
        Some("fault") => {
            // SAFETY: deliberately invalid read of an unmapped address, to test the fatal report.
            let v = unsafe { core::ptr::read_volatile(0x0000_7000_0000_0008 as *const u64) };
            core::hint::black_box(v);
        }
        Some("panic") => panic!("deliberate panic outside a test"),
        _ => {}
    }
    let summary = libos::testing::run_all();
    if summary.failed == 0 {
        0
    } else {
        libos::runtime::EXIT_APP_FAILURE
    }
}

#[cfg(feature = "deliberate-failure")]
mod deliberate {
    libos::boot_test! {
        /// Fails an assertion.
        fn deliberate_assertion_failure() {
            assert_eq!(1 + 1, 3, "deliberate failure");
        }
    }

    libos::boot_test! {
        /// Takes an unexpected data abort.
        fn deliberate_data_abort() {
            // SAFETY: deliberately invalid: the address is in the unmapped user half, so the read
            // faults; the test runner reports the fault.
            let v = unsafe { core::ptr::read_volatile(0x0000_7000_0000_0000 as *const u64) };
            core::hint::black_box(v);
        }
    }

    libos::boot_test! {
        /// Never returns; the watchdog must end it.
        #[timeout_ms = 300]
        fn deliberate_hang() {
            loop {
                core::hint::spin_loop();
            }
        }
    }
}
