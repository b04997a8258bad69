//! Linux's arm64 system calls: `SVC #0` with the number in `x8`, arguments in `x0..x5`, the
//! result (or `-errno`) in `x0`. Numbers are those of Linux's
//! `include/uapi/asm-generic/unistd.h`. Anything not listed answers `-ENOSYS` and is counted.
//!
//! * `files`: descriptors, the console, pipes;
//! * `memory`: `brk`, `mmap` and friends;
//! * `process`: `clone`, `execve`, `exit`, `wait4`, `kill`, ids, limits, Tessera's `prctl`s;
//! * `signal`: dispositions, masks, `rt_sigsuspend`, `rt_sigreturn`;
//! * `info`: time, sleep, `uname`, `getrandom`, `reboot`.

mod files;
mod info;
mod memory;
pub(super) mod process;
mod signal;

use super::errno::ENOSYS;
use super::system::System;
use super::task::{Pid, Restart, State, Task, Wait, WaitStatus};
use arch::exception::TrapFrame;

pub use files::console_file;

/// One system call being handled.
pub struct Call<'a> {
    pub sys: &'a mut System,
    pub pid: Pid,
    pub frame: &'a mut TrapFrame,
    pub nr: u64,
}

impl Call<'_> {
    /// The calling process.
    pub fn task(&mut self) -> &mut Task {
        self.sys.task(self.pid)
    }

    /// The leader of the caller's thread group (which holds the process's heap).
    pub fn leader_task(&mut self) -> &mut Task {
        let l = self.sys.leader(self.pid);
        self.sys.task(l)
    }

    /// The caller's process's descriptor table.
    pub fn fds(&mut self) -> &mut crate::files::FdTable<super::task::File> {
        self.sys.fds(self.pid)
    }

    /// The caller waits for `wait`, then executes the call again, which finds `data` through
    /// [`Call::resumed`]. With a signal to deliver, the caller does not wait: see
    /// [`Call::interrupted`].
    pub fn block(&mut self, wait: Wait, data: u64) -> Action {
        if self.task().signals.deliverable() && !matches!(wait, Wait::Vfork(_)) {
            return self.interrupted(wait, data);
        }
        let (nr, pc, sp) = (self.nr, self.frame.elr, self.frame.sp);
        let t = self.task();
        t.restart = Some(Restart { nr, data, pc, sp });
        t.state = State::Blocked(wait);
        Action::Block
    }

    /// What this call kept across its last wait, if it is being re-executed after one. Taken
    /// once: a call that keeps data across waits asks for it first thing. The record is the
    /// call's own when the number, return address and stack pointer match (a signal handler
    /// may run between the wake-up and the call's execution, and make calls of its own).
    pub fn resumed(&mut self) -> Option<u64> {
        let (nr, pc, sp) = (self.nr, self.frame.elr, self.frame.sp);
        let t = self.task();
        let r = t.restart?;
        if (r.nr, r.pc, r.sp) != (nr, pc, sp) {
            return None;
        }
        t.restart = None;
        Some(r.data)
    }
}

impl Call<'_> {
    /// A call that would wait for `wait` (with `data` kept) while a signal is to be delivered
    /// (a handled signal woke the caller, or arrived before it waited): it answers `-EINTR`
    /// as the handler runs — a pipe write that wrote something answers its count — except that
    /// with `SA_RESTART`, `wait4`, reads, writes and futex waits without a timeout are executed
    /// again after the handler
    /// (Linux's `ERESTARTSYS`). A `vfork` parent is never interrupted (Linux lets only fatal
    /// signals end that wait).
    fn interrupted(&mut self, wait: Wait, data: u64) -> Action {
        use crate::signals::{next_signal, SA_RESTART};
        let s = &self.task().signals;
        let Some(n) = next_signal(s.pending, s.mask) else {
            return Action::Again;
        };
        let handled = s.handler(n) > super::task::sig::SIG_IGN;
        let restart = s.flags(n) & SA_RESTART != 0;
        match wait {
            // A default action (the caller's end) is taken on the way out.
            _ if !handled => Action::Again,
            Wait::PipeWrite(_) if data > 0 => Return(data as i64),
            Wait::Child | Wait::PipeRead(_) | Wait::PipeWrite(_) | Wait::Console if restart => Action::Again,
            // A futex wait without a timeout is restarted too; one with a timeout is not (Linux's
            // `ERESTART_RESTARTBLOCK` answers `EINTR` when a handler runs).
            Wait::Futex { deadline: 0, .. } if restart => Action::Again,
            _ => Return(-super::errno::EINTR),
        }
    }
}

