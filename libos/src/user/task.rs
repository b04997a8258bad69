//! A user process as the scheduler sees it: its registers while it does not run, its memory, its
//! descriptors and signal dispositions, and what it waits for.

use crate::files::{FdTable, Pipe};
use crate::process::Process;
use crate::signals::SigInfo;
use alloc::sync::Arc;
use arch::exception::TrapFrame;
use arch::fpu::FpState;
use core::sync::atomic::{AtomicBool, Ordering};
use spin::Mutex;

/// A thread id; a process's id is the thread id of its group leader (its first thread).
pub type Pid = u32;

/// The pid of the first process of a run, the parent of orphans.
pub const INIT: Pid = 1;

/// Whose memory a process runs in.
pub enum Memory {
    /// Its own address space.
    Own(alloc::boxed::Box<Process>),
    /// Its `vfork` parent's (until it calls `execve` or exits; the parent waits meanwhile).
    Parent(Pid),
    /// A thread's: its group leader's, which also holds the group's descriptors and heap.
    Group(Pid),
}

/// What a blocked process waits for. It re-executes its system call when woken (see
/// [`Task::restart`]), so a spurious wake-up only costs a retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// A child to change state (`wait4`).
    Child,
    /// Data or end of file in the pipe with this id (see [`File::pipe_id`]).
    PipeRead(usize),
    /// Room in the pipe with this id, or its last reader gone.
    PipeWrite(usize),
    /// The clock to reach this time (ns since boot).
    Sleep(u64),
    /// Console input.
    Console,
    /// Any descriptor event (a pipe or the console), or the clock to reach this time (`ppoll`).
    Poll(Option<u64>),
    /// The `vfork` child with this pid to call `execve` or exit.
    Vfork(Pid),
    /// A signal with a handler (`rt_sigsuspend`): only a signal ends the wait.
    Signal,
    /// A `FUTEX_WAKE` on `addr` in the address space of the thread `owner` (see
    /// [`System::memory_owner`](super::system::System::memory_owner)) matching `bitset`, or the
    /// clock reaching `deadline` (ns since boot, 0 for none). `seq` orders the waiters.
    Futex {
        owner: Pid,
        addr: u64,
        bitset: u32,
        deadline: u64,
        seq: u64,
    },
}

impl Wait {
    /// The time this wait ends by itself, if it does.
    pub fn deadline(self) -> Option<u64> {
        match self {
            Wait::Sleep(t) | Wait::Poll(Some(t)) => Some(t),
            Wait::Futex { deadline, .. } if deadline != 0 => Some(deadline),
            _ => None,
        }
    }
}

/// Where a process is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Running or ready to run.
    Runnable,
    /// Waiting.
    Blocked(Wait),
    /// Dead, holding only its wait status until its parent reaps it.
    Zombie(WaitStatus),
    /// A group leader that ended with `exit` while other threads of its group run: it keeps the
    /// group's memory, descriptors and heap, and its status, until the last thread ends.
    Exited(WaitStatus),
}

/// A wait status as `wait4` reports it (`WIFEXITED`/`WEXITSTATUS`, `WIFSIGNALED`/`WTERMSIG`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaitStatus(pub u32);

impl WaitStatus {
    /// Ended by `exit(code)`.
    pub fn exited(code: u8) -> WaitStatus {
        WaitStatus(u32::from(code) << 8)
    }

    /// Killed by `signal`.
    pub fn signaled(signal: u8) -> WaitStatus {
        WaitStatus(u32::from(signal & 0x7f))
    }

    /// The signal that killed it, if one did.
    pub fn signal(self) -> Option<u8> {
        let s = (self.0 & 0x7f) as u8;
        (s != 0).then_some(s)
    }

    /// The exit code, if it exited.
    pub fn code(self) -> Option<u8> {
        self.signal().is_none().then_some((self.0 >> 8) as u8)
    }
}

/// An open file (what a descriptor names; shared by `dup` and `fork`).
pub struct File {
    pub kind: FileKind,
    /// `O_NONBLOCK`.
    pub nonblock: AtomicBool,
}

/// What an open file is.
pub enum FileKind {
    /// The serial console (read and write).
    Console,
    /// One end of a pipe.
    Pipe(PipeEnd),
}

/// One end of a pipe; dropping the last reference closes it.
pub struct PipeEnd {
    pub pipe: Arc<Mutex<Pipe>>,
    pub write: bool,
}

impl Drop for PipeEnd {
    fn drop(&mut self) {
        let mut p = self.pipe.lock();
        if self.write {
            p.close_writer();
        } else {
            p.close_reader();
        }
    }
}

impl File {
    /// An open file of `kind`.
    pub fn new(kind: FileKind, nonblock: bool) -> Arc<File> {
        Arc::new(File {
            kind,
            nonblock: AtomicBool::new(nonblock),
        })
    }

    /// Whether `O_NONBLOCK` is set.
    pub fn nonblocking(&self) -> bool {
        self.nonblock.load(Ordering::Relaxed)
    }

    /// The id of the pipe this file is an end of.
    pub fn pipe_id(&self) -> Option<usize> {
        match &self.kind {
            FileKind::Pipe(end) => Some(Arc::as_ptr(&end.pipe) as usize),
            FileKind::Console => None,
        }
    }
}

