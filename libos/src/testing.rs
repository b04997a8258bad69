//! Boot-time tests: tests that need the real (emulated) machine — MMU, exceptions, timers.
//!
//! A test is registered where it is written with [`boot_test!`](crate::boot_test), which places a
//! [`TestDesc`] in the `.tessera_tests` linker section; the `selftest` image calls [`run_all`],
//! which runs every registered test (or those matching `tests=` on the kernel command line),
//! prints `test <name> ... ok|FAILED` per test and the closing line `N passed, N failed`.
//!
//! Each test runs inside [`arch::exception::try_call`] with a watchdog deadline on the generic
//! timer, so a failing assertion (panic), an unexpected exception, or a hang is reported as a
//! failure of that test and the runner goes on with the next one. A test also fails if it leaks
//! physical frames (the free-frame count must be the same after the test as before).
//! Tests that *expect* a fault wrap the faulting code in [`catch_fault`].

use crate::runtime::{self, TimerSlot};
use arch::exception::{self, Disposition, TrapFrame};
use core::fmt::Write;
use spin::Mutex;

/// A registered boot test.
#[repr(C)]
pub struct TestDesc {
    /// `module::path::name`.
    pub name: &'static str,
    /// The test body: panics (e.g. a failed `assert!`) on failure.
    pub func: fn(),
    /// Watchdog budget in milliseconds.
    pub timeout_ms: u64,
}

/// Default watchdog budget per test.
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;

