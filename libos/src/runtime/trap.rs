//! Exceptions, interrupts and panics: the hooks installed in `arch::exception`, the abort hook a
//! running process installs, the fatal report, and the panic handler.

use super::{exit, hooks, timer, EXIT_FATAL_EXCEPTION, EXIT_PANIC};
use arch::exception::{self, Disposition, Handlers, Kind, TrapFrame};
use core::sync::atomic::{AtomicPtr, Ordering};
use spin::Mutex;

pub(super) static HANDLERS: Handlers = Handlers {
    sync: on_sync,
    irq: on_irq,
    fatal: on_fatal,
};

/// A handler for data/instruction aborts (a running process installs one): `None` when the fault
/// is not its business, else what to do (`Resume` to retry the access after resolving it,
/// `Abandon` to end the enclosing abandonable call with an error).
pub type FaultHook = fn(&mut TrapFrame) -> Option<Disposition>;

static FAULT_HOOK: Mutex<Option<FaultHook>> = Mutex::new(None);

/// Installs (or removes) the abort handler hook.
pub fn set_fault_hook(hook: Option<FaultHook>) {
    *FAULT_HOOK.lock() = hook;
}

/// The installed abort handler hook.
pub fn fault_hook() -> Option<FaultHook> {
    *FAULT_HOOK.lock()
}

/// The handlers of a running user process (EL0), installed while processes run: `sync` gets
/// everything the process raises that the abort hook did not resolve (system calls, and the
/// faults and undefined instructions that kill it); `irq` runs after the interrupts taken from
/// the process were handled (the scheduler's tick).
pub struct UserHooks {
    pub sync: fn(&mut TrapFrame) -> Disposition,
    pub irq: fn(&mut TrapFrame) -> Disposition,
    /// System calls (`SVC` from EL0), called straight from the vector.
    pub svc: arch::exception::SvcHandler,
}

static USER_HOOKS: AtomicPtr<UserHooks> = AtomicPtr::new(core::ptr::null_mut());

/// Installs (or removes) the user hooks; returns the previous ones. System calls reach the hooks'
/// `svc` handler straight from the vector (`arch::exception::set_svc_handler`).
pub fn set_user_hooks(hooks: Option<&'static UserHooks>) -> Option<&'static UserHooks> {
    let new = hooks.map_or(core::ptr::null_mut(), |h| h as *const UserHooks as *mut UserHooks);
    arch::exception::set_svc_handler(hooks.map(|h| &h.svc));
    let old = USER_HOOKS.swap(new, Ordering::AcqRel);
    // SAFETY: only `'static` hook tables are stored.
    (!old.is_null()).then(|| unsafe { &*old })
}

fn user_hooks() -> Option<&'static UserHooks> {
    let p = USER_HOOKS.load(Ordering::Acquire);
    // SAFETY: only `'static` hook tables are stored.
    (!p.is_null()).then(|| unsafe { &*p })
}

fn on_sync(kind: Kind, frame: &mut TrapFrame) -> Disposition {
    use arch::exception::ec;
    // The hot path first: a system call from a user program.
    if kind == Kind::Lower64Sync && frame.ec() == ec::SVC64 {
        if let Some(h) = user_hooks() {
            return (h.sync)(frame);
        }
    }
    if matches!(
        frame.ec(),
        ec::DATA_ABORT_SAME | ec::DATA_ABORT_LOWER | ec::INSTR_ABORT_SAME | ec::INSTR_ABORT_LOWER
    ) {
        let hook = *FAULT_HOOK.lock();
        if let Some(d) = hook.and_then(|h| h(frame)) {
            return d;
        }
    }
    if matches!(kind, Kind::Lower64Sync | Kind::Lower32Sync) {
        if let Some(h) = user_hooks() {
            return (h.sync)(frame);
        }
    }
    match hooks::hooks() {
        Some(h) => (h.unexpected_exception)(frame),
        None => Disposition::Fatal,
    }
}

fn on_irq(kind: Kind, frame: &mut TrapFrame) -> Disposition {
    let mut disposition = Disposition::Resume;
    while let Some(id) = arch::irq::acknowledge() {
        if id == arch::irq::timer_id() {
            if let Some(d) = timer::timers_fired() {
                disposition = d;
            }
        } else {
            log::warn!("unexpected interrupt {id}");
        }
        arch::irq::end_of_interrupt(id);
    }
    if disposition == Disposition::Resume && matches!(kind, Kind::Lower64Irq | Kind::Lower32Irq) {
        if let Some(h) = user_hooks() {
            return (h.irq)(frame);
        }
    }
    disposition
}

fn on_fatal(kind: Kind, frame: &TrapFrame) -> ! {
    print_exception("FATAL", kind, frame);
    exit(EXIT_FATAL_EXCEPTION)
}

/// Prints an exception report: class, syndrome, addresses and registers.
pub fn print_exception(what: &str, kind: Kind, frame: &TrapFrame) {
    use crate::console::emergency_write_fmt as w;
    w(format_args!(
        "{what}: {} ({:?}) ESR={:#010x} EC={:#04x}",
        frame.ec_name(),
        kind,
        frame.esr,
        frame.ec()
    ));
    if matches!(frame.ec(), 0x20 | 0x21 | 0x24 | 0x25) {
        w(format_args!(
            " {} {}",
            frame.fault_status_name(),
            if frame.is_write() { "(write)" } else { "(read)" }
        ));
    }
    w(format_args!(
        "\n  ELR={:#018x} FAR={:#018x} SPSR={:#010x} SP={:#018x}\n",
        frame.elr, frame.far, frame.spsr, frame.sp
    ));
    for (i, pair) in frame.x.chunks(4).enumerate() {
        w(format_args!(" "));
        for (j, v) in pair.iter().enumerate() {
            w(format_args!(" x{:<2}={:#018x}", i * 4 + j, v));
        }
        w(format_args!("\n"));
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    if exception::in_try_call() {
        if let Some(h) = hooks::hooks() {
            (h.panic)(info);
        }
    }
    crate::console::emergency_write_fmt(format_args!("\npanicked: {info}\n"));
    exit(EXIT_PANIC)
}
