//! Linux's arm64 system calls for a single-threaded program: `SVC #0` with the number in `x8`,
//! arguments in `x0..x5`, the result (or `-errno`) in `x0`. Numbers are those of Linux's
//! `include/uapi/asm-generic/unistd.h`. Anything not listed answers `-ENOSYS` and is counted.

use super::errno::*;
use super::{uaccess, Exit, State};
use crate::mm::space::{Shm, SpaceError};
use crate::mm::vma::{MapAlign, Placement, VmProt, VmaError, VmaKind};
use crate::mm::{VirtAddr, PAGE_SIZE, USER_END};
use crate::platform::TargetMachine;
use crate::process::with_current_space;
use alloc::vec::Vec;

pub const READ: u64 = 63;
pub const WRITE: u64 = 64;
pub const READV: u64 = 65;
pub const WRITEV: u64 = 66;
pub const IOCTL: u64 = 29;
pub const CLOSE: u64 = 57;
pub const LSEEK: u64 = 62;
pub const PPOLL: u64 = 73;
pub const READLINKAT: u64 = 78;
pub const NEWFSTATAT: u64 = 79;
pub const FSTAT: u64 = 80;
pub const EXIT: u64 = 93;
pub const EXIT_GROUP: u64 = 94;
pub const SET_TID_ADDRESS: u64 = 96;
pub const SET_ROBUST_LIST: u64 = 99;
pub const NANOSLEEP: u64 = 101;
pub const CLOCK_GETTIME: u64 = 113;
pub const CLOCK_GETRES: u64 = 114;
pub const SCHED_YIELD: u64 = 124;
pub const SIGALTSTACK: u64 = 132;
pub const RT_SIGACTION: u64 = 134;
pub const RT_SIGPROCMASK: u64 = 135;
pub const REBOOT: u64 = 142;
pub const UNAME: u64 = 160;
pub const GETPID: u64 = 172;
pub const GETPPID: u64 = 173;
pub const GETUID: u64 = 174;
pub const GETEUID: u64 = 175;
pub const GETGID: u64 = 176;
pub const GETEGID: u64 = 177;
pub const GETTID: u64 = 178;
pub const BRK: u64 = 214;
pub const MUNMAP: u64 = 215;
pub const MMAP: u64 = 222;
pub const MPROTECT: u64 = 226;
pub const MADVISE: u64 = 233;
pub const PRLIMIT64: u64 = 261;
pub const GETRANDOM: u64 = 278;
pub const RSEQ: u64 = 293;
pub const GETCWD: u64 = 17;
pub const FCNTL: u64 = 25;
pub const FACCESSAT: u64 = 48;
pub const OPENAT: u64 = 56;
pub const SCHED_GETAFFINITY: u64 = 123;
pub const KILL: u64 = 129;
pub const TKILL: u64 = 130;
pub const TGKILL: u64 = 131;

/// The name of a system call number, for `strace=1`.
pub fn name(nr: u64) -> &'static str {
    match nr {
        READ => "read",
        WRITE => "write",
        READV => "readv",
        WRITEV => "writev",
        IOCTL => "ioctl",
        CLOSE => "close",
        LSEEK => "lseek",
        PPOLL => "ppoll",
        READLINKAT => "readlinkat",
        NEWFSTATAT => "newfstatat",
        FSTAT => "fstat",
        EXIT => "exit",
        EXIT_GROUP => "exit_group",
        SET_TID_ADDRESS => "set_tid_address",
        SET_ROBUST_LIST => "set_robust_list",
        NANOSLEEP => "nanosleep",
        CLOCK_GETTIME => "clock_gettime",
        CLOCK_GETRES => "clock_getres",
        SCHED_YIELD => "sched_yield",
        SIGALTSTACK => "sigaltstack",
        RT_SIGACTION => "rt_sigaction",
        RT_SIGPROCMASK => "rt_sigprocmask",
        REBOOT => "reboot",
        UNAME => "uname",
        GETPID => "getpid",
        GETPPID => "getppid",
        GETUID => "getuid",
        GETEUID => "geteuid",
        GETGID => "getgid",
        GETEGID => "getegid",
        GETTID => "gettid",
        BRK => "brk",
        MUNMAP => "munmap",
        MMAP => "mmap",
        MPROTECT => "mprotect",
        MADVISE => "madvise",
        PRLIMIT64 => "prlimit64",
        GETRANDOM => "getrandom",
        RSEQ => "rseq",
        GETCWD => "getcwd",
        FCNTL => "fcntl",
        FACCESSAT => "faccessat",
        OPENAT => "openat",
        SCHED_GETAFFINITY => "sched_getaffinity",
        KILL => "kill",
        TKILL => "tkill",
        TGKILL => "tgkill",
        _ => "?",
    }
}

