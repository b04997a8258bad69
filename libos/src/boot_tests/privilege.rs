//! Boot tests of the boundary between EL0 and EL1: the thread pointer a trap frame carries to and
//! from EL0, and Privileged Access Never.

use crate::mm::vma::{VmProt, VmaKind};
use crate::mm::{VirtAddr, PAGE_SIZE};
use crate::process::{Process, RunEnd};
use crate::runtime;
use crate::testing::catch_fault;
use arch::exception::{ec, Disposition, TrapFrame, SPSR_EL0T};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The EL0 probe: reads its thread pointer, sets its own, makes a system call, reads the thread
/// pointer again and makes a second system call (assembled with `aarch64-linux-gnu-as`).
const PROBE: [u32; 9] = [
    0xd53b_d040, // mrs  x0, tpidr_el0
    0xd28f_cae1, // mov  x1, #0x7e57
    0xf2a2_3a01, // movk x1, #0x11d0, lsl #16
    0xf2c1_75a1, // movk x1, #0xbad, lsl #32
    0xd51b_d041, // msr  tpidr_el0, x1
    0xd400_0001, // svc  #0
    0xd53b_d042, // mrs  x2, tpidr_el0
    0xd400_0001, // svc  #0
    0x1400_0000, // b    .
];
/// The thread pointer the probe sets itself (the `mov`/`movk` above).
const PROBE_OWN_TPIDR: u64 = 0x0bad_11d0_7e57;
/// The thread pointer in the frame the probe starts from.
const START_TPIDR: u64 = 0x1234_5678_9abc_def0;
/// The thread pointer the first system call leaves in the frame, as a switch to another context
/// that copied frames would.
const SWITCHED_TPIDR: u64 = 0x0fed_cba9_8765_4321;
/// Abandon codes of the probe's end.
const CODE_DONE: u64 = 0x7d0e;
const CODE_UNEXPECTED: u64 = 0x7d0f;

static CALLS: AtomicU64 = AtomicU64::new(0);
/// x0 at the first call: the thread pointer the probe started with.
static SEEN_AT_START: AtomicU64 = AtomicU64::new(0);
/// The frame's thread pointer at the first call: what the probe had set.
static SAVED_AT_FIRST_CALL: AtomicU64 = AtomicU64::new(0);
/// x2 at the second call: the thread pointer after the first call returned.
static SEEN_AFTER_RETURN: AtomicU64 = AtomicU64::new(0);
/// `PSTATE.PAN` in the handler of the first call.
static PAN_IN_HANDLER: AtomicBool = AtomicBool::new(false);
/// ESR of an exception the probe should not have raised.
static UNEXPECTED_ESR: AtomicU64 = AtomicU64::new(0);

fn probe_hook(frame: &mut TrapFrame) -> Disposition {
    if frame.ec() != ec::SVC64 {
        UNEXPECTED_ESR.store(frame.esr, Ordering::Relaxed);
        return Disposition::Abandon(CODE_UNEXPECTED);
    }
    match CALLS.fetch_add(1, Ordering::Relaxed) {
        0 => {
            PAN_IN_HANDLER.store(arch::cpu::pan_enabled(), Ordering::Relaxed);
            SEEN_AT_START.store(frame.x[0], Ordering::Relaxed);
            SAVED_AT_FIRST_CALL.store(frame.tpidr, Ordering::Relaxed);
            frame.tpidr = SWITCHED_TPIDR;
            Disposition::Resume
        }
        _ => {
            SEEN_AFTER_RETURN.store(frame.x[2], Ordering::Relaxed);
            Disposition::Abandon(CODE_DONE)
        }
    }
}

/// A process whose page at the returned address holds [`PROBE`], executable at EL0.
fn probe_process() -> (Process, u64) {
    let mut p = Process::new().expect("process");
    let code = p
        .mmap(PAGE_SIZE, VmProt::RW, VmaKind::AnonPrivate)
        .expect("mmap")
        .as_u64();
    p.run(|| {
        for (i, insn) in PROBE.iter().enumerate() {
            // SAFETY: `code` is a mapped read-write page of the running process; faults are
            // resolved by the memory manager.
            unsafe { core::ptr::write_volatile((code as *mut u32).add(i), *insn) };
        }
        // SAFETY: the page was just written, so it is mapped and readable.
        unsafe { arch::cpu::sync_code(code as usize, PROBE.len() * 4) };
    })
    .expect("the probe is written");
    p.mprotect(VirtAddr(code), PAGE_SIZE, VmProt::RX)
        .expect("mprotect");
    (p, code)
}

