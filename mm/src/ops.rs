//! The mutation context and the visitors behind map, unmap, protect, the PTE-level operations
//! and the queries.
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
//!
//! Contiguous (folded) level-3 blocks are handled here too (see `contpte.rs` for the rules):
//! [`Ctx::bbm_block`] rewrites the 16 entries of a block with one break-before-make,
//! [`Ctx::unfold_partial`] unfolds the blocks a range covers only in part before an operation
//! walks it, and the visitors treat a folded block the range covers whole as one unit where
//! it matters (reporting it once, breaking all 16 entries together).

use super::addr::{covers_entry, Level, PhysAddr, VirtAddr, ENTRIES, PAGE_SIZE};
use super::attrs::{leaf_change_needs_bbm, reprotect, Attrs};
use super::contpte::{CONT_PTES, CONT_SIZE};
use super::desc::{bits, Descriptor, DescriptorKind};
use super::frames::OutOfMemory;
use super::hal::{Platform, TlbOp};
use super::root::Leaf;
use super::stats::Stats;
use super::table::{Entry, Table};
use super::tlb::{plan_flush, FlushRequest, Gather, TlbScope, MAX_TLBI_OPS};
use super::walk::{tables_for_empty, tables_for_split, walk, ReadDesc, Step, Visitor};
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

/// How many reports of removed leaves an unmap queues before it flushes to deliver them.
/// Runs of physically consecutive leaves with equal descriptors take one slot, so a typical
/// unmap flushes once.
pub(crate) const REPORT_BATCH: usize = 32;

/// Removed leaves waiting for the invalidation that must precede their report.
#[derive(Clone, Copy, Debug)]
enum Pending {
    /// `[va, va + len)` mapped `[pa, pa + len)` by leaves of `leaf` bytes at `level` whose
    /// descriptors equal `desc` but for the output address. `whole`: the leaves are whole
    /// entries (a run may grow); otherwise one clipped piece of a block.
    Run {
        va: u64,
        pa: u64,
        len: u64,
        leaf: u64,
        level: Level,
        desc: Descriptor,
        whole: bool,
    },
    /// A detached subtree (`table` at `level`, mapping from `va`), reported by reading it
    /// after the invalidation and before it is freed.
    Subtree { table: PhysAddr, level: Level, va: u64 },
}

/// The report queue of an unmap with a per-leaf callback.
pub(crate) struct Reports<'s> {
    sink: &'s mut dyn FnMut(&Leaf),
    queue: [Option<Pending>; REPORT_BATCH],
    n: usize,
}

impl<'s> Reports<'s> {
    pub(crate) fn new(sink: &'s mut dyn FnMut(&Leaf)) -> Self {
        Reports {
            sink,
            queue: [None; REPORT_BATCH],
            n: 0,
        }
    }
}

fn leaf_report(va: u64, pa: u64, size: u64, level: Level, desc: Descriptor) -> Leaf {
    Leaf {
        va: VirtAddr(va),
        pa: PhysAddr(pa),
        size,
        level,
        attrs: Attrs::from_descriptor(desc),
        desc,
    }
}

/// The 16 descriptors of the contiguous block starting at `first` in `table`, and their
/// gathered state: the first entry with AF and dirty ORed over all 16.
pub(crate) fn read_block<C: ReadDesc + ?Sized>(
    cx: &C,
    table: PhysAddr,
    first: usize,
) -> ([Descriptor; CONT_PTES], Descriptor) {
    let mut old = [Descriptor::INVALID; CONT_PTES];
    for (i, d) in old.iter_mut().enumerate() {
        *d = cx.read_desc(table, first + i);
    }
    let gathered = old[1..].iter().fold(old[0], |g, d| g.gather_young_dirty(*d));
    (old, gathered)
}

/// Reports every leaf of the (detached, invalidated) subtree `table` at `level`; a folded
/// level-3 block is one 64 KiB leaf with its state gathered.
fn report_subtree<P: Platform + ?Sized>(
    p: &P,
    table: PhysAddr,
    level: Level,
    va: u64,
    sink: &mut dyn FnMut(&Leaf),
) {
    let mut i = 0;
    while i < ENTRIES {
        let d = p.read(table, i);
        let at = va.wrapping_add((i as u64) << level.shift());
        match d.kind(level) {
            DescriptorKind::Invalid => {}
            DescriptorKind::Table { next } => {
                let child = level.next().expect("tables only above level 3");
                report_subtree(p, next, child, at, sink);
            }
            _ if level.is_page_level() && d.contiguous() && i % CONT_PTES == 0 => {
                let (_, g) = read_block(&super::walk::Reader(p), table, i);
                sink(&leaf_report(at, d.output_address(level).0, CONT_SIZE, level, g));
                i += CONT_PTES;
                continue;
            }
            _ => sink(&leaf_report(
                at,
                d.output_address(level).0,
                level.entry_size(),
                level,
                d,
            )),
        }
        i += 1;
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
    /// Where removed leaves are reported, for an unmap with a callback.
    pub reports: Option<Reports<'a>>,
}

impl<P: Platform + ?Sized> ReadDesc for Ctx<'_, P> {
    fn read_desc(&self, table: PhysAddr, index: usize) -> Descriptor {
        self.p.read(table, index)
    }
}