/// Signal numbers (Linux arm64).
pub mod sig {
    pub const SIGILL: u8 = 4;
    pub const SIGTRAP: u8 = 5;
    pub const SIGABRT: u8 = 6;
    pub const SIGBUS: u8 = 7;
    pub const SIGKILL: u8 = 9;
    pub const SIGSEGV: u8 = 11;
    pub const SIGPIPE: u8 = 13;
    pub const SIGTERM: u8 = 15;
    pub const SIGCHLD: u8 = 17;
    pub const SIGCONT: u8 = 18;
    pub const SIGSTOP: u8 = 19;
    pub const SIGTSTP: u8 = 20;
    pub const SIGTTIN: u8 = 21;
    pub const SIGTTOU: u8 = 22;
    pub const SIGURG: u8 = 23;
    pub const SIGWINCH: u8 = 28;
    /// Signals are 1..=NSIG.
    pub const NSIG: u64 = 64;
    /// `sa_handler` values with a meaning of their own.
    pub const SIG_DFL: u64 = 0;
    pub const SIG_IGN: u64 = 1;

    /// Signals whose default action does nothing (or stops/continues, which nothing here
    /// observes).
    pub fn ignored_by_default(s: u8) -> bool {
        matches!(
            s,
            SIGCHLD | SIGCONT | SIGSTOP | SIGTSTP | SIGTTIN | SIGTTOU | SIGURG | SIGWINCH
        )
    }
}

/// Signal dispositions, the mask, the pending signals and the alternate stack (see
/// `user::deliver` for what happens to a pending signal).
#[derive(Clone)]
pub struct Signals {
    /// `struct sigaction` per signal: handler, flags, restorer, mask.
    pub actions: [[u64; 4]; 64],
    pub mask: u64,
    pub pending: u64,
    /// The `siginfo_t` of each pending signal (standard signals are not queued: one each).
    pub info: [SigInfo; 64],
    /// The mask `rt_sigsuspend` replaced, restored when its handler returns.
    pub saved_mask: Option<u64>,
    /// `sigaltstack`: (sp, flags, size).
    pub altstack: Option<(u64, u64, u64)>,
}

impl Signals {
    pub fn new() -> Signals {
        Signals {
            actions: [[0; 4]; 64],
            mask: 0,
            pending: 0,
            info: [SigInfo::default(); 64],
            saved_mask: None,
            altstack: None,
        }
    }

    /// The handler word of `signal`'s action.
    pub fn handler(&self, signal: u8) -> u64 {
        self.actions[usize::from(signal - 1)][0]
    }

    /// The flags word of `signal`'s action.
    pub fn flags(&self, signal: u8) -> u64 {
        self.actions[usize::from(signal - 1)][1]
    }

    /// Whether `signal` is dropped when it arrives unblocked: `SIG_IGN`, or `SIG_DFL` with a
    /// default action that does nothing.
    pub fn ignores(&self, signal: u8) -> bool {
        match self.handler(signal) {
            sig::SIG_IGN => signal != sig::SIGKILL,
            sig::SIG_DFL => sig::ignored_by_default(signal),
            _ => false,
        }
    }

    /// Whether a signal is pending and not blocked (one check on every return to the program).
    #[inline(always)]
    pub fn deliverable(&self) -> bool {
        self.pending & !self.mask != 0
    }

    /// Whether dead children are reaped at once: `SIGCHLD` ignored, or its action has
    /// `SA_NOCLDWAIT`.
    pub fn no_zombies(&self) -> bool {
        let a = self.actions[usize::from(sig::SIGCHLD - 1)];
        a[0] == sig::SIG_IGN || a[1] & crate::signals::SA_NOCLDWAIT != 0
    }

    /// Whether `signal` is blocked.
    pub fn blocked(&self, signal: u8) -> bool {
        self.mask & (1 << (signal - 1)) != 0
    }

    /// `execve` resets handled signals to their default action; ignored ones stay ignored.
    pub fn reset_for_exec(&mut self) {
        for a in self.actions.iter_mut() {
            if a[0] != sig::SIG_IGN {
                *a = [0; 4];
            }
        }
        self.altstack = None;
    }
}

/// A system call to finish when the blocked process runs it again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Restart {
    /// The call's number.
    pub nr: u64,
    /// What the call keeps across the wait (bytes already written, a deadline, a child's pid).
    pub data: u64,
    /// The return address and stack pointer of the call: the same call executed again has the
    /// same ones (a signal handler run in between, making calls of its own, does not).
    pub pc: u64,
    pub sp: u64,
}

/// A user thread (a process is a group of them; most have one).
pub struct Task {
    /// Its thread id.
    pub pid: Pid,
    /// Its thread group's id: the pid of the group leader (its own, for the leader).
    pub tgid: Pid,
    /// The parent process (meaningful in the group leader).
    pub ppid: Pid,
    /// Its general registers while it does not run.
    pub ctx: TrapFrame,
    /// Its FP/SIMD registers while it does not run (they stay in the CPU while it does).
    pub fp: FpState,
    pub memory: Memory,
    pub state: State,
    pub fds: FdTable<File>,
    pub signals: Signals,
    pub brk_start: u64,
    pub brk: u64,
    pub brk_limit: u64,
    pub clear_child_tid: u64,
    /// Folio size for new anonymous regions (4 KiB or 64 KiB).
    pub folio_size: u64,
    /// The call being restarted after a wait.
    pub restart: Option<Restart>,
    /// The fault that killed it, if one did (for the report).
    pub fault_address: Option<u64>,
    /// The program's name (the archive entry it runs).
    pub name: alloc::string::String,
}

impl Task {
    /// Whether the process has ended.
    pub fn is_zombie(&self) -> bool {
        matches!(self.state, State::Zombie(_))
    }

    /// Whether it is the leader of its thread group (the process as its parent sees it).
    pub fn is_leader(&self) -> bool {
        self.pid == self.tgid
    }

    /// Whether the thread still runs or may run (neither ended nor a zombie).
    pub fn is_live(&self) -> bool {
        matches!(self.state, State::Runnable | State::Blocked(_))
    }
}
