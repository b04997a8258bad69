//! Exception vectors, the trap frame, and abandonable calls.
//!
//! Every vector saves the general-purpose state and the thread pointer `TPIDR_EL0` into a
//! [`TrapFrame`] on the current stack and calls [`dispatch`], which hands
//! synchronous exceptions and SErrors to the installed [`Handlers::sync`] hook and IRQs to
//! [`Handlers::irq`]. A hook returns a [`Disposition`]:
//! resume the interrupted code (possibly with a modified frame, e.g. the fault was fixed up), abandon
//! the innermost [`try_call`] (used by the boot-time test runner to survive a faulting or hung test),
//! or treat it as fatal. A fatal exception prints the ESR class, FAR, ELR and all registers and stops
//! the machine with a failing exit status.

#[cfg(target_os = "none")]
use core::sync::atomic::AtomicPtr;
use core::sync::atomic::{AtomicUsize, Ordering};

/// Which of the sixteen vectors was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum Kind {
    CurrentSp0Sync = 0,
    CurrentSp0Irq = 1,
    CurrentSp0Fiq = 2,
    CurrentSp0SError = 3,
    CurrentSpxSync = 4,
    CurrentSpxIrq = 5,
    CurrentSpxFiq = 6,
    CurrentSpxSError = 7,
    Lower64Sync = 8,
    Lower64Irq = 9,
    Lower64Fiq = 10,
    Lower64SError = 11,
    Lower32Sync = 12,
    Lower32Irq = 13,
    Lower32Fiq = 14,
    Lower32SError = 15,
}

impl Kind {
    /// The vector with number `v` (0..16, the order of the vector table).
    pub fn from_raw(v: u64) -> Kind {
        assert!(v < 16);
        // SAFETY: `Kind` is `repr(u64)` with exactly the discriminants 0..16, and v < 16.
        unsafe { core::mem::transmute::<u64, Kind>(v) }
    }

    /// True for an interrupt (IRQ or FIQ) vector.
    pub fn is_interrupt(self) -> bool {
        matches!(self as u64 % 4, 1 | 2)
    }
}

/// The state saved by the vectors. The layout is shared with the assembly below.
#[repr(C)]
#[derive(Clone, Debug)]
pub struct TrapFrame {
    /// x0..x30.
    pub x: [u64; 31],
    /// Exception link register: where `eret` returns to.
    pub elr: u64,
    /// Saved program status.
    pub spsr: u64,
    /// Exception syndrome.
    pub esr: u64,
    /// Fault address (valid for aborts).
    pub far: u64,
    /// SP_EL0: the stack pointer of interrupted kernel code (which runs on SP_EL0; for an exception
    /// taken while already handling one, the interrupted SP_EL1 is the frame's address + its size),
    /// or of the interrupted user program.
    pub sp: u64,
    /// `TPIDR_EL0`, the thread pointer of the interrupted code (a user program's TLS base): saved
    /// and restored with the other registers, so a frame copied to another context carries it.
    pub tpidr: u64,
    /// Keeps the frame a multiple of 16 bytes (the stack pointer's alignment).
    _pad: u64,
}

/// The frame holds the general registers only: the kernel is built for a soft-float target and
/// never touches the FP/SIMD registers, so a program's stay live in the CPU across its
/// exceptions; a process switch saves and restores them ([`crate::fpu`]).
const FRAME_SIZE: usize = 304;
const _: () = assert!(core::mem::size_of::<TrapFrame>() == FRAME_SIZE && FRAME_SIZE.is_multiple_of(16));
// The offsets the assembly below uses.
const _: () = assert!(
    core::mem::offset_of!(TrapFrame, elr) == 248
        && core::mem::offset_of!(TrapFrame, sp) == 280
        && core::mem::offset_of!(TrapFrame, tpidr) == 288
);

pub use crate::esr::ec;

impl TrapFrame {
    /// ESR exception class.
    pub fn ec(&self) -> u64 {
        crate::esr::class(self.esr)
    }

