//! Signals: posting one to a process, and delivering pending ones on the way back to EL0.
//!
//! * [`System::post_signal`]: a signal sent to a process (`kill`, a child's exit, a broken
//!   pipe). Blocked, it stays pending. Unblocked: dropped if ignored; a default fatal action
//!   ends the process at once (the caller's own death waits for its way out); a handler makes
//!   it pending and wakes a process waiting in a system call. The call is executed again, as
//!   after any wake-up: it completes if it can (a `wait4` whose child exited returns it), and
//!   would it wait again, it answers `-EINTR` or restarts after the handler instead
//!   (`Call::interrupted`).
//! * [`System::deliver`]: every return to EL0 with a pending unblocked signal (the system-call
//!   return checks `pending & !mask`; a switch checks the process it switches to): the
//!   lowest-numbered one is taken; ignored ones are dropped, a default fatal action ends the
//!   process, a handler gets Linux's `rt_sigframe` on the process's stack (or its alternate
//!   stack) and runs; `rt_sigreturn` reads the frame back. A running process's pending set
//!   changes only through its own system calls (one CPU: nothing else runs meanwhile), so the
//!   timer tick and resolved faults that resume the same process need no check. A process
//!   switched in to execute a woken call again runs that call first: its return delivers (so
//!   the handler runs after the call completes, as on Linux).
//! * [`System::deliver_fault`]: a fault the memory manager did not resolve, with the process's
//!   handler for it if it has one and does not block it (else the process dies, as Linux's
//!   `force_sig`).

use super::system::System;
use super::task::{sig, Pid, State, Wait, WaitStatus};
use super::{report_kill, uaccess};
use crate::signals::{self, bit, Context, SigInfo, SA_ONSTACK, SA_RESETHAND, SA_RESTORER};
use arch::exception::{TrapFrame, SPSR_EL0T};
use arch::fpu::FpState;

/// `MINSIGSTKSZ` on arm64.
pub const MINSIGSTKSZ: u64 = 5120;

impl System {
    /// Sends `info.signo` to the thread `pid` (see the module docs). A fatal default action
    /// ends its whole process.
    pub fn post_signal(&mut self, pid: Pid, info: SigInfo) {
        let s = info.signo;
        let current = self.cpu().current();
        let running = current == Some(pid);
        let Some(t) = self.tasks.get_mut(pid) else {
            return;
        };
        if !t.is_live() {
            return;
        }
        let tgid = t.tgid;
        let blocked = t.signals.blocked(s) && s != sig::SIGKILL;
        if !blocked {
            if t.signals.ignores(s) {
                return;
            }
            let fatal = s == sig::SIGKILL || t.signals.handler(s) == sig::SIG_DFL;
            if fatal && !running {
                // Another thread of the process runs now (the sender): it takes the signal
                // on its way out, which ends the process.
                let sibling = current.filter(|&c| self.tasks.get(c).is_some_and(|c| c.tgid == tgid));
                match sibling {
                    Some(c) => {
                        let c = self.task(c);
                        let s = if c.signals.blocked(s) { sig::SIGKILL } else { s };
                        c.signals.pending |= bit(s);
                        c.signals.info[usize::from(s - 1)] = SigInfo { signo: s, ..info };
                    }
                    None => self.exit_task(pid, WaitStatus::signaled(s)),
                }
                return;
            }
        }
        t.signals.pending |= bit(s);
        t.signals.info[usize::from(s - 1)] = info;
        if blocked || running {
            return;
        }
        // A waiting process wakes and executes its call again, which then answers `-EINTR` or
        // restarts (`Call::interrupted`).
        if matches!(t.state, State::Blocked(w) if !matches!(w, Wait::Vfork(_))) {
            self.wake(pid);
        }
    }

    /// Whether `pid`, whose registers are in `frame`, is about to execute again a call it
    /// waited in (its PC on the `SVC` the restart record names).
    pub fn at_restart(&mut self, pid: Pid, frame: &TrapFrame) -> bool {
        self.task(pid)
            .restart
            .is_some_and(|r| r.pc == frame.elr + 4 && r.sp == frame.sp)
    }

    /// Delivers `pid`'s pending unblocked signals; `frame` holds its registers, its address
    /// space is active and its FP/SIMD registers are the CPU's. Returns false if it died.
    pub fn deliver(&mut self, pid: Pid, frame: &mut TrapFrame) -> bool {
        loop {
            let s = &self.task(pid).signals;
            let Some(n) = signals::next_signal(s.pending, s.mask) else {
                break;
            };
            let t = self.task(pid);
            t.signals.pending &= !bit(n);
            let info = core::mem::take(&mut t.signals.info[usize::from(n - 1)]);
            // Stop signals count as ignored: there is no job control to stop for.
            if n != sig::SIGKILL && t.signals.ignores(n) {
                continue;
            }
            if n == sig::SIGKILL || t.signals.handler(n) == sig::SIG_DFL {
                self.die_of(pid, n, 0);
                return false;
            }
            if !self.run_handler(pid, frame, info, 0) {
                return false;
            }
        }
        // A `rt_sigsuspend` whose wait ended without a handler gets its mask back.
        let t = self.task(pid);
        if let Some(m) = t.signals.saved_mask.take() {
            t.signals.mask = m;
        }
        true
    }

