//! The processes of a run and the switch between them.
//!
//! A process's registers live in its [`Task`] while it does not run. Everything a running process
//! raises (system calls, faults, the timer tick) arrives in an exception handler on the
//! exception stack with its registers in the trap frame; switching to another process copies the
//! frame out to the current task, copies the next task's registers in, and installs the next
//! address space in TTBR0, so the exception return enters the other process. There is one kernel
//! stack per CPU, not per process: a system call that must wait records what it waits for, and
//! re-executes when woken (a call keeps its progress in [`Restart`]).
//!
//! The task table is shared by all CPUs; each CPU has its own [`Cpu`] run queue (one CPU for now).

use super::task::{sig, Memory, Pid, State, Task, Wait, WaitStatus, INIT};
use super::Exit;
use crate::process::{self, Process};
use crate::runtime::{self, TimerSlot};
use crate::sched::{Cpu, PidTable};
use crate::signals::{SigInfo, CLD_EXITED, CLD_KILLED};
use alloc::boxed::Box;
use alloc::vec::Vec;
use arch::exception::{Disposition, TrapFrame};
use spin::Mutex;

/// The processes of the run in progress.
pub struct System {
    pub tasks: PidTable<Box<Task>>,
    /// Per-CPU run queues, indexed by `arch::cpu::index`.
    pub cpus: [Cpu<Pid>; arch::cpu::MAX_CPUS],
    /// Log every system call.
    pub strace: bool,
    /// At most this many processes (zombies included); `fork` answers `EAGAIN` past it.
    pub max_tasks: usize,
    /// The time slice.
    pub quantum_ns: u64,
    /// How the run ended, once it has.
    pub end: Option<Exit>,
    /// Calls answered `ENOSYS`.
    pub unknown_calls: u64,
    /// The arrival number of the next futex waiter.
    pub futex_seq: u64,
}

/// The run in progress (one at a time).
pub static SYSTEM: Mutex<Option<System>> = Mutex::new(None);

/// Abandon code that ends a run (see [`System::end`]).
pub const CODE_END: u64 = 0xe817;

/// This CPU's number.
fn cpu_id() -> usize {
    arch::cpu::index()
}

impl System {
    /// A system whose first process is `init`.
    pub fn new(mut init: Box<Task>, strace: bool, max_tasks: usize, quantum_ns: u64) -> System {
        init.pid = INIT;
        init.tgid = INIT;
        init.ppid = 0;
        let mut tasks = PidTable::new(max_tasks, INIT);
        let pid = tasks.alloc_pid().expect("an empty table has room");
        debug_assert_eq!(pid, INIT);
        tasks.insert(INIT, init);
        let mut cpus: [Cpu<Pid>; arch::cpu::MAX_CPUS] = core::array::from_fn(|_| Cpu::new());
        let cpu = &mut cpus[cpu_id()];
        cpu.wake(INIT);
        cpu.resume();
        System {
            tasks,
            cpus,
            strace,
            max_tasks,
            quantum_ns,
            end: None,
            unknown_calls: 0,
            futex_seq: 0,
        }
    }

    /// This CPU's run queue.
    pub fn cpu(&mut self) -> &mut Cpu<Pid> {
        &mut self.cpus[cpu_id()]
    }

    /// The process this CPU runs.
    pub fn current(&self) -> Pid {
        self.cpus[cpu_id()].current().expect("a process runs")
    }

    pub fn task(&mut self, pid: Pid) -> &mut Task {
        self.tasks.get_mut(pid).expect("live pid")
    }

    /// A pid for a new process; `None` at the process limit.
    pub fn alloc_pid(&mut self) -> Option<Pid> {
        if self.tasks.len() >= self.max_tasks {
            return None;
        }
        self.tasks.alloc_pid()
    }

    /// Makes `pid` runnable and queues it.
    pub fn wake(&mut self, pid: Pid) {
        if let Some(t) = self.tasks.get_mut(pid) {
            if matches!(t.state, State::Blocked(_)) {
                t.state = State::Runnable;
                self.cpu().wake(pid);
            }
        }
    }

