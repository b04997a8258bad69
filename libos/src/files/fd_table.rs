//! A process's file descriptors: small integers naming shared open files, each with its
//! close-on-exec flag. `fork` copies the table (the files are shared), `execve` closes the
//! close-on-exec ones.

use alloc::sync::Arc;
use alloc::vec::Vec;

/// Descriptors a process may hold (`RLIMIT_NOFILE`'s usual soft limit).
pub const MAX_FDS: usize = 1024;

/// Why a descriptor operation was refused (the system calls answer Linux's errno for each).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FdError {
    /// Not an open descriptor, or a target out of range (`EBADF`).
    BadFd,
    /// An argument Linux refuses (`EINVAL`): `dup3` onto itself, bad flags.
    Invalid,
    /// Every descriptor is taken (`EMFILE`).
    TooMany,
}

struct Slot<F> {
    file: Arc<F>,
    cloexec: bool,
}

impl<F> Clone for Slot<F> {
    fn clone(&self) -> Self {
        Slot {
            file: self.file.clone(),
            cloexec: self.cloexec,
        }
    }
}

/// A descriptor table over open files of type `F` (shared through `Arc`: the open file lives
/// while some descriptor in some process names it).
pub struct FdTable<F> {
    slots: Vec<Option<Slot<F>>>,
}

impl<F> Clone for FdTable<F> {
    /// The table a forked child gets: the same files under the same numbers and flags.
    fn clone(&self) -> Self {
        FdTable {
            slots: self.slots.clone(),
        }
    }
}

impl<F> Default for FdTable<F> {
    fn default() -> Self {
        FdTable::new()
    }
}

impl<F> FdTable<F> {
    /// An empty table.
    pub fn new() -> Self {
        FdTable { slots: Vec::new() }
    }

    fn check(fd: i64) -> Result<usize, FdError> {
        usize::try_from(fd)
            .ok()
            .filter(|&f| f < MAX_FDS)
            .ok_or(FdError::BadFd)
    }

    /// The open file `fd` names.
    pub fn get(&self, fd: i64) -> Result<&Arc<F>, FdError> {
        let i = Self::check(fd)?;
        self.slots
            .get(i)
            .and_then(|s| s.as_ref())
            .map(|s| &s.file)
            .ok_or(FdError::BadFd)
    }

    /// Installs `file` at the lowest free descriptor not below `min` (`open`, `pipe2`,
    /// `F_DUPFD`).
    pub fn install(&mut self, file: Arc<F>, cloexec: bool, min: usize) -> Result<i64, FdError> {
        if min >= MAX_FDS {
            return Err(FdError::Invalid);
        }
        let free = (min..MAX_FDS).find(|&i| self.slots.get(i).is_none_or(|s| s.is_none()));
        let i = free.ok_or(FdError::TooMany)?;
        if i >= self.slots.len() {
            self.slots.resize_with(i + 1, || None);
        }
        self.slots[i] = Some(Slot { file, cloexec });
        Ok(i as i64)
    }

    /// Closes `fd`, handing back its file reference (to drop where the caller wants).
    pub fn close(&mut self, fd: i64) -> Result<Arc<F>, FdError> {
        let i = Self::check(fd)?;
        let slot = self
            .slots
            .get_mut(i)
            .and_then(|s| s.take())
            .ok_or(FdError::BadFd)?;
        while self.slots.last().is_some_and(|s| s.is_none()) {
            self.slots.pop();
        }
        Ok(slot.file)
    }

    /// `dup3(old, new, flags)`: `new` names `old`'s file (closing what it named, which is
    /// handed back). `dup3` onto the same descriptor is refused (`dup2` answers it before
    /// calling this).
    pub fn dup3(&mut self, old: i64, new: i64, cloexec: bool) -> Result<Option<Arc<F>>, FdError> {
        let file = self.get(old)?.clone();
        let j = Self::check(new)?;
        if old == new {
            return Err(FdError::Invalid);
        }
        if j >= self.slots.len() {
            self.slots.resize_with(j + 1, || None);
        }
        Ok(self.slots[j].replace(Slot { file, cloexec }).map(|s| s.file))
    }

    /// The close-on-exec flag of `fd`.
    pub fn cloexec(&self, fd: i64) -> Result<bool, FdError> {
        self.get(fd)?;
        Ok(self.slots[fd as usize].as_ref().is_some_and(|s| s.cloexec))
    }

    /// Sets the close-on-exec flag of `fd`.
    pub fn set_cloexec(&mut self, fd: i64, on: bool) -> Result<(), FdError> {
        self.get(fd)?;
        if let Some(s) = self.slots[fd as usize].as_mut() {
            s.cloexec = on;
        }
        Ok(())
    }

    /// Closes every close-on-exec descriptor (`execve`), handing back their files.
    pub fn close_on_exec(&mut self) -> Vec<Arc<F>> {
        let mut closed = Vec::new();
        for s in self.slots.iter_mut() {
            if s.as_ref().is_some_and(|s| s.cloexec) {
                closed.push(s.take().expect("checked").file);
            }
        }
        while self.slots.last().is_some_and(|s| s.is_none()) {
            self.slots.pop();
        }
        closed
    }

    /// Closes everything (exit), handing back the files.
    pub fn close_all(&mut self) -> Vec<Arc<F>> {
        core::mem::take(&mut self.slots)
            .into_iter()
            .flatten()
            .map(|s| s.file)
            .collect()
    }

