//! The mutation context and the visitors behind map, unmap, protect and the queries.
//!
//! Every mutating operation runs in two passes over the same range with the same walker:
//!
//! 1. a read-only *plan* pass that finds conflicts (for map) and counts exactly how many table
//!    frames the operation will need (new intermediate tables for map, split tables for
//!    unmap/protect);
//! 2. after reserving that many frames up front ([`Reserve`]), the mutating pass, which cannot
//!    fail. If the reservation fails, nothing has been written: every operation is
//!    all-or-nothing without a rollback path.
//!
//! During the mutating pass new tables (for map, and the table a block is split into) are
//! built *unlinked* and linked on the way back up ([`Visitor::leave`]): writes into an unlinked
//! table are invisible to the MMU, need no TLB maintenance and no break-before-make, and the
//! link itself is a single write (invalid → table for map; break-before-make of the block for
//! a split).

use super::addr::{covers_entry, Level, PhysAddr, VirtAddr, ENTRIES};
use super::attrs::{leaf_change_needs_bbm, Attrs, ATTR_MASK};
use super::desc::{bits, Descriptor, DescriptorKind};
use super::hal::{OutOfMemory, Platform, TlbOp};
use super::stats::Stats;
use super::table::{Entry, Table};
use super::tlb::{plan_flush, Gather, TlbScope};
use super::walk::{tables_for_empty, tables_for_split, ReadDesc, Step, Visitor};
use super::MapError;

/// Table frames reserved before a mutating pass, kept as a stack threaded through the frames'
/// first word (so no heap is needed; the word is zeroed again when the frame is taken).
pub(crate) struct Reserve {
    head: PhysAddr,
    count: usize,
}

impl Reserve {
    pub(crate) const fn empty() -> Reserve {
        Reserve {
            head: PhysAddr(0),
            count: 0,
        }
    }

    /// Allocates `n` frames, or none at all.
    pub(crate) fn fill<P: Platform + ?Sized>(
        p: &mut P,
        stats: &mut Stats,
        n: usize,
    ) -> Result<Reserve, OutOfMemory> {
        let mut r = Reserve::empty();
        for _ in 0..n {
            match p.alloc_table() {
                Ok(pa) => {
                    stats.tables_allocated += 1;
                    if r.count > 0 {
                        p.write(pa, 0, Descriptor(r.head.0));
                        stats.scratch_writes += 1;
                    }
                    r.head = pa;
                    r.count += 1;
                }
                Err(e) => {
                    r.release(p, stats);
                    return Err(e);
                }
            }
        }
        Ok(r)
    }

    pub(crate) fn len(&self) -> usize {
        self.count
    }

    fn take<P: Platform + ?Sized>(&mut self, p: &mut P, stats: &mut Stats) -> PhysAddr {
        assert!(self.count > 0, "table reservation exhausted: planning bug");
        let pa = self.head;
        self.count -= 1;
        if self.count > 0 {
            self.head = p.read(pa, 0).address();
            p.write(pa, 0, Descriptor::INVALID);
            stats.scratch_writes += 1;
        }
        pa
    }

    pub(crate) fn release<P: Platform + ?Sized>(&mut self, p: &mut P, stats: &mut Stats) {
        while self.count > 0 {
            let pa = self.take(p, stats);
            p.free_table(pa);
            stats.tables_freed += 1;
        }
    }
}

/// State of one mutating operation.
pub(crate) struct Ctx<'a, P: Platform + ?Sized> {
    pub p: &'a mut P,
    pub stats: &'a mut Stats,
    pub scope: TlbScope,
    pub gather: Gather,
    pub reserve: Reserve,
    /// How many unlinked (new) tables the walk is currently inside; 0 means the entries being
    /// visited are live (reachable by the MMU).
    pub unlinked: u32,
}

impl<P: Platform + ?Sized> ReadDesc for Ctx<'_, P> {
    fn read_desc(&self, table: PhysAddr, index: usize) -> Descriptor {
        self.p.read(table, index)
    }
}

impl<'a, P: Platform + ?Sized> Ctx<'a, P> {
    pub(crate) fn new(
        p: &'a mut P,
        stats: &'a mut Stats,
        scope: TlbScope,
        reserve: Reserve,
    ) -> Self {
        Ctx {
            p,
            stats,
            scope,
            gather: Gather::new(scope),
            reserve,
            unlinked: 0,
        }
    }

    fn live(&self) -> bool {
        self.unlinked == 0
    }

    fn read(&self, e: Entry) -> Descriptor {
        self.p.read(e.table().pa(), e.index())
    }

    fn write(&mut self, e: Entry, d: Descriptor) {
        self.stats.desc_writes += 1;
        self.p.write(e.table().pa(), e.index(), d);
    }

    fn maintain(&mut self, ops: &[TlbOp]) {
        self.stats.count_tlbi(ops);
        self.p.tlb_maintenance(ops);
    }

    pub(crate) fn publish(&mut self) {
        self.stats.publishes += 1;
        self.p.publish();
    }

