//! User programs at EL0 that speak Linux's arm64 system-call ABI: static ELFs from the image's
//! archive run as processes with their own registers and address spaces, fork, exec, wait, run
//! threads, talk through pipes, and share the CPU by round robin with a timer tick.
//!
//! * [`run`]: start a program as the first process (init) of a run and return when it ends;
//! * `system`: the task table and the switch between processes; `task`: a process;
//! * `syscall`: the system calls; `deliver`: sending signals and running their handlers;
//!   `uaccess`: copies from and to a program's memory that cannot fault; `load`: an ELF into a
//!   fresh address space (and the signal trampoline page); `errno`: Linux's error numbers.
//!
//! Boot flags: `strace=1` logs every system call with its result; `quantum_ms=N` sets the time
//! slice (default 10); `max_procs=N` the number of processes (default 128); `fork_mode=copy` or
//! `share` the fork mode programs start with (default `share`).

mod deliver;
mod errno;
mod load;
mod syscall;
mod system;
mod task;
mod uaccess;

pub use syscall::process::tessera_prctl;

use crate::exec::elf::{Elf, ElfError};
use crate::exec::stack;
use crate::mm::space::{FaultError, ForkMode, SpaceError};
use crate::process::{self, Process};
use crate::runtime::{self, UserHooks};
use alloc::boxed::Box;
use alloc::string::String;
use arch::exception::{Disposition, TrapFrame, SPSR_EL0T};
use syscall::{Action, Call};
use system::{System, CODE_END, SYSTEM};
use task::{sig, Memory, Pid, State, Task, WaitStatus};

/// The stack's size (also its `RLIMIT_STACK`).
pub const STACK_SIZE: u64 = 8 << 20;
/// How far the heap (`brk`) may grow.
const BRK_LIMIT: u64 = 1 << 30;
/// Processes a run may hold at once, unless `max_procs=` says otherwise.
const DEFAULT_MAX_PROCS: usize = 128;
/// The time slice, unless `quantum_ms=` says otherwise.
const DEFAULT_QUANTUM_MS: u64 = 10;

/// How a program ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// `exit` / `exit_group` with this status.
    Code(u8),
    /// Killed by this signal (the default action of a fault it could not survive, or of a
    /// signal sent to it); `address` is the faulting address for faults, else 0.
    Signal { signal: u8, address: u64 },
    /// `reboot(LINUX_REBOOT_CMD_POWER_OFF)`.
    PowerOff,
}

/// Signal numbers of the faults that kill a program.
pub mod signal {
    pub use super::task::sig::{SIGABRT, SIGBUS, SIGILL, SIGKILL, SIGPIPE, SIGSEGV, SIGTERM, SIGTRAP};
}

/// Why a program could not be started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExecError {
    /// Not a static AArch64 executable this kernel can run.
    Elf(ElfError),
    /// The arguments and environment do not fit the initial stack.
    Stack(stack::StackError),
    /// Mapping the program failed (out of memory, or segments the address space refuses).
    Space(SpaceError),
    /// Writing the program's bytes or stack into its memory failed.
    Fault(FaultError),
    /// The machine has no entropy for the program's `AT_RANDOM` bytes.
    NoEntropy,
}

/// Calls that answered `-ENOSYS` over the life of the image.
static UNKNOWN_CALLS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// How many system calls this kernel does not implement were made (each answered `-ENOSYS`).
pub fn unknown_calls() -> u64 {
    UNKNOWN_CALLS.load(core::sync::atomic::Ordering::Relaxed)
}

/// The program `name` in the image's archive.
fn program(name: &str) -> Option<&'static [u8]> {
    crate::programs::find(name)
}

/// Where a loaded program starts.
struct Start {
    sp: u64,
    brk: u64,
    entry: u64,
}

impl Start {
    /// Sets `frame` to the program's first instruction: every register zero but the stack
    /// pointer, at EL0.
    fn enter(&self, frame: &mut TrapFrame) {
        // SAFETY: an all-zero TrapFrame is a valid value (plain integers).
        *frame = unsafe { core::mem::zeroed() };
        frame.elr = self.entry;
        frame.sp = self.sp;
        frame.spsr = SPSR_EL0T;
    }
}

