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
use crate::frames::PhysRange;
use crate::frames::{FrameAllocator, OutOfMemory, MAX_ORDER};
use crate::{Level, PhysAddr, VirtAddr};

/// Start of the simulated RAM the folios come from (data is not simulated).
pub(crate) const RAM: u64 = 0x4000_0000;
/// Bytes of simulated RAM: four order-10 buddy blocks.
pub(crate) const RAM_SIZE: u64 = 16 << 20;
/// Frames of simulated RAM.
pub(crate) const FRAMES: usize = (RAM_SIZE >> 12) as usize;

/// Zeroed metadata for `n` frames.
pub(crate) fn storage(n: usize) -> Vec<PageMeta> {
    (0..n).map(|_| PageMeta::new()).collect()
}

/// A frame source over the buddy allocator that records every block it hands out, refuses
/// double or mismatched frees, and counts.
pub(crate) struct Frames {
    pub buddy: FrameAllocator,
    pub out: BTreeMap<u64, FolioOrder>,
    pub allocs: usize,
    pub frees: usize,
}

impl Frames {
    /// The buddy over `[RAM, RAM + RAM_SIZE)`.
    pub fn new() -> Frames {
        let mut buddy = FrameAllocator::new();
        buddy.add_range(PhysRange {
            base: RAM,
            size: RAM_SIZE,
        });
        Frames {
            buddy,
            out: BTreeMap::new(),
            allocs: 0,
            frees: 0,
        }
    }

    /// Frames currently handed out.
    pub fn frames_out(&self) -> usize {
        self.out.values().map(|o| o.pages()).sum()
    }

    /// Every frame is back and the free blocks have coalesced: the whole RAM can be taken
    /// again as maximal (order-10) blocks, hence also as order-9 blocks.
    pub fn assert_all_back(&mut self) {
        assert!(self.out.is_empty(), "blocks not returned: {:x?}", self.out);
        assert_eq!(self.allocs, self.frees);
        assert_eq!(self.buddy.free_frames(), FRAMES);
        let mut big = Vec::new();
        while let Ok(pa) = self.buddy.alloc(MAX_ORDER) {
            big.push(pa);
        }
        assert_eq!(big.len(), FRAMES >> MAX_ORDER, "free blocks did not coalesce");
        for pa in big {
            self.buddy.free(pa, MAX_ORDER).unwrap();
        }
        let pa = FrameSource::alloc(&mut self.buddy, FolioOrder::PMD).expect("an order-9 block");
        FrameSource::free(&mut self.buddy, pa, FolioOrder::PMD);
    }
}

impl FrameSource for Frames {
    fn alloc(&mut self, order: FolioOrder) -> Result<PhysAddr, OutOfMemory> {
        let pa = FrameSource::alloc(&mut self.buddy, order)?;
        assert!(self.out.insert(pa.0, order).is_none(), "{pa} handed out twice");
        self.allocs += 1;
        Ok(pa)
    }
    fn free(&mut self, pa: PhysAddr, order: FolioOrder) {
        assert_eq!(self.out.remove(&pa.0), Some(order), "free of {pa} with {order:?}");
        self.frees += 1;
        FrameSource::free(&mut self.buddy, pa, order);
    }
}

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
