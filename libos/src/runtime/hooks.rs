//! What the runtime lets a test harness take over, and abandonable calls.
//!
//! Production code never names the harness: the runtime calls the [`Hooks`] a harness registered
//! with [`set_hooks`] (the boot-test runner does, when it starts), and behaves as a plain kernel
//! without them: an unexpected exception is fatal, the watchdog slot does nothing, a panic is
//! reported and exits.

use arch::exception::{Disposition, TrapFrame};
use core::sync::atomic::{AtomicPtr, Ordering};

/// The hooks a test harness provides.
pub struct Hooks {
    /// A synchronous exception that neither a fault hook nor anything else handled.
    pub unexpected_exception: fn(&mut TrapFrame) -> Disposition,
    /// The watchdog timer slot fired.
    pub watchdog: fn() -> Option<Disposition>,
    /// A panic inside an abandonable call (before the panic is reported): may abandon the call.
    pub panic: fn(&core::panic::PanicInfo),
}

static HOOKS: AtomicPtr<Hooks> = AtomicPtr::new(core::ptr::null_mut());

/// Registers the harness's hooks (for the rest of the image's life).
pub fn set_hooks(hooks: &'static Hooks) {
    HOOKS.store(hooks as *const Hooks as *mut Hooks, Ordering::Release);
}

/// The registered hooks, if a harness registered any.
pub fn hooks() -> Option<&'static Hooks> {
    let p = HOOKS.load(Ordering::Acquire);
    // SAFETY: `set_hooks` only stores pointers to `'static` hook tables.
    (!p.is_null()).then(|| unsafe { &*p })
}

extern "C" fn call_once<F: FnOnce()>(p: *mut u8) {
    // SAFETY: `p` is the `&mut Option<F>` passed by `abandonable` below, live for the whole call.
    let f = unsafe { (*(p as *mut Option<F>)).take() };
    if let Some(f) = f {
        f()
    }
}

/// Runs `f` inside an abandonable call (see [`arch::exception::try_call`]): `Err(code)` when a
/// fault hook, a panic or the watchdog abandoned it.
pub fn abandonable<F: FnOnce()>(f: F) -> Result<(), u64> {
    let mut slot = Some(f);
    // SAFETY: `call_once::<F>` takes exactly the `&mut Option<F>` passed, which outlives the call.
    unsafe { arch::exception::try_call(call_once::<F>, &mut slot as *mut Option<F> as *mut u8) }
}