    /// Wakes every process blocked for a reason `f` accepts.
    pub fn wake_where(&mut self, f: impl Fn(Wait) -> bool) {
        let pids: Vec<Pid> = self
            .tasks
            .values()
            .filter(|t| matches!(t.state, State::Blocked(w) if f(w)))
            .map(|t| t.pid)
            .collect();
        for pid in pids {
            self.wake(pid);
        }
    }

    /// Wakes the processes waiting on the pipe `id` (and any `ppoll`).
    pub fn wake_pipe(&mut self, id: usize) {
        self.wake_where(|w| {
            matches!(w, Wait::PipeRead(p) | Wait::PipeWrite(p) if p == id) || matches!(w, Wait::Poll(_))
        });
    }

    /// Wakes every process waiting on any pipe (descriptors were closed: some end may be gone).
    pub fn wake_all_pipes(&mut self) {
        self.wake_where(|w| matches!(w, Wait::PipeRead(_) | Wait::PipeWrite(_) | Wait::Poll(_)));
    }

    /// The process whose memory `pid` runs in (itself, its `vfork` parent, or its group
    /// leader).
    pub fn memory_owner(&self, pid: Pid) -> Pid {
        match self.tasks.get(pid).expect("live pid").memory {
            Memory::Own(_) => pid,
            Memory::Parent(p) | Memory::Group(p) => self.memory_owner(p),
        }
    }

    /// The leader of `pid`'s thread group (the process `pid` belongs to).
    pub fn leader(&self, pid: Pid) -> Pid {
        self.tasks.get(pid).map_or(pid, |t| t.tgid)
    }

    /// The descriptor table of `pid`'s process (its group leader's, shared by its threads).
    pub fn fds(&mut self, pid: Pid) -> &mut crate::files::FdTable<super::task::File> {
        let l = self.leader(pid);
        &mut self.task(l).fds
    }

    /// The threads of group `tgid` other than its leader.
    pub fn followers(&self, tgid: Pid) -> Vec<Pid> {
        self.tasks
            .values()
            .filter(|t| t.tgid == tgid && !t.is_leader())
            .map(|t| t.pid)
            .collect()
    }

    /// The thread of group `tgid` a signal sent to the process goes to: the leader if it runs
    /// and does not block it, else another thread that does not, else any live one (where it
    /// stays pending). `None` once every thread has ended.
    pub fn signal_target(&self, tgid: Pid, signal: u8) -> Option<Pid> {
        let live = || self.tasks.values().filter(|t| t.tgid == tgid && t.is_live());
        let leader = self.tasks.get(tgid).filter(|t| t.is_live());
        leader
            .filter(|t| !t.signals.blocked(signal))
            .or_else(|| live().find(|t| !t.signals.blocked(signal)))
            .or(leader)
            .or_else(|| live().next())
            .map(|t| t.pid)
    }

    /// Sets `signal`'s action for every thread of `pid`'s group (dispositions are per process).
    pub fn set_action(&mut self, pid: Pid, signal: u8, action: [u64; 4]) {
        let tgid = self.leader(pid);
        for t in self.tasks.values_mut().filter(|t| t.tgid == tgid) {
            t.signals.actions[usize::from(signal - 1)] = action;
            // A signal now ignored is no longer pending (as on Linux), blocked or not.
            if t.signals.ignores(signal) {
                t.signals.pending &= !crate::signals::bit(signal);
            }
        }
    }

    /// Wakes up to `n` threads waiting on the futex `(owner, addr)` whose bitset meets
    /// `bitset`, in arrival order; their calls answer 0. Returns how many.
    pub fn futex_wake(&mut self, owner: Pid, addr: u64, bitset: u32, n: usize) -> usize {
        let picked = self.futex_pick(owner, addr, bitset, n);
        for &tid in &picked {
            let t = self.task(tid);
            if let Some(r) = t.restart.as_mut() {
                r.data |= crate::futex::WOKEN;
            }
            self.wake(tid);
        }
        picked.len()
    }

