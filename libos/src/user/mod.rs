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
mod syscall;
mod uaccess;

use crate::exec::elf::{Elf, ElfError};
use crate::exec::stack;
use crate::mm::space::{FaultError, Machine, SpaceError};
use crate::mm::vma::{MapAlign, Placement, VmProt, VmaKind};
use crate::mm::{PhysAddr, VirtAddr, PAGE_SIZE, USER_END};
use crate::platform::TargetMachine;
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
/// Top of the stack: below the top of the user half, with a guard gap above it.
const STACK_TOP: u64 = USER_END - (1 << 30);

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

fn vm_prot(flags: crate::exec::elf::Flags) -> VmProt {
    let mut p = VmProt::NONE;
    if flags.readable() {
        p = p.union(VmProt::READ);
    }
    if flags.writable() {
        p = p.union(VmProt::WRITE);
    }
    if flags.executable() {
        p = p.union(VmProt::EXEC);
    }
    p
}

/// Where a position-independent static program is loaded (its addresses are offsets from here).
const PIE_BASE: u64 = 0x4000_0000;

/// Maps the program's segments, its stack and the start of its heap into `p`; returns the
/// initial stack pointer and the heap's start.
fn load(p: &mut Process, elf: &Elf, argv: &[&str], envp: &[&str]) -> Result<(u64, u64, u64), ExecError> {
    let bias = if elf.is_pie() { PIE_BASE } else { 0 };
    let mut brk = 0;
    for seg in elf.segments() {
        // Two segments may share the page at their boundary: map it once.
        let start = ((seg.vaddr + bias) & !(PAGE_SIZE - 1)).max(brk);
        let end = (seg.vaddr + bias + seg.memsz).next_multiple_of(PAGE_SIZE);
        if start >= end {
            write_into(p, seg.vaddr + bias, elf.segment_data(seg))?;
            continue;
        }
        p.map(
            Placement::FixedNoReplace(VirtAddr(start)),
            end - start,
            VmProt::RW,
            VmaKind::AnonPrivate,
            MapAlign::Page,
        )
        .map_err(ExecError::Space)?;
        write_into(p, seg.vaddr + bias, elf.segment_data(seg))?;
        brk = brk.max(end);
    }
    // Each segment's pages get its protection; a page two segments share gets both.
    let mut prev: Option<(u64, VmProt)> = None;
    for seg in elf.segments() {
        let start = (seg.vaddr + bias) & !(PAGE_SIZE - 1);
        let end = (seg.vaddr + bias + seg.memsz).next_multiple_of(PAGE_SIZE);
        let prot = vm_prot(seg.flags);
        p.mprotect(VirtAddr(start), end - start, prot)
            .map_err(ExecError::Space)?;
        if let Some((prev_end, prev_prot)) = prev {
            if prev_end > start {
                p.mprotect(VirtAddr(start), PAGE_SIZE, prot.union(prev_prot))
                    .map_err(ExecError::Space)?;
            }
        }
        prev = Some((end, prot));
    }
    p.map(
        Placement::FixedNoReplace(VirtAddr(STACK_TOP - STACK_SIZE)),
        STACK_SIZE,
        VmProt::RW,
        VmaKind::AnonPrivate,
        MapAlign::Size64K,
    )
    .map_err(ExecError::Space)?;
    let mut random = [0u8; 16];
    crate::random::fill(&mut random).map_err(|_| ExecError::NoEntropy)?;
    const AT_PHDR: u64 = 3;
    const AT_PHENT: u64 = 4;
    const AT_PHNUM: u64 = 5;
    const AT_PAGESZ: u64 = 6;
    const AT_BASE: u64 = 7;
    const AT_ENTRY: u64 = 9;
    const AT_UID: u64 = 11;
    const AT_EUID: u64 = 12;
    const AT_GID: u64 = 13;
    const AT_EGID: u64 = 14;
    const AT_HWCAP: u64 = 16;
    const AT_CLKTCK: u64 = 17;
    const AT_SECURE: u64 = 23;
    const HWCAP_FP: u64 = 1 << 0;
    const HWCAP_ASIMD: u64 = 1 << 1;
    let aux = [
        (AT_PHDR, elf.phdr_vaddr().map_or(0, |a| a + bias)),
        (AT_PHENT, u64::from(elf.phent())),
        (AT_PHNUM, u64::from(elf.phnum())),
        (AT_PAGESZ, PAGE_SIZE),
        (AT_BASE, 0),
        (AT_ENTRY, elf.entry() + bias),
        (AT_UID, 0),
        (AT_EUID, 0),
        (AT_GID, 0),
        (AT_EGID, 0),
        (AT_HWCAP, HWCAP_FP | HWCAP_ASIMD),
        (AT_CLKTCK, 100),
        (AT_SECURE, 0),
    ];
    // Linux runs a program given no arguments with an empty argv[0].
    let argv: &[&str] = if argv.is_empty() { &[""] } else { argv };
    let st = stack::build(STACK_TOP, argv, envp, &aux, random).map_err(ExecError::Stack)?;
    write_into(p, st.sp, &st.bytes)?;
    Ok((st.sp, brk, elf.entry() + bias))
}

/// Writes `bytes` at `va` in `p`'s memory through a pin (no fault can happen).
fn write_into(p: &mut Process, va: u64, bytes: &[u8]) -> Result<(), ExecError> {
    if bytes.is_empty() {
        return Ok(());
    }
    let pin = p
        .pin(VirtAddr(va), bytes.len() as u64, true)
        .map_err(ExecError::Fault)?;
    uaccess::for_each_piece(pin.pages(), va, bytes.len(), |pa, off, n| {
        TargetMachine.write_bytes(PhysAddr(pa), &bytes[off..off + n])
    });
    p.unpin(pin);
    Ok(())
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
    let (sp, brk, entry) = match load(&mut p, &elf, argv, envp) {
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
