//! The machine-independent part of `futex(2)`: decoding the operation word, and choosing which
//! waiters a wake-up or a requeue moves. The waiters themselves are blocked threads in
//! `user::system` (their wait names the key, bitset and arrival order); this module only picks.

use alloc::vec::Vec;

/// `FUTEX_PRIVATE_FLAG`: the futex is private to one address space (every futex is, here).
pub const PRIVATE_FLAG: u32 = 128;
/// `FUTEX_CLOCK_REALTIME`: an absolute timeout on the realtime clock (`FUTEX_WAIT_BITSET`).
pub const CLOCK_REALTIME: u32 = 256;
/// `FUTEX_BITSET_MATCH_ANY`.
pub const MATCH_ANY: u32 = u32::MAX;
/// Set in a waiter's restart data by the wake-up that chose it: its call answers 0.
pub const WOKEN: u64 = 1 << 63;

/// The operations offered (Linux's numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmd {
    /// 0: wait while `*uaddr == val`, relative timeout.
    Wait,
    /// 1: wake up to `val` waiters.
    Wake,
    /// 3: wake up to `val`, move up to `val2` others to `uaddr2`.
    Requeue,
    /// 4: as `Requeue` if `*uaddr == val3`, else `EAGAIN`.
    CmpRequeue,
    /// 9: wait with a bitset, absolute timeout.
    WaitBitset,
    /// 10: wake up to `val` waiters whose bitset meets `val3`.
    WakeBitset,
}

/// A decoded operation word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Op {
    pub cmd: Cmd,
    /// `FUTEX_CLOCK_REALTIME`.
    pub realtime: bool,
}

/// Decodes `op`; `None` for what Linux answers `ENOSYS` to here (unknown or unsupported
/// operations, `FUTEX_CLOCK_REALTIME` with anything but `FUTEX_WAIT_BITSET`).
pub fn decode(op: u32) -> Option<Op> {
    let realtime = op & CLOCK_REALTIME != 0;
    let cmd = match op & !(PRIVATE_FLAG | CLOCK_REALTIME) {
        0 => Cmd::Wait,
        1 => Cmd::Wake,
        3 => Cmd::Requeue,
        4 => Cmd::CmpRequeue,
        9 => Cmd::WaitBitset,
        10 => Cmd::WakeBitset,
        _ => return None,
    };
    if realtime && cmd != Cmd::WaitBitset {
        return None;
    }
    Some(Op { cmd, realtime })
}

/// A waiting thread as the choice sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Waiter {
    pub tid: u32,
    /// The address space (its owner's id) and the address.
    pub key: (u32, u64),
    pub bitset: u32,
    /// Arrival order: lower waited first.
    pub seq: u64,
}

/// The first `n` waiters (in arrival order) on `key` whose bitset meets `bitset`.
pub fn pick(waiters: &[Waiter], key: (u32, u64), bitset: u32, n: usize) -> Vec<u32> {
    let mut w: Vec<&Waiter> = waiters
        .iter()
        .filter(|w| w.key == key && w.bitset & bitset != 0)
        .collect();
    w.sort_by_key(|w| w.seq);
    w.into_iter().take(n).map(|w| w.tid).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::VecDeque;
    use proptest::prelude::*;

    #[test]
    fn decodes_what_libcs_use() {
        assert_eq!(
            decode(128),
            Some(Op {
                cmd: Cmd::Wait,
                realtime: false
            })
        );
        assert_eq!(
            decode(129),
            Some(Op {
                cmd: Cmd::Wake,
                realtime: false
            })
        );
        assert_eq!(
            decode(128 | 256 | 9),
            Some(Op {
                cmd: Cmd::WaitBitset,
                realtime: true
            })
        );
        assert_eq!(decode(3 | 128).map(|o| o.cmd), Some(Cmd::Requeue));
        assert_eq!(decode(256), None, "CLOCK_REALTIME only with WAIT_BITSET");
        assert_eq!(decode(5), None, "FUTEX_WAKE_OP");
        assert_eq!(decode(6), None, "PI futexes");
    }

    #[derive(Clone, Debug)]
    enum Step {
        Wait { addr: u64, bitset: u32 },
        Wake { addr: u64, bitset: u32, n: usize },
        Requeue { from: u64, to: u64, n: usize },
    }

    fn step() -> impl Strategy<Value = Step> {
        let bits = prop_oneof![Just(MATCH_ANY), 1u32..8];
        prop_oneof![
            (0u64..3, bits.clone()).prop_map(|(addr, bitset)| Step::Wait { addr, bitset }),
            (0u64..3, bits, 0usize..4).prop_map(|(addr, bitset, n)| Step::Wake { addr, bitset, n }),
            (0u64..3, 0u64..3, 0usize..4).prop_map(|(from, to, n)| Step::Requeue { from, to, n }),
        ]
    }

    proptest! {
        /// Against a model of Linux's hash-bucket queues: one FIFO queue of (tid, bitset) per
        /// address; a wake-up takes the first matching waiters, a requeue moves the first ones
        /// to the end of the other queue.
        #[test]
        fn picks_as_fifo_queues_per_address(steps in proptest::collection::vec(step(), 0..60)) {
            let mut model: [VecDeque<(u32, u32)>; 3] = Default::default();
            let mut waiters: Vec<Waiter> = Vec::new();
            let (mut next_tid, mut seq) = (1u32, 0u64);
            for s in steps {
                match s {
                    Step::Wait { addr, bitset } => {
                        model[addr as usize].push_back((next_tid, bitset));
                        waiters.push(Waiter { tid: next_tid, key: (7, addr), bitset, seq });
                        next_tid += 1;
                        seq += 1;
                    }
                    Step::Wake { addr, bitset, n } => {
                        let q = &mut model[addr as usize];
                        let mut want = Vec::new();
                        q.retain(|&(t, b)| {
                            if want.len() < n && b & bitset != 0 {
                                want.push(t);
                                false
                            } else {
                                true
                            }
                        });
                        let got = pick(&waiters, (7, addr), bitset, n);
                        prop_assert_eq!(&got, &want);
                        waiters.retain(|w| !got.contains(&w.tid));
                    }
                    Step::Requeue { from, to, n } => {
                        let mut moved = Vec::new();
                        for _ in 0..n {
                            if let Some(x) = model[from as usize].pop_front() {
                                moved.push(x);
                            }
                        }
                        model[to as usize].extend(moved.iter().copied());
                        let got = pick(&waiters, (7, from), MATCH_ANY, n);
                        prop_assert_eq!(got.clone(), moved.iter().map(|m| m.0).collect::<Vec<_>>());
                        for tid in &got {
                            let w = waiters.iter_mut().find(|w| w.tid == *tid).expect("picked");
                            w.key = (7, to);
                            w.seq = seq;
                            seq += 1;
                        }
                    }
                }
            }
        }
    }
}