    /// Moves up to `n` waiters of the futex `(owner, from)` to wait on `to` instead, in
    /// arrival order. Returns how many.
    pub fn futex_requeue(&mut self, owner: Pid, from: u64, to: u64, n: usize) -> usize {
        let picked = self.futex_pick(owner, from, crate::futex::MATCH_ANY, n);
        for &tid in &picked {
            self.futex_seq += 1;
            let seq = self.futex_seq;
            if let State::Blocked(Wait::Futex { addr, seq: s, .. }) = &mut self.task(tid).state {
                *addr = to;
                *s = seq;
            }
        }
        picked.len()
    }

    fn futex_pick(&self, owner: Pid, addr: u64, bitset: u32, n: usize) -> Vec<Pid> {
        use crate::futex::{pick, Waiter};
        let waiters: Vec<Waiter> = self
            .tasks
            .values()
            .filter_map(|t| match t.state {
                State::Blocked(Wait::Futex {
                    owner,
                    addr,
                    bitset,
                    seq,
                    ..
                }) => Some(Waiter {
                    tid: t.pid,
                    key: (owner, addr),
                    bitset,
                    seq,
                }),
                _ => None,
            })
            .collect();
        pick(&waiters, (owner, addr), bitset, n)
    }

    /// The address space `pid` runs in.
    pub fn process(&mut self, pid: Pid) -> &mut Process {
        let owner = self.memory_owner(pid);
        match &mut self.task(owner).memory {
            Memory::Own(p) => p,
            Memory::Parent(_) | Memory::Group(_) => unreachable!("the owner owns"),
        }
    }

    /// Installs `pid`'s address space for this CPU (TTBR0, and the space faults go to).
    pub fn activate(&mut self, pid: Pid) {
        self.process(pid).activate();
    }

    /// Ends the process `pid` belongs to (every thread of its group) with `status`: see
    /// [`System::exit_leader`].
    pub fn exit_task(&mut self, pid: Pid, status: WaitStatus) {
        let Some(tgid) = self.tasks.get(pid).map(|t| t.tgid) else {
            return;
        };
        for tid in self.followers(tgid) {
            self.end_thread(tid);
        }
        self.exit_leader(tgid, status);
    }

    /// `pid` ends alone (`exit`): `clear_child_tid`, if set, gets 0 and a futex wake-up (how
    /// `pthread_join` learns of it). The last thread of a group ends the process with its
    /// status (the leader's, if the leader ended first, as Linux reports it); a leader that
    /// ends before other threads keeps the group's memory and descriptors until then.
    pub fn exit_thread(&mut self, pid: Pid, status: WaitStatus) {
        let t = self.task(pid);
        let (tgid, ctid) = (t.tgid, t.clear_child_tid);
        let others = self
            .tasks
            .values()
            .any(|t| t.tgid == tgid && t.pid != pid && t.is_live());
        if !others {
            let status = match self.tasks.get(tgid).map(|t| t.state) {
                Some(State::Exited(s)) => s,
                _ => status,
            };
            self.exit_task(pid, status);
            return;
        }
        // The caller's memory is the active one.
        if ctid != 0 && super::uaccess::write(ctid, &0u32.to_le_bytes()).is_ok() {
            let owner = self.memory_owner(pid);
            self.futex_wake(owner, ctid, crate::futex::MATCH_ANY, 1);
        }
        if pid == tgid {
            self.task(pid).state = State::Exited(status);
            self.cpu().remove(pid);
        } else {
            self.end_thread(pid);
        }
    }

    /// Removes the thread `tid` (not a group leader) from the run queue and the table. A
    /// `vfork` child it started now counts on the leader's memory.
    pub fn end_thread(&mut self, tid: Pid) {
        let tgid = self.leader(tid);
        self.cpu().remove(tid);
        self.tasks.remove(tid);
        for t in self.tasks.values_mut() {
            if matches!(t.memory, Memory::Parent(p) if p == tid) {
                t.memory = Memory::Parent(tgid);
            }
        }
    }