    /// A short name for the exception class.
    pub fn ec_name(&self) -> &'static str {
        crate::esr::class_name(self.esr)
    }

    /// For aborts: the decoded syndrome (`None` for other classes).
    pub fn abort(&self) -> Option<crate::esr::Abort> {
        crate::esr::abort(self.esr)
    }

    /// For aborts: fault status code (DFSC/IFSC) name.
    pub fn fault_status_name(&self) -> &'static str {
        crate::esr::fault_status(self.esr).name()
    }

    /// For data aborts: true when the access was a write (ESR.ISS.WnR).
    pub fn is_write(&self) -> bool {
        crate::esr::is_write(self.esr)
    }
}

/// What to do after a hook ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Return to the interrupted code with the (possibly modified) frame.
    Resume,
    /// Abandon the innermost [`try_call`], which returns `Err(code)`.
    Abandon(u64),
    /// Print the exception and stop the machine with a failing status.
    Fatal,
}

/// The installed hooks.
pub struct Handlers {
    /// Synchronous exceptions and SErrors.
    pub sync: fn(Kind, &mut TrapFrame) -> Disposition,
    /// IRQs and FIQs.
    pub irq: fn(Kind, &mut TrapFrame) -> Disposition,
    /// Called with a fatal exception's frame after it was printed: must not return.
    pub fatal: fn(Kind, &TrapFrame) -> !,
}

#[cfg(target_os = "none")]
static HANDLERS: AtomicPtr<Handlers> = AtomicPtr::new(core::ptr::null_mut());

/// Installs the exception hooks (done once by libos during early boot).
#[cfg(target_os = "none")]
pub fn install(handlers: &'static Handlers) {
    HANDLERS.store(handlers as *const Handlers as *mut Handlers, Ordering::Release);
}

/// The handler of system calls from EL0 (`SVC` taken from a lower level), called straight from
/// the vector without going through [`Handlers::sync`]: the path of every system call.
pub struct SvcHandler {
    pub call: fn(&mut TrapFrame) -> Disposition,
}

#[cfg(target_os = "none")]
static SVC_HANDLER: AtomicPtr<SvcHandler> = AtomicPtr::new(core::ptr::null_mut());

/// Installs (or removes) the system-call handler; without one, system calls go to
/// [`Handlers::sync`] like any other exception.
#[cfg(target_os = "none")]
pub fn set_svc_handler(handler: Option<&'static SvcHandler>) {
    let p = handler.map_or(core::ptr::null_mut(), |h| {
        h as *const SvcHandler as *mut SvcHandler
    });
    SVC_HANDLER.store(p, Ordering::Release);
}

/// A system call from EL0: straight to the installed [`SvcHandler`], or the common path.
#[cfg(target_os = "none")]
#[no_mangle]
extern "C" fn __tessera_svc(frame: &mut TrapFrame) {
    let svc = SVC_HANDLER.load(Ordering::Acquire);
    if svc.is_null() {
        return __tessera_exception(Kind::Lower64Sync as u64, frame);
    }
    // SAFETY: `set_svc_handler` only stores pointers to `'static` handlers.
    let d = (unsafe { &*svc }.call)(frame);
    if d != Disposition::Resume {
        carry_out(Kind::Lower64Sync, frame, d);
    }
}

#[cfg(target_os = "none")]
#[no_mangle]
extern "C" fn __tessera_exception(kind: u64, frame: &mut TrapFrame) {
    let kind = Kind::from_raw(kind);
    // Kernel code runs on SP_EL0, so the probe arrives as `CurrentSp0Sync`; from an exception
    // handler (SP_EL1) it would be `CurrentSpxSync`.
    if matches!(kind, Kind::CurrentSp0Sync | Kind::CurrentSpxSync)
        && frame.ec() == ec::UNKNOWN
        && crate::cpu::is_semihosting_trap(frame.elr)
    {
        // Semihosting probe on a machine without a semihosting host: skip the HLT.
        frame.elr += 4;
        return;
    }
    let handlers = HANDLERS.load(Ordering::Acquire);
    if handlers.is_null() {
        // Too early for anything clever: stop with a failing status.
        crate::cpu::exit_failure_early(kind as u64, frame.esr, frame.elr, frame.far);
    }
    // SAFETY: `install` only stores pointers to `'static` handler tables.
    let handlers = unsafe { &*handlers };
    let disposition = if kind.is_interrupt() {
        (handlers.irq)(kind, frame)
    } else {
        (handlers.sync)(kind, frame)
    };
    carry_out(kind, frame, disposition);
}

