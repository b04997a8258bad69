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

    /// The process whose memory `pid` runs in (itself, or its `vfork` parent).
    pub fn memory_owner(&self, pid: Pid) -> Pid {
        match self.tasks.get(pid).expect("live pid").memory {
            Memory::Own(_) => pid,
            Memory::Parent(p) => self.memory_owner(p),
        }
    }

    /// The address space `pid` runs in.
    pub fn process(&mut self, pid: Pid) -> &mut Process {
        let owner = self.memory_owner(pid);
        match &mut self.task(owner).memory {
            Memory::Own(p) => p,
            Memory::Parent(_) => unreachable!("the owner owns"),
        }
    }

    /// Installs `pid`'s address space for this CPU (TTBR0, and the space faults go to).
    pub fn activate(&mut self, pid: Pid) {
        self.process(pid).activate();
    }

    /// Ends `pid` with `status`: its descriptors close, its memory returns (or passes to a
    /// `vfork` child still using it), its children pass to init, and it stays a zombie for its
    /// parent. The end of init ends the run.
    pub fn exit_task(&mut self, pid: Pid, status: WaitStatus) {
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
        self.post_signal(
            ppid,
            SigInfo {
                signo: sig::SIGCHLD,
                code,
                pid,
                status,
                ..SigInfo::default()
            },
        );
    }

    fn wake_if_waiting_child(&mut self, pid: Pid) {
        if self
            .tasks
            .get(pid)
            .is_some_and(|t| t.state == State::Blocked(Wait::Child))
        {
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
        self.wake_where(|w| match w {
            Wait::Sleep(t) | Wait::Poll(Some(t)) => t <= now,
            _ => false,
        });
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
                State::Blocked(Wait::Sleep(d) | Wait::Poll(Some(d))) => Some(d),
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
