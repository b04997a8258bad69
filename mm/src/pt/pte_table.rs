//! Level-3 tables shared between user roots: the engine side of copy-on-write page tables
//! (link, write-protect, replace, detach and unprotect a shared table, each with the
//! maintenance the architecture needs). The steps are described in docs/mm.md ("Shared
//! level-3 tables").

use alloc::vec::Vec;

use super::ctx::{Ctx, Reserve};
use super::desc::{ApTable, Descriptor, DescriptorKind};
use super::error::MapError;
use super::platform::Platform;
use super::root::Root;
use super::table::{Entry, Table};
use super::walk::{eight_empty, walk, ReadDesc, Reader, Step, Visitor};
use crate::addr::{Level, PhysAddr, VirtAddr, ENTRIES, PAGE_SIZE};
use crate::frames::OutOfMemory;

/// Bytes mapped by one level-3 table (the span of one level-2 entry).
pub const PTE_TABLE_SPAN: u64 = PAGE_SIZE * ENTRIES as u64;

/// A level-3 table as one root's level-2 entry sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PteTable {
    /// First VA of the 2 MiB span.
    pub va: VirtAddr,
    /// The table frame.
    pub pa: PhysAddr,
    /// Whether this root's level-2 descriptor forbids writes below it (APTable NoWrite).
    pub write_protected: bool,
}

/// A fresh level-3 table frame, not linked anywhere yet, for [`Root::replace_pte_table`].
/// Give it back with [`NewPteTable::discard`] if it is not used.
#[must_use = "link it with Root::replace_pte_table or free it with NewPteTable::discard"]
#[derive(Debug)]
pub struct NewPteTable {
    pa: PhysAddr,
}

impl NewPteTable {
    /// Returns the frame to the platform.
    pub fn discard<P: Platform + ?Sized>(self, p: &mut P) {
        p.free_table(self.pa);
    }
}

/// Query: the level-2 entry on `va`'s path, if the walk reaches level 2.
struct FindPmd;

impl<C: ?Sized> Visitor<C> for FindPmd {
    type Break = Entry;
    fn visit(&mut self, _: &mut C, e: Entry, d: Descriptor, _: u64, _: u64) -> Step<Entry> {
        if e.level() == Level::L2 {
            return Step::Break(e);
        }
        match d.kind(e.level()) {
            DescriptorKind::Table { next } => Step::Descend(e.child(next)),
            _ => Step::Next,
        }
    }
}

/// Appends to `out` every level-2 entry holding a table under `table` in `[start, last]`
/// (inclusive `last`, so that a range ending at 2^64 needs no special case). Reads only the
/// entries of the range and descends only into present tables: an empty stretch of the
/// address space costs one descriptor read per entry of the lowest level present there.
fn collect_pmds<P: Platform + ?Sized>(p: &P, table: Table, start: u64, last: u64, out: &mut Vec<PteTable>) {
    let level = table.level();
    let (first, end) = (level.index_of(start), level.index_of(last));
    let mut i = first;
    while i <= end {
        // Empty stretches eight entries at a time.
        if i % 8 == 0 && i + 8 <= end + 1 && eight_empty(&Reader(p), table.pa(), i) {
            i += 8;
            continue;
        }
        let d = p.read(table.pa(), i);
        i += 1;
        if !d.is_valid() || !d.is_table(level) {
            continue;
        }
        let e = table.entry(i - 1);
        if level == Level::L2 {
            out.push(PteTable {
                va: e.va(),
                pa: d.next_table(),
                write_protected: d.ap_table() != ApTable::NoEffect,
            });
        } else {
            let lo = e.va().0.max(start);
            let hi = e.va().0.wrapping_add(e.size() - 1).min(last);
            collect_pmds(p, e.child(d.next_table()), lo, hi, out);
        }
    }
}

impl Root {
    /// The level-2 slot on `va`'s path, if the tables down to level 2 exist.
    fn pmd_slot<P: Platform + ?Sized>(&self, p: &P, va: u64) -> Option<Entry> {
        let page = va & !(PAGE_SIZE - 1);
        self.check_range(VirtAddr(page), PAGE_SIZE).ok()?;
        walk(
            &mut Reader(p),
            &mut FindPmd,
            self.table,
            page,
            page.wrapping_add(PAGE_SIZE),
        )
        .err()
    }

