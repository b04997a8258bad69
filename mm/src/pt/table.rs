//! Typed handles for a translation table and for one of its slots.
//!
//! A [`Table`] is a 4 KiB frame of 512 descriptors at a physical address, together with the
//! level it sits at and the first virtual address it maps. An [`Entry`] is one slot of a table.
//! They are distinct types so that "the table at X" and "the descriptor slot pointing to X"
//! cannot be confused; both are cheap `Copy` values, not borrows.

use super::desc::Descriptor;
use super::platform::Platform;
use crate::addr::{Level, PhysAddr, VirtAddr, ENTRIES};

/// A translation table: a frame at `pa`, at `level`, mapping `[va_base, va_base + span)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Table {
    pa: PhysAddr,
    level: Level,
    va_base: u64,
}

impl Table {
    pub(crate) const fn new(pa: PhysAddr, level: Level, va_base: u64) -> Table {
        Table { pa, level, va_base }
    }
    /// Physical address of the frame.
    pub const fn pa(self) -> PhysAddr {
        self.pa
    }
    /// Level of the table.
    pub const fn level(self) -> Level {
        self.level
    }
    /// First virtual address mapped through this table.
    pub const fn va_base(self) -> VirtAddr {
        VirtAddr(self.va_base)
    }
    /// The slot at `index`.
    ///
    /// # Panics
    /// If `index >= 512`.
    pub fn entry(self, index: usize) -> Entry {
        assert!(index < ENTRIES, "descriptor index {index} out of range");
        Entry {
            table: self,
            index: index as u16,
        }
    }
    /// The slot mapping `va` (which must lie in the table's span).
    pub const fn entry_for(self, va: u64) -> Entry {
        Entry {
            table: self,
            index: self.level.index_of(va) as u16,
        }
    }
}

/// One slot of a [`Table`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Entry {
    table: Table,
    index: u16,
}

impl Entry {
    /// The table the slot belongs to.
    pub const fn table(self) -> Table {
        self.table
    }
    /// Index in the table, 0..512.
    pub const fn index(self) -> usize {
        self.index as usize
    }
    /// Level of the table the slot belongs to (what a leaf here would be).
    pub const fn level(self) -> Level {
        self.table.level
    }
    /// First virtual address the slot maps.
    pub const fn va(self) -> VirtAddr {
        VirtAddr(
            self.table
                .va_base
                .wrapping_add((self.index as u64) << self.table.level.shift()),
        )
    }
    /// Bytes of VA the slot maps.
    pub const fn size(self) -> u64 {
        self.table.level.entry_size()
    }
    /// Reads the descriptor.
    pub fn read<P: Platform + ?Sized>(self, p: &P) -> Descriptor {
        p.read(self.table.pa, self.index as usize)
    }
    /// The table a table descriptor in this slot points to (one level down, same VA).
    ///
    /// # Panics
    /// At level 3.
    pub fn child(self, next: PhysAddr) -> Table {
        let level = self.level().next().expect("no tables below level 3");
        Table::new(next, level, self.va().0)
    }
}