/// What a handler decided, done: resume, abandon the innermost `try_call`, or the fatal report.
#[cfg(target_os = "none")]
fn carry_out(kind: Kind, frame: &mut TrapFrame, disposition: Disposition) {
    match disposition {
        Disposition::Resume => {}
        Disposition::Abandon(code) => {
            if !redirect_to_resume(frame, code) {
                fatal(kind, frame)
            }
        }
        Disposition::Fatal => fatal(kind, frame),
    }
}

/// The installed fatal handler (or, before there is one, the early failure exit).
#[cfg(target_os = "none")]
fn fatal(kind: Kind, frame: &TrapFrame) -> ! {
    let handlers = HANDLERS.load(Ordering::Acquire);
    if handlers.is_null() {
        crate::cpu::exit_failure_early(kind as u64, frame.esr, frame.elr, frame.far);
    }
    // SAFETY: `install` only stores pointers to `'static` handler tables.
    (unsafe { &*handlers }.fatal)(kind, frame)
}

/// `SPSR_EL1` for a return to EL1 using SP_EL0 (EL1t) with D, A, I and F masked.
#[cfg(target_os = "none")]
const SPSR_EL1T_MASKED: u64 = 0b0100 | (0b1111 << 6);

/// `SPSR_EL1` for a return to EL0 (AArch64, EL0t) with nothing masked.
pub const SPSR_EL0T: u64 = 0;

/// Enters the user program whose registers `frame` holds: `elr` is its pc, `spsr` its PSTATE
/// ([`SPSR_EL0T`]), `sp` its stack pointer, `x` and `tpidr` (its thread pointer) its registers;
/// its FP/SIMD registers are whatever the CPU holds ([`crate::fpu::restore`] them first). Does not return: the program comes back to the kernel only through
/// exceptions, whose handlers resume it or abandon the enclosing [`try_call`].
///
/// # Safety
/// Must run inside a [`try_call`] on the kernel stack, outside any exception handler, with the
/// program's address space in TTBR0; `frame.spsr` must select EL0.
#[cfg(target_os = "none")]
pub unsafe fn enter_user(frame: &TrapFrame) -> ! {
    extern "C" {
        fn __tessera_enter_user(frame: *const TrapFrame) -> !;
    }
    debug_assert_eq!(frame.spsr & 0b1111, 0, "enter_user needs an EL0 PSTATE");
    // SAFETY: the caller's contract; the routine copies the frame onto the (idle) exception stack
    // and leaves through the common exception return.
    unsafe { __tessera_enter_user(frame) }
}

/// Saved callee-state of an active [`try_call`]: x19..x30, sp, DAIF (the kernel uses no FP/SIMD
/// register, so none is callee-saved state of its).
#[repr(C)]
struct ResumeContext {
    regs: [u64; 13],
    outer: usize,
    daif: u64,
}

/// The innermost active [`try_call`] context (0 when none). Single core for now.
static CURRENT_TRY: AtomicUsize = AtomicUsize::new(0);

/// True while some [`try_call`] is active, i.e. an [`Disposition::Abandon`] has a target.
pub fn in_try_call() -> bool {
    CURRENT_TRY.load(Ordering::Acquire) != 0
}

#[cfg(target_os = "none")]
fn redirect_to_resume(frame: &mut TrapFrame, code: u64) -> bool {
    let ctx = CURRENT_TRY.load(Ordering::Acquire);
    if ctx == 0 {
        return false;
    }
    extern "C" {
        fn __tessera_resume(ctx: usize, code: u64) -> !;
    }
    frame.elr = __tessera_resume as *const () as u64;
    // Back to EL1 on SP_EL0 with everything masked, whatever level the exception came from (an
    // abandoned user program was at EL0); `__tessera_resume` restores the call's interrupt mask.
    frame.spsr = SPSR_EL1T_MASKED;
    frame.x[0] = ctx as u64;
    frame.x[1] = code;
    true
}

/// Abandons the innermost [`try_call`] from ordinary code (e.g. the panic handler), making it return
/// `Err(code)`. Returns only if no `try_call` is active.
#[cfg(target_os = "none")]
pub fn abandon(code: u64) {
    let ctx = CURRENT_TRY.load(Ordering::Acquire);
    if ctx != 0 {
        extern "C" {
            fn __tessera_resume(ctx: usize, code: u64) -> !;
        }
        // SAFETY: `ctx` points at the live ResumeContext of an active try_call further up this stack;
        // resuming there discards the frames in between (their destructors do not run).
        unsafe { __tessera_resume(ctx, code) }
    }
}