/// Registers a boot-time test: `boot_test! { fn name() { ... } }`, optionally
/// `boot_test! { #[timeout_ms = 500] fn name() { ... } }`.
#[macro_export]
macro_rules! boot_test {
    ($(#[doc = $doc:literal])* #[timeout_ms = $t:expr] fn $name:ident() $body:block) => {
        $(#[doc = $doc])*
        fn $name() $body
        const _: () = {
            #[link_section = ".tessera_tests"]
            #[used]
            static DESC: $crate::testing::TestDesc = $crate::testing::TestDesc {
                name: concat!(module_path!(), "::", stringify!($name)),
                func: $name,
                timeout_ms: $t,
            };
        };
    };
    ($(#[doc = $doc:literal])* fn $name:ident() $body:block) => {
        $crate::boot_test! { $(#[doc = $doc])* #[timeout_ms = $crate::testing::DEFAULT_TIMEOUT_MS] fn $name() $body }
    };
}

/// All tests registered in the image, in link order.
pub fn registered() -> &'static [TestDesc] {
    extern "C" {
        static __tessera_tests_start: u8;
        static __tessera_tests_end: u8;
    }
    // SAFETY: the linker script brackets `.tessera_tests`, which contains only `TestDesc` statics
    // placed by `boot_test!` (8-byte aligned, `repr(C)`), so the range is a valid slice.
    unsafe {
        let start = core::ptr::addr_of!(__tessera_tests_start) as *const TestDesc;
        let end = core::ptr::addr_of!(__tessera_tests_end) as *const TestDesc;
        let len = (end as usize - start as usize) / core::mem::size_of::<TestDesc>();
        core::slice::from_raw_parts(start, len)
    }
}

/// A fixed-capacity text buffer usable from exception context (no heap).
pub struct FixedBuf<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> FixedBuf<N> {
    const fn new() -> Self {
        FixedBuf { buf: [0; N], len: 0 }
    }

    /// The text written so far (truncated at capacity, on a char boundary).
    pub fn as_str(&self) -> &str {
        match core::str::from_utf8(&self.buf[..self.len]) {
            Ok(s) => s,
            Err(e) => core::str::from_utf8(&self.buf[..e.valid_up_to()]).unwrap_or(""),
        }
    }

    fn clear(&mut self) {
        self.len = 0;
    }
}

impl<const N: usize> Write for FixedBuf<N> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let n = s.len().min(N - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// Abandon codes (non-zero) passed through `try_call`.
const CODE_PANIC: u64 = 1;
const CODE_FAULT: u64 = 2;
const CODE_TIMEOUT: u64 = 3;
const CODE_CAUGHT_FAULT: u64 = 4;

/// A fault captured by [`catch_fault`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultInfo {
    /// ESR exception class.
    pub ec: u64,
    /// Full syndrome.
    pub esr: u64,
    /// Fault address register.
    pub far: u64,
    /// Address of the faulting instruction.
    pub elr: u64,
}

struct State {
    /// A test is running (failures are attributed to it).
    in_test: bool,
    /// Depth of active `catch_fault` scopes.
    catching: usize,
    caught: Option<FaultInfo>,
    reason: FixedBuf<1024>,
}

static STATE: Mutex<State> = Mutex::new(State {
    in_test: false,
    catching: 0,
    caught: None,
    reason: FixedBuf::new(),
});

fn guarded<F: FnOnce()>(f: F) -> Result<(), u64> {
    runtime::abandonable(f)
}

/// The hooks [`run_all`] registers with the runtime.
pub static HOOKS: runtime::Hooks = runtime::Hooks {
    unexpected_exception: on_unexpected_exception,
    watchdog: on_watchdog,
    panic: on_panic,
};

/// Runs `f`, which is expected to take a synchronous exception (e.g. a data abort): returns the
/// fault, or `Ok(())` if `f` completed without one. A panic inside `f` propagates as usual.
pub fn catch_fault<F: FnOnce()>(f: F) -> Result<(), FaultInfo> {
    {
        let mut s = STATE.lock();
        s.catching += 1;
        s.caught = None;
    }
    let r = guarded(f);
    let caught = {
        let mut s = STATE.lock();
        s.catching -= 1;
        s.caught.take()
    };
    match r {
        Ok(()) => Ok(()),
        Err(CODE_CAUGHT_FAULT) => Err(caught.expect("fault recorded")),
        Err(other) => {
            // A panic/timeout inside the scope belongs to the enclosing test.
            exception::abandon(other);
            unreachable!("catch_fault used outside a boot test")
        }
    }
}

/// Exception hook: called by the runtime for a synchronous exception nothing else handled.
fn on_unexpected_exception(frame: &mut TrapFrame) -> Disposition {
    let mut s = STATE.lock();
    if s.catching > 0 {
        s.caught = Some(FaultInfo {
            ec: frame.ec(),
            esr: frame.esr,
            far: frame.far,
            elr: frame.elr,
        });
        return Disposition::Abandon(CODE_CAUGHT_FAULT);
    }
    if s.in_test {
        s.reason.clear();
        let _ = write!(
            s.reason,
            "unexpected {} ({}) ESR={:#x} FAR={:#x} ELR={:#x}",
            frame.ec_name(),
            frame.fault_status_name(),
            frame.esr,
            frame.far,
            frame.elr
        );
        return Disposition::Abandon(CODE_FAULT);
    }
    Disposition::Fatal
}

/// Panic hook: inside a test, record the message and abandon the test.
fn on_panic(info: &core::panic::PanicInfo) {
    let mut s = STATE.lock();
    if s.in_test {
        s.reason.clear();
        let _ = write!(s.reason, "{info}");
        drop(s);
        exception::abandon(CODE_PANIC);
    }
}

/// Watchdog hook: abandon the running test.
fn on_watchdog() -> Option<Disposition> {
    let mut s = STATE.lock();
    if s.in_test {
        s.reason.clear();
        let _ = write!(s.reason, "watchdog: no progress within the test's time budget");
        return Some(Disposition::Abandon(CODE_TIMEOUT));
    }
    None
}

/// Outcome of a test run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    pub passed: usize,
    pub failed: usize,
}

/// Runs every registered test that passes the command line's `tests=` filter. Never inlined:
/// its symbol marks an image that carries the test harness (`tests/tests/image.rs`).
#[inline(never)]
pub fn run_all() -> Summary {
    runtime::set_hooks(&HOOKS);
    let filters = runtime::boot_config().bootargs.test_filters();
    let selected: alloc::vec::Vec<&TestDesc> = registered()
        .iter()
        .filter(|t| crate::bootargs::filter_matches(&filters, t.name))
        .collect();
    crate::println!("running {} boot tests", selected.len());
    let mut summary = Summary { passed: 0, failed: 0 };
    for t in selected {
        crate::print!("test {} ... ", t.name);
        let frames_before = runtime::frames_free_or_heap();
        STATE.lock().in_test = true;
        runtime::timer_arm(TimerSlot::Watchdog, t.timeout_ms * 1_000_000);
        let r = guarded(t.func);
        runtime::timer_cancel(TimerSlot::Watchdog);
        let mut s = STATE.lock();
        s.in_test = false;
        s.catching = 0;
        let frames_after = runtime::frames_free_or_heap();
        let failure = match r {
            Ok(()) if frames_after == frames_before => None,
            Ok(()) => {
                s.reason.clear();
                let _ = write!(
                    s.reason,
                    "leaked {} physical frames",
                    frames_before as isize - frames_after as isize
                );
                Some(s.reason.as_str())
            }
            Err(_) => Some(s.reason.as_str()),
        };
        match failure {
            None => {
                summary.passed += 1;
                crate::println!("ok");
            }
            Some(reason) => {
                summary.failed += 1;
                crate::println!("FAILED");
                for line in reason.lines() {
                    crate::println!("    {line}");
                }
            }
        }
    }
    crate::println!("{} passed, {} failed", summary.passed, summary.failed);
    summary
}

mod boot_tests {
    use super::*;
    use arch::exception::ec;

    /// An address in the user half that nothing maps.
    const UNMAPPED: u64 = 0x0000_7000_0000_0000;

    crate::boot_test! {
        /// A read from an unmapped address raises a data abort with the right syndrome and address.
        fn data_abort_read_is_captured() {
            let fault = catch_fault(|| {
                // SAFETY: deliberately invalid read; the fault is captured by `catch_fault`.
                let v = unsafe { core::ptr::read_volatile(UNMAPPED as *const u64) };
                core::hint::black_box(v);
            })
            .expect_err("the read must fault");
            assert_eq!(fault.ec, ec::DATA_ABORT_SAME);
            assert_eq!(fault.far, UNMAPPED);
            assert!(
                matches!(arch::esr::fault_status(fault.esr), arch::esr::FaultStatus::Translation { .. }),
                "translation fault, got ESR {:#x}",
                fault.esr
            );
            assert!(!arch::esr::is_write(fault.esr), "WnR clear for a read");
        }
    }

    crate::boot_test! {
        /// A write to an unmapped address reports WnR and the exact faulting address.
        fn data_abort_write_is_captured() {
            let addr = UNMAPPED + 0x1238;
            let fault = catch_fault(|| {
                // SAFETY: deliberately invalid write; the fault is captured by `catch_fault`.
                unsafe { core::ptr::write_volatile(addr as *mut u32, 1) };
            })
            .expect_err("the write must fault");
            assert_eq!(fault.ec, ec::DATA_ABORT_SAME);
            assert_eq!(fault.far, addr);
            assert!(arch::esr::is_write(fault.esr), "WnR set for a write");
        }
    }

    crate::boot_test! {
        /// Undefined instructions and breakpoints are captured with their class and address.
        fn undefined_instruction_and_brk_are_captured() {
            let udf = catch_fault(|| {
                // SAFETY: `udf` raises an undefined-instruction exception, captured by `catch_fault`.
                unsafe { core::arch::asm!("udf #0x7") };
            })
            .expect_err("udf must trap");
            assert_eq!(udf.ec, ec::UNKNOWN);
            // SAFETY: ELR points at the trapping instruction in kernel text.
            let insn = unsafe { core::ptr::read_volatile(udf.elr as *const u32) };
            assert_eq!(insn, 0x0000_0007, "ELR points at the udf");
            let brk = catch_fault(|| {
                // SAFETY: `brk` raises a breakpoint exception, captured by `catch_fault`.
                unsafe { core::arch::asm!("brk #0x42") };
            })
            .expect_err("brk must trap");
            assert_eq!(brk.ec, ec::BRK64);
            assert_eq!(brk.esr & 0xffff, 0x42, "BRK immediate in ISS");
        }
    }

    crate::boot_test! {
        /// Code that does not fault runs to completion under `catch_fault`, and the machine keeps
        /// working after a captured fault (the stack and registers were restored).
        fn catch_fault_without_fault_and_recovery() {
            let mut x = 0u64;
            assert_eq!(catch_fault(|| x = 41), Ok(()));
            assert_eq!(x, 41);
            for i in 0..100u64 {
                let r = catch_fault(|| {
                    // SAFETY: deliberately invalid read, captured.
                    let v = unsafe { core::ptr::read_volatile((UNMAPPED + i * 8) as *const u64) };
                    core::hint::black_box(v);
                });
                assert_eq!(r.map_err(|f| f.far), Err(UNMAPPED + i * 8));
            }
            x += 1;
            assert_eq!(x, 42);
        }
    }

    crate::boot_test! {
        /// The registry holds this test under its full path, and filtering by substring works.
        fn registry_and_filters() {
            let names: alloc::vec::Vec<&str> = registered().iter().map(|t| t.name).collect();
            assert!(names.contains(&"libos::testing::boot_tests::registry_and_filters"), "{names:?}");
            assert!(names.len() >= 12, "only {} boot tests registered", names.len());
            assert!(crate::bootargs::filter_matches(&["registry"], "libos::testing::boot_tests::registry_and_filters"));
        }
    }
}
