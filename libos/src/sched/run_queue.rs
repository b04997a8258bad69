//! One CPU's view of the tasks: the one it runs and a round-robin queue of those ready to run.

use alloc::collections::VecDeque;

/// One CPU's current task and its ready queue, round robin. `T` names a task (a pid).
///
/// A task is in at most one place: current, or queued once. Blocked and dead tasks are in
/// neither; [`wake`](Cpu::wake) queues a task again.
#[derive(Clone, Debug, Default)]
pub struct Cpu<T> {
    current: Option<T>,
    ready: VecDeque<T>,
}

impl<T: Copy + Eq> Cpu<T> {
    /// A CPU running nothing, with nothing ready.
    pub fn new() -> Self {
        Cpu {
            current: None,
            ready: VecDeque::new(),
        }
    }

    /// The task this CPU runs.
    pub fn current(&self) -> Option<T> {
        self.current
    }

    /// Whether some task waits for this CPU (then a running task gets a time slice).
    pub fn others_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Number of tasks queued (not counting the current one).
    pub fn queued(&self) -> usize {
        self.ready.len()
    }

    /// Whether `t` is queued.
    pub fn is_queued(&self, t: T) -> bool {
        self.ready.contains(&t)
    }

    /// Makes `t` ready: queued at the tail, unless it is current or already queued.
    pub fn wake(&mut self, t: T) {
        if self.current != Some(t) && !self.ready.contains(&t) {
            self.ready.push_back(t);
        }
    }

    /// The current task's time slice is over: it goes to the tail and the head runs. Returns the
    /// task now current (the same one when nothing else is ready).
    pub fn preempt(&mut self) -> Option<T> {
        if let Some(next) = self.ready.pop_front() {
            if let Some(cur) = self.current.replace(next) {
                self.ready.push_back(cur);
            }
        }
        self.current
    }

    /// The current task stops running (it blocked or died; it is not queued): the head of the
    /// queue becomes current. Returns it, or `None` when nothing is ready (the CPU idles).
    pub fn switch_away(&mut self) -> Option<T> {
        self.current = self.ready.pop_front();
        self.current
    }

    /// Takes `t` out of the queue and, if it is current, off the CPU (a task killed by another).
    /// Returns whether it was current.
    pub fn remove(&mut self, t: T) -> bool {
        self.ready.retain(|&q| q != t);
        if self.current == Some(t) {
            self.current = None;
            true
        } else {
            false
        }
    }

    /// An idle CPU takes the head of the queue. Returns the task now current.
    pub fn resume(&mut self) -> Option<T> {
        if self.current.is_none() {
            self.current = self.ready.pop_front();
        }
        self.current
    }

    /// Empties the CPU (the end of a run).
    pub fn clear(&mut self) {
        self.current = None;
        self.ready.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_robin_order() {
        let mut cpu = Cpu::new();
        cpu.wake(1);
        cpu.wake(2);
        cpu.wake(3);
        assert_eq!(cpu.resume(), Some(1));
        assert_eq!(cpu.preempt(), Some(2));
        assert_eq!(cpu.preempt(), Some(3));
        assert_eq!(cpu.preempt(), Some(1));
        assert_eq!(cpu.preempt(), Some(2));
    }

    #[test]
    fn a_lone_task_keeps_the_cpu() {
        let mut cpu = Cpu::new();
        cpu.wake(7);
        assert_eq!(cpu.resume(), Some(7));
        assert!(!cpu.others_ready());
        assert_eq!(cpu.preempt(), Some(7));
        cpu.wake(7);
        assert_eq!(cpu.queued(), 0, "waking the current task queues nothing");
    }

    #[test]
    fn blocking_passes_the_cpu_on_and_idles_when_empty() {
        let mut cpu = Cpu::new();
        cpu.wake(1);
        cpu.wake(2);
        cpu.resume();
        assert_eq!(cpu.switch_away(), Some(2), "1 blocked");
        assert_eq!(cpu.switch_away(), None, "2 blocked: idle");
        cpu.wake(1);
        assert_eq!(cpu.resume(), Some(1));
    }

    #[test]
    fn killing_a_queued_or_current_task() {
        let mut cpu = Cpu::new();
        for t in 1..=3 {
            cpu.wake(t);
        }
        cpu.resume();
        assert!(!cpu.remove(3));
        assert!(cpu.remove(1));
        assert_eq!(cpu.current(), None);
        assert_eq!(cpu.resume(), Some(2));
        assert_eq!(cpu.preempt(), Some(2), "3 is gone");
    }

    #[derive(Clone, Debug)]
    enum Op {
        Wake(u8),
        Preempt,
        SwitchAway,
        Remove(u8),
        Resume,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..6).prop_map(Op::Wake),
            Just(Op::Preempt),
            Just(Op::SwitchAway),
            (0u8..6).prop_map(Op::Remove),
            Just(Op::Resume),
        ]
    }

    proptest! {
        /// Against a reference: every task is current or queued at most once, preemption is
        /// fair (a woken task runs within `queued + 1` preemptions), and nothing is lost.
        #[test]
        fn matches_a_reference_queue(ops in proptest::collection::vec(op(), 0..200)) {
            let mut cpu = Cpu::new();
            let mut cur: Option<u8> = None;
            let mut q: Vec<u8> = Vec::new();
            for o in ops {
                match o {
                    Op::Wake(t) => {
                        cpu.wake(t);
                        if cur != Some(t) && !q.contains(&t) {
                            q.push(t);
                        }
                    }
                    Op::Preempt => {
                        cpu.preempt();
                        if !q.is_empty() {
                            let next = q.remove(0);
                            if let Some(c) = cur.replace(next) {
                                q.push(c);
                            }
                        }
                    }
                    Op::SwitchAway => {
                        cpu.switch_away();
                        cur = if q.is_empty() { None } else { Some(q.remove(0)) };
                    }
                    Op::Remove(t) => {
                        cpu.remove(t);
                        q.retain(|&x| x != t);
                        if cur == Some(t) {
                            cur = None;
                        }
                    }
                    Op::Resume => {
                        cpu.resume();
                        if cur.is_none() && !q.is_empty() {
                            cur = Some(q.remove(0));
                        }
                    }
                }
                prop_assert_eq!(cpu.current(), cur);
                prop_assert_eq!(cpu.ready.iter().copied().collect::<Vec<_>>(), q.clone());
                if let Some(c) = cur {
                    prop_assert!(!q.contains(&c));
                }
            }
            // Fairness: every queued task becomes current within `queued` preemptions.
            let waiting = cpu.ready.iter().copied().collect::<Vec<_>>();
            for t in waiting {
                let mut ran = false;
                for _ in 0..=cpu.queued() {
                    if cpu.preempt() == Some(t) {
                        ran = true;
                        break;
                    }
                }
                prop_assert!(ran || cpu.current().is_none());
            }
        }
    }
}