    fn leaf_op(&self, e: Entry) -> TlbOp {
        let va = VirtAddr(e.va().0);
        let level = Some(e.level());
        match self.scope {
            TlbScope::AllAsids => TlbOp::VaAllAsids {
                va,
                leaf_only: true,
                level,
            },
            TlbScope::Asid(asid) => TlbOp::Va {
                va,
                asid,
                leaf_only: true,
                level,
            },
        }
    }

    /// Takes a reserved frame and starts walking inside it (unlinked).
    fn take_table(&mut self, e: Entry) -> Table {
        let pa = self.reserve.take(self.p, self.stats);
        self.unlinked += 1;
        e.child(pa)
    }

    fn free_table(&mut self, pa: PhysAddr) {
        self.stats.tables_freed += 1;
        self.p.free_table(pa);
    }

    /// Frees `table` and every table below it. Only for tables no MMU can reach any more.
    fn free_subtree(&mut self, table: PhysAddr, level: Level) {
        if let Some(child_level) = level.next() {
            for i in 0..ENTRIES {
                if let DescriptorKind::Table { next } = self.p.read(table, i).kind(level) {
                    self.free_subtree(next, child_level);
                }
            }
        }
        self.free_table(table);
    }

    /// Issues the gathered invalidation, then frees the tables waiting for it.
    pub(crate) fn flush(&mut self) {
        if let Some(req) = self.gather.request() {
            let has_range = self.p.has_tlbi_range();
            let (p, stats) = (&mut *self.p, &mut *self.stats);
            let mut buf = [TlbOp::All; 16];
            let mut n = 0;
            plan_flush(&req, has_range, |op| {
                buf[n] = op;
                n += 1;
                if n == buf.len() {
                    stats.count_tlbi(&buf);
                    p.tlb_maintenance(&buf);
                    n = 0;
                }
            });
            if n > 0 {
                stats.count_tlbi(&buf[..n]);
                p.tlb_maintenance(&buf[..n]);
            }
        }
        let (frees, n) = self.gather.take();
        for f in frees[..n].iter().flatten() {
            if f.subtree {
                self.free_subtree(f.table, f.level);
            } else {
                self.free_table(f.table);
            }
        }
    }

    /// Completes the operation: pending invalidations, deferred frees, unused reservation.
    pub(crate) fn finish(mut self) {
        self.flush();
        debug_assert_eq!(self.reserve.len(), 0, "plan over-reserved table frames");
        self.reserve.release(self.p, self.stats);
    }

    /// Removes the leaf in `e`.
    fn remove_leaf(&mut self, e: Entry) {
        self.write(e, Descriptor::INVALID);
        if self.live() {
            self.gather.add_leaf(e.va().0, e.level());
        }
    }

    /// Replaces the leaf `old` in `e` with `new` (same output address and size).
    fn change_leaf(&mut self, e: Entry, old: Descriptor, new: Descriptor) {
        if !self.live() {
            self.write(e, new);
        } else if leaf_change_needs_bbm(old, new) {
            self.write(e, Descriptor::INVALID);
            let op = self.leaf_op(e);
            self.maintain(&[op]);
            self.write(e, new);
            self.stats.bbm += 1;
        } else {
            self.write(e, new);
            self.gather.add_leaf(e.va().0, e.level());
        }
    }

    /// Unlinks the whole subtree under the table entry `e`, freeing it after invalidation.
    fn detach(&mut self, e: Entry, child: Table) {
        if !self.live() {
            self.write(e, Descriptor::INVALID);
            self.free_subtree(child.pa(), child.level());
            return;
        }
        if !self.gather.has_room() {
            self.flush();
        }
        self.write(e, Descriptor::INVALID);
        self.gather
            .add_detached(e.va().0, e.size(), child.pa(), child.level());
    }

