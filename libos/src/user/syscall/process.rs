//! Processes and threads: `clone` (fork, vfork, threads), `futex`, `execve`, `exit`,
//! `exit_group`, `wait4`, `kill`, ids and limits, and Tessera's own `prctl`s (fork mode, folio
//! size, memory counters).

use super::super::errno::*;
use super::super::task::{sig, Memory, Pid, State, Task, Wait, WaitStatus, INIT};
use super::super::{uaccess, ExecError};
use super::{Action, Call, Return};
use crate::mm::space::{ForkMode, SpaceError};
use crate::mm::PAGE_SIZE;
use crate::signals::{SigInfo, SI_TKILL, SI_USER};
use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;

/// `exit` ends the calling thread, `exit_group` every thread of the process.
pub fn exit(c: &mut Call, a: &[u64; 6]) -> Action {
    let status = WaitStatus::exited((a[0] & 0xff) as u8);
    if c.nr == super::EXIT {
        Action::ExitThread(status)
    } else {
        Action::Exit(status)
    }
}

/// `futex(uaddr, op, val, timeout | val2, uaddr2, val3)`: `FUTEX_WAIT` (relative timeout),
/// `FUTEX_WAIT_BITSET` (absolute, on the monotonic or with `FUTEX_CLOCK_REALTIME` the realtime
/// clock, which here both count from boot), `FUTEX_WAKE`, `FUTEX_WAKE_BITSET`, `FUTEX_REQUEUE`
/// and `FUTEX_CMP_REQUEUE`; a futex is keyed by its address in the caller's address space,
/// private or not. Anything else answers `ENOSYS`.
pub fn futex(c: &mut Call, a: &[u64; 6]) -> Action {
    use crate::futex::{decode, Cmd, MATCH_ANY, WOKEN};
    let (uaddr, val, timeout, uaddr2, val3) = (a[0], a[2] as u32, a[3], a[4], a[5] as u32);
    let Some(op) = decode(a[1] as u32) else {
        return Return(-ENOSYS);
    };
    if !uaddr.is_multiple_of(4) {
        return Return(-EINVAL);
    }
    let owner = c.sys.memory_owner(c.pid);
    let read = |va: u64| uaccess::read(va, 4).map(|b| u32::from_le_bytes(b.try_into().expect("4")));
    // The bitset forms name their waiters in `val3` (none: EINVAL); the others match any.
    let bitset = if matches!(op.cmd, Cmd::WaitBitset | Cmd::WakeBitset) {
        val3
    } else {
        MATCH_ANY
    };
    if bitset == 0 {
        return Return(-EINVAL);
    }
    match op.cmd {
        Cmd::Wait | Cmd::WaitBitset => {
            let now = arch::timer::now_ns();
            let deadline = match c.resumed() {
                Some(d) if d & WOKEN != 0 => return Return(0),
                Some(d) => {
                    if d != 0 && d <= now {
                        return Return(-ETIMEDOUT);
                    }
                    d
                }
                None if timeout == 0 => 0,
                None => match uaccess::read_timespec_ns(timeout) {
                    // 0 means no deadline: an absolute time of 0 has passed anyway.
                    Ok(ns) if op.cmd == Cmd::Wait => now.saturating_add(ns).max(1),
                    Ok(ns) => ns.max(1),
                    Err(e) => return Return(e),
                },
            };
            match read(uaddr) {
                Ok(v) if v != val => return Return(-EAGAIN),
                Ok(_) => {}
                Err(e) => return Return(e),
            }
            if deadline != 0 && deadline <= now {
                return Return(-ETIMEDOUT);
            }
            c.sys.futex_seq += 1;
            let seq = c.sys.futex_seq;
            let wait = Wait::Futex {
                owner,
                addr: uaddr,
                bitset,
                deadline,
                seq,
            };
            c.block(wait, deadline)
        }
        Cmd::Wake | Cmd::WakeBitset => {
            let n = c.sys.futex_wake(owner, uaddr, bitset, val as usize);
            Return(n as i64)
        }
        Cmd::Requeue | Cmd::CmpRequeue => {
            if (val as i32) < 0 || (timeout as i32) < 0 || !uaddr2.is_multiple_of(4) {
                return Return(-EINVAL);
            }
            if op.cmd == Cmd::CmpRequeue {
                match read(uaddr) {
                    Ok(v) if v != val3 => return Return(-EAGAIN),
                    Ok(_) => {}
                    Err(e) => return Return(e),
                }
            }
            let woken = c.sys.futex_wake(owner, uaddr, MATCH_ANY, val as usize);
            let moved = c.sys.futex_requeue(owner, uaddr, uaddr2, timeout as u32 as usize);
            Return((woken + moved) as i64)
        }
    }
}