    /// Ends the group leader `pid` (its other threads are gone) with `status`: its descriptors
    /// close, its memory returns (or passes to a `vfork` child still using it), its children
    /// pass to init, and it stays a zombie for its parent. The end of init ends the run.
    fn exit_leader(&mut self, pid: Pid, status: WaitStatus) {
        let Some(task) = self.tasks.get_mut(pid) else {
            return;
        };
        if task.is_zombie() {
            return;
        }
        task.state = State::Zombie(status);
        let files = task.fds.close_all();
        let ppid = task.ppid;
        let memory = core::mem::replace(&mut task.memory, Memory::Parent(0));
        self.cpu().remove(pid);
        drop(files);
        self.wake_all_pipes();
        match memory {
            Memory::Own(p) => {
                // A vfork child still running in this memory takes it over.
                let heir = self
                    .tasks
                    .values()
                    .find(|t| matches!(t.memory, Memory::Parent(o) if o == pid))
                    .map(|t| t.pid);
                match heir {
                    Some(h) => self.task(h).memory = Memory::Own(p),
                    None => {
                        process::deactivate_if(&p);
                        p.exit();
                    }
                }
            }
            // The vfork parent may go on.
            Memory::Parent(parent) => self.wake(parent),
            Memory::Group(_) => unreachable!("a group leader has its own memory"),
        }
        if pid == INIT {
            self.end_run(status);
            return;
        }
        // Orphans pass to init, which may be waiting for them.
        let mut orphans = false;
        for t in self.tasks.values_mut() {
            if t.ppid == pid {
                t.ppid = INIT;
                orphans = true;
            }
        }
        if orphans {
            self.wake_if_waiting_child(INIT);
        }
        // A parent that ignores SIGCHLD (or set SA_NOCLDWAIT) leaves no zombie to reap.
        if self.tasks.get(ppid).is_some_and(|p| p.signals.no_zombies()) {
            self.reap(pid);
        }
        // The parent's `wait4` is woken first: it is executed again (and finds the child) after
        // the SIGCHLD handler, rather than interrupted by it.
        self.wake_if_waiting_child(ppid);
        let (code, status) = match status.signal() {
            Some(s) => (CLD_KILLED, i32::from(s)),
            None => (CLD_EXITED, i32::from(status.code().unwrap_or(0))),
        };
        let Some(target) = self.signal_target(ppid, sig::SIGCHLD) else {
            return;
        };
        self.post_signal(
            target,
            SigInfo {
                signo: sig::SIGCHLD,
                code,
                pid,
                status,
                ..SigInfo::default()
            },
        );
    }

    /// Wakes the threads of process `tgid` waiting in `wait4`.
    fn wake_if_waiting_child(&mut self, tgid: Pid) {
        self.wake_where_in(tgid, |w| w == Wait::Child);
    }

    fn wake_where_in(&mut self, tgid: Pid, f: impl Fn(Wait) -> bool) {
        let pids: Vec<Pid> = self
            .tasks
            .values()
            .filter(|t| t.tgid == tgid && matches!(t.state, State::Blocked(w) if f(w)))
            .map(|t| t.pid)
            .collect();
        for pid in pids {
            self.wake(pid);
        }
    }

    /// The end of init: every other process is killed and the run ends with init's status.
    fn end_run(&mut self, status: WaitStatus) {
        let others: Vec<Pid> = self.tasks.pids().filter(|&p| p != INIT).collect();
        for pid in others {
            self.exit_task(pid, WaitStatus::signaled(super::task::sig::SIGKILL));
        }
        let task = self.tasks.get(INIT).expect("init");
        self.end.get_or_insert(match status.signal() {
            Some(signal) => Exit::Signal {
                signal,
                address: task.fault_address.unwrap_or(0),
            },
            None => Exit::Code(status.code().unwrap_or(0)),
        });
        self.cpu().clear();
    }

    /// Ends the run now with `exit` (power-off): every process is killed.
    pub fn end_now(&mut self, exit: Exit) {
        self.end = Some(exit);
        self.exit_task(INIT, WaitStatus::signaled(super::task::sig::SIGKILL));
    }

    /// Removes a reaped zombie.
    pub fn reap(&mut self, pid: Pid) {
        self.tasks.remove(pid);
    }