    /// A fault of `pid` (registers in `frame`) that raises `info` (with `fault_address` for
    /// the frame's `sigcontext`): its handler runs if it has one and does not block the signal.
    /// Returns false if the process died.
    pub fn deliver_fault(
        &mut self,
        pid: Pid,
        frame: &mut TrapFrame,
        info: SigInfo,
        fault_address: u64,
    ) -> bool {
        let s = info.signo;
        let t = self.task(pid);
        let handled = s != sig::SIGKILL && !t.signals.blocked(s) && t.signals.handler(s) > sig::SIG_IGN;
        if !handled {
            t.fault_address = Some(info.addr.unwrap_or(0));
            report_kill(self.leader(pid), s, info.addr.unwrap_or(0));
            self.exit_task(pid, WaitStatus::signaled(s));
            return false;
        }
        self.run_handler(pid, frame, info, fault_address)
    }

    /// Ends `pid` by `signal` (its default action). Init's death is reported, as a shell
    /// would; another's is its parent's to see.
    pub fn die_of(&mut self, pid: Pid, signal: u8, address: u64) {
        if self.leader(pid) == super::task::INIT {
            report_kill(super::task::INIT, signal, address);
        }
        self.exit_task(pid, WaitStatus::signaled(signal));
    }

    /// Builds the frame of `info.signo`'s handler on `pid`'s stack and points `frame` at the
    /// handler, which returns to the action's `sa_restorer` or, without `SA_RESTORER`, to the
    /// trampoline page (`load::SIGRETURN_TRAMPOLINE`). A frame that cannot be written ends the
    /// process with `SIGSEGV`, as Linux's `force_sigsegv`.
    fn run_handler(&mut self, pid: Pid, frame: &mut TrapFrame, info: SigInfo, fault_address: u64) -> bool {
        let s = info.signo;
        let t = self.task(pid);
        let [handler, flags, restorer, sa_mask] = t.signals.actions[usize::from(s - 1)];
        let alt = t.signals.altstack;
        let on_alt = alt.is_some_and(|(base, _, size)| signals::on_stack(frame.sp, base, size));
        let stack = match alt {
            None => [0, signals::SS_DISABLE, 0],
            Some((base, _, size)) => [base, if on_alt { signals::SS_ONSTACK } else { 0 }, size],
        };
        let sp_top = match alt {
            Some((base, _, size)) if flags & SA_ONSTACK != 0 && !on_alt => base.wrapping_add(size),
            _ => frame.sp,
        };
        let mask = t.signals.saved_mask.take().unwrap_or(t.signals.mask);
        let mut fp = FpState::new();
        arch::fpu::save(&mut fp);
        let ctx = Context {
            regs: frame.x,
            sp: frame.sp,
            pc: frame.elr,
            pstate: frame.spsr,
            fault_address,
            mask,
            stack,
            fpsr: fp.fpsr as u32,
            fpcr: fp.fpcr as u32,
            vregs: fp.q,
        };
        let restorer = if flags & SA_RESTORER != 0 {
            restorer
        } else {
            super::load::SIGRETURN_TRAMPOLINE
        };
        let place = signals::frame_place(sp_top);
        let written =
            place.is_some_and(|(at, _)| uaccess::write(at, &signals::write_frame(&ctx, &info)).is_ok());
        let Some((at, record)) = place.filter(|_| written) else {
            self.die_of(pid, sig::SIGSEGV, 0);
            return false;
        };
        frame.x[0] = u64::from(s);
        frame.x[1] = at;
        frame.x[2] = at + signals::UCONTEXT as u64;
        frame.x[29] = record;
        frame.x[30] = restorer;
        frame.sp = at;
        frame.elr = handler;
        let t = self.task(pid);
        t.signals.mask = signals::handler_mask(t.signals.mask, s, flags, sa_mask);
        if flags & SA_RESETHAND != 0 {
            self.set_action(pid, s, [sig::SIG_DFL, 0, 0, 0]);
        }
        true
    }

    /// `rt_sigreturn`: the registers, FP/SIMD registers, mask and alternate stack saved in the
    /// frame at `frame.sp` come back. Returns false for a frame that cannot be read or that
    /// Linux would refuse.
    pub fn sigreturn(&mut self, pid: Pid, frame: &mut TrapFrame) -> bool {
        if frame.sp & 15 != 0 {
            return false;
        }
        let Ok(bytes) = uaccess::read(frame.sp, signals::FRAME_SIZE) else {
            return false;
        };
        let Ok(ctx) = signals::read_frame(&bytes) else {
            return false;
        };
        frame.x = ctx.regs;
        frame.sp = ctx.sp;
        frame.elr = ctx.pc;
        frame.spsr = SPSR_EL0T | ctx.pstate;
        arch::fpu::restore(&FpState {
            q: ctx.vregs,
            fpcr: u64::from(ctx.fpcr),
            fpsr: u64::from(ctx.fpsr),
        });
        let t = self.task(pid);
        t.signals.mask = ctx.mask;
        // `uc_stack` sets the alternate stack unless the program runs on it (errors ignored,
        // as Linux's `restore_altstack`).
        let on_alt = t
            .signals
            .altstack
            .is_some_and(|(base, _, size)| signals::on_stack(ctx.sp, base, size));
        let [base, flags, size] = ctx.stack;
        if !on_alt {
            if flags & signals::SS_DISABLE != 0 {
                t.signals.altstack = None;
            } else if flags & !signals::SS_ONSTACK == 0 && size >= MINSIGSTKSZ {
                t.signals.altstack = Some((base, 0, size));
            }
        }
        true
    }
}