pub fn set_tid_address(c: &mut Call, a: &[u64; 6]) -> Action {
    c.task().clear_child_tid = a[0];
    Return(i64::from(c.pid))
}

pub fn set_robust_list(_c: &mut Call, a: &[u64; 6]) -> Action {
    Return(if a[1] != 24 { -EINVAL } else { 0 })
}

pub fn sched_getaffinity(_c: &mut Call, a: &[u64; 6]) -> Action {
    // One CPU: a mask with bit 0, in a buffer of whole longs as Linux requires.
    if a[1] < 8 || !a[1].is_multiple_of(8) {
        return Return(-EINVAL);
    }
    Return(uaccess::write_u64s(a[2], &[1]).map_or_else(|e| e, |_| 8))
}

pub fn sched_yield(_c: &mut Call, _a: &[u64; 6]) -> Action {
    Action::Yield(0)
}

/// The process id: the thread group's.
pub fn getpid(c: &mut Call, _a: &[u64; 6]) -> Action {
    Return(i64::from(c.task().tgid))
}

/// The thread id.
pub fn gettid(c: &mut Call, _a: &[u64; 6]) -> Action {
    Return(i64::from(c.pid))
}

/// The parent of the process (the group leader's).
pub fn getppid(c: &mut Call, _a: &[u64; 6]) -> Action {
    // The process's parent is its leader's; a leader (every single-threaded process) answers
    // with one look-up.
    let t = c.task();
    let (tgid, ppid) = (t.tgid, t.ppid);
    if tgid == c.pid {
        Return(i64::from(ppid))
    } else {
        Return(i64::from(c.leader_task().ppid))
    }
}

pub fn zero(_c: &mut Call, _a: &[u64; 6]) -> Action {
    Return(0)
}

/// Every process is in init's session and process group.
pub fn getpgid(c: &mut Call, a: &[u64; 6]) -> Action {
    Return(if a[0] == 0 || c.sys.tasks.contains(a[0] as Pid) {
        i64::from(INIT)
    } else {
        -ESRCH
    })
}

pub fn setpgid(_c: &mut Call, _a: &[u64; 6]) -> Action {
    Return(-EPERM)
}

pub fn setsid(_c: &mut Call, _a: &[u64; 6]) -> Action {
    Return(-EPERM)
}

pub fn prlimit64(c: &mut Call, a: &[u64; 6]) -> Action {
    const RLIM_NLIMITS: u64 = 16;
    const RLIMIT_STACK: u64 = 3;
    const RLIMIT_NPROC: u64 = 6;
    const RLIMIT_NOFILE: u64 = 7;
    const RLIM_INFINITY: u64 = u64::MAX;
    let (pid, resource, new, old) = (a[0], a[1], a[2], a[3]);
    if pid != 0 && !c.sys.tasks.contains(pid as Pid) {
        return Return(-ESRCH);
    }
    if resource >= RLIM_NLIMITS {
        return Return(-EINVAL);
    }
    if new != 0 {
        if let Err(e) = uaccess::read(new, 16) {
            return Return(e);
        }
    }
    if old != 0 {
        let cur = match resource {
            RLIMIT_STACK => super::super::STACK_SIZE,
            RLIMIT_NPROC => c.sys.max_tasks as u64,
            RLIMIT_NOFILE => crate::files::MAX_FDS as u64,
            _ => RLIM_INFINITY,
        };
        let max = if resource == RLIMIT_STACK {
            RLIM_INFINITY
        } else {
            cur
        };
        if let Err(e) = uaccess::write_u64s(old, &[cur, max]) {
            return Return(e);
        }
    }
    Return(0)
}

