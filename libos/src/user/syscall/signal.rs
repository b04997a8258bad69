//! Signal dispositions, the mask, the alternate stack, waiting for a signal and returning from
//! a handler (delivery itself is `user::deliver`'s).

use super::super::deliver::MINSIGSTKSZ;
use super::super::errno::*;
use super::super::task::sig::{NSIG, SIGKILL, SIGSTOP};
use super::super::task::{Wait, WaitStatus};
use super::super::uaccess;
use super::{Action, Call, Return};
use crate::signals::{on_stack, sanitize_mask, SS_DISABLE, SS_ONSTACK};

pub fn sigaltstack(c: &mut Call, a: &[u64; 6]) -> Action {
    let (ss, old) = (a[0], a[1]);
    let sp = c.frame.sp;
    let s = &mut c.task().signals;
    let on_alt = s.altstack.is_some_and(|(base, _, size)| on_stack(sp, base, size));
    if old != 0 {
        let (base, flags, size) = s.altstack.unwrap_or((0, SS_DISABLE, 0));
        let flags = if on_alt { SS_ONSTACK } else { flags };
        if let Err(e) = uaccess::write_u64s(old, &[base, flags, size]) {
            return Return(e);
        }
    }
    if ss != 0 {
        let b = match uaccess::read(ss, 24) {
            Ok(b) => b,
            Err(e) => return Return(e),
        };
        let w = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8"));
        let (base, flags, size) = (w(0), w(8) & 0xffff_ffff, w(16));
        if on_alt {
            return Return(-EPERM);
        }
        // SS_ONSTACK is accepted and means enabled, as on Linux.
        if flags & !(SS_DISABLE | SS_ONSTACK) != 0 || flags == SS_DISABLE | SS_ONSTACK {
            return Return(-EINVAL);
        }
        if flags & SS_DISABLE != 0 {
            s.altstack = None;
        } else if size < MINSIGSTKSZ {
            return Return(-ENOMEM);
        } else {
            s.altstack = Some((base, 0, size));
        }
    }
    Return(0)
}

pub fn rt_sigaction(c: &mut Call, a: &[u64; 6]) -> Action {
    let (signal, act, old, size) = (a[0], a[1], a[2], a[3]);
    if size != 8 || signal == 0 || signal > NSIG {
        return Return(-EINVAL);
    }
    if act != 0 && (signal == u64::from(SIGKILL) || signal == u64::from(SIGSTOP)) {
        return Return(-EINVAL);
    }
    let i = (signal - 1) as usize;
    if old != 0 {
        let action = c.task().signals.actions[i];
        if let Err(e) = uaccess::write_u64s(old, &action) {
            return Return(e);
        }
    }
    if act != 0 {
        match uaccess::read(act, 32) {
            Ok(b) => {
                let mut action = [0u64; 4];
                for (k, w) in b.chunks(8).enumerate() {
                    action[k] = u64::from_le_bytes(w.try_into().expect("8"));
                }
                // Every thread of the process has the same dispositions.
                c.sys.set_action(c.pid, signal as u8, action);
            }
            Err(e) => return Return(e),
        }
    }
    Return(0)
}

pub fn rt_sigprocmask(c: &mut Call, a: &[u64; 6]) -> Action {
    const SIG_BLOCK: u64 = 0;
    const SIG_UNBLOCK: u64 = 1;
    const SIG_SETMASK: u64 = 2;
    let (how, set, old, size) = (a[0], a[1], a[2], a[3]);
    if size != 8 {
        return Return(-EINVAL);
    }
    let new = if set != 0 {
        if how > SIG_SETMASK {
            return Return(-EINVAL);
        }
        match uaccess::read_u64(set) {
            Ok(v) => Some(v),
            Err(e) => return Return(e),
        }
    } else {
        None
    };
    let s = &mut c.task().signals;
    if old != 0 {
        if let Err(e) = uaccess::write_u64s(old, &[s.mask]) {
            return Return(e);
        }
    }
    if let Some(v) = new {
        // SIGKILL and SIGSTOP cannot be blocked. Signals this unblocks are delivered on the way
        // out.
        s.mask = sanitize_mask(match how {
            SIG_BLOCK => s.mask | v,
            SIG_UNBLOCK => s.mask & !v,
            _ => v,
        });
    }
    Return(0)
}

/// `rt_sigpending(set, size)`: the pending signals the mask blocks.
pub fn rt_sigpending(c: &mut Call, a: &[u64; 6]) -> Action {
    if a[1] > 8 {
        return Return(-EINVAL);
    }
    let s = &c.task().signals;
    let set = (s.pending & s.mask).to_le_bytes();
    Return(uaccess::write(a[0], &set[..a[1] as usize]).map_or_else(|e| e, |_| 0))
}

/// `rt_sigsuspend(set, size)`: the mask becomes `set` until a signal with a handler arrives;
/// answers `-EINTR` as the handler runs, whose frame holds the old mask for `rt_sigreturn`.
pub fn rt_sigsuspend(c: &mut Call, a: &[u64; 6]) -> Action {
    if c.resumed().is_some() {
        // Woken without a signal for it: the wait goes on.
        return c.block(Wait::Signal, 1);
    }
    if a[1] != 8 {
        return Return(-EINVAL);
    }
    let set = match uaccess::read_u64(a[0]) {
        Ok(v) => v,
        Err(e) => return Return(e),
    };
    let s = &mut c.task().signals;
    s.saved_mask = Some(s.mask);
    s.mask = sanitize_mask(set);
    if s.deliverable() {
        return Return(-EINTR);
    }
    c.block(Wait::Signal, 1)
}

/// `rt_sigreturn()`: back from a handler to what its frame saved; a bad frame ends the
/// process with SIGSEGV. `x0` is the restored one.
pub fn rt_sigreturn(c: &mut Call, _a: &[u64; 6]) -> Action {
    if c.sys.sigreturn(c.pid, c.frame) {
        Action::Replaced
    } else {
        Action::Exit(WaitStatus::signaled(super::super::task::sig::SIGSEGV))
    }
}