/// Loads the static ELF `image` into a fresh process with `argv` and `envp`.
fn load_image(image: &[u8], argv: &[&str], envp: &[&str]) -> Result<(Process, Start), ExecError> {
    let elf = Elf::parse(image).map_err(ExecError::Elf)?;
    let mut p = Process::new().map_err(ExecError::Space)?;
    p.set_fork_mode(default_fork_mode());
    match load::load(&mut p, &elf, argv, envp) {
        Ok((sp, brk, entry)) => Ok((p, Start { sp, brk, entry })),
        Err(e) => {
            p.exit();
            Err(e)
        }
    }
}

/// Writes `bytes` at `va` in `p`'s memory (not necessarily the running one's).
fn write_into(p: &mut Process, va: u64, bytes: &[u8]) -> Result<(), ExecError> {
    load::write_into(p, va, bytes)
}

/// Runs the static ELF `image` with `argv` and `envp` as the first process of a run, to its end
/// and the end of every process it started (they are killed when it exits); every frame
/// returns to the allocator afterwards. Boot flags: see the module docs.
pub fn run(image: &[u8], argv: &[&str], envp: &[&str]) -> Result<Exit, ExecError> {
    let strace = runtime::boot_config().bootargs.get("strace") == Some("1");
    run_traced(image, argv, envp, strace)
}

/// The fork mode a program starts with: `fork_mode=copy|share` on the kernel command line, else
/// sharing level-3 tables (the faster fork: see `cargo xtask bench fork` and `bench proc`).
fn default_fork_mode() -> ForkMode {
    match runtime::boot_config().bootargs.get("fork_mode") {
        Some("copy") => ForkMode::Copy,
        _ => ForkMode::ShareTables,
    }
}

fn boot_number(name: &str) -> Option<u64> {
    runtime::boot_config().bootargs.get(name)?.parse().ok()
}

static HOOKS: UserHooks = UserHooks {
    sync: on_user_sync,
    irq: on_user_irq,
    svc: arch::exception::SvcHandler { call: on_user_svc },
};

/// [`run`], logging every system call with its result when `strace` is set.
pub fn run_traced(image: &[u8], argv: &[&str], envp: &[&str], strace: bool) -> Result<Exit, ExecError> {
    let name = argv.first().copied().unwrap_or("");
    // Linux runs a program given no arguments with an empty argv[0].
    let argv: &[&str] = if argv.is_empty() { &[""] } else { argv };
    let (process, start) = load_image(image, argv, envp)?;
    let mut init = new_task(process, &start, String::from(name));
    let console = syscall::console_file();
    for _ in 0..3 {
        init.fds
            .install(console.clone(), false, 0)
            .expect("three descriptors fit");
    }
    let max = boot_number("max_procs").map_or(DEFAULT_MAX_PROCS, |n| n.max(1) as usize);
    let quantum = boot_number("quantum_ms").map_or(DEFAULT_QUANTUM_MS, |n| n.max(1)) * 1_000_000;
    let mut sys = System::new(init, strace, max, quantum);
    // SAFETY: an all-zero TrapFrame is a valid value (plain integers).
    let mut first: Box<TrapFrame> = Box::new(unsafe { core::mem::zeroed() });
    (*first).clone_from(&sys.task(task::INIT).ctx);
    sys.activate(task::INIT);
    arch::fpu::restore(&sys.task(task::INIT).fp);
    let previous = SYSTEM.lock().replace(sys);
    assert!(previous.is_none(), "one run at a time");
    let outer_fault = runtime::fault_hook();
    runtime::set_fault_hook(Some(process::user_fault_hook));
    let outer = runtime::set_user_hooks(Some(&HOOKS));
    // SAFETY: an abandonable call on the kernel stack, outside any exception handler, with
    // init's address space in TTBR0; the frame selects EL0.
    let r = runtime::abandonable(|| unsafe { arch::exception::enter_user(&first) });
    runtime::set_user_hooks(outer);
    runtime::set_fault_hook(outer_fault);
    runtime::timer_cancel(runtime::TimerSlot::Scheduler);
    process::deactivate();
    if r != Err(CODE_END) && SYSTEM.is_locked() {
        // A panic or the watchdog abandoned a handler that held the lock: its guard went with
        // the abandoned frames and nothing else runs.
        // SAFETY: the abandon discarded every frame between the handler and here, so no guard
        // of this lock exists any more; this core is the only one running.
        unsafe { SYSTEM.force_unlock() };
    }
    let mut sys = SYSTEM.lock().take().expect("the run's system");
    UNKNOWN_CALLS.fetch_add(sys.unknown_calls, core::sync::atomic::Ordering::Relaxed);
    if sys.end.is_none() {
        // Abandoned from outside (a watchdog, a panic): nothing of the run may survive.
        sys.end_now(Exit::Signal {
            signal: sig::SIGKILL,
            address: 0,
        });
    }
    let exit = sys.end.expect("the run ended");
    drop(sys);
    match r {
        Ok(()) => unreachable!("a user program returned to the kernel without an exception"),
        Err(CODE_END) => Ok(exit),
        Err(other) => {
            arch::exception::abandon(other);
            unreachable!("a program run outside an abandonable context aborted with {other}")
        }
    }
}