    /// The level-3 table covering `va`, if this root's level-2 entry for it holds a table.
    pub fn pte_table<P: Platform + ?Sized>(&self, p: &P, va: VirtAddr) -> Option<PteTable> {
        let e = self.pmd_slot(p, va.0)?;
        let d = Reader(p).read_desc(e.table().pa(), e.index());
        match d.kind(Level::L2) {
            DescriptorKind::Table { next } => Some(PteTable {
                va: e.va(),
                pa: next,
                write_protected: d.ap_table() != ApTable::NoEffect,
            }),
            _ => None,
        }
    }

    /// Every level-3 table of `[start, end)` (spans overlapping the range), in address order.
    pub fn pte_tables<P: Platform + ?Sized>(&self, p: &P, start: u64, end: u64) -> Vec<PteTable> {
        let mut out = Vec::new();
        let start = start & !(PTE_TABLE_SPAN - 1);
        let end = end.next_multiple_of(PTE_TABLE_SPAN);
        if start >= end || self.check_range(VirtAddr(start), end - start).is_err() {
            return out;
        }
        collect_pmds(p, self.table, start, end.wrapping_sub(1), &mut out);
        out
    }

    /// Links `table`, a level-3 table that another root maps at the same addresses, as this
    /// root's table for the 2 MiB span of `va`, with `APTable = NoWrite`. The span must have
    /// no table here ([`MapError::AlreadyMapped`] otherwise). Missing level-1/2 tables are
    /// allocated first, all or nothing ([`MapError::OutOfMemory`] changes nothing).
    pub fn link_shared_pte_table<P: Platform + ?Sized>(
        &mut self,
        p: &mut P,
        va: VirtAddr,
        table: PhysAddr,
    ) -> Result<(), MapError> {
        let span = va.0 & !(PTE_TABLE_SPAN - 1);
        if let Some(e) = self.pmd_slot(p, span) {
            if Reader(&*p).read_desc(e.table().pa(), e.index()).is_valid() {
                return Err(MapError::AlreadyMapped(VirtAddr(span)));
            }
        }
        let slot = self.alloc_slot(p, VirtAddr(span), Level::L2)?;
        let scope = self.scope();
        let mut cx = Ctx::new(p, &mut self.stats, scope, Reserve::empty());
        // Invalid → table: the barrier orders the new intermediate tables and the shared
        // table's contents (published when the other root wrote them) before the link.
        cx.publish();
        cx.write(slot, Descriptor::table(table).with_ap_table(ApTable::NoWrite));
        cx.finish();
        Ok(())
    }

    /// Sets `APTable = NoWrite` on this root's level-2 entries for the spans starting at the
    /// given addresses (each must hold a table; entries already limited are left alone), then
    /// invalidates every changed span with one gathered non-last-level invalidation. Returns
    /// how many entries changed.
    pub fn wrprotect_pte_tables<P: Platform + ?Sized>(
        &mut self,
        p: &mut P,
        spans: impl IntoIterator<Item = VirtAddr>,
    ) -> usize {
        let slots: Vec<Entry> = spans
            .into_iter()
            .filter_map(|va| self.pmd_slot(p, va.0))
            .collect();
        let scope = self.scope();
        let mut cx = Ctx::new(p, &mut self.stats, scope, Reserve::empty());
        let mut n = 0;
        for e in slots {
            let d = cx.read(e);
            assert!(
                d.is_table(Level::L2),
                "wrprotect_pte_tables: no level-3 table at {}",
                e.va()
            );
            if d.ap_table() == ApTable::NoEffect {
                cx.write(e, d.with_ap_table(ApTable::NoWrite));
                cx.gather.add_table_span(e.va().0, PTE_TABLE_SPAN);
                n += 1;
            }
        }
        cx.finish();
        n
    }

