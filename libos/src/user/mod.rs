//! User programs at EL0 that speak Linux's arm64 system-call ABI: a static ELF is loaded into a
//! fresh [`Process`], its initial stack laid out as Linux lays it out, and it runs at EL0 with
//! its own registers until it exits, is killed by a fault, or powers the machine off.
//!
//! * [`run`]: load and run one program to its end.
//! * `syscall`: the system calls; `uaccess`: fault-free copies from and to the program's memory;
//!   `errno`: Linux's error numbers.
//!
//! One program runs at a time on this core: it enters EL0 from inside [`Process::run_until`], and
//! its system calls are handled in the exception handler on the exception stack, which resumes it
//! or, at its end, abandons the run with the program's [`Exit`].

mod errno;
mod load;
mod syscall;
mod uaccess;

use crate::exec::elf::{Elf, ElfError};
use crate::exec::stack;
use crate::mm::space::{FaultError, SpaceError};
use crate::process::{Process, RunEnd};
use crate::runtime;
use arch::exception::{Disposition, TrapFrame, SPSR_EL0T};
use spin::Mutex;

/// The process id every program sees (one process at a time).
pub const PID: u64 = 1;
/// The stack's size (also its `RLIMIT_STACK`).
pub const STACK_SIZE: u64 = 8 << 20;
/// How far the heap (`brk`) may grow.
const BRK_LIMIT: u64 = 1 << 30;

/// How a program ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// `exit` / `exit_group` with this status.
    Code(u8),
    /// Killed by this signal (the default action of a fault it could not survive).
    Signal { signal: u8, address: u64 },
    /// `reboot(LINUX_REBOOT_CMD_POWER_OFF)`.
    PowerOff,
}