pub fn getrusage(c: &mut Call, a: &[u64; 6]) -> Action {
    const RUSAGE_SELF: i64 = 0;
    const RUSAGE_CHILDREN: i64 = -1;
    const RUSAGE_THREAD: i64 = 1;
    let who = a[0] as i64;
    if ![RUSAGE_SELF, RUSAGE_CHILDREN, RUSAGE_THREAD].contains(&who) {
        return Return(-EINVAL);
    }
    // struct rusage: two timevals, then 14 longs; ru_minflt is the 7th long.
    let mut words = [0u64; 18];
    if who != RUSAGE_CHILDREN {
        let s = *c.sys.process(c.pid).space().stats();
        words[6] = s.faults_translation + s.faults_permission + s.faults_access_flag;
    }
    Return(uaccess::write_u64s(a[1], &words).map_or_else(|e| e, |_| 0))
}

/// `prctl` options Tessera defines (`'T' 'E' 'S'` in the high bytes).
pub mod tessera_prctl {
    /// Sets the fork mode of the caller (and of the children it forks afterwards): 0 copies
    /// page-table entries (batched per folio), 1 shares level-3 tables copy-on-write.
    pub const SET_FORK_MODE: u64 = 0x5445_5301;
    /// Returns the fork mode.
    pub const GET_FORK_MODE: u64 = 0x5445_5302;
    /// Sets the folio size of the caller's future anonymous mappings: 4096 or 65536.
    pub const SET_FOLIO_SIZE: u64 = 0x5445_5303;
    /// Writes up to 8 `u64` memory counters to `(arg2, arg3 bytes)`, returns how many: page
    /// faults handled, COW copies of 4 KiB pages, COW copies of 64 KiB folios, COW reuses of
    /// 4 KiB pages, COW reuses of 64 KiB folios, tables copied on a write under a shared table,
    /// bytes copied by COW, tables shared at fork.
    pub const MM_STATS: u64 = 0x5445_5304;
}

pub fn prctl(c: &mut Call, a: &[u64; 6]) -> Action {
    use tessera_prctl::*;
    const PR_SET_NAME: u64 = 15;
    const PR_GET_NAME: u64 = 16;
    match a[0] {
        SET_FORK_MODE => {
            let mode = match a[1] {
                0 => ForkMode::Copy,
                1 => ForkMode::ShareTables,
                _ => return Return(-EINVAL),
            };
            c.sys.process(c.pid).set_fork_mode(mode);
            Return(0)
        }
        GET_FORK_MODE => Return(match c.sys.process(c.pid).space().fork_mode() {
            ForkMode::Copy => 0,
            ForkMode::ShareTables => 1,
        }),
        SET_FOLIO_SIZE => match a[1] {
            4096 | 65536 => {
                c.task().folio_size = a[1];
                Return(0)
            }
            _ => Return(-EINVAL),
        },
        MM_STATS => {
            let s = *c.sys.process(c.pid).space().stats();
            let words = [
                s.faults_translation + s.faults_permission + s.faults_access_flag,
                s.cow_copy_4k,
                s.cow_copy_64k,
                s.cow_reuse_4k,
                s.cow_reuse_64k,
                s.table_breaks,
                s.cow_copy_4k * PAGE_SIZE + s.cow_copy_64k * (64 << 10),
                s.fork_tables_shared,
            ];
            let n = (a[2] / 8).min(words.len() as u64) as usize;
            Return(uaccess::write_u64s(a[1], &words[..n]).map_or_else(|e| e, |_| n as i64))
        }
        PR_SET_NAME => Return(uaccess::read(a[1], 1).map_or_else(|e| e, |_| 0)),
        PR_GET_NAME => {
            let mut name = [0u8; 16];
            let n = c.task().name.len().min(15);
            name[..n].copy_from_slice(&c.task().name.as_bytes()[..n]);
            Return(uaccess::write(a[1], &name).map_or_else(|e| e, |_| 0))
        }
        _ => Return(-EINVAL),
    }
}

const CLONE_VM: u64 = 0x100;
const CLONE_FS: u64 = 0x200;
const CLONE_FILES: u64 = 0x400;
const CLONE_SIGHAND: u64 = 0x800;
const CLONE_VFORK: u64 = 0x4000;
const CLONE_THREAD: u64 = 0x1_0000;
const CLONE_SYSVSEM: u64 = 0x4_0000;
const CLONE_SETTLS: u64 = 0x8_0000;
const CLONE_PARENT_SETTID: u64 = 0x10_0000;
const CLONE_CHILD_CLEARTID: u64 = 0x20_0000;
/// Ignored by Linux (musl's `pthread_create` passes it).
const CLONE_DETACHED: u64 = 0x40_0000;
const CLONE_CHILD_SETTID: u64 = 0x100_0000;
/// The exit signal's bits.
const CSIGNAL: u64 = 0xff;