/// What a call did: its result for `x0`, or the end of the program.
pub enum Outcome {
    Return(i64),
    Exit(Exit),
}

use Outcome::Return;

const PROT_MASK: u64 = 0b111;
const MAP_SHARED: u64 = 0x01;
const MAP_PRIVATE: u64 = 0x02;
const MAP_TYPE: u64 = 0x0f;
const MAP_FIXED: u64 = 0x10;
const MAP_ANONYMOUS: u64 = 0x20;
const MAP_FIXED_NOREPLACE: u64 = 0x10_0000;
/// Flags this kernel accepts and ignores (hints that change nothing for a single process).
const MAP_IGNORED: u64 = 0x100 /* GROWSDOWN */ | 0x800 /* DENYWRITE */ | 0x1000 /* EXECUTABLE */
    | 0x2000 /* LOCKED */ | 0x4000 /* NORESERVE */ | 0x8000 /* POPULATE */ | 0x1_0000 /* NONBLOCK */
    | 0x2_0000 /* STACK */ | 0x4_0000 /* HUGETLB */;

const SIGKILL: u64 = 9;
const SIGSTOP: u64 = 19;
const NSIG: u64 = 64;

fn prot(p: u64) -> VmProt {
    let mut v = VmProt::NONE;
    if p & 1 != 0 {
        v = v.union(VmProt::READ);
    }
    if p & 2 != 0 {
        v = v.union(VmProt::WRITE);
    }
    if p & 4 != 0 {
        v = v.union(VmProt::EXEC);
    }
    v
}

fn space_errno(e: SpaceError) -> i64 {
    match e {
        SpaceError::OutOfMemory => -ENOMEM,
        SpaceError::Vma(VmaError::Exists) => -EEXIST,
        SpaceError::Vma(VmaError::NoSpace) | SpaceError::Vma(VmaError::TooManyMappings) => -ENOMEM,
        SpaceError::Vma(VmaError::NotMapped) => -ENOMEM,
        SpaceError::ReadOnly => -EACCES,
        _ => -EINVAL,
    }
}

fn is_console(fd: u64) -> bool {
    fd <= 2
}