/// Signal numbers of the faults that kill a program.
pub mod signal {
    pub const SIGILL: u8 = 4;
    pub const SIGKILL: u8 = 9;
    pub const SIGTRAP: u8 = 5;
    pub const SIGBUS: u8 = 7;
    pub const SIGSEGV: u8 = 11;
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

/// The running program's kernel-side state, for the system calls.
pub(crate) struct State {
    brk_start: u64,
    brk: u64,
    brk_limit: u64,
    clear_child_tid: u64,
    sigmask: u64,
    actions: [[u64; 4]; 64],
    altstack: Option<(u64, u64, u64)>,
    unknown_calls: u64,
    exit: Option<Exit>,
    strace: bool,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);
/// Abandon code of a program's end (see [`State::exit`]).
const CODE_EXIT: u64 = 0xe817;

/// Calls that answered `-ENOSYS` over the life of the image.
static UNKNOWN_CALLS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// How many system calls this kernel does not implement were made (each answered `-ENOSYS`).
pub fn unknown_calls() -> u64 {
    UNKNOWN_CALLS.load(core::sync::atomic::Ordering::Relaxed)
}

/// Runs the static ELF `image` with `argv` and `envp` to its end, in a process of its own whose
/// every frame returns to the allocator afterwards. `strace=1` on the kernel command line logs
/// every system call.
pub fn run(image: &[u8], argv: &[&str], envp: &[&str]) -> Result<Exit, ExecError> {
    let strace = runtime::boot_config().bootargs.get("strace") == Some("1");
    run_traced(image, argv, envp, strace)
}

/// [`run`], logging every system call with its result when `strace` is set.
pub fn run_traced(image: &[u8], argv: &[&str], envp: &[&str], strace: bool) -> Result<Exit, ExecError> {
    let elf = Elf::parse(image).map_err(ExecError::Elf)?;
    let mut p = Process::new().map_err(ExecError::Space)?;
    let (sp, brk, entry) = match load::load(&mut p, &elf, argv, envp) {
        Ok(v) => v,
        Err(e) => {
            p.exit();
            return Err(e);
        }
    };
    *STATE.lock() = Some(State {
        brk_start: brk,
        brk,
        brk_limit: brk + BRK_LIMIT,
        clear_child_tid: 0,
        sigmask: 0,
        actions: [[0; 4]; 64],
        altstack: None,
        unknown_calls: 0,
        exit: None,
        strace,
    });
    // SAFETY: an all-zero TrapFrame is a valid value (plain integers).
    let mut frame: TrapFrame = unsafe { core::mem::zeroed() };
    frame.elr = entry;
    frame.sp = sp;
    frame.spsr = SPSR_EL0T;
    let outer = runtime::set_user_hook(Some(on_user_exception));
    // SAFETY: inside `run_until` (an abandonable call on the kernel stack, not in an exception
    // handler) with the process's address space in TTBR0; the frame selects EL0.
    let end = p.run_until(|| -> () { unsafe { arch::exception::enter_user(&frame) } });
    runtime::set_user_hook(outer);
    let state = STATE.lock().take().expect("program state");
    UNKNOWN_CALLS.fetch_add(state.unknown_calls, core::sync::atomic::Ordering::Relaxed);
    let exit = match end {
        Ok(()) => unreachable!("a user program returned to the kernel without an exception"),
        Err(RunEnd::Abandoned(CODE_EXIT)) => state.exit.expect("exit recorded"),
        // Out of memory in a fault: killed, as by Linux's OOM killer.
        Err(RunEnd::Segfault(s)) => Exit::Signal {
            signal: match s.error {
                FaultError::Bus { .. } => signal::SIGBUS,
                FaultError::Oom => signal::SIGKILL,
                _ => signal::SIGSEGV,
            },
            address: s.va,
        },
        Err(RunEnd::Abandoned(other)) => {
            p.exit();
            arch::exception::abandon(other);
            unreachable!("a program run outside an abandonable context aborted with {other}")
        }
    };
    match exit {
        Exit::Signal { signal, address: 0 } => crate::println!("tessera: program killed by signal {signal}"),
        Exit::Signal { signal, address } => {
            crate::println!("tessera: program killed by signal {signal} (fault at {address:#x})")
        }
        _ => {}
    }
    p.exit();
    Ok(exit)
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

/// Everything the running program raises that the abort hook did not resolve.
fn on_user_exception(frame: &mut TrapFrame) -> Disposition {
    use arch::exception::ec;
    let mut guard = STATE.lock();
    let Some(st) = guard.as_mut() else {
        return Disposition::Fatal;
    };
    let kill = |st: &mut State, signal: u8, address: u64| {
        st.exit = Some(Exit::Signal { signal, address });
        Disposition::Abandon(CODE_EXIT)
    };
    match frame.ec() {
        ec::SVC64 => {
            let nr = frame.x[8];
            let args = [
                frame.x[0], frame.x[1], frame.x[2], frame.x[3], frame.x[4], frame.x[5],
            ];
            match syscall::dispatch(st, nr, args) {
                syscall::Outcome::Return(r) => {
                    if st.strace {
                        crate::println!(
                            "[strace] {}({:#x}, {:#x}, {:#x}) = {r}",
                            syscall::name(nr),
                            args[0],
                            args[1],
                            args[2]
                        );
                    }
                    frame.x[0] = r as u64;
                    Disposition::Resume
                }
                syscall::Outcome::Exit(e) => {
                    if st.strace {
                        crate::println!("[strace] {}({:#x}) = ?", syscall::name(nr), args[0]);
                    }
                    st.exit = Some(e);
                    Disposition::Abandon(CODE_EXIT)
                }
            }
        }
        // An access the memory manager could not resolve or must refuse (a kernel address).
        ec::DATA_ABORT_LOWER | ec::INSTR_ABORT_LOWER => kill(st, signal::SIGSEGV, frame.far),
        ec::PC_ALIGNMENT | ec::SP_ALIGNMENT => kill(st, signal::SIGBUS, frame.elr),
        ec::BRK64 => kill(st, signal::SIGTRAP, frame.elr),
        EC_SYSREG => match emulated_read(frame.esr) {
            Some((rt, value)) => {
                if rt < 31 {
                    frame.x[rt] = value;
                }
                frame.elr += 4;
                Disposition::Resume
            }
            None => kill(st, signal::SIGILL, frame.elr),
        },
        // Undefined instructions, system-register accesses EL0 may not make, and the rest.
        _ => kill(st, signal::SIGILL, frame.elr),
    }
}