/// A process running `process` from `start`, not yet in a table.
fn new_task(process: Process, start: &Start, name: String) -> Box<Task> {
    // SAFETY: an all-zero TrapFrame is a valid value (plain integers).
    let mut ctx: TrapFrame = unsafe { core::mem::zeroed() };
    start.enter(&mut ctx);
    Box::new(Task {
        pid: 0,
        tgid: 0,
        ppid: 0,
        ctx,
        fp: arch::fpu::FpState::new(),
        memory: Memory::Own(Box::new(process)),
        state: State::Runnable,
        fds: crate::files::FdTable::new(),
        signals: task::Signals::new(),
        brk_start: start.brk,
        brk: start.brk,
        brk_limit: start.brk + BRK_LIMIT,
        clear_child_tid: 0,
        folio_size: 64 << 10,
        restart: None,
        fault_address: None,
        name,
    })
}

/// `ESR_EL1.EC` of a trapped `MSR`/`MRS`/system instruction.
const EC_SYSREG: u64 = 0x18;

/// The system-register reads EL0 traps on that Linux emulates: `CNTPCT_EL0` (answered with the
/// counter) and `CTR_EL0` (the cache type). Returns the target register and the value.
fn emulated_read(esr: u64) -> Option<(usize, u64)> {
    let iss = esr & 0x1ff_ffff;
    let read = iss & 1 == 1;
    let rt = ((iss >> 5) & 0x1f) as usize;
    // Op0, Op2, Op1, CRn, CRm as the ISS lays them out.
    let key = (
        iss >> 20 & 3,
        iss >> 17 & 7,
        iss >> 14 & 7,
        iss >> 10 & 0xf,
        iss >> 1 & 0xf,
    );
    if !read {
        return None;
    }
    match key {
        (3, 1, 3, 14, 0) => Some((rt, arch::timer::ticks())),
        (3, 1, 3, 0, 0) => Some((rt, arch::cpu::cache_type())),
        _ => None,
    }
}

/// The timer tick (or any interrupt) taken from a process.
fn on_user_irq(frame: &mut TrapFrame) -> Disposition {
    let mut guard = SYSTEM.lock();
    match guard.as_mut() {
        Some(sys) => sys.tick(frame),
        None => Disposition::Resume,
    }
}

/// Everything a process raises that the abort hook did not resolve.
fn on_user_sync(frame: &mut TrapFrame) -> Disposition {
    use arch::exception::ec;
    let mut guard = SYSTEM.lock();
    let Some(sys) = guard.as_mut() else {
        return Disposition::Fatal;
    };
    if frame.ec() == ec::SVC64 {
        return system_call(sys, frame);
    }
    on_user_trap(sys, frame)
}

