//! Unmap: the plan pass (tables for splits), the removal pass, and the context steps only it
//! takes (remove and report a leaf, detach a subtree or an emptied table).

use crate::addr::{covers_entry, CONT_PTES, CONT_SIZE, ENTRIES};
use crate::pt::ctx::{Ctx, Pending};
use crate::pt::desc::{Descriptor, DescriptorKind};
use crate::pt::platform::Platform;
use crate::pt::table::{Entry, Table};
use crate::pt::walk::{read_block, tables_for_split, Step, Visitor};

/// Unmap / protect, pass 1: how many tables the splits of partially covered blocks need.
pub(crate) struct SplitPlan {
    pub tables: usize,
}

impl<C: ?Sized> Visitor<C> for SplitPlan {
    type Break = core::convert::Infallible;
    fn visit(&mut self, _: &mut C, e: Entry, d: Descriptor, addr: u64, next: u64) -> Step<Self::Break> {
        let level = e.level();
        let full = covers_entry(level, addr, next);
        match d.kind(level) {
            DescriptorKind::Invalid => Step::Next,
            DescriptorKind::Table { next: t } if !full => Step::Descend(e.child(t)),
            DescriptorKind::Table { .. } => Step::Next,
            _ => {
                if !full {
                    self.tables += tables_for_split(level, addr, next);
                }
                Step::Next
            }
        }
    }
}

/// Unmap, pass 2. With `free_tables`, subtrees the range covers whole are unlinked with one
/// write and tables left empty are freed; without, every leaf is cleared individually and
/// the tables stay (the PTE-level clears, which the fault path follows with a new mapping).
pub(crate) struct UnmapOp {
    pub free_tables: bool,
}

impl<P: Platform + ?Sized> Visitor<Ctx<'_, P>> for UnmapOp {
    type Break = core::convert::Infallible;
    fn visit(
        &mut self,
        cx: &mut Ctx<'_, P>,
        e: Entry,
        d: Descriptor,
        addr: u64,
        next: u64,
    ) -> Step<Self::Break> {
        let level = e.level();
        let full = covers_entry(level, addr, next);
        match d.kind(level) {
            DescriptorKind::Invalid => Step::Next,
            DescriptorKind::Table { next: t } => {
                if full && self.free_tables {
                    cx.detach(e, e.child(t));
                    Step::Next
                } else {
                    Step::Descend(e.child(t))
                }
            }
            _ => {
                if full {
                    cx.unmap_leaf(e, d);
                    Step::Next
                } else {
                    if cx.reporting() {
                        // The removed part of a block, reported as one clipped piece (the
                        // split table below is not live: nothing in it is reported).
                        let oa = d.output_address(level).0;
                        cx.report_room();
                        cx.report(Pending::Run {
                            va: addr,
                            pa: oa + (addr - e.va().0),
                            len: next.wrapping_sub(addr),
                            leaf: next.wrapping_sub(addr),
                            level,
                            desc: d,
                            whole: false,
                        });
                    }
                    Step::Descend(cx.split_start(e, d))
                }
            }
        }
    }

    fn leave(
        &mut self,
        cx: &mut Ctx<'_, P>,
        e: Entry,
        child: Table,
        addr: u64,
        _: u64,
    ) -> Result<(), Self::Break> {
        if !cx.link_if_new(e, child) && self.free_tables {
            let empty = (0..ENTRIES).all(|i| !cx.p.read(child.pa(), i).is_valid());
            if empty {
                cx.detach_empty(e, child, addr);
            }
        }
        Ok(())
    }
}

impl<P: Platform + ?Sized> Ctx<'_, P> {
    /// Removes the leaf in `e` (holding `d`), reporting it if the operation reports.
    pub(crate) fn unmap_leaf(&mut self, e: Entry, d: Descriptor) {
        let level = e.level();
        let head = level.is_page_level() && d.contiguous() && e.index().is_multiple_of(CONT_PTES);
        if head && self.live() {
            self.stats.cont_blocks_unmapped += 1;
        }
        if self.reporting() {
            let oa = d.output_address(level).0;
            if level.is_page_level() && d.contiguous() {
                // A folded block is reported once, as one 64 KiB leaf, at its first entry
                // (the range covers it whole: partial blocks were unfolded first).
                if head {
                    let (_, g) = read_block(self, e.table().pa(), e.index());
                    self.report_room();
                    self.report(Pending::Run {
                        va: e.va().0,
                        pa: oa,
                        len: CONT_SIZE,
                        leaf: CONT_SIZE,
                        level,
                        desc: g,
                        whole: true,
                    });
                }
            } else {
                self.report_room();
                self.report(Pending::Run {
                    va: e.va().0,
                    pa: oa,
                    len: e.size(),
                    leaf: e.size(),
                    level,
                    desc: d,
                    whole: true,
                });
            }
        }
        self.remove_leaf(e);
    }

    /// Unlinks the whole subtree under the table entry `e`, freeing it after invalidation.
    pub(crate) fn detach(&mut self, e: Entry, child: Table) {
        if !self.live() {
            self.write(e, Descriptor::INVALID);
            self.free_subtree(child.pa(), child.level());
            return;
        }
        let reporting = self.reporting();
        if reporting {
            // Room first: a flush between the detach and the queueing would free the subtree
            // before it is reported.
            self.report_room();
        }
        if !self.gather.has_room() {
            self.flush();
        }
        self.write(e, Descriptor::INVALID);
        self.gather
            .add_detached(e.va().0, e.size(), child.pa(), child.level());
        if reporting {
            self.report(Pending::Subtree {
                table: child.pa(),
                level: child.level(),
                va: e.va().0,
            });
        }
    }

    /// Unlinks the empty table `child` under `e`; `addr` is an address it maps.
    pub(crate) fn detach_empty(&mut self, e: Entry, child: Table, addr: u64) {
        if !self.live() {
            self.write(e, Descriptor::INVALID);
            self.free_table(child.pa());
            return;
        }
        if !self.gather.has_room() {
            self.flush();
        }
        self.write(e, Descriptor::INVALID);
        self.gather.add_emptied(addr, child.pa(), child.level());
    }
}
