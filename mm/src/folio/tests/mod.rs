//! Host tests of folios.
//!
//! * `units`: every operation and its failure cases, one by one;
//! * `checker`: the invariant checker, including negative tests that corrupt a count or a
//!   mapping and must be caught;
//! * `tables`: folios mapped through real translation tables (`Root` over the hardware
//!   model), with the checker fed from `Root::leaves`;
//! * `props`: random operation sequences over folios of orders 0, 4 and 9 in several
//!   address spaces against a reference model, with the checker after every step.

mod checker;
mod props;
mod tables;
mod units;

use std::collections::BTreeMap;

use super::*;
use crate::fixture::{memmap, storage, Frames, FRAMES, RAM, RAM_SIZE};
use crate::frames::OutOfMemory;
use crate::{Level, PhysAddr, VirtAddr};

pub(crate) fn sp(id: u32) -> SpaceId {
    SpaceId::new(id).unwrap()
}

/// The live leaves of simulated address spaces: `(space, va) → (pa, level)`.
#[derive(Default, Clone)]
pub(crate) struct Leaves(pub BTreeMap<(u32, u64), (u64, Level)>);

impl Leaves {
    /// Records PTE leaves for `nr` pages of `folio` from `first` at `va`.
    pub fn map_ptes(&mut self, space: SpaceId, va: u64, folio: &Folio<'_>, first: usize, nr: usize) {
        for i in 0..nr {
            let pa = folio.page_pa(first + i).0;
            let old = self
                .0
                .insert((space.get(), va + i as u64 * 4096), (pa, Level::L3));
            assert!(old.is_none(), "test bug: VA mapped twice");
        }
    }
    /// Removes PTE leaves for `nr` pages at `va`.
    pub fn unmap_ptes(&mut self, space: SpaceId, va: u64, nr: usize) {
        for i in 0..nr {
            assert!(self.0.remove(&(space.get(), va + i as u64 * 4096)).is_some());
        }
    }
    /// Records a block leaf of `folio` at `va`.
    pub fn map_block(&mut self, space: SpaceId, va: u64, folio: &Folio<'_>) {
        assert!(self
            .0
            .insert((space.get(), va), (folio.pa().0, Level::L2))
            .is_none());
    }
    /// Removes the block leaf at `va`.
    pub fn unmap_block(&mut self, space: SpaceId, va: u64) {
        assert!(self.0.remove(&(space.get(), va)).is_some());
    }
    /// The leaves in the checker's form.
    pub fn mapped(&self) -> Vec<MappedLeaf> {
        self.0
            .iter()
            .map(|(&(s, va), &(pa, level))| MappedLeaf {
                space: sp(s),
                va: VirtAddr(va),
                pa: PhysAddr(pa),
                size: level.entry_size(),
                level,
            })
            .collect()
    }
    /// Runs the checker.
    pub fn check(&self, mem: &MemMap<'_>) -> Result<CheckSummary, CheckError> {
        check(mem, self.mapped())
    }
}

/// Every counter of a folio, for "a refused operation changed nothing".
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Snapshot {
    refs: u32,
    pins: u32,
    total: u32,
    entire: u32,
    shared: bool,
    slots: [Option<(SpaceId, u32)>; 2],
    pages: Vec<(u32, bool)>,
}

pub(crate) fn snapshot(f: &Folio<'_>) -> Snapshot {
    Snapshot {
        refs: f.refcount(),
        pins: f.pincount(),
        total: f.mapcount(),
        entire: f.entire_mapcount(),
        shared: f.maybe_mapped_shared(),
        slots: f.tracked_spaces(),
        pages: (0..f.nr_pages())
            .map(|i| (f.pte_mapcount(i), f.is_anon_exclusive(i)))
            .collect(),
    }
}