/// Dispatches one call.
pub fn dispatch(st: &mut State, nr: u64, a: [u64; 6]) -> Outcome {
    Return(match nr {
        READ => {
            if !is_console(a[0]) {
                -EBADF
            } else {
                // The console has no input yet: end of file (a null buffer for a non-empty read
                // is refused).
                if a[1] == 0 && a[2] != 0 {
                    -EFAULT
                } else {
                    0
                }
            }
        }
        WRITE => write(a[0], &[(a[1], a[2])]),
        WRITEV => match iovecs(a[1], a[2]) {
            Ok(v) => write(a[0], &v),
            Err(e) => e,
        },
        READV => {
            if !is_console(a[0]) {
                -EBADF
            } else {
                iovecs(a[1], a[2]).map_or_else(|e| e, |_| 0)
            }
        }
        IOCTL => {
            if is_console(a[0]) {
                -ENOTTY
            } else {
                -EBADF
            }
        }
        CLOSE => {
            if is_console(a[0]) {
                0
            } else {
                -EBADF
            }
        }
        LSEEK => {
            if is_console(a[0]) {
                -ESPIPE
            } else {
                -EBADF
            }
        }
        PPOLL => ppoll(a[0], a[1], a[2]),
        READLINKAT => -ENOENT,
        NEWFSTATAT => {
            const AT_EMPTY_PATH: u64 = 0x1000;
            let path = uaccess::read(a[1], 1);
            match path {
                Err(e) => e,
                Ok(p) if p[0] == 0 && a[3] & AT_EMPTY_PATH != 0 => fstat(a[0], a[2]),
                Ok(_) => -ENOENT,
            }
        }
        FSTAT => fstat(a[0], a[2]),
        EXIT | EXIT_GROUP => return Outcome::Exit(Exit::Code((a[0] & 0xff) as u8)),
        SET_TID_ADDRESS => {
            st.clear_child_tid = a[0];
            super::PID as i64
        }
        SET_ROBUST_LIST => {
            if a[1] != 24 {
                -EINVAL
            } else {
                0
            }
        }
        NANOSLEEP => nanosleep(a[0], a[1]),
        CLOCK_GETTIME => clock_gettime(a[0], a[1]),
        CLOCK_GETRES => {
            if a[0] > 11 {
                -EINVAL
            } else if a[1] == 0 {
                0
            } else {
                uaccess::write_u64s(a[1], &[0, 1]).map_or_else(|e| e, |_| 0)
            }
        }
        SCHED_YIELD => 0,
        SIGALTSTACK => sigaltstack(st, a[0], a[1]),
        RT_SIGACTION => rt_sigaction(st, a[0], a[1], a[2], a[3]),
        RT_SIGPROCMASK => rt_sigprocmask(st, a[0], a[1], a[2], a[3]),
        REBOOT => {
            const MAGIC1: u64 = 0xfee1_dead;
            const MAGIC2: [u64; 4] = [672_274_793, 85_072_278, 369_367_448, 537_993_216];
            const POWER_OFF: u64 = 0x4321_fedc;
            if a[0] != MAGIC1 || !MAGIC2.contains(&a[1]) {
                -EINVAL
            } else if a[2] == POWER_OFF {
                return Outcome::Exit(Exit::PowerOff);
            } else {
                -EINVAL
            }
        }
        UNAME => uname(a[0]),
        GETPID | GETTID => super::PID as i64,
        GETPPID => 0,
        GETUID | GETEUID | GETGID | GETEGID => 0,
        BRK => brk(st, a[0]),
        MMAP => mmap(a[0], a[1], a[2], a[3], a[4] as i64, a[5]),
        MUNMAP => {
            if !a[0].is_multiple_of(PAGE_SIZE) || a[1] == 0 {
                -EINVAL
            } else {
                let len = a[1].next_multiple_of(PAGE_SIZE);
                with_space(|s| s.munmap(&mut TargetMachine, VirtAddr(a[0]), len))
            }
        }
        MPROTECT => {
            if !a[0].is_multiple_of(PAGE_SIZE) || a[2] & !PROT_MASK != 0 {
                -EINVAL
            } else if a[1] == 0 {
                0
            } else {
                let len = a[1].next_multiple_of(PAGE_SIZE);
                with_space(|s| s.mprotect(&mut TargetMachine, VirtAddr(a[0]), len, prot(a[2])))
            }
        }
        MADVISE => madvise(a[0], a[1], a[2]),
        PRLIMIT64 => prlimit64(a[0], a[1], a[2], a[3]),
        GETRANDOM => getrandom(a[0], a[1], a[2]),
        GETCWD => getcwd(a[0], a[1]),
        FCNTL => fcntl(a[0], a[1]),
        // There is no file system: every path names nothing (after the path is checked).
        OPENAT | FACCESSAT => match uaccess::read(a[1], 1) {
            Ok(_) => -ENOENT,
            Err(e) => e,
        },
        SCHED_GETAFFINITY => {
            // One CPU: a mask with bit 0, in a buffer of whole longs as Linux requires.
            if a[1] < 8 || !a[1].is_multiple_of(8) {
                -EINVAL
            } else {
                match uaccess::write_u64s(a[2], &[1]) {
                    Ok(()) => 8,
                    Err(e) => e,
                }
            }
        }
        KILL | TKILL | TGKILL => {
            let (target, sig) = if nr == TGKILL { (a[1], a[2]) } else { (a[0], a[1]) };
            let me = match nr {
                KILL => target == super::PID || target == 0 || target as i64 == -1,
                _ => target == super::PID && (nr != TGKILL || a[0] == super::PID),
            };
            if sig > NSIG {
                -EINVAL
            } else if !me || (nr == TGKILL && (a[0] as i64) <= 0) {
                -ESRCH
            } else if sig == 0 || ignored_by_default(sig) || st.sigmask & (1 << (sig - 1)) != 0 {
                // Nothing to do (a blocked signal would stay pending; none is ever delivered).
                0
            } else {
                // The default action of every other signal ends the process (no handler runs yet).
                return Outcome::Exit(Exit::Signal {
                    signal: sig as u8,
                    address: 0,
                });
            }
        }
        _ => {
            st.unknown_calls += 1;
            -ENOSYS
        }
    })
}