    /// The current process stops running (it blocked, exited or was preempted, its registers in
    /// `frame`); the next ready process is loaded into `frame`. Idles until one is ready; ends
    /// the run with [`CODE_END`] when init has ended.
    pub fn switch(&mut self, frame: &mut TrapFrame, from: Pid) -> Disposition {
        let mut from = from;
        let mut keep = self.tasks.get(from).is_some_and(|t| !t.is_zombie());
        if keep {
            self.task(from).ctx.clone_from(frame);
        }
        loop {
            if self.end.is_some() {
                process::deactivate();
                return Disposition::Abandon(CODE_END);
            }
            if let Some(next) = self.cpu().resume() {
                if next != from || !keep {
                    if keep {
                        arch::fpu::save(&mut self.task(from).fp);
                    }
                    frame.clone_from(&self.task(next).ctx);
                    arch::fpu::restore(&self.task(next).fp);
                }
                self.activate(next);
                let deliver = self.task(next).signals.deliverable() && !self.at_restart(next, frame);
                if deliver && !self.deliver(next, frame) {
                    // It died of a signal's default action: someone else runs.
                    from = next;
                    keep = false;
                    continue;
                }
                self.arm_timer();
                return Disposition::Resume;
            }
            if let Err(d) = self.idle() {
                return d;
            }
        }
    }

    /// The tick: the current process's slice is over if another is ready. Wakes sleepers whose
    /// time has come.
    pub fn tick(&mut self, frame: &mut TrapFrame) -> Disposition {
        let now = arch::timer::now_ns();
        self.wake_due(now);
        if !self.cpu().others_ready() {
            self.arm_timer();
            return Disposition::Resume;
        }
        let from = self.current();
        self.cpu().preempt();
        self.switch(frame, from)
    }

    fn wake_due(&mut self, now: u64) {
        self.wake_where(|w| w.deadline().is_some_and(|t| t <= now));
        if self
            .tasks
            .values()
            .any(|t| matches!(t.state, State::Blocked(Wait::Console | Wait::Poll(_))))
            && crate::console::input_ready()
        {
            self.wake_where(|w| matches!(w, Wait::Console | Wait::Poll(_)));
        }
    }

    /// The next time something must happen: a sleeper's deadline, the end of the slice when
    /// others are ready, a console poll while someone waits for input.
    fn next_deadline(&mut self) -> Option<u64> {
        let now = arch::timer::now_ns();
        let mut next = self
            .tasks
            .values()
            .filter_map(|t| match t.state {
                State::Blocked(w) => w.deadline(),
                _ => None,
            })
            .min();
        if self.cpu().others_ready() {
            next = Some(next.map_or(now + self.quantum_ns, |n| n.min(now + self.quantum_ns)));
        }
        if self
            .tasks
            .values()
            .any(|t| matches!(t.state, State::Blocked(Wait::Console | Wait::Poll(_))))
        {
            const CONSOLE_POLL_NS: u64 = 1_000_000;
            next = Some(next.map_or(now + CONSOLE_POLL_NS, |n| n.min(now + CONSOLE_POLL_NS)));
        }
        next
    }

    fn arm_timer(&mut self) {
        match self.next_deadline() {
            Some(t) => runtime::timer_arm(TimerSlot::Scheduler, t.saturating_sub(arch::timer::now_ns())),
            None => runtime::timer_cancel(TimerSlot::Scheduler),
        }
    }

    /// Nothing is ready: wait for an interrupt (with interrupts masked, as in any exception
    /// handler: `WFI` still wakes), then wake whoever's time has come. A watchdog that fires
    /// meanwhile ends the wait with its disposition.
    fn idle(&mut self) -> Result<(), Disposition> {
        let now = arch::timer::now_ns();
        self.wake_due(now);
        if self.cpu().others_ready() {
            return Ok(());
        }
        process::deactivate();
        self.arm_timer();
        arch::cpu::wait_for_interrupt();
        if let Some(d) = runtime::poll_timers() {
            return Err(d);
        }
        self.wake_due(arch::timer::now_ns());
        Ok(())
    }
}