    /// Open descriptors.
    pub fn count(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn table() -> FdTable<&'static str> {
        let mut t = FdTable::new();
        for name in ["stdin", "stdout", "stderr"] {
            t.install(Arc::new(name), false, 0).unwrap();
        }
        t
    }

    #[test]
    fn lowest_free_descriptor_first() {
        let mut t = table();
        assert_eq!(t.install(Arc::new("a"), false, 0), Ok(3));
        t.close(1).unwrap();
        assert_eq!(t.install(Arc::new("b"), false, 0), Ok(1));
        assert_eq!(t.install(Arc::new("c"), false, 10), Ok(10), "F_DUPFD's minimum");
        assert_eq!(t.install(Arc::new("d"), false, 0), Ok(4));
    }

    #[test]
    fn dup3_rules() {
        let mut t = table();
        assert_eq!(t.dup3(1, 1, false).err(), Some(FdError::Invalid));
        assert_eq!(t.dup3(9, 1, false).err(), Some(FdError::BadFd));
        assert_eq!(t.dup3(1, MAX_FDS as i64, false).err(), Some(FdError::BadFd));
        let old = t.dup3(1, 0, true).unwrap();
        assert_eq!(old.map(|f| *f), Some("stdin"), "what 0 named is handed back");
        assert_eq!(**t.get(0).unwrap(), "stdout");
        assert_eq!(t.cloexec(0), Ok(true));
        assert_eq!(
            t.cloexec(1),
            Ok(false),
            "the flag is the descriptor's, not the file's"
        );
        assert_eq!(t.dup3(2, 50, false).unwrap().map(|f| *f), None);
        assert_eq!(**t.get(50).unwrap(), "stderr");
    }

    #[test]
    fn files_are_shared_and_released_with_the_last_descriptor() {
        let mut t = table();
        let f = Arc::new("pipe");
        let fd = t.install(f.clone(), false, 0).unwrap();
        let child = t.clone();
        assert_eq!(Arc::strong_count(&f), 3);
        drop(child);
        assert_eq!(Arc::strong_count(&f), 2);
        drop(t.close(fd).unwrap());
        assert_eq!(Arc::strong_count(&f), 1);
        assert_eq!(t.close(fd).err(), Some(FdError::BadFd));
        assert_eq!(t.close(-1).err(), Some(FdError::BadFd));
    }

    #[test]
    fn exec_closes_cloexec_only() {
        let mut t = table();
        t.install(Arc::new("x"), true, 0).unwrap();
        t.set_cloexec(1, true).unwrap();
        let closed = t.close_on_exec();
        assert_eq!(closed.len(), 2);
        assert!(t.get(1).is_err() && t.get(3).is_err());
        assert!(t.get(0).is_ok() && t.get(2).is_ok());
    }

    #[test]
    fn the_table_fills_up() {
        let mut t = table();
        for i in 3..MAX_FDS {
            assert_eq!(t.install(Arc::new("f"), false, 0), Ok(i as i64));
        }
        assert_eq!(t.install(Arc::new("f"), false, 0), Err(FdError::TooMany));
        assert_eq!(t.close_all().len(), MAX_FDS);
        assert_eq!(t.count(), 0);
    }

    proptest! {
        /// Against a map from number to (file, flag): install takes the lowest free number,
        /// close and dup3 change exactly one entry.
        #[test]
        fn matches_a_reference_map(ops in proptest::collection::vec((0u8..4, 0i64..12, 0i64..12, any::<bool>()), 0..100)) {
            let mut t: FdTable<i64> = FdTable::new();
            let mut r: alloc::collections::BTreeMap<i64, (i64, bool)> = Default::default();
            for (op, a, b, flag) in ops {
                match op {
                    0 => {
                        let fd = t.install(Arc::new(a), flag, b as usize).unwrap();
                        let want = (b..).find(|i| !r.contains_key(i)).unwrap();
                        prop_assert_eq!(fd, want);
                        r.insert(fd, (a, flag));
                    }
                    1 => {
                        let got = t.close(a).ok().map(|f| *f);
                        prop_assert_eq!(got, r.remove(&a).map(|e| e.0));
                    }
                    2 => {
                        let got = t.dup3(a, b, flag);
                        match r.get(&a).copied() {
                            None => prop_assert_eq!(got.err(), Some(FdError::BadFd)),
                            Some(_) if a == b => prop_assert_eq!(got.err(), Some(FdError::Invalid)),
                            Some((file, _)) => {
                                let old = got.unwrap().map(|f| *f);
                                prop_assert_eq!(old, r.insert(b, (file, flag)).map(|e| e.0));
                            }
                        }
                    }
                    _ => {
                        let closed: Vec<i64> = t.close_on_exec().into_iter().map(|f| *f).collect();
                        let want: Vec<i64> = r.iter().filter(|e| e.1 .1).map(|e| e.1 .0).collect();
                        r.retain(|_, e| !e.1);
                        prop_assert_eq!(closed, want);
                    }
                }
                for fd in 0..12 {
                    prop_assert_eq!(t.get(fd).ok().map(|f| **f), r.get(&fd).map(|e| e.0));
                    prop_assert_eq!(t.cloexec(fd).ok(), r.get(&fd).map(|e| e.1));
                }
            }
        }
    }
}