/// `clone(flags, stack, parent_tid, tls, child_tid)`: a new process, either a copy of the
/// caller's memory (`fork`: copy-on-write, in the caller's fork mode) or, with
/// `CLONE_VM | CLONE_VFORK`, running in the caller's memory while the caller waits for it to
/// `execve` or exit; or, with `CLONE_THREAD | CLONE_SIGHAND | CLONE_VM | CLONE_FILES`, a
/// thread of the caller's process (same memory, descriptors and signal dispositions; its own
/// registers, mask and pending signals). Other sharing (`CLONE_VM` alone, `CLONE_FILES` or
/// `CLONE_SIGHAND` without a thread, a thread without shared descriptors) answers `EINVAL`.
pub fn clone(c: &mut Call, a: &[u64; 6]) -> Action {
    let (flags, stack, ptid, tls, ctid) = (a[0], a[1], a[2], a[3], a[4]);
    if let Some(child) = c.resumed() {
        // The vfork child has called execve or exited.
        return Return(child as i64);
    }
    let known = CSIGNAL
        | CLONE_VM
        | CLONE_FS
        | CLONE_FILES
        | CLONE_SIGHAND
        | CLONE_VFORK
        | CLONE_THREAD
        | CLONE_SYSVSEM
        | CLONE_SETTLS
        | CLONE_PARENT_SETTID
        | CLONE_CHILD_CLEARTID
        | CLONE_DETACHED
        | CLONE_CHILD_SETTID;
    if flags & !known != 0 {
        return Return(-EINVAL);
    }
    // Linux's own rules, then what Tessera offers.
    let thread = flags & CLONE_THREAD != 0;
    if (thread && flags & CLONE_SIGHAND == 0) || (flags & CLONE_SIGHAND != 0 && flags & CLONE_VM == 0) {
        return Return(-EINVAL);
    }
    if thread {
        if flags & CLONE_FILES == 0 || flags & CLONE_VFORK != 0 {
            return Return(-EINVAL);
        }
        return new_thread(c, flags, stack, ptid, tls, ctid);
    }
    if flags & (CLONE_SIGHAND | CLONE_FILES) != 0 {
        return Return(-EINVAL);
    }
    let vfork = flags & CLONE_VM != 0;
    if vfork && flags & CLONE_VFORK == 0 {
        return Return(-EINVAL);
    }
    let Some(pid) = c.sys.alloc_pid() else {
        return Return(-EAGAIN);
    };
    let memory = if vfork {
        Memory::Parent(c.pid)
    } else {
        match c.sys.process(c.pid).fork() {
            Ok(p) => Memory::Own(Box::new(p)),
            Err(SpaceError::OutOfMemory) => return Return(-ENOMEM),
            Err(_) => return Return(-ENOMEM),
        }
    };
    let ctx = child_registers(c.frame, flags, stack, tls);
    let fds = c.fds().clone();
    let brk = {
        let l = c.leader_task();
        (l.brk_start, l.brk, l.brk_limit)
    };
    let ppid = c.sys.leader(c.pid);
    let parent = c.sys.task(c.pid);
    let signals = parent.signals.clone();
    let child = new_task(
        parent,
        [pid, pid, ppid],
        ctx,
        memory,
        fds,
        signals,
        brk,
        flags,
        ctid,
    );
    c.sys.tasks.insert(pid, child);
    if flags & CLONE_CHILD_SETTID != 0 {
        // In the child's memory (the caller's own, for a vfork child).
        let _ = super::super::write_into(c.sys.process(pid), ctid, &pid.to_le_bytes());
    }
    if flags & CLONE_PARENT_SETTID != 0 {
        if let Err(e) = uaccess::write(ptid, &pid.to_le_bytes()) {
            c.sys.exit_task(pid, WaitStatus::signaled(sig::SIGKILL));
            c.sys.reap(pid);
            return Return(e);
        }
    }
    c.sys.cpu().wake(pid);
    if vfork {
        c.block(Wait::Vfork(pid), u64::from(pid))
    } else {
        Return(i64::from(pid))
    }
}

