//! Time, sleep, the system's name, randomness and power-off.

use super::super::errno::*;
use super::super::task::Wait;
use super::super::uaccess;
use super::{Action, Call, Return};

pub fn nanosleep(c: &mut Call, a: &[u64; 6]) -> Action {
    sleep(c, a[0], false, a[1])
}

/// `clock_nanosleep(clock, flags, request, remain)`: relative, or until an absolute time with
/// `TIMER_ABSTIME` (every clock counts from boot).
pub fn clock_nanosleep(c: &mut Call, a: &[u64; 6]) -> Action {
    const TIMER_ABSTIME: u64 = 1;
    // REALTIME, MONOTONIC, BOOTTIME, and the CPU-time clocks Linux refuses to sleep on.
    match a[0] {
        0 | 1 | 7 => {}
        2 | 3 => return Return(-EINVAL),
        _ => return Return(-EINVAL),
    }
    if a[1] & !TIMER_ABSTIME != 0 {
        return Return(-EINVAL);
    }
    // clock_nanosleep returns the error number itself, not -1 and errno.
    let absolute = a[1] & TIMER_ABSTIME != 0;
    sleep(c, a[2], absolute, if absolute { 0 } else { a[3] })
}

/// Sleeps until the time `req` names; a signal to deliver ends the sleep early with `-EINTR`
/// and the time left written to `rem` (when not 0).
fn sleep(c: &mut Call, req: u64, absolute: bool, rem: u64) -> Action {
    let now = arch::timer::now_ns();
    let deadline = match c.resumed() {
        Some(deadline) => deadline,
        None => {
            let ns = match uaccess::read_timespec_ns(req) {
                Ok(ns) => ns,
                Err(e) => return Return(e),
            };
            if absolute {
                ns
            } else {
                now.saturating_add(ns)
            }
        }
    };
    if deadline <= now {
        return Return(0);
    }
    if c.task().signals.deliverable() {
        if rem != 0 {
            let left = deadline - now;
            if let Err(e) = uaccess::write_u64s(rem, &[left / 1_000_000_000, left % 1_000_000_000]) {
                return Return(e);
            }
        }
        return Return(-EINTR);
    }
    c.block(Wait::Sleep(deadline), deadline)
}

pub fn clock_gettime(_c: &mut Call, a: &[u64; 6]) -> Action {
    // REALTIME, MONOTONIC, PROCESS_CPUTIME, THREAD_CPUTIME, MONOTONIC_RAW, REALTIME_COARSE,
    // MONOTONIC_COARSE, BOOTTIME (there is no wall clock: realtime counts from boot too).
    if a[0] > 7 {
        return Return(-EINVAL);
    }
    let ns = arch::timer::now_ns();
    Return(uaccess::write_u64s(a[1], &[ns / 1_000_000_000, ns % 1_000_000_000]).map_or_else(|e| e, |_| 0))
}

pub fn clock_getres(_c: &mut Call, a: &[u64; 6]) -> Action {
    Return(if a[0] > 11 {
        -EINVAL
    } else if a[1] == 0 {
        0
    } else {
        uaccess::write_u64s(a[1], &[0, 1]).map_or_else(|e| e, |_| 0)
    })
}

pub fn uname(_c: &mut Call, a: &[u64; 6]) -> Action {
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
    Return(uaccess::write(a[0], &u).map_or_else(|e| e, |_| 0))
}

pub fn getrandom(_c: &mut Call, a: &[u64; 6]) -> Action {
    const GRND_NONBLOCK: u64 = 1;
    const GRND_RANDOM: u64 = 2;
    const GRND_INSECURE: u64 = 4;
    let (buf, len, flags) = (a[0], a[1], a[2]);
    if flags & !(GRND_NONBLOCK | GRND_RANDOM | GRND_INSECURE) != 0
        || flags & (GRND_RANDOM | GRND_INSECURE) == (GRND_RANDOM | GRND_INSECURE)
    {
        return Return(-EINVAL);
    }
    let len = len.min(33_554_431) as usize;
    let mut bytes = alloc::vec![0u8; len];
    if crate::random::fill(&mut bytes).is_err() {
        return Return(-EAGAIN);
    }
    Return(uaccess::write(buf, &bytes).map_or_else(|e| e, |_| len as i64))
}

pub fn reboot(_c: &mut Call, a: &[u64; 6]) -> Action {
    const MAGIC1: u64 = 0xfee1_dead;
    const MAGIC2: [u64; 4] = [672_274_793, 85_072_278, 369_367_448, 537_993_216];
    const POWER_OFF: u64 = 0x4321_fedc;
    if a[0] != MAGIC1 || !MAGIC2.contains(&a[1]) {
        Return(-EINVAL)
    } else if a[2] == POWER_OFF {
        Action::PowerOff
    } else {
        Return(-EINVAL)
    }
}
