//! The context of one mutating operation: the table frames reserved for it, the gathered TLB
//! invalidation, the queue of removed leaves waiting for it, and the primitive writes
//! (change a leaf, split a block, link a new table) every operation is built from.
//!
//! Every mutating operation plans first (a read-only walk that finds conflicts and counts the
//! table frames it will need), reserves all of them ([`Reserve`]), and only then writes, so it
//! is all-or-nothing without a rollback path. New tables are built unlinked and linked on the
//! way back up the walk with a single write.

use super::attrs::{leaf_change_needs_bbm, Attrs};
use super::desc::{bits, Descriptor, DescriptorKind};
use super::leaf::Leaf;
use super::platform::{Platform, TlbOp};
use super::stats::Stats;
use super::table::{Entry, Table};
use super::tlb::{plan_flush, FlushRequest, Gather, TlbScope, MAX_TLBI_OPS};
use super::walk::{read_block, ReadDesc, Reader};
use crate::addr::{Level, PhysAddr, VirtAddr, CONT_PTES, CONT_SIZE, ENTRIES};
use crate::frames::OutOfMemory;

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
pub(crate) enum Pending {
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

pub(crate) fn leaf_report(va: u64, pa: u64, size: u64, level: Level, desc: Descriptor) -> Leaf {
    Leaf {
        va: VirtAddr(va),
        pa: PhysAddr(pa),
        size,
        level,
        attrs: Attrs::from_descriptor(desc),
        desc,
    }
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
                let (_, g) = read_block(&Reader(p), table, i);
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
    /// Where removed leaves are reported, for an unmap with a callback (the queue lives in
    /// the caller's frame, so that the context stays small).
    pub reports: Option<&'a mut Reports<'a>>,
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

    pub(crate) fn live(&self) -> bool {
        self.unlinked == 0
    }

    pub(crate) fn read(&self, e: Entry) -> Descriptor {
        self.p.read(e.table().pa(), e.index())
    }

    pub(crate) fn write(&mut self, e: Entry, d: Descriptor) {
        self.stats.desc_writes += 1;
        self.p.write(e.table().pa(), e.index(), d);
    }

    pub(crate) fn maintain(&mut self, ops: &[TlbOp]) {
        self.stats.count_tlbi(ops);
        self.p.tlb_maintenance(ops);
    }

    pub(crate) fn publish(&mut self) {
        self.stats.publishes += 1;
        self.p.publish();
    }

    pub(crate) fn leaf_op(&self, e: Entry) -> TlbOp {
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
    pub(crate) fn take_table(&mut self, e: Entry) -> Table {
        let pa = self.reserve.take(self.p, self.stats);
        self.unlinked += 1;
        e.child(pa)
    }

    pub(crate) fn free_table(&mut self, pa: PhysAddr) {
        self.stats.tables_freed += 1;
        self.p.free_table(pa);
    }

    /// Frees `table` and every table below it. Only for tables no MMU can reach any more.
    pub(crate) fn free_subtree(&mut self, table: PhysAddr, level: Level) {
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
    pub(crate) fn issue(&mut self, req: &FlushRequest) {
        issue(&mut *self.p, &mut *self.stats, req)
    }

    /// Issues the gathered invalidation, delivers the reports waiting for it, then frees the
    /// tables waiting for it.
    pub(crate) fn flush(&mut self) {
        if let Some(req) = self.gather.request() {
            self.issue(&req);
        }
        self.deliver();
        self.gather.clear_range();
        while let Some(f) = self.gather.pop_free() {
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

    pub(crate) fn reporting(&self) -> bool {
        self.reports.is_some() && self.live()
    }

    /// Makes room for one more report (flushing, which delivers the queue, if it is full).
    pub(crate) fn report_room(&mut self) {
        if self.reports.as_deref().is_some_and(|r| r.n == REPORT_BATCH) {
            self.flush();
        }
    }

    /// Queues a report, merging it into the previous run when it continues it. Call
    /// [`Self::report_room`] first.
    pub(crate) fn report(&mut self, item: Pending) {
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
    pub(crate) fn remove_leaf(&mut self, e: Entry) {
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

    /// Starts splitting the leaf `leaf` in `e`: a new, unlinked table holding the 512
    /// next-level leaves that map the same range with the same attributes.
    pub(crate) fn split_start(&mut self, e: Entry, leaf: Descriptor) -> Table {
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
    pub(crate) fn link_if_new(&mut self, e: Entry, child: Table) -> bool {
        let cur = self.read(e);
        if cur.is_table(e.level()) && cur.next_table() == child.pa() {
            return false;
        }
        self.link(e, cur, child);
        true
    }
}

/// Issues the invalidation `req` now, in batches of at most [`MAX_TLBI_OPS`] operations.
pub(crate) fn issue<P: Platform + ?Sized>(p: &mut P, stats: &mut Stats, req: &FlushRequest) {
    let has_range = p.has_tlbi_range();
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