/// A thread of the caller's process (see [`clone`]).
fn new_thread(c: &mut Call, flags: u64, stack: u64, ptid: u64, tls: u64, ctid: u64) -> Action {
    let Some(tid) = c.sys.alloc_pid() else {
        return Return(-EAGAIN);
    };
    let ctx = child_registers(c.frame, flags, stack, tls);
    let tgid = c.sys.leader(c.pid);
    let ppid = c.sys.task(tgid).ppid;
    let parent = c.task();
    let mut signals = parent.signals.clone();
    // A thread starts without an alternate signal stack (as Linux's `CLONE_VM` without vfork).
    signals.altstack = None;
    let fds = crate::files::FdTable::new();
    let child = new_task(
        parent,
        [tid, tgid, ppid],
        ctx,
        Memory::Group(tgid),
        fds,
        signals,
        (0, 0, 0),
        flags,
        ctid,
    );
    c.sys.tasks.insert(tid, child);
    // The thread's memory is the caller's, the active one.
    for (flag, at) in [(CLONE_CHILD_SETTID, ctid), (CLONE_PARENT_SETTID, ptid)] {
        if flags & flag != 0 {
            if let Err(e) = uaccess::write(at, &tid.to_le_bytes()) {
                c.sys.end_thread(tid);
                return Return(e);
            }
        }
    }
    c.sys.cpu().wake(tid);
    Return(i64::from(tid))
}

/// Reads a NUL-terminated string of at most `max` bytes.
fn read_cstr(va: u64, max: usize) -> Result<String, i64> {
    let mut out = Vec::new();
    let mut at = va;
    loop {
        // Up to the end of the page, so no read crosses into an unmapped page needlessly.
        let n = (PAGE_SIZE - at % PAGE_SIZE) as usize;
        let chunk = uaccess::read(at, n)?;
        if let Some(end) = chunk.iter().position(|&b| b == 0) {
            out.extend_from_slice(&chunk[..end]);
            break;
        }
        out.extend_from_slice(&chunk);
        if out.len() > max {
            return Err(-ENAMETOOLONG);
        }
        at += n as u64;
    }
    if out.len() > max {
        return Err(-ENAMETOOLONG);
    }
    String::from_utf8(out).map_err(|_| -ENOENT)
}

/// Reads a NULL-terminated array of string pointers (`argv`, `envp`); a null array is empty.
fn read_strings(va: u64, budget: &mut usize) -> Result<Vec<String>, i64> {
    const MAX_STRINGS: usize = 0x7fff_ffff;
    let mut v = Vec::new();
    if va == 0 {
        return Ok(v);
    }
    for i in 0..MAX_STRINGS as u64 {
        let p = uaccess::read_u64(va + i * 8)?;
        if p == 0 {
            break;
        }
        let s = read_cstr(p, 128 << 10).map_err(|e| if e == -ENAMETOOLONG { -E2BIG } else { e })?;
        *budget = budget.checked_sub(s.len() + 1 + 8).ok_or(-E2BIG)?;
        v.push(s);
    }
    Ok(v)
}