/// Runs `f(arg)` so that a fault, panic or watchdog inside it can abandon it: returns `Ok(())` when
/// `f` returns, `Err(code)` when abandoned, with the interrupt mask and `PSTATE.PAN` of the call. Abandoning skips destructors of the frames in between
/// (memory they owned is leaked and locks they held stay held): it is a last-resort recovery used
/// by the test runner, not an error-handling mechanism.
///
/// # Safety
/// `f(arg)` must be safe to call: `arg` is whatever `f` expects (typically a pointer to a live
/// closure on the caller's stack).
#[cfg(target_os = "none")]
pub unsafe fn try_call(f: extern "C" fn(*mut u8), arg: *mut u8) -> Result<(), u64> {
    extern "C" {
        fn __tessera_try_call(f: extern "C" fn(*mut u8), arg: *mut u8, ctx: *mut ResumeContext) -> u64;
    }
    let mut ctx = ResumeContext {
        regs: [0; 13],
        outer: CURRENT_TRY.load(Ordering::Acquire),
        daif: 0,
    };
    let ctx_ptr: *mut ResumeContext = &mut ctx;
    let pan = crate::cpu::pan_enabled();
    CURRENT_TRY.store(ctx_ptr as usize, Ordering::Release);
    // SAFETY: the assembly saves callee-saved state into `ctx`, which outlives the call; `f` is a
    // plain function pointer.
    let code = unsafe { __tessera_try_call(f, arg, ctx_ptr) };
    CURRENT_TRY.store(ctx.outer, Ordering::Release);
    if code == 0 {
        Ok(())
    } else {
        // Abandoned from wherever `f` was: inside an exception handler (PAN set on entry) or in a
        // window that cleared it. Back to the PAN state of the call.
        crate::cpu::set_pan(pan);
        Err(code)
    }
}

