//! Map: the plan pass (conflicts, table count) and the writing pass, which builds new tables
//! unlinked and, for the PTE-level `set_ptes`, writes whole 64 KiB blocks folded.

use crate::addr::{covers_entry, Level, PhysAddr, VirtAddr, CONT_SIZE};
use crate::pt::ctx::Ctx;
use crate::pt::desc::{Descriptor, DescriptorKind};
use crate::pt::error::MapError;
use crate::pt::fold::block_covered;
use crate::pt::platform::Platform;
use crate::pt::table::{Entry, Table};
use crate::pt::walk::{tables_for_empty, Step, Visitor};

/// The geometry of a map request.
#[derive(Clone, Copy)]
pub(crate) struct MapGeom {
    pub va: u64,
    /// End of the request (wrapping: 0 is 2^64).
    pub end: u64,
    pub pa: u64,
    pub allow_blocks: bool,
}

impl MapGeom {
    fn pa_at(&self, addr: u64) -> u64 {
        self.pa + addr.wrapping_sub(self.va)
    }

    /// Whether `[addr, next)` can be one leaf at `level`.
    fn can_leaf(&self, level: Level, addr: u64, next: u64) -> bool {
        level.is_page_level()
            || (self.allow_blocks
                && level.allows_block()
                && covers_entry(level, addr, next)
                && self.pa_at(addr) & (level.entry_size() - 1) == 0)
    }

    /// Whether the 64 KiB block of the page at `addr` is covered whole by the request and
    /// maps a 64 KiB aligned physical block.
    fn block_foldable(&self, addr: u64) -> bool {
        let block = addr & !(CONT_SIZE - 1);
        block_covered(block, self.va, self.end) && self.pa_at(block).is_multiple_of(CONT_SIZE)
    }
}

/// Map, pass 1: conflicts and table count.
pub(crate) struct MapPlan {
    pub geom: MapGeom,
    pub tables: usize,
}

impl<C: ?Sized> Visitor<C> for MapPlan {
    type Break = MapError;
    fn visit(&mut self, _: &mut C, e: Entry, d: Descriptor, addr: u64, next: u64) -> Step<MapError> {
        match d.kind(e.level()) {
            DescriptorKind::Invalid => {
                let g = self.geom;
                self.tables += tables_for_empty(e.level(), addr, next, &|l, a, b| g.can_leaf(l, a, b));
                Step::Next
            }
            DescriptorKind::Table { next: t } => Step::Descend(e.child(t)),
            _ => Step::Break(MapError::AlreadyMapped(VirtAddr(addr))),
        }
    }
}

/// Map, pass 2: writes leaves `Descriptor::leaf(level, pa) | bits`; with `fold`, level-3
/// entries of every 64 KiB block the request covers whole at an aligned physical address get
/// the Contiguous bit (invalid → valid: no break-before-make).
pub(crate) struct MapOp {
    pub geom: MapGeom,
    /// Every leaf bit but the output address and the type bits.
    pub bits: u64,
    pub fold: bool,
}

impl<P: Platform + ?Sized> Visitor<Ctx<'_, P>> for MapOp {
    type Break = MapError;
    fn visit(
        &mut self,
        cx: &mut Ctx<'_, P>,
        e: Entry,
        d: Descriptor,
        addr: u64,
        next: u64,
    ) -> Step<MapError> {
        let level = e.level();
        match d.kind(level) {
            DescriptorKind::Invalid => {
                if self.geom.can_leaf(level, addr, next) {
                    let mut leaf =
                        Descriptor(Descriptor::leaf(level, PhysAddr(self.geom.pa_at(addr))).0 | self.bits);
                    if self.fold && level.is_page_level() && self.geom.block_foldable(addr) {
                        leaf = leaf.with_contiguous(true);
                        if addr.is_multiple_of(CONT_SIZE) {
                            cx.stats.cont_blocks_mapped += 1;
                        }
                    }
                    cx.write(e, leaf);
                    Step::Next
                } else {
                    Step::Descend(cx.take_table(e))
                }
            }
            DescriptorKind::Table { next: t } => Step::Descend(e.child(t)),
            // Excluded by the plan pass.
            _ => Step::Break(MapError::AlreadyMapped(VirtAddr(addr))),
        }
    }

    fn leave(&mut self, cx: &mut Ctx<'_, P>, e: Entry, child: Table, _: u64, _: u64) -> Result<(), MapError> {
        cx.link_if_new(e, child);
        Ok(())
    }
}