/// What a call does to the caller.
pub enum Action {
    /// Return this value (or `-errno`) in `x0`.
    Return(i64),
    /// Wait (what for is in the caller's state, see [`Call::block`]), then execute the call
    /// again.
    Block,
    /// The caller's process ends with this status (every thread of it).
    Exit(WaitStatus),
    /// The calling thread ends with this status (`exit`; see `System::exit_thread`).
    ExitThread(WaitStatus),
    /// Return this value and let the others run first (`sched_yield`).
    Yield(i64),
    /// The caller's registers were replaced (`execve`): resume with the frame as it is.
    Replaced,
    /// Deliver the caller's signals, then execute the call again (when the handler returns).
    Again,
    /// `reboot(POWER_OFF)`: the run ends.
    PowerOff,
}

pub use Action::Return;

macro_rules! calls {
    ($($lname:ident $name:ident = $nr:literal => $handler:path,)*) => {
        $(pub const $name: u64 = $nr;)*

        /// The name of a system call number, for `strace=1`.
        pub fn name(nr: u64) -> &'static str {
            match nr {
                $($name => stringify!($lname),)*
                _ => "?",
            }
        }

        /// Dispatches one call.
        pub fn dispatch(c: &mut Call, a: &[u64; 6]) -> Action {
            match c.nr {
                $($name => $handler(c, a),)*
                _ => {
                    c.sys.unknown_calls += 1;
                    Return(-ENOSYS)
                }
            }
        }
    };
}

calls! {
    getcwd GETCWD = 17 => files::getcwd,
    dup DUP = 23 => files::dup,
    dup3 DUP3 = 24 => files::dup3,
    fcntl FCNTL = 25 => files::fcntl,
    ioctl IOCTL = 29 => files::ioctl,
    faccessat FACCESSAT = 48 => files::no_such_path,
    openat OPENAT = 56 => files::no_such_path,
    close CLOSE = 57 => files::close,
    pipe2 PIPE2 = 59 => files::pipe2,
    lseek LSEEK = 62 => files::lseek,
    read READ = 63 => files::read,
    write WRITE = 64 => files::write,
    readv READV = 65 => files::readv,
    writev WRITEV = 66 => files::writev,
    ppoll PPOLL = 73 => files::ppoll,
    readlinkat READLINKAT = 78 => files::no_such_path,
    newfstatat NEWFSTATAT = 79 => files::newfstatat,
    fstat FSTAT = 80 => files::fstat,
    exit EXIT = 93 => process::exit,
    exit_group EXIT_GROUP = 94 => process::exit,
    futex FUTEX = 98 => process::futex,
    set_tid_address SET_TID_ADDRESS = 96 => process::set_tid_address,
    set_robust_list SET_ROBUST_LIST = 99 => process::set_robust_list,
    nanosleep NANOSLEEP = 101 => info::nanosleep,
    clock_gettime CLOCK_GETTIME = 113 => info::clock_gettime,
    clock_getres CLOCK_GETRES = 114 => info::clock_getres,
    clock_nanosleep CLOCK_NANOSLEEP = 115 => info::clock_nanosleep,
    sched_getaffinity SCHED_GETAFFINITY = 123 => process::sched_getaffinity,
    sched_yield SCHED_YIELD = 124 => process::sched_yield,
    kill KILL = 129 => process::kill,
    tkill TKILL = 130 => process::kill,
    tgkill TGKILL = 131 => process::kill,
    sigaltstack SIGALTSTACK = 132 => signal::sigaltstack,
    rt_sigsuspend RT_SIGSUSPEND = 133 => signal::rt_sigsuspend,
    rt_sigaction RT_SIGACTION = 134 => signal::rt_sigaction,
    rt_sigprocmask RT_SIGPROCMASK = 135 => signal::rt_sigprocmask,
    rt_sigpending RT_SIGPENDING = 136 => signal::rt_sigpending,
    rt_sigreturn RT_SIGRETURN = 139 => signal::rt_sigreturn,
    reboot REBOOT = 142 => info::reboot,
    setpgid SETPGID = 154 => process::setpgid,
    getpgid GETPGID = 155 => process::getpgid,
    getsid GETSID = 156 => process::getpgid,
    setsid SETSID = 157 => process::setsid,
    uname UNAME = 160 => info::uname,
    getrusage GETRUSAGE = 165 => process::getrusage,
    prctl PRCTL = 167 => process::prctl,
    getpid GETPID = 172 => process::getpid,
    getppid GETPPID = 173 => process::getppid,
    getuid GETUID = 174 => process::zero,
    geteuid GETEUID = 175 => process::zero,
    getgid GETGID = 176 => process::zero,
    getegid GETEGID = 177 => process::zero,
    gettid GETTID = 178 => process::gettid,
    brk BRK = 214 => memory::brk,
    munmap MUNMAP = 215 => memory::munmap,
    clone CLONE = 220 => process::clone,
    execve EXECVE = 221 => process::execve,
    mmap MMAP = 222 => memory::mmap,
    mprotect MPROTECT = 226 => memory::mprotect,
    madvise MADVISE = 233 => memory::madvise,
    wait4 WAIT4 = 260 => process::wait4,
    prlimit64 PRLIMIT64 = 261 => process::prlimit64,
    getrandom GETRANDOM = 278 => info::getrandom,
}