#[cfg(target_os = "none")]
core::arch::global_asm!(
    r#"
.macro VECTOR kind
    .balign 0x80
    sub     sp, sp, #{frame}
    stp     x0, x1, [sp, #0]
    mov     x0, #\kind
    b       __exception_common
.endm

.section .text.vectors, "ax"
.balign 0x800
.global __exception_vectors
__exception_vectors:
    VECTOR 0
    VECTOR 1
    VECTOR 2
    VECTOR 3
    VECTOR 4
    VECTOR 5
    VECTOR 6
    VECTOR 7
    VECTOR 8
    VECTOR 9
    VECTOR 10
    VECTOR 11
    VECTOR 12
    VECTOR 13
    VECTOR 14
    VECTOR 15

__exception_common:
    stp     x2, x3, [sp, #16]
    stp     x4, x5, [sp, #32]
    stp     x6, x7, [sp, #48]
    stp     x8, x9, [sp, #64]
    stp     x10, x11, [sp, #80]
    stp     x12, x13, [sp, #96]
    stp     x14, x15, [sp, #112]
    stp     x16, x17, [sp, #128]
    stp     x18, x19, [sp, #144]
    stp     x20, x21, [sp, #160]
    stp     x22, x23, [sp, #176]
    stp     x24, x25, [sp, #192]
    stp     x26, x27, [sp, #208]
    stp     x28, x29, [sp, #224]
    mrs     x1, elr_el1
    stp     x30, x1, [sp, #240]
    mrs     x1, spsr_el1
    mrs     x2, esr_el1
    stp     x1, x2, [sp, #256]
    mrs     x1, far_el1
    mrs     x2, sp_el0
    stp     x1, x2, [sp, #272]
    mrs     x1, tpidr_el0
    str     x1, [sp, #288]
    // A system call from EL0 (vector 8, ESR class 0x15) takes the short way.
    cmp     x0, #8
    b.ne    1f
    ldr     x1, [sp, #264]
    lsr     x1, x1, #26
    cmp     x1, #0x15
    b.ne    1f
    mov     x0, sp
    bl      __tessera_svc
    b       __tessera_exception_return
1:  mov     x1, sp
    bl      __tessera_exception
.global __tessera_exception_return
__tessera_exception_return:
    ldr     x1, [sp, #288]
    msr     tpidr_el0, x1
    ldr     x1, [sp, #280]
    msr     sp_el0, x1
    ldp     x30, x1, [sp, #240]
    msr     elr_el1, x1
    ldr     x1, [sp, #256]
    msr     spsr_el1, x1
    ldp     x2, x3, [sp, #16]
    ldp     x4, x5, [sp, #32]
    ldp     x6, x7, [sp, #48]
    ldp     x8, x9, [sp, #64]
    ldp     x10, x11, [sp, #80]
    ldp     x12, x13, [sp, #96]
    ldp     x14, x15, [sp, #112]
    ldp     x16, x17, [sp, #128]
    ldp     x18, x19, [sp, #144]
    ldp     x20, x21, [sp, #160]
    ldp     x22, x23, [sp, #176]
    ldp     x24, x25, [sp, #192]
    ldp     x26, x27, [sp, #208]
    ldp     x28, x29, [sp, #224]
    ldp     x0, x1, [sp, #0]
    add     sp, sp, #{frame}
    eret

.section .text
// ! __tessera_enter_user(frame): copy the frame to the top of the idle exception stack and leave
// through the exception return, which restores every register and erets to the frame's level.
.global __tessera_enter_user
__tessera_enter_user:
    msr     daifset, #0xf
    msr     spsel, #1
    ldr     x9, =__exception_stack_top
    sub     sp, x9, #{frame}
    mov     x10, sp
    mov     x11, #({frame} / 16)
1:  ldp     x12, x13, [x0], #16
    stp     x12, x13, [x10], #16
    subs    x11, x11, #1
    b.ne    1b
    b       __tessera_exception_return

// u64 __tessera_try_call(f, arg, ctx): save callee-saved state in ctx, call f(arg), return 0.
.global __tessera_try_call
__tessera_try_call:
    stp     x19, x20, [x2, #0]
    stp     x21, x22, [x2, #16]
    stp     x23, x24, [x2, #32]
    stp     x25, x26, [x2, #48]
    stp     x27, x28, [x2, #64]
    stp     x29, x30, [x2, #80]
    mov     x9, sp
    str     x9, [x2, #96]
    mrs     x9, daif
    str     x9, [x2, #112]
    mov     x9, x0
    mov     x0, x1
    stp     x29, x30, [sp, #-16]!
    blr     x9
    ldp     x29, x30, [sp], #16
    mov     x0, #0
    ret

// ! __tessera_resume(ctx, code): restore the state saved by __tessera_try_call and make it return code.
// Reached either by `eret` from an abandoned exception (already on SP_EL0) or by a direct call,
// possibly from inside an exception handler (on SP_EL1): in both cases the exception stack is
// reset, SP_EL0 selected again, and the interrupt mask of the try_call restored.
.global __tessera_resume
__tessera_resume:
    msr     daifset, #0xf
    msr     spsel, #1
    ldr     x9, =__exception_stack_top
    mov     sp, x9
    msr     spsel, #0
    ldp     x19, x20, [x0, #0]
    ldp     x21, x22, [x0, #16]
    ldp     x23, x24, [x0, #32]
    ldp     x25, x26, [x0, #48]
    ldp     x27, x28, [x0, #64]
    ldp     x29, x30, [x0, #80]
    ldr     x9, [x0, #96]
    mov     sp, x9
    ldr     x9, [x0, #112]
    msr     daif, x9
    mov     x0, x1
    ret
.ltorg
"#,
    frame = const FRAME_SIZE,
);

const _: () = assert!(core::mem::offset_of!(ResumeContext, daif) == 112);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_kinds() {
        assert_eq!(Kind::from_raw(0), Kind::CurrentSp0Sync);
        assert_eq!(Kind::from_raw(9), Kind::Lower64Irq);
        let interrupts: Vec<u64> = (0..16).filter(|&v| Kind::from_raw(v).is_interrupt()).collect();
        assert_eq!(interrupts, [1, 2, 5, 6, 9, 10, 13, 14]);
    }

    #[test]
    #[should_panic]
    fn no_seventeenth_vector() {
        Kind::from_raw(16);
    }
}