/// A system call (from the vector, see `arch::exception::set_svc_handler`): dispatched, and the
/// common answer (a value in `x0`, no tracing) returned at once; everything else goes through
/// [`finish`].
fn on_user_svc(frame: &mut TrapFrame) -> Disposition {
    let mut guard = SYSTEM.lock();
    let Some(sys) = guard.as_mut() else {
        return Disposition::Fatal;
    };
    system_call(sys, frame)
}

#[inline(always)]
fn system_call(sys: &mut System, frame: &mut TrapFrame) -> Disposition {
    let pid = sys.current();
    let nr = frame.x[8];
    let args = [
        frame.x[0], frame.x[1], frame.x[2], frame.x[3], frame.x[4], frame.x[5],
    ];
    let mut call = Call { sys, pid, frame, nr };
    match syscall::dispatch(&mut call, &args) {
        Action::Return(r) if !call.sys.strace => {
            call.frame.x[0] = r as u64;
            if call.sys.tasks.get(pid).is_none_or(|t| t.signals.deliverable()) {
                return deliver_and_resume(call.sys, pid, call.frame);
            }
            Disposition::Resume
        }
        action => finish_traced(call.sys, pid, call.frame, nr, &args, action),
    }
}

/// The way back to `pid` (registers in `frame`) with a signal to deliver: its handler's frame,
/// or its death and a switch.
#[inline(never)]
fn deliver_and_resume(sys: &mut System, pid: Pid, frame: &mut TrapFrame) -> Disposition {
    // A thread whose call ended it (an `execve` by another thread of the group) has gone.
    if sys.tasks.get(pid).is_none_or(|t| !t.is_live()) {
        return sys.switch(frame, pid);
    }
    if sys.deliver(pid, frame) {
        Disposition::Resume
    } else {
        sys.switch(frame, pid)
    }
}

/// Everything but an untraced return: the trace line, then [`finish`].
#[inline(never)]
fn finish_traced(
    sys: &mut System,
    pid: Pid,
    frame: &mut TrapFrame,
    nr: u64,
    args: &[u64; 6],
    action: Action,
) -> Disposition {
    if sys.strace {
        trace(sys, pid, nr, args, &action);
    }
    finish(sys, pid, frame, action)
}

/// A fault, an undefined instruction or a trapped system-register access of a process.
#[inline(never)]
fn on_user_trap(sys: &mut System, frame: &mut TrapFrame) -> Disposition {
    use crate::mm::space::SegvCause;
    use crate::signals::*;
    use arch::exception::ec;
    let pid = sys.current();
    let fault = |signo: u8, code: i32, addr: u64| SigInfo {
        signo,
        code,
        addr: Some(addr),
        ..SigInfo::default()
    };
    // The signal, and the address `sigcontext.fault_address` reports (aborts only).
    let (info, fault_address) = match frame.ec() {
        // An access the memory manager could not resolve or must refuse (a kernel address).
        ec::DATA_ABORT_LOWER | ec::INSTR_ABORT_LOWER => {
            let info = match process::take_user_segfault().map(|s| s.error) {
                Some(FaultError::Bus { .. }) => fault(sig::SIGBUS, BUS_ADRERR, frame.far),
                Some(FaultError::Oom) => {
                    let t = sys.task(pid);
                    t.fault_address = Some(frame.far);
                    report_kill(pid, sig::SIGKILL, frame.far);
                    sys.exit_task(pid, WaitStatus::signaled(sig::SIGKILL));
                    return sys.switch(frame, pid);
                }
                Some(FaultError::Segv {
                    cause: SegvCause::Access,
                    ..
                }) => fault(sig::SIGSEGV, SEGV_ACCERR, frame.far),
                _ => fault(sig::SIGSEGV, SEGV_MAPERR, frame.far),
            };
            (info, frame.far)
        }
        ec::PC_ALIGNMENT => (fault(sig::SIGBUS, BUS_ADRALN, frame.elr), 0),
        ec::SP_ALIGNMENT => (fault(sig::SIGBUS, BUS_ADRALN, frame.sp), 0),
        ec::BRK64 => (fault(sig::SIGTRAP, TRAP_BRKPT, frame.elr), 0),
        EC_SYSREG => match emulated_read(frame.esr) {
            Some((rt, value)) => {
                if rt < 31 {
                    frame.x[rt] = value;
                }
                frame.elr += 4;
                return Disposition::Resume;
            }
            None => (fault(sig::SIGILL, ILL_ILLOPC, frame.elr), 0),
        },
        // Undefined instructions, system-register accesses EL0 may not make, and the rest.
        _ => (fault(sig::SIGILL, ILL_ILLOPC, frame.elr), 0),
    };
    if sys.deliver_fault(pid, frame, info, fault_address) {
        Disposition::Resume
    } else {
        sys.switch(frame, pid)
    }
}