/// Signals whose default action is to do nothing (or to stop/continue, which a lone process
/// cannot observe here).
fn ignored_by_default(sig: u64) -> bool {
    const SIGCHLD: u64 = 17;
    const SIGCONT: u64 = 18;
    const SIGTSTP: u64 = 20;
    const SIGTTIN: u64 = 21;
    const SIGTTOU: u64 = 22;
    const SIGURG: u64 = 23;
    const SIGWINCH: u64 = 28;
    matches!(
        sig,
        SIGCHLD | SIGCONT | SIGSTOP | SIGTSTP | SIGTTIN | SIGTTOU | SIGURG | SIGWINCH
    )
}

fn getcwd(buf: u64, size: u64) -> i64 {
    if size < 2 {
        return -ERANGE;
    }
    match uaccess::write(buf, b"/\0") {
        Ok(()) => 2,
        Err(e) => e,
    }
}

fn fcntl(fd: u64, cmd: u64) -> i64 {
    const F_DUPFD: u64 = 0;
    const F_GETFD: u64 = 1;
    const F_SETFD: u64 = 2;
    const F_GETFL: u64 = 3;
    const F_SETFL: u64 = 4;
    const F_DUPFD_CLOEXEC: u64 = 1030;
    const O_RDWR: i64 = 2;
    if !is_console(fd) {
        return -EBADF;
    }
    match cmd {
        F_GETFD => 0,
        F_SETFD | F_SETFL => 0,
        F_GETFL => O_RDWR,
        // Descriptors are not duplicated yet: there is no descriptor table.
        F_DUPFD | F_DUPFD_CLOEXEC => -EMFILE,
        _ => -EINVAL,
    }
}

fn with_space(f: impl FnOnce(&mut crate::mm::space::Space) -> Result<(), SpaceError>) -> i64 {
    match with_current_space(f) {
        Some(Ok(())) => 0,
        Some(Err(e)) => space_errno(e),
        None => -EFAULT,
    }
}

/// Reads an iovec array: (base, len) pairs.
fn iovecs(iov: u64, count: u64) -> Result<Vec<(u64, u64)>, i64> {
    if count > 1024 {
        return Err(-EINVAL);
    }
    let raw = uaccess::read(iov, count as usize * 16)?;
    let mut total: u64 = 0;
    let v: Vec<(u64, u64)> = raw
        .chunks(16)
        .map(|c| {
            let w = |i: usize| u64::from_le_bytes(c[i..i + 8].try_into().expect("8 bytes"));
            (w(0), w(8))
        })
        .collect();
    for &(_, len) in &v {
        total = total
            .checked_add(len)
            .filter(|&t| t <= i64::MAX as u64)
            .ok_or(-EINVAL)?;
    }
    Ok(v)
}

fn write(fd: u64, pieces: &[(u64, u64)]) -> i64 {
    if !is_console(fd) {
        return -EBADF;
    }
    let mut total = 0i64;
    for &(base, len) in pieces {
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(4096);
            match uaccess::read(base + done, n as usize) {
                Ok(bytes) => crate::console::write_bytes(&bytes),
                // Linux reports what was written before the bad piece, else -EFAULT.
                Err(e) => return if total > 0 { total } else { e },
            }
            done += n;
            total += n as i64;
        }
    }
    total
}

