//! Signal dispositions, the mask and the alternate stack. Handlers are recorded, not run: only
//! default actions take effect (see `process::kill`).

use super::super::errno::*;
use super::super::task::sig::{NSIG, SIGKILL, SIGSTOP};
use super::super::uaccess;
use super::{Action, Call, Return};

pub fn sigaltstack(c: &mut Call, a: &[u64; 6]) -> Action {
    const SS_DISABLE: u64 = 2;
    const MINSIGSTKSZ: u64 = 5120;
    let (ss, old) = (a[0], a[1]);
    let s = &mut c.task().signals;
    if old != 0 {
        let (sp, flags, size) = s.altstack.unwrap_or((0, SS_DISABLE, 0));
        if let Err(e) = uaccess::write_u64s(old, &[sp, flags, size]) {
            return Return(e);
        }
    }
    if ss != 0 {
        let b = match uaccess::read(ss, 24) {
            Ok(b) => b,
            Err(e) => return Return(e),
        };
        let w = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8"));
        let (sp, flags, size) = (w(0), w(8) & 0xffff_ffff, w(16));
        if flags & !SS_DISABLE != 0 {
            return Return(-EINVAL);
        }
        if flags & SS_DISABLE != 0 {
            s.altstack = None;
        } else if size < MINSIGSTKSZ {
            return Return(-ENOMEM);
        } else {
            s.altstack = Some((sp, 0, size));
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
    let s = &mut c.task().signals;
    if old != 0 {
        if let Err(e) = uaccess::write_u64s(old, &s.actions[i]) {
            return Return(e);
        }
    }
    if act != 0 {
        match uaccess::read(act, 32) {
            Ok(b) => {
                for (k, w) in b.chunks(8).enumerate() {
                    s.actions[i][k] = u64::from_le_bytes(w.try_into().expect("8"));
                }
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
        // SIGKILL and SIGSTOP cannot be blocked.
        let unblockable = (1 << (SIGKILL - 1)) | (1 << (SIGSTOP - 1));
        s.mask = match how {
            SIG_BLOCK => s.mask | v,
            SIG_UNBLOCK => s.mask & !v,
            _ => v,
        } & !unblockable;
    }
    Return(0)
}