    /// Lifts the `APTable` limit of the level-2 entry for `va`'s span (the caller owns the
    /// table alone now and has made its leaves what it wants writable), and invalidates the
    /// span. Returns whether anything changed.
    pub fn unprotect_pte_table<P: Platform + ?Sized>(&mut self, p: &mut P, va: VirtAddr) -> bool {
        let Some(e) = self.pmd_slot(p, va.0) else {
            return false;
        };
        let scope = self.scope();
        let mut cx = Ctx::new(p, &mut self.stats, scope, Reserve::empty());
        let d = cx.read(e);
        let changed = d.is_table(Level::L2) && d.ap_table() != ApTable::NoEffect;
        if changed {
            cx.write(e, d.with_ap_table(ApTable::NoEffect));
            cx.gather.add_table_span(e.va().0, PTE_TABLE_SPAN);
        }
        cx.finish();
        changed
    }

    /// Unlinks the level-3 table of `va`'s span from this root **without freeing it** (another
    /// root still links it), and invalidates the span (walk cache included). Returns the
    /// table's address, or `None` if there was none.
    pub fn detach_pte_table<P: Platform + ?Sized>(&mut self, p: &mut P, va: VirtAddr) -> Option<PhysAddr> {
        let e = self.pmd_slot(p, va.0)?;
        let scope = self.scope();
        let mut cx = Ctx::new(p, &mut self.stats, scope, Reserve::empty());
        let d = cx.read(e);
        let out = match d.kind(Level::L2) {
            DescriptorKind::Table { next } => {
                cx.write(e, Descriptor::INVALID);
                cx.gather.add_table_span(e.va().0, PTE_TABLE_SPAN);
                Some(next)
            }
            _ => None,
        };
        cx.finish();
        out
    }

    /// A fresh, unlinked level-3 table frame for [`Root::replace_pte_table`].
    pub fn alloc_pte_table<P: Platform + ?Sized>(&mut self, p: &mut P) -> Result<NewPteTable, OutOfMemory> {
        let pa = p.alloc_table()?;
        self.stats.tables_allocated += 1;
        Ok(NewPteTable { pa })
    }

    /// Replaces this root's level-3 table for `va`'s span by `new`, filled from the current
    /// table: entry `i` becomes `f(va of i, old entry)` for every valid old entry (invalid ones
    /// stay invalid). `f` must keep 16-entry contiguous groups consistent (change every entry
    /// of a group the same way). The level-2 entry is replaced by break-before-make with one
    /// non-last-level invalidation of the span, and the new link has no APTable limit. The old
    /// table is neither changed nor freed; its address is returned.
    ///
    /// # Panics
    /// If the span has no level-3 table.
    pub fn replace_pte_table<P: Platform + ?Sized>(
        &mut self,
        p: &mut P,
        va: VirtAddr,
        new: NewPteTable,
        mut f: impl FnMut(VirtAddr, Descriptor) -> Descriptor,
    ) -> PhysAddr {
        let e = self
            .pmd_slot(p, va.0)
            .expect("replace_pte_table: no level-2 table on the path");
        let scope = self.scope();
        let mut cx = Ctx::new(p, &mut self.stats, scope, Reserve::empty());
        let cur = cx.read(e);
        let DescriptorKind::Table { next: old } = cur.kind(Level::L2) else {
            panic!("replace_pte_table: no level-3 table at {}", e.va());
        };
        let base = e.va().0;
        for i in 0..ENTRIES {
            let d = cx.p.read(old, i);
            if d.is_valid() {
                let nd = f(VirtAddr(base + i as u64 * PAGE_SIZE), d);
                cx.stats.desc_writes += 1;
                cx.p.write(new.pa, i, nd);
            }
        }
        // Break, invalidate (the flush's leading DSB ISHST also publishes the new table),
        // make.
        cx.write(e, Descriptor::INVALID);
        cx.gather.add_table_span(base, PTE_TABLE_SPAN);
        cx.flush();
        cx.write(e, Descriptor::table(new.pa));
        cx.stats.bbm += 1;
        cx.finish();
        old
    }
}