fn ppoll(fds: u64, nfds: u64, timeout: u64) -> i64 {
    const POLLIN: u16 = 0x1;
    const POLLOUT: u16 = 0x4;
    const POLLNVAL: u16 = 0x20;
    if nfds > 1024 {
        return -EINVAL;
    }
    if timeout != 0 {
        match uaccess::read(timeout, 16) {
            Ok(t) if u64::from_le_bytes(t[8..16].try_into().expect("8")) >= 1_000_000_000 => return -EINVAL,
            Ok(_) => {}
            Err(e) => return e,
        }
    }
    let Ok(mut raw) = uaccess::read(fds, nfds as usize * 8) else {
        return -EFAULT;
    };
    let mut ready = 0;
    for p in raw.chunks_mut(8) {
        let fd = i32::from_le_bytes(p[0..4].try_into().expect("4"));
        let events = u16::from_le_bytes(p[4..6].try_into().expect("2"));
        let revents = if fd < 0 {
            0
        } else if fd > 2 {
            POLLNVAL
        } else {
            // The console is always writable; it has no input yet.
            events & POLLOUT & !POLLIN
        };
        p[6..8].copy_from_slice(&revents.to_le_bytes());
        if revents != 0 {
            ready += 1;
        }
    }
    match uaccess::write(fds, &raw) {
        Ok(()) => ready,
        Err(e) => e,
    }
}

fn fstat(fd: u64, buf: u64) -> i64 {
    if !is_console(fd) {
        return -EBADF;
    }
    // struct stat (asm-generic, 128 bytes): a character device, like a serial console.
    const S_IFCHR: u32 = 0o020000;
    let mut st = [0u8; 128];
    st[0..8].copy_from_slice(&0x16u64.to_le_bytes()); // st_dev
    st[16..20].copy_from_slice(&(S_IFCHR | 0o620).to_le_bytes()); // st_mode
    st[20..24].copy_from_slice(&1u32.to_le_bytes()); // st_nlink
    st[32..40].copy_from_slice(&((4u64 << 8) | 64).to_le_bytes()); // st_rdev: ttyS0
    st[56..60].copy_from_slice(&1024u32.to_le_bytes()); // st_blksize
    match uaccess::write(buf, &st) {
        Ok(()) => 0,
        Err(e) => e,
    }
}

