//! The slot of one page at a given level, allocating the missing tables above it (plan, then
//! build and link).

use crate::addr::{Level, VirtAddr};
use crate::pt::ctx::Ctx;
use crate::pt::desc::{Descriptor, DescriptorKind};
use crate::pt::error::MapError;
use crate::pt::platform::Platform;
use crate::pt::table::{Entry, Table};
use crate::pt::walk::{Step, Visitor};

/// The table at `target` level for one page, pass 1: how many tables are missing (or a block
/// in the way). `target` is level 3 for a PTE slot, level 2 for the slot of a level-3 table.
pub(crate) struct PtePlan {
    pub tables: usize,
    pub target: Level,
    /// The slot, when every table above it exists.
    pub slot: Option<Entry>,
}

impl<C: ?Sized> Visitor<C> for PtePlan {
    type Break = MapError;
    fn visit(&mut self, _: &mut C, e: Entry, d: Descriptor, addr: u64, _: u64) -> Step<MapError> {
        let level = e.level();
        match d.kind(level) {
            _ if level == self.target => {
                self.slot = Some(e);
                Step::Next
            }
            DescriptorKind::Invalid => {
                self.tables += (self.target.number() - level.number()) as usize;
                Step::Next
            }
            DescriptorKind::Table { next } => Step::Descend(e.child(next)),
            _ => Step::Break(MapError::BlockMapped(VirtAddr(addr))),
        }
    }
}

/// The slot at `target` level for one page, pass 2: builds the missing tables (unlinked,
/// linked on the way up) and records the slot.
pub(crate) struct PteAlloc {
    pub slot: Option<Entry>,
    pub target: Level,
}

impl<P: Platform + ?Sized> Visitor<Ctx<'_, P>> for PteAlloc {
    type Break = MapError;
    fn visit(&mut self, cx: &mut Ctx<'_, P>, e: Entry, d: Descriptor, addr: u64, _: u64) -> Step<MapError> {
        let level = e.level();
        match d.kind(level) {
            _ if level == self.target => {
                self.slot = Some(e);
                Step::Next
            }
            DescriptorKind::Invalid => Step::Descend(cx.take_table(e)),
            DescriptorKind::Table { next } => Step::Descend(e.child(next)),
            // Excluded by the plan pass.
            _ => Step::Break(MapError::BlockMapped(VirtAddr(addr))),
        }
    }

    fn leave(&mut self, cx: &mut Ctx<'_, P>, e: Entry, child: Table, _: u64, _: u64) -> Result<(), MapError> {
        cx.link_if_new(e, child);
        Ok(())
    }
}