fn report_kill(pid: Pid, signal: u8, address: u64) {
    let who = if pid == task::INIT {
        String::from("program")
    } else {
        alloc::format!("process {pid}")
    };
    match address {
        0 => crate::println!("tessera: {who} killed by signal {signal}"),
        _ => crate::println!("tessera: {who} killed by signal {signal} (fault at {address:#x})"),
    }
}

/// Carries out what a system call decided for the caller `pid`, whose registers are in
/// `frame`.
fn finish(sys: &mut System, pid: Pid, frame: &mut TrapFrame, action: Action) -> Disposition {
    match action {
        Action::Return(r) => {
            frame.x[0] = r as u64;
            deliver_and_resume(sys, pid, frame)
        }
        Action::Replaced => deliver_and_resume(sys, pid, frame),
        Action::Again => {
            frame.elr -= 4;
            deliver_and_resume(sys, pid, frame)
        }
        Action::Yield(r) => {
            frame.x[0] = r as u64;
            sys.cpu().preempt();
            sys.switch(frame, pid)
        }
        Action::Block => {
            // Woken, the process executes the `SVC` again.
            frame.elr -= 4;
            sys.cpu().remove(pid);
            sys.switch(frame, pid)
        }
        Action::Exit(status) => {
            // Init's death by a signal is reported (as a shell would); another process's is its
            // parent's to see through `wait4`.
            if let Some(signal) = status.signal().filter(|_| sys.leader(pid) == task::INIT) {
                report_kill(task::INIT, signal, 0);
            }
            sys.exit_task(pid, status);
            sys.switch(frame, pid)
        }
        Action::ExitThread(status) => {
            sys.exit_thread(pid, status);
            sys.switch(frame, pid)
        }
        Action::PowerOff => {
            sys.end_now(Exit::PowerOff);
            sys.switch(frame, pid)
        }
    }
}

fn trace(sys: &System, pid: Pid, nr: u64, a: &[u64; 6], action: &Action) {
    let who = if sys.tasks.len() > 1 || pid != task::INIT {
        alloc::format!("{pid} ")
    } else {
        String::new()
    };
    let name = syscall::name(nr);
    match action {
        Action::Return(r) | Action::Yield(r) => {
            crate::println!(
                "[strace] {who}{name}({:#x}, {:#x}, {:#x}) = {r}",
                a[0],
                a[1],
                a[2]
            )
        }
        Action::Block => {
            let w = sys.tasks.get(pid).map(|t| t.state);
            crate::println!(
                "[strace] {who}{name}({:#x}, {:#x}, {:#x}) waits ({w:?})",
                a[0],
                a[1],
                a[2]
            )
        }
        Action::Replaced => crate::println!("[strace] {who}{name}({:#x}) = 0", a[0]),
        Action::Again => crate::println!(
            "[strace] {who}{name}({:#x}, {:#x}, {:#x}) interrupted, restarts after the handler",
            a[0],
            a[1],
            a[2]
        ),
        Action::Exit(_) | Action::ExitThread(_) | Action::PowerOff => {
            crate::println!("[strace] {who}{name}({:#x}) = ?", a[0])
        }
    }
}