fn nanosleep(req: u64, _rem: u64) -> i64 {
    let t = match uaccess::read(req, 16) {
        Ok(t) => t,
        Err(e) => return e,
    };
    let sec = i64::from_le_bytes(t[0..8].try_into().expect("8"));
    let nsec = i64::from_le_bytes(t[8..16].try_into().expect("8"));
    if sec < 0 || !(0..1_000_000_000).contains(&nsec) {
        return -EINVAL;
    }
    let ns = (sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(nsec as u64);
    let end = arch::timer::now_ns().saturating_add(ns);
    while arch::timer::now_ns() < end {
        core::hint::spin_loop();
    }
    0
}

fn clock_gettime(clock: u64, ts: u64) -> i64 {
    // REALTIME, MONOTONIC, PROCESS_CPUTIME, THREAD_CPUTIME, MONOTONIC_RAW, REALTIME_COARSE,
    // MONOTONIC_COARSE, BOOTTIME (there is no wall clock: realtime counts from boot too).
    if clock > 7 {
        return -EINVAL;
    }
    let ns = arch::timer::now_ns();
    match uaccess::write_u64s(ts, &[ns / 1_000_000_000, ns % 1_000_000_000]) {
        Ok(()) => 0,
        Err(e) => e,
    }
}

fn sigaltstack(st: &mut State, ss: u64, old: u64) -> i64 {
    const SS_DISABLE: u64 = 2;
    if old != 0 {
        let (sp, flags, size) = st.altstack.unwrap_or((0, SS_DISABLE, 0));
        if let Err(e) = uaccess::write_u64s(old, &[sp, flags, size]) {
            return e;
        }
    }
    if ss != 0 {
        let b = match uaccess::read(ss, 24) {
            Ok(b) => b,
            Err(e) => return e,
        };
        let w = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8"));
        let (sp, flags, size) = (w(0), w(8) & 0xffff_ffff, w(16));
        const MINSIGSTKSZ: u64 = 5120;
        if flags & !SS_DISABLE != 0 {
            return -EINVAL;
        }
        if flags & SS_DISABLE != 0 {
            st.altstack = None;
        } else if size < MINSIGSTKSZ {
            return -ENOMEM;
        } else {
            st.altstack = Some((sp, 0, size));
        }
    }
    0
}

fn rt_sigaction(st: &mut State, sig: u64, act: u64, old: u64, size: u64) -> i64 {
    if size != 8 || sig == 0 || sig > NSIG {
        return -EINVAL;
    }
    if act != 0 && (sig == SIGKILL || sig == SIGSTOP) {
        return -EINVAL;
    }
    let i = (sig - 1) as usize;
    if old != 0 {
        if let Err(e) = uaccess::write_u64s(old, &st.actions[i]) {
            return e;
        }
    }
    if act != 0 {
        match uaccess::read(act, 32) {
            Ok(b) => {
                for (k, w) in b.chunks(8).enumerate() {
                    st.actions[i][k] = u64::from_le_bytes(w.try_into().expect("8"));
                }
            }
            Err(e) => return e,
        }
    }
    0
}

fn rt_sigprocmask(st: &mut State, how: u64, set: u64, old: u64, size: u64) -> i64 {
    const SIG_BLOCK: u64 = 0;
    const SIG_UNBLOCK: u64 = 1;
    const SIG_SETMASK: u64 = 2;
    if size != 8 {
        return -EINVAL;
    }
    let new = if set != 0 {
        if how > SIG_SETMASK {
            return -EINVAL;
        }
        match uaccess::read_u64(set) {
            Ok(v) => Some(v),
            Err(e) => return e,
        }
    } else {
        None
    };
    if old != 0 {
        if let Err(e) = uaccess::write_u64s(old, &[st.sigmask]) {
            return e;
        }
    }
    if let Some(v) = new {
        // SIGKILL and SIGSTOP cannot be blocked.
        let unblockable = (1 << (SIGKILL - 1)) | (1 << (SIGSTOP - 1));
        st.sigmask = match how {
            SIG_BLOCK => st.sigmask | v,
            SIG_UNBLOCK => st.sigmask & !v,
            _ => v,
        } & !unblockable;
    }
    0
}

fn uname(buf: u64) -> i64 {
    let mut u = [0u8; 65 * 6];
    for (i, s) in [
        "Linux",
        "tessera",
        "6.12.0-tessera",
        "#1 Tessera",
        "aarch64",
        "(none)",
    ]
    .iter()
    .enumerate()
    {
        u[i * 65..i * 65 + s.len()].copy_from_slice(s.as_bytes());
    }
    match uaccess::write(buf, &u) {
        Ok(()) => 0,
        Err(e) => e,
    }
}

fn brk(st: &mut State, addr: u64) -> i64 {
    let current = st.brk;
    if addr < st.brk_start || addr > st.brk_limit {
        return current as i64;
    }
    let old_end = current.next_multiple_of(PAGE_SIZE);
    let new_end = addr.next_multiple_of(PAGE_SIZE);
    let r = if new_end > old_end {
        with_current_space(|s| {
            s.mmap(
                &mut TargetMachine,
                Placement::FixedNoReplace(VirtAddr(old_end)),
                new_end - old_end,
                VmProt::RW,
                VmaKind::AnonPrivate,
                MapAlign::Page,
            )
            .map(|_| ())
        })
    } else if new_end < old_end {
        with_current_space(|s| s.munmap(&mut TargetMachine, VirtAddr(new_end), old_end - new_end))
    } else {
        Some(Ok(()))
    };
    if let Some(Ok(())) = r {
        st.brk = addr;
    }
    st.brk as i64
}

fn mmap(addr: u64, len: u64, prot_bits: u64, flags: u64, fd: i64, off: u64) -> i64 {
    let ty = flags & MAP_TYPE;
    if len == 0 || prot_bits & !PROT_MASK != 0 || (ty != MAP_SHARED && ty != MAP_PRIVATE) {
        return -EINVAL;
    }
    if flags & !(MAP_TYPE | MAP_FIXED | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE | MAP_IGNORED) != 0 {
        return -EINVAL;
    }
    if flags & MAP_ANONYMOUS == 0 {
        // No files yet: the console's descriptors cannot be mapped, others are not open.
        return if (0..=2).contains(&fd) { -ENODEV } else { -EBADF };
    }
    if !off.is_multiple_of(PAGE_SIZE) {
        return -EINVAL;
    }
    let Some(len) = len.checked_next_multiple_of(PAGE_SIZE).filter(|&l| l <= USER_END) else {
        return -ENOMEM;
    };
    let placement = if flags & MAP_FIXED_NOREPLACE != 0 {
        if !addr.is_multiple_of(PAGE_SIZE) {
            return -EINVAL;
        }
        Placement::FixedNoReplace(VirtAddr(addr))
    } else if flags & MAP_FIXED != 0 {
        if !addr.is_multiple_of(PAGE_SIZE) {
            return -EINVAL;
        }
        Placement::Fixed(VirtAddr(addr))
    } else if addr != 0 {
        Placement::Hint(VirtAddr(addr & !(PAGE_SIZE - 1)))
    } else {
        Placement::Any
    };
    let kind = if ty == MAP_SHARED {
        VmaKind::Shared {
            obj: Shm::new(),
            offset: 0,
        }
    } else {
        VmaKind::AnonPrivate
    };
    let align = if len >= 64 << 10 && flags & (MAP_FIXED | MAP_FIXED_NOREPLACE) == 0 {
        MapAlign::Size64K
    } else {
        MapAlign::Page
    };
    match with_current_space(|s| s.mmap(&mut TargetMachine, placement, len, prot(prot_bits), kind, align)) {
        Some(Ok(va)) => va.as_u64() as i64,
        Some(Err(e)) => space_errno(e),
        None => -ENOMEM,
    }
}

fn madvise(addr: u64, len: u64, advice: u64) -> i64 {
    const MADV_DONTNEED: u64 = 4;
    if !addr.is_multiple_of(PAGE_SIZE) {
        return -EINVAL;
    }
    if len == 0 {
        return 0;
    }
    let len = len.next_multiple_of(PAGE_SIZE);
    match advice {
        MADV_DONTNEED => with_space(|s| s.madvise_dontneed(&mut TargetMachine, VirtAddr(addr), len)),
        // NORMAL, RANDOM, SEQUENTIAL, WILLNEED, FREE, HUGEPAGE, NOHUGEPAGE: hints.
        0..=3 | 8 | 14 | 15 => 0,
        _ => -EINVAL,
    }
}

fn prlimit64(pid: u64, resource: u64, new: u64, old: u64) -> i64 {
    const RLIM_NLIMITS: u64 = 16;
    const RLIMIT_STACK: u64 = 3;
    const RLIM_INFINITY: u64 = u64::MAX;
    if pid != 0 && pid != super::PID {
        return -ESRCH;
    }
    if resource >= RLIM_NLIMITS {
        return -EINVAL;
    }
    if new != 0 {
        if let Err(e) = uaccess::read(new, 16) {
            return e;
        }
    }
    if old != 0 {
        let cur = if resource == RLIMIT_STACK {
            super::STACK_SIZE
        } else {
            RLIM_INFINITY
        };
        if let Err(e) = uaccess::write_u64s(old, &[cur, RLIM_INFINITY]) {
            return e;
        }
    }
    0
}

fn getrandom(buf: u64, len: u64, flags: u64) -> i64 {
    const GRND_NONBLOCK: u64 = 1;
    const GRND_RANDOM: u64 = 2;
    const GRND_INSECURE: u64 = 4;
    if flags & !(GRND_NONBLOCK | GRND_RANDOM | GRND_INSECURE) != 0
        || flags & (GRND_RANDOM | GRND_INSECURE) == (GRND_RANDOM | GRND_INSECURE)
    {
        return -EINVAL;
    }
    let len = len.min(33_554_431) as usize;
    let mut bytes = alloc::vec![0u8; len];
    if crate::random::fill(&mut bytes).is_err() {
        return -EAGAIN;
    }
    match uaccess::write(buf, &bytes) {
        Ok(()) => len as i64,
        Err(e) => e,
    }
}