crate::boot_test! {
    /// The thread pointer round-trips through the trap frame: EL0 starts with the frame's
    /// `tpidr` (restored on the way out), a system call's frame holds the value EL0 set itself
    /// (saved on the way in), and a value the handler puts in the frame, as a context switch
    /// that copies frames does, is what EL0 sees after the call. Where the CPU has PAN, the
    /// handler of a call from EL0 runs with PAN set.
    fn tpidr_el0_round_trips_through_the_trap_frame() {
        CALLS.store(0, Ordering::Relaxed);
        UNEXPECTED_ESR.store(0, Ordering::Relaxed);
        let (mut p, code) = probe_process();
        // SAFETY: an all-zero TrapFrame is a valid value (plain integers).
        let mut frame: TrapFrame = unsafe { core::mem::zeroed() };
        frame.elr = code;
        frame.spsr = SPSR_EL0T;
        frame.tpidr = START_TPIDR;
        static HOOKS: runtime::UserHooks = runtime::UserHooks {
            sync: probe_hook,
            irq: |_| Disposition::Resume,
            svc: arch::exception::SvcHandler { call: probe_hook },
        };
        let outer = runtime::set_user_hooks(Some(&HOOKS));
        // SAFETY: inside `run_until` (an abandonable call on the kernel stack, outside any
        // exception handler) with the process's space in TTBR0; the frame selects EL0, and the
        // probe ends through the user hook.
        let end = p.run_until(|| -> () { unsafe { arch::exception::enter_user(&frame) } });
        runtime::set_user_hooks(outer);
        p.exit();
        assert_eq!(
            end,
            Err(RunEnd::Abandoned(CODE_DONE)),
            "the probe ran to its second call (unexpected ESR {:#x})",
            UNEXPECTED_ESR.load(Ordering::Relaxed)
        );
        assert_eq!(SEEN_AT_START.load(Ordering::Relaxed), START_TPIDR, "EL0 starts with the frame's tpidr");
        assert_eq!(SAVED_AT_FIRST_CALL.load(Ordering::Relaxed), PROBE_OWN_TPIDR, "the call saved EL0's tpidr");
        assert_eq!(SEEN_AFTER_RETURN.load(Ordering::Relaxed), SWITCHED_TPIDR, "the return restored the frame's tpidr");
        assert_eq!(
            PAN_IN_HANDLER.load(Ordering::Relaxed),
            arch::cpu::pan_supported(),
            "an exception from EL0 sets PAN where the CPU has it"
        );
    }
}

fn read(va: u64) -> u64 {
    // SAFETY: a user address of the test's process, mapped (inside `run`, faults are resolved;
    // outside, the fault this read takes is what the test expects, captured).
    unsafe { core::ptr::read_volatile(va as *const u64) }
}

fn write(va: u64, v: u64) {
    // SAFETY: as for `read`.
    unsafe { core::ptr::write_volatile(va as *mut u64, v) }
}

crate::boot_test! {
    /// Privileged Access Never: on a CPU with FEAT_PAN it is on at boot; `Process::run` lifts
    /// it for its closure only (also after the closure took a fault, and after a run ended by
    /// a segfault); outside, an EL1 read of a user page that TTBR0 still maps takes a permission
    /// fault. QEMU `virt` (`-cpu max`) has PAN; the Pi 3's Cortex-A53 and the Pi 4's Cortex-A72
    /// (Armv8.0) do not, and there PAN is reported absent and never set.
    fn pan_keeps_the_kernel_out_of_user_memory_outside_run() {
        let board = runtime::boot_config().board;
        let supported = arch::cpu::pan_supported();
        match board {
            "raspi3" | "raspi4" => assert!(!supported, "{board}'s core is Armv8.0, without PAN"),
            _ => assert!(supported, "{board} under QEMU runs `-cpu max`, which has PAN"),
        }
        if !supported {
            assert!(!arch::cpu::pan_enabled());
            log::info!("{board}: the CPU has no PAN; EL1 is kept out of user memory by convention only");
            return;
        }
        assert!(arch::cpu::pan_enabled(), "PAN is on at boot");
        let mut p = Process::new().expect("process");
        let va = p
            .mmap(2 * PAGE_SIZE, VmProt::RW, VmaKind::AnonPrivate)
            .expect("mmap")
            .as_u64();
        let inside = p.run(|| {
            let before = arch::cpu::pan_enabled();
            write(va, 42); // a demand fault, taken and resolved with PAN set, returns here
            (before, arch::cpu::pan_enabled(), read(va))
        });
        assert_eq!(inside, Ok((false, false, 42)), "run lifts PAN, also across a fault");
        assert!(arch::cpu::pan_enabled(), "PAN is back after run");
        // The space is still in TTBR0 and the page mapped for EL0: EL1 may not touch it.
        let f = catch_fault(|| {
            core::hint::black_box(read(va));
        })
        .expect_err("PAN stops an EL1 read of a user page");
        assert_eq!(f.ec, ec::DATA_ABORT_SAME);
        assert!(
            matches!(arch::esr::fault_status(f.esr), arch::esr::FaultStatus::Permission { .. }),
            "a permission fault, ESR {:#x}",
            f.esr
        );
        assert_eq!(f.far, va);
        assert!(arch::cpu::pan_enabled(), "PAN is back after the caught fault");
        // A window opened by hand reads the same page; closing it closes access again.
        {
            let _window = arch::cpu::UserAccess::open();
            assert_eq!(read(va), 42);
        }
        assert!(arch::cpu::pan_enabled());
        // A run that ends in a segfault (abandoned from the fault handler) leaves PAN on.
        let none = p
            .mmap(PAGE_SIZE, VmProt::NONE, VmaKind::AnonPrivate)
            .expect("mmap")
            .as_u64();
        let end = p.run(|| read(none));
        assert!(end.is_err(), "reading a PROT_NONE page segfaults");
        assert!(arch::cpu::pan_enabled(), "PAN is back after an abandoned run");
        p.exit();
    }
}