/// `execve(path, argv, envp)`: the program named by the path's last component in the image's
/// archive replaces the caller's memory; close-on-exec descriptors close, handled signals
/// return to their default action. On failure the caller goes on unchanged.
pub fn execve(c: &mut Call, a: &[u64; 6]) -> Action {
    let path = match read_cstr(a[0], 4095) {
        Ok(p) => p,
        Err(e) => return Return(e),
    };
    // Linux's limit on arguments and environment: a quarter of the 8 MiB stack.
    let mut budget = (super::super::STACK_SIZE / 4) as usize;
    let argv = match read_strings(a[1], &mut budget) {
        Ok(v) => v,
        Err(e) => return Return(e),
    };
    let envp = match read_strings(a[2], &mut budget) {
        Ok(v) => v,
        Err(e) => return Return(e),
    };
    if path.is_empty() {
        return Return(-ENOENT);
    }
    let name = path.rsplit('/').next().unwrap_or(&path);
    let Some(image) = super::super::program(name) else {
        return Return(-ENOENT);
    };
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let envp: Vec<&str> = envp.iter().map(String::as_str).collect();
    let (process, start) = match super::super::load_image(image, &argv, &envp) {
        Ok(v) => v,
        Err(ExecError::Elf(_)) => return Return(-ENOEXEC),
        Err(ExecError::Stack(_)) => return Return(-E2BIG),
        Err(ExecError::NoEntropy) => return Return(-EAGAIN),
        Err(_) => return Return(-ENOMEM),
    };
    // The other threads of the process end first (Linux's `de_thread`); a thread other than
    // the leader continues as the leader, with the process's pid.
    let pid = c.sys.leader(c.pid);
    for tid in c.sys.followers(pid) {
        if tid != c.pid {
            c.sys.end_thread(tid);
        }
    }
    if c.pid != pid {
        let me = c.task();
        let (mask, pending, info) = (me.signals.mask, me.signals.pending, me.signals.info);
        let l = c.sys.task(pid);
        l.signals.mask = mask;
        l.signals.pending = pending;
        l.signals.info = info;
        l.state = State::Runnable;
    }
    let old = core::mem::replace(&mut c.sys.task(pid).memory, Memory::Own(Box::new(process)));
    match old {
        Memory::Own(p) => {
            crate::process::deactivate_if(&p);
            p.exit();
        }
        Memory::Parent(parent) => c.sys.wake(parent),
        Memory::Group(_) => unreachable!("a group leader has its own memory"),
    }
    let t = c.sys.task(pid);
    let closed = t.fds.close_on_exec();
    t.signals.reset_for_exec();
    t.brk_start = start.brk;
    t.brk = start.brk;
    t.brk_limit = start.brk + super::super::BRK_LIMIT;
    t.clear_child_tid = 0;
    t.restart = None;
    t.name = String::from(name);
    arch::fpu::restore(&arch::fpu::FpState::new());
    super::files::release(c, closed);
    if c.pid != pid {
        // The caller's thread ends; the leader runs the new program.
        let l = c.sys.task(pid);
        start.enter(&mut l.ctx);
        l.fp = arch::fpu::FpState::new();
        let me = c.pid;
        c.sys.end_thread(me);
        c.sys.cpu().remove(pid);
        c.sys.cpu().wake(pid);
        return Action::Replaced;
    }
    start.enter(c.frame);
    c.sys.activate(pid);
    Action::Replaced
}

/// `wait4(pid, status, options, rusage)`: reaps a dead child (`pid` > 0: that one; -1, 0 or
/// below: any, as every process is in one group), waiting for one unless `WNOHANG`.
pub fn wait4(c: &mut Call, a: &[u64; 6]) -> Action {
    const WNOHANG: u64 = 1;
    const WUNTRACED: u64 = 2;
    const WCONTINUED: u64 = 8;
    const WALL: u64 = 0x4000_0000;
    const WCLONE: u64 = 0x8000_0000;
    const WNOTHREAD: u64 = 0x2000_0000;
    let (target, status, options, rusage) = (a[0] as i32, a[1], a[2], a[3]);
    if options & !(WNOHANG | WUNTRACED | WCONTINUED | WALL | WCLONE | WNOTHREAD) != 0 {
        return Return(-EINVAL);
    }
    // Any thread of a process waits for the process's children.
    let me = c.sys.leader(c.pid);
    let mine = |t: &Task| t.is_leader() && t.ppid == me && (target <= 0 || t.pid == target as Pid);
    let mut any = false;
    let mut zombie = None;
    for t in c.sys.tasks.values() {
        if mine(t) {
            any = true;
            if let State::Zombie(s) = t.state {
                zombie = Some((t.pid, s));
                break;
            }
        }
    }
    let Some((pid, s)) = zombie else {
        return if !any {
            Return(-ECHILD)
        } else if options & WNOHANG != 0 {
            Return(0)
        } else {
            c.block(Wait::Child, 0)
        };
    };
    if status != 0 {
        if let Err(e) = uaccess::write(status, &s.0.to_le_bytes()) {
            return Return(e);
        }
    }
    if rusage != 0 {
        if let Err(e) = uaccess::write(rusage, &[0u8; 144]) {
            return Return(e);
        }
    }
    c.sys.reap(pid);
    Return(i64::from(pid))
}

