//! Processes by pid, found in constant time: slot `pid mod capacity`, with pids handed out so
//! that no two live ones share a slot.

use alloc::vec::Vec;

/// A table of `T` by process id. Its capacity (a power of two) bounds the live entries; pids are
/// handed out by [`alloc_pid`](PidTable::alloc_pid) in increasing order (wrapping below
/// `1 << 22`, as Linux's `pid_max`), skipping those whose slot is taken, so a lookup is one
/// index and one comparison.
pub struct PidTable<T> {
    slots: Vec<Option<(u32, T)>>,
    len: usize,
    next: u32,
}

/// Pids stay below this (Linux's largest `pid_max`).
pub const PID_MAX: u32 = 1 << 22;

impl<T> PidTable<T> {
    /// An empty table for up to `capacity` entries (rounded up to a power of two), whose first
    /// pid will be `first`.
    pub fn new(capacity: usize, first: u32) -> PidTable<T> {
        let n = capacity.max(1).next_power_of_two();
        PidTable {
            slots: (0..n).map(|_| None).collect(),
            len: 0,
            next: first,
        }
    }

    fn slot(&self, pid: u32) -> usize {
        pid as usize & (self.slots.len() - 1)
    }

    /// Live entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether another entry fits.
    pub fn is_full(&self) -> bool {
        self.len == self.slots.len()
    }

    /// A pid for a new entry (the next one whose slot is free), or `None` when the table is full.
    pub fn alloc_pid(&mut self) -> Option<u32> {
        if self.is_full() {
            return None;
        }
        loop {
            let pid = self.next;
            self.next = if pid + 1 >= PID_MAX { 2 } else { pid + 1 };
            if self.slots[self.slot(pid)].is_none() {
                return Some(pid);
            }
        }
    }

    /// Inserts `value` under `pid`, whose slot must be free (a pid from `alloc_pid`).
    pub fn insert(&mut self, pid: u32, value: T) {
        let s = self.slot(pid);
        assert!(self.slots[s].is_none(), "pid {pid} collides with a live entry");
        self.slots[s] = Some((pid, value));
        self.len += 1;
    }

    pub fn get(&self, pid: u32) -> Option<&T> {
        match &self.slots[self.slot(pid)] {
            Some((p, v)) if *p == pid => Some(v),
            _ => None,
        }
    }

    pub fn get_mut(&mut self, pid: u32) -> Option<&mut T> {
        let s = self.slot(pid);
        match &mut self.slots[s] {
            Some((p, v)) if *p == pid => Some(v),
            _ => None,
        }
    }

    pub fn contains(&self, pid: u32) -> bool {
        self.get(pid).is_some()
    }

    pub fn remove(&mut self, pid: u32) -> Option<T> {
        let s = self.slot(pid);
        match &self.slots[s] {
            Some((p, _)) if *p == pid => {
                self.len -= 1;
                self.slots[s].take().map(|(_, v)| v)
            }
            _ => None,
        }
    }

    /// The live pids, in slot order.
    pub fn pids(&self) -> impl Iterator<Item = u32> + '_ {
        self.slots.iter().flatten().map(|(p, _)| *p)
    }

    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.slots.iter().flatten().map(|(_, v)| v)
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.slots.iter_mut().flatten().map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeMap;
    use proptest::prelude::*;

    #[test]
    fn pids_increase_and_skip_taken_slots() {
        let mut t: PidTable<&str> = PidTable::new(4, 1);
        for name in ["a", "b", "c"] {
            let pid = t.alloc_pid().unwrap();
            t.insert(pid, name);
        }
        assert_eq!(t.pids().collect::<Vec<_>>(), [1, 2, 3]);
        t.remove(2);
        let p = t.alloc_pid().unwrap();
        assert_eq!(p, 4, "pids are not reused at once");
        t.insert(p, "d");
        // Slots: 0 holds 4, 1 holds 1, 2 is free, 3 holds 3. Pid 5 maps to 1's slot: skipped.
        let p = t.alloc_pid().unwrap();
        assert_eq!(p, 6);
        t.insert(p, "e");
        assert!(t.is_full());
        assert_eq!(t.alloc_pid(), None);
        t.remove(1);
        assert_eq!(t.alloc_pid(), Some(9), "the next pid whose slot (1) is free");
        assert_eq!(t.get(5), None);
        assert_eq!(t.get(3), Some(&"c"));
        assert_eq!(t.get(7), None, "7 maps to 3's slot but is not 3");
    }

    #[test]
    fn pids_wrap_below_pid_max() {
        let mut t: PidTable<()> = PidTable::new(2, PID_MAX - 1);
        assert_eq!(t.alloc_pid(), Some(PID_MAX - 1));
        assert_eq!(t.alloc_pid(), Some(2));
    }

    proptest! {
        /// Against a `BTreeMap`: every lookup agrees, pids are unique among live entries.
        #[test]
        fn matches_a_map(ops in proptest::collection::vec((any::<bool>(), 0usize..40), 0..300)) {
            let mut t: PidTable<usize> = PidTable::new(16, 1);
            let mut r: BTreeMap<u32, usize> = BTreeMap::new();
            let mut issued: Vec<u32> = Vec::new();
            for (add, k) in ops {
                if add {
                    match t.alloc_pid() {
                        Some(pid) => {
                            prop_assert!(!r.contains_key(&pid));
                            t.insert(pid, k);
                            r.insert(pid, k);
                            issued.push(pid);
                        }
                        None => prop_assert_eq!(r.len(), 16),
                    }
                } else if !issued.is_empty() {
                    let pid = issued[k % issued.len()];
                    prop_assert_eq!(t.remove(pid), r.remove(&pid));
                }
                prop_assert_eq!(t.len(), r.len());
                for &pid in &issued {
                    prop_assert_eq!(t.get(pid), r.get(&pid));
                }
                let mut pids: Vec<u32> = t.pids().collect();
                pids.sort();
                prop_assert_eq!(pids, r.keys().copied().collect::<Vec<_>>());
            }
        }
    }
}