impl<'a, P: Platform + ?Sized> Ctx<'a, P> {
    pub(crate) fn new(p: &'a mut P, stats: &'a mut Stats, scope: TlbScope, reserve: Reserve) -> Self {
        Ctx {
            p,
            stats,
            scope,
            gather: Gather::new(scope),
            reserve,
            unlinked: 0,
            reports: None,
        }
    }

    fn live(&self) -> bool {
        self.unlinked == 0
    }

    pub(crate) fn read(&self, e: Entry) -> Descriptor {
        self.p.read(e.table().pa(), e.index())
    }

    pub(crate) fn write(&mut self, e: Entry, d: Descriptor) {
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

    /// Issues the instructions for `req` now, as one barrier-bracketed batch ([`plan_flush`]
    /// emits at most [`MAX_TLBI_OPS`] of them).
    fn issue(&mut self, req: &FlushRequest) {
        let has_range = self.p.has_tlbi_range();
        let (p, stats) = (&mut *self.p, &mut *self.stats);
        let mut buf = [TlbOp::All; MAX_TLBI_OPS as usize];
        let mut n = 0;
        plan_flush(req, has_range, |op| {
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

    /// Issues the gathered invalidation, delivers the reports waiting for it, then frees the
    /// tables waiting for it.
    pub(crate) fn flush(&mut self) {
        if let Some(req) = self.gather.request() {
            self.issue(&req);
        }
        self.deliver();
        let (frees, n) = self.gather.take();
        for f in frees[..n].iter().flatten() {
            if f.subtree {
                self.free_subtree(f.table, f.level);
            } else {
                self.free_table(f.table);
            }
        }
    }

    /// Hands the queued reports to the callback. Only called once every queued leaf is
    /// invalid in the tables and invalidated in every TLB; detached subtrees are still
    /// allocated (they are freed after this).
    fn deliver(&mut self) {
        let p = &*self.p;
        let Some(r) = self.reports.as_mut() else {
            return;
        };
        for slot in &mut r.queue[..r.n] {
            match slot.take() {
                Some(Pending::Run {
                    va,
                    pa,
                    len,
                    leaf,
                    level,
                    desc,
                    whole,
                }) => {
                    let mut off = 0;
                    while off < len {
                        let d = if whole {
                            desc.with_address(PhysAddr(pa + off))
                        } else {
                            desc
                        };
                        (r.sink)(&leaf_report(va.wrapping_add(off), pa + off, leaf, level, d));
                        off += leaf;
                    }
                }
                Some(Pending::Subtree { table, level, va }) => {
                    report_subtree(p, table, level, va, &mut *r.sink)
                }
                None => {}
            }
        }
        r.n = 0;
    }

    fn reporting(&self) -> bool {
        self.reports.is_some() && self.live()
    }

    /// Makes room for one more report (flushing, which delivers the queue, if it is full).
    fn report_room(&mut self) {
        if self.reports.as_ref().is_some_and(|r| r.n == REPORT_BATCH) {
            self.flush();
        }
    }

    /// Queues a report, merging it into the previous run when it continues it. Call
    /// [`Self::report_room`] first.
    fn report(&mut self, item: Pending) {
        let Some(r) = self.reports.as_mut() else {
            return;
        };
        if let (
            Some(Some(Pending::Run {
                va,
                pa,
                len,
                leaf,
                level,
                desc,
                whole: true,
            })),
            Pending::Run {
                va: va2,
                pa: pa2,
                len: len2,
                leaf: leaf2,
                level: level2,
                desc: desc2,
                whole: true,
            },
        ) = (r.n.checked_sub(1).map(|i| &mut r.queue[i]), item)
        {
            if *level == level2
                && *leaf == leaf2
                && va.wrapping_add(*len) == va2
                && *pa + *len == pa2
                && (desc.0 ^ desc2.0) & !bits::ADDR == 0
            {
                *len += len2;
                return;
            }
        }
        debug_assert!(r.n < REPORT_BATCH, "report queue full");
        r.queue[r.n] = Some(item);
        r.n += 1;
    }

    /// Completes the operation: pending invalidations, reports and deferred frees, unused
    /// reservation.
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
    pub(crate) fn change_leaf(&mut self, e: Entry, old: Descriptor, new: Descriptor) {
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

    /// Writes the live leaf `e` (holding `old`) as `new` in place, gathering an invalidation
    /// only if the permissions changed. For A/D updates: a TLB never holds an entry whose AF
    /// was clear, and the software bits are not cached state.
    pub(crate) fn update_leaf(&mut self, e: Entry, old: Descriptor, new: Descriptor) {
        debug_assert!(!leaf_change_needs_bbm(old, new));
        self.write(e, new);
        let perms = bits::AP | bits::PXN | bits::UXN;
        if (old.0 ^ new.0) & perms != 0 {
            self.gather.add_leaf(e.va().0, e.level());
        }
    }

    /// Invalidates now every page of the 64 KiB block at `va`: an implementation may have
    /// cached the block as one entry or page by page, so every page is covered.
    fn invalidate_block(&mut self, va: u64) {
        let req = FlushRequest {
            scope: self.scope,
            start: va,
            last: va + (CONT_SIZE - 1),
            stride: PAGE_SIZE,
            leaf_only: true,
            level: Some(Level::L3),
        };
        self.issue(&req);
    }

    /// Break-before-make over the 16 live entries of the block starting at `first` in the
    /// level-3 `table`: writes all of them invalid, invalidates the whole 64 KiB in one batch,
    /// then writes `make(i, old_i)` into entry `first + i` (an invalid result leaves it
    /// invalid). The only way the engine changes the Contiguous bit of live entries.
    pub(crate) fn bbm_block(
        &mut self,
        table: Table,
        first: usize,
        mut make: impl FnMut(usize, Descriptor) -> Descriptor,
    ) {
        debug_assert!(self.live() && table.level().is_page_level());
        debug_assert_eq!(first % CONT_PTES, 0);
        let (old, _) = read_block(self, table.pa(), first);
        for (i, o) in old.iter().enumerate() {
            if o.is_valid() {
                self.write(table.entry(first + i), Descriptor::INVALID);
            }
        }
        self.invalidate_block(table.entry(first).va().0);
        for (i, o) in old.iter().enumerate() {
            let new = make(i, *o);
            if new.is_valid() {
                self.write(table.entry(first + i), new);
            }
        }
        self.stats.bbm += 1;
    }

    /// Folds (`fold`) or unfolds the block starting at `first`: break-before-make over its 16
    /// entries, rewritten identical but for their output addresses, with the AF and dirty
    /// state gathered over the block (the hardware may have updated any one of them).
    pub(crate) fn convert_block(&mut self, table: Table, first: usize, fold: bool) {
        let (_, g) = read_block(self, table.pa(), first);
        let template = g.with_contiguous(fold);
        self.bbm_block(table, first, |_, o| template.with_address(o.address()));
        if fold {
            self.stats.folds += 1;
        } else {
            self.stats.unfolds += 1;
        }
    }

    /// Folds the block starting at `first` in the live level-3 `table` if its 16 entries
    /// qualify: all valid pages without the bit, consecutive output addresses from a 64 KiB
    /// aligned base, identical attributes but for AF and the dirty state. The caller vouches
    /// that the physical block is one folio. Returns whether it folded.
    pub(crate) fn try_fold(&mut self, table: Table, first: usize) -> bool {
        let (old, _) = read_block(self, table.pa(), first);
        if !block_qualifies(&old) {
            return false;
        }
        self.convert_block(table, first, true);
        true
    }

    /// Unfolds the folded blocks that `[start, end)` (wrapping end) covers only in part — at
    /// most two: the blocks of the first and of the last page — so that the operation about
    /// to walk the range never changes part of a folded block.
    pub(crate) fn unfold_partial(&mut self, root: Table, start: u64, end: u64) {
        let last = end.wrapping_sub(PAGE_SIZE);
        let first_block = start & !(CONT_SIZE - 1);
        let last_block = last & !(CONT_SIZE - 1);
        let blocks = [
            Some(first_block),
            (last_block != first_block).then_some(last_block),
        ];
        for block in blocks.into_iter().flatten() {
            if block_covered(block, start, end) {
                continue;
            }
            // The block holds `start` or `last`; look it up through a page of it in the range.
            let page = if block == first_block { start } else { last };
            if let Some(Slot::Pte(e)) = find_slot(self, root, page) {
                if self.read(e).contiguous() {
                    let t = e.table();
                    self.convert_block(t, e.index() & !(CONT_PTES - 1), false);
                }
            }
        }
    }

    /// Removes the leaf in `e` (holding `d`), reporting it if the operation reports.
    fn unmap_leaf(&mut self, e: Entry, d: Descriptor) {
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
    fn detach(&mut self, e: Entry, child: Table) {
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
            "splitting a block of a contiguous group is not supported"
        );
        let child = self.take_table(e);
        let child_level = child.level();
        let oa = leaf.output_address(level).0;
        let attr_bits = leaf.0 & !(bits::ADDR | bits::VALID | bits::TABLE_OR_PAGE | bits::CONTIGUOUS);
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

/// Whether the 16 entries `old` can be folded (see [`Ctx::try_fold`]).
pub(crate) fn block_qualifies(old: &[Descriptor; CONT_PTES]) -> bool {
    let base = old[0].address().0;
    if !base.is_multiple_of(CONT_SIZE) {
        return false;
    }
    let key = old[0].fold_key();
    old.iter().enumerate().all(|(i, d)| {
        matches!(d.kind(Level::L3), DescriptorKind::Page { .. })
            && !d.contiguous()
            && d.address().0 == base + i as u64 * PAGE_SIZE
            && d.fold_key() == key
    })
}

/// Whether `[start, end)` (wrapping end) covers the whole 64 KiB block at `block`.
pub(crate) fn block_covered(block: u64, start: u64, end: u64) -> bool {
    block >= start && block + (CONT_SIZE - 1) <= end.wrapping_sub(1)
}

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

/// A change applied to every leaf of a range.
#[derive(Clone, Copy, Debug)]
pub(crate) enum LeafChange {
    /// [`super::Root::protect`]: attributes replaced (see [`reprotect`]).
    Protect(Attrs),
    /// Write permission revoked, dirty state kept ([`Descriptor::with_writable`]).
    WrProtect,
}

impl LeafChange {
    fn apply(self, d: Descriptor) -> Descriptor {
        match self {
            LeafChange::Protect(a) => reprotect(d, a),
            LeafChange::WrProtect => d.with_writable(false),
        }
    }
}

/// Protect / write-protect, pass 2. Changes are idempotent, so entries of a folded block
/// rewritten together at its first entry are seen unchanged when the walk reaches them.
pub(crate) struct ChangeOp {
    pub change: LeafChange,
}

impl<P: Platform + ?Sized> Visitor<Ctx<'_, P>> for ChangeOp {
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
                    let new = self.change.apply(d);
                    if new == d {
                        return Step::Next;
                    }
                    if level.is_page_level() && d.contiguous() && cx.live() && leaf_change_needs_bbm(d, new) {
                        // Memory type / nG of a whole folded block: all 16 entries break
                        // together, so the group never holds two memory types.
                        debug_assert_eq!(e.index() % CONT_PTES, 0, "folded block covered in part");
                        let change = self.change;
                        cx.bbm_block(e.table(), e.index(), |_, o| change.apply(o));
                    } else {
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

/// Where the translation of one page is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Slot {
    /// The level-3 entry (valid or not).
    Pte(Entry),
    /// A level-1 or level-2 block covering the page.
    Block(Entry),
}

/// Query: the slot of one page (stops at a level-3 entry or a block).
pub(crate) struct FindSlot;

impl<C: ?Sized> Visitor<C> for FindSlot {
    type Break = Slot;
    fn visit(&mut self, _: &mut C, e: Entry, d: Descriptor, _: u64, _: u64) -> Step<Slot> {
        let level = e.level();
        match d.kind(level) {
            _ if level.is_page_level() => Step::Break(Slot::Pte(e)),
            DescriptorKind::Invalid => Step::Next,
            DescriptorKind::Table { next } => Step::Descend(e.child(next)),
            _ => Step::Break(Slot::Block(e)),
        }
    }
}

/// The slot of the page at `va` under `root`, if the path reaches a level-3 table or a block.
pub(crate) fn find_slot<C: ReadDesc + ?Sized>(cx: &mut C, root: Table, va: u64) -> Option<Slot> {
    let page = va & !(PAGE_SIZE - 1);
    walk(cx, &mut FindSlot, root, page, page.wrapping_add(PAGE_SIZE)).err()
}

/// The table at `target` level for one page, pass 1: how many tables are missing (or a block
/// in the way). `target` is level 3 for a PTE slot, level 2 for the slot of a level-3 table.
pub(crate) struct PtePlan {
    pub tables: usize,
    pub target: Level,
}

impl<C: ?Sized> Visitor<C> for PtePlan {
    type Break = MapError;
    fn visit(&mut self, _: &mut C, e: Entry, d: Descriptor, addr: u64, _: u64) -> Step<MapError> {
        let level = e.level();
        match d.kind(level) {
            _ if level == self.target => Step::Next,
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