/// `kill`, `tkill`, `tgkill`: the signal is posted (see `user::deliver`), with the sender's pid
/// in its `siginfo_t` (`SI_USER`, or `SI_TKILL` for the thread calls). `kill` targets
/// processes (a thread of each that does not block the signal takes it); `tkill` and `tgkill`
/// one thread.
pub fn kill(c: &mut Call, a: &[u64; 6]) -> Action {
    let me = c.sys.leader(c.pid);
    let (targets, signal): (Vec<Pid>, u64) = match c.nr {
        super::KILL => {
            let pid = a[0] as i32;
            let processes = c.sys.tasks.values().filter(|t| t.is_leader());
            let t = if pid > 0 {
                let l = c.sys.leader(pid as Pid);
                Vec::from([l])
            } else if pid == 0 || pid == -(INIT as i32) {
                processes.map(|t| t.pid).collect()
            } else if pid == -1 {
                processes
                    .map(|t| t.pid)
                    .filter(|&p| p != INIT && p != me)
                    .collect()
            } else {
                Vec::new()
            };
            (t, a[1])
        }
        super::TKILL => (Vec::from([a[0] as Pid]), a[1]),
        _ => {
            if (a[0] as i64) <= 0 || (a[1] as i64) <= 0 {
                return Return(-EINVAL);
            }
            let tid = a[1] as Pid;
            if c.sys.tasks.get(tid).is_none_or(|t| u64::from(t.tgid) != a[0]) {
                return Return(-ESRCH);
            }
            (Vec::from([tid]), a[2])
        }
    };
    let group = c.nr == super::KILL;
    let targets: Vec<Pid> = targets.into_iter().filter(|&p| c.sys.tasks.contains(p)).collect();
    if targets.is_empty() {
        return Return(-ESRCH);
    }
    if signal > sig::NSIG {
        return Return(-EINVAL);
    }
    if signal == 0 {
        return Return(0);
    }
    let info = SigInfo {
        signo: signal as u8,
        code: if group { SI_USER } else { SI_TKILL },
        pid: me,
        ..SigInfo::default()
    };
    for pid in targets {
        let thread = if group {
            c.sys.signal_target(pid, signal as u8)
        } else {
            Some(pid)
        };
        if let Some(t) = thread {
            c.sys.post_signal(t, info);
        }
    }
    Return(0)
}

/// The registers a `clone` child starts with: the caller's, with `x0` = 0, the given stack
/// (when not 0) and, with `CLONE_SETTLS`, the given thread pointer.
fn child_registers(
    frame: &arch::exception::TrapFrame,
    flags: u64,
    stack: u64,
    tls: u64,
) -> arch::exception::TrapFrame {
    let mut ctx = frame.clone();
    ctx.x[0] = 0;
    if stack != 0 {
        ctx.sp = stack;
    }
    if flags & CLONE_SETTLS != 0 {
        ctx.tpidr = tls;
    }
    ctx
}

/// A task made by `clone` from `parent`: `[pid, tgid, ppid]`, runnable, without pending signals
/// (they are the parent's alone), with `clear_child_tid` set from `CLONE_CHILD_CLEARTID` and a
/// copy of the caller's FP/SIMD registers (the CPU's: the caller is running). Inlined into both
/// callers, so that the task is built in its box rather than moved there.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn new_task(
    parent: &Task,
    [pid, tgid, ppid]: [Pid; 3],
    ctx: arch::exception::TrapFrame,
    memory: Memory,
    fds: crate::files::FdTable<super::super::task::File>,
    mut signals: super::super::task::Signals,
    (brk_start, brk, brk_limit): (u64, u64, u64),
    flags: u64,
    ctid: u64,
) -> Box<Task> {
    signals.pending = 0;
    signals.saved_mask = None;
    let mut task = Box::new(Task {
        pid,
        tgid,
        ppid,
        ctx,
        fp: arch::fpu::FpState::new(),
        memory,
        state: State::Runnable,
        fds,
        signals,
        brk_start,
        brk,
        brk_limit,
        clear_child_tid: if flags & CLONE_CHILD_CLEARTID != 0 {
            ctid
        } else {
            0
        },
        folio_size: parent.folio_size,
        restart: None,
        fault_address: None,
        name: parent.name.clone(),
    });
    arch::fpu::save(&mut task.fp);
    task
}