    /// Unlinks the empty table `child` under `e`; `addr` is an address it maps.
    fn detach_empty(&mut self, e: Entry, child: Table, addr: u64) {
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

    /// Starts splitting the leaf `leaf` in `e`: a new, unlinked table holding the 512
    /// next-level leaves that map the same range with the same attributes.
    fn split_start(&mut self, e: Entry, leaf: Descriptor) -> Table {
        let level = e.level();
        debug_assert!(
            !leaf.contiguous(),
            "splitting a block of a contiguous group is not supported yet"
        );
        let child = self.take_table(e);
        let child_level = child.level();
        let oa = leaf.output_address(level).0;
        let attr_bits =
            leaf.0 & !(bits::ADDR | bits::VALID | bits::TABLE_OR_PAGE | bits::CONTIGUOUS);
        let step = child_level.entry_size();
        for i in 0..ENTRIES {
            let d = Descriptor::leaf(child_level, PhysAddr(oa + i as u64 * step));
            self.write(child.entry(i), Descriptor(d.0 | attr_bits));
        }
        self.stats.splits += 1;
        child
    }

    /// Links a table built unlinked under `e`, which holds `cur` (invalid for a new table, the
    /// old leaf for a split).
    fn link(&mut self, e: Entry, cur: Descriptor, child: Table) {
        self.unlinked -= 1;
        let table = Descriptor::table(child.pa());
        if !self.live() {
            // The parent is itself new: the whole subtree is published when it is linked.
            self.write(e, table);
        } else if cur.is_valid() {
            // Split of a live block: break, invalidate the block, make. The TLBI's leading
            // DSB ISHST also publishes the new table's contents before the link.
            self.write(e, Descriptor::INVALID);
            let op = self.leaf_op(e);
            self.maintain(&[op]);
            self.write(e, table);
            self.stats.bbm += 1;
        } else {
            // Invalid → table: no maintenance, but the zeroing and the new entries must be
            // visible to the walker before the link is.
            self.publish();
            self.write(e, table);
        }
    }

    /// If the walk descended into a table it built (`e` does not point to it yet), links it.
    /// Returns whether it did.
    fn link_if_new(&mut self, e: Entry, child: Table) -> bool {
        let cur = self.read(e);
        if cur.is_table(e.level()) && cur.next_table() == child.pa() {
            return false;
        }
        self.link(e, cur, child);
        true
    }
}

/// The geometry of a map request.
#[derive(Clone, Copy)]
pub(crate) struct MapGeom {
    pub va: u64,
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
}

/// Map, pass 1: conflicts and table count.
pub(crate) struct MapPlan {
    pub geom: MapGeom,
    pub tables: usize,
}

impl<C: ?Sized> Visitor<C> for MapPlan {
    type Break = MapError;
    fn visit(
        &mut self,
        _: &mut C,
        e: Entry,
        d: Descriptor,
        addr: u64,
        next: u64,
    ) -> Step<MapError> {
        match d.kind(e.level()) {
            DescriptorKind::Invalid => {
                let g = self.geom;
                self.tables +=
                    tables_for_empty(e.level(), addr, next, &|l, a, b| g.can_leaf(l, a, b));
                Step::Next
            }
            DescriptorKind::Table { next: t } => Step::Descend(e.child(t)),
            _ => Step::Break(MapError::AlreadyMapped(VirtAddr(addr))),
        }
    }
}

/// Map, pass 2.
pub(crate) struct MapOp {
    pub geom: MapGeom,
    pub attrs: Attrs,
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
                    let leaf = self.attrs.leaf(level, PhysAddr(self.geom.pa_at(addr)));
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

    fn leave(
        &mut self,
        cx: &mut Ctx<'_, P>,
        e: Entry,
        child: Table,
        _: u64,
        _: u64,
    ) -> Result<(), MapError> {
        cx.link_if_new(e, child);
        Ok(())
    }
}

/// Unmap / protect, pass 1: how many tables the splits of partially covered blocks need.
pub(crate) struct SplitPlan {
    pub tables: usize,
}

impl<C: ?Sized> Visitor<C> for SplitPlan {
    type Break = core::convert::Infallible;
    fn visit(
        &mut self,
        _: &mut C,
        e: Entry,
        d: Descriptor,
        addr: u64,
        next: u64,
    ) -> Step<Self::Break> {
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

/// Unmap, pass 2.
pub(crate) struct UnmapOp;

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
                if full {
                    cx.detach(e, e.child(t));
                    Step::Next
                } else {
                    Step::Descend(e.child(t))
                }
            }
            _ => {
                if full {
                    cx.remove_leaf(e);
                    Step::Next
                } else {
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
        if !cx.link_if_new(e, child) {
            let empty = (0..ENTRIES).all(|i| !cx.p.read(child.pa(), i).is_valid());
            if empty {
                cx.detach_empty(e, child, addr);
            }
        }
        Ok(())
    }
}

/// Protect, pass 2.
pub(crate) struct ProtectOp {
    pub attrs: Attrs,
}

impl<P: Platform + ?Sized> Visitor<Ctx<'_, P>> for ProtectOp {
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
        match d.kind(level) {
            DescriptorKind::Invalid => Step::Next,
            DescriptorKind::Table { next: t } => Step::Descend(e.child(t)),
            _ => {
                if covers_entry(level, addr, next) {
                    let new = Descriptor((d.0 & !ATTR_MASK) | self.attrs.descriptor_bits());
                    if new != d {
                        cx.change_leaf(e, d, new);
                    }
                    Step::Next
                } else {
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
        _: u64,
        _: u64,
    ) -> Result<(), Self::Break> {
        cx.link_if_new(e, child);
        Ok(())
    }
}

/// Query: stops at the first leaf in the range.
pub(crate) struct FirstLeaf;

impl<C: ?Sized> Visitor<C> for FirstLeaf {
    type Break = (Entry, Descriptor);
    fn visit(&mut self, _: &mut C, e: Entry, d: Descriptor, _: u64, _: u64) -> Step<Self::Break> {
        match d.kind(e.level()) {
            DescriptorKind::Invalid => Step::Next,
            DescriptorKind::Table { next } => Step::Descend(e.child(next)),
            _ => Step::Break((e, d)),
        }
    }
}
