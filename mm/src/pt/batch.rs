//! PTE operations over whole level-3 tables, for fork: install the runs of one table under one
//! context ([`Root::set_pte_runs`]) and write-protect many ranges with one deferred
//! invalidation ([`Root::wrprotect_pte_ranges`]). One walk per table; the entries themselves
//! are written in a loop over the table. The rules are those of the single-range operations
//! (docs/mm.md, "CONTPTE").

use alloc::vec::Vec;

use super::ctx::{Ctx, Reserve};
use super::desc::{bits, Descriptor, DescriptorKind};
use super::error::MapError;
use super::fold::block_covered;
use super::platform::Platform;
use super::platform::TlbOp;
use super::query::{find_slot, Slot};
use super::root::Root;
use super::stats::Stats;
use super::table::{Entry, Table};
use super::tlb::{plan_flush, FlushRequest};
use super::walk::{read_block, Reader};
use crate::addr::{Level, PhysAddr, VirtAddr, CONT_PTES, CONT_SIZE, PAGE_SIZE, PA_END};
use crate::PTE_TABLE_SPAN;

/// One run of [`Root::set_pte_runs`]: `nr` pages from `va` mapped after the template page
/// descriptor `pte` (as [`Root::set_ptes`]), `fold_ok` with the meaning it has there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PteRun {
    /// First VA.
    pub va: VirtAddr,
    /// Template: attributes, AF, dirty state, software bits and the first output address.
    pub pte: Descriptor,
    /// Number of pages.
    pub nr: usize,
    /// The caller's word that each 64 KiB aligned physical block the run touches lies inside
    /// one folio.
    pub fold_ok: bool,
}

impl PteRun {
    fn end(&self) -> u64 {
        self.va.0 + self.nr as u64 * PAGE_SIZE
    }
}

/// The bits of a leaf other than its output address and type (what a template contributes).
const TEMPLATE_BITS: u64 = !(bits::ADDR | bits::VALID | bits::TABLE_OR_PAGE | bits::CONTIGUOUS);

impl Root {
    /// Maps every run of `runs` — all inside the span of one level-3 table, in increasing
    /// address order, not overlapping, every page unmapped — as [`Root::set_ptes`] would map
    /// each, under one context: one walk to the table (allocating the missing tables first,
    /// all or nothing), then the entries written in a loop over the table. With CONTPTE
    /// enabled, every 64 KiB block a `fold_ok` run covers whole at a 64 KiB aligned physical
    /// address is written folded (invalid → valid: no TLBI); the blocks a `fold_ok` run
    /// touches in part are folded afterwards if they then qualify, as `set_ptes` does. One
    /// barrier publishes the entries.
    ///
    /// Everything is checked before the first write (ranges, descriptors, attributes, that
    /// every page is unmapped): an error changes nothing.
    pub fn set_pte_runs<P: Platform + ?Sized>(&mut self, p: &mut P, runs: &[PteRun]) -> Result<(), MapError> {
        let Some(first) = runs.first() else {
            return Ok(());
        };
        let span = first.va.0 & !(PTE_TABLE_SPAN - 1);
        let mut prev_end = span;
        let mut prev_bits = None;
        for r in runs {
            if r.nr == 0 {
                return Err(MapError::ZeroLength);
            }
            let len = (r.nr as u64).checked_mul(PAGE_SIZE).ok_or(MapError::VaOverflow)?;
            self.check_range(r.va, len)?;
            if r.va.0 < prev_end || r.end() > span + PTE_TABLE_SPAN {
                return Err(MapError::OutOfRange { va: r.va, len });
            }
            prev_end = r.end();
            if !matches!(r.pte.kind(Level::L3), DescriptorKind::Page { .. }) {
                return Err(MapError::BadDescriptor(r.pte));
            }
            let pa = r.pte.address();
            if pa.0.checked_add(len - 1).is_none_or(|last| last >= PA_END) {
                return Err(MapError::PaOutOfRange(pa));
            }
            // Runs of one table mostly share their attributes: check each distinct set once.
            let b = r.pte.0 & TEMPLATE_BITS;
            if prev_bits != Some(b) {
                self.check_attrs(super::attrs::Attrs::from_descriptor(r.pte))?;
                prev_bits = Some(b);
            }
        }
        let table = match find_slot(&mut Reader(&*p), self.table, span) {
            Some(Slot::Pte(e)) => e.table(),
            Some(Slot::Block(_)) => return Err(MapError::BlockMapped(VirtAddr(span))),
            None => self.alloc_slot(p, VirtAddr(span), Level::L3)?.table(),
        };
        for r in runs {
            let i0 = Level::L3.index_of(r.va.0);
            if let Some(i) = (i0..i0 + r.nr).find(|&i| p.read(table.pa(), i).is_valid()) {
                return Err(MapError::AlreadyMapped(table.entry(i).va()));
            }
        }
        let fold = self.contpte;
        let scope = self.scope();
        let mut cx = Ctx::new(p, &mut self.stats, scope, Reserve::empty());
        for r in runs {
            write_run(cx.p, cx.stats, table, r, fold && r.fold_ok);
        }
        cx.publish();
        if fold {
            for r in runs.iter().filter(|r| r.fold_ok) {
                for page in super::fold::partial_blocks(r.va.0, r.end()) {
                    let first = Level::L3.index_of(page) & !(CONT_PTES - 1);
                    // A block shared by two runs is looked at once per run; the second finds
                    // it folded (or still not qualifying).
                    cx.try_fold(table, first);
                }
            }
        }
        cx.finish();
        Ok(())
    }

    /// Revokes write permission on every page of `ranges` (`(va, nr)` pairs in increasing
    /// address order, not overlapping; holes fine), keeping the dirty state — the parent's
    /// side of fork, for all the ranges of a fork at once. Each level-3 table is looked up
    /// once and its entries changed in place in a loop; whole folded blocks stay folded, the
    /// at most two blocks a range covers in part are unfolded first (break-before-make, as
    /// [`Root::wrprotect_ptes`]). The invalidation of the changed entries is deferred to one
    /// gathered flush at the end, which has completed when this returns.
    ///
    /// Spans without a level-3 table are skipped. Fails with [`MapError::BlockMapped`], before
    /// anything is written, if a level-1/2 block maps part of a range.
    pub fn wrprotect_pte_ranges<P: Platform + ?Sized>(
        &mut self,
        p: &mut P,
        ranges: &[(VirtAddr, usize)],
    ) -> Result<(), MapError> {
        // (table, first index, end index, range start, range end) per piece.
        let mut pieces: Vec<(Table, usize, usize, u64, u64)> = Vec::new();
        let mut cached: Option<(u64, Option<Table>)> = None;
        for &(va, nr) in ranges {
            if nr == 0 {
                continue;
            }
            let len = (nr as u64).checked_mul(PAGE_SIZE).ok_or(MapError::VaOverflow)?;
            let (start, end) = self.check_range(va, len)?;
            let mut at = start;
            while at != end {
                let span = at & !(PTE_TABLE_SPAN - 1);
                // The smaller of the two last addresses, so that an end of 2^64 (0) works.
                let span_end = span.wrapping_add(PTE_TABLE_SPAN);
                let piece_end = if end.wrapping_sub(1) < span_end.wrapping_sub(1) {
                    end
                } else {
                    span_end
                };
                let table = match cached {
                    Some((s, t)) if s == span => t,
                    _ => {
                        let t = match find_slot(&mut Reader(&*p), self.table, span) {
                            Some(Slot::Pte(e)) => Some(e.table()),
                            Some(Slot::Block(_)) => return Err(MapError::BlockMapped(VirtAddr(span))),
                            None => None,
                        };
                        cached = Some((span, t));
                        t
                    }
                };
                if let Some(t) = table {
                    let i0 = Level::L3.index_of(at);
                    let n = (piece_end.wrapping_sub(at) / PAGE_SIZE) as usize;
                    pieces.push((t, i0, i0 + n, start, end));
                }
                at = piece_end;
            }
        }
        let scope = self.scope();
        let mut cx = Ctx::new(p, &mut self.stats, scope, Reserve::empty());
        for &(table, i0, i1, start, end) in &pieces {
            // The blocks at the ends of the piece that the range covers in part.
            for i in [i0, i1 - 1] {
                let first = i & !(CONT_PTES - 1);
                let block = table.entry(first).va().0;
                if !block_covered(block, start, end) && cx.read(table.entry(i)).contiguous() {
                    cx.convert_block(table, first, false);
                }
            }
            let mut changed: Option<(usize, usize)> = None;
            for i in i0..i1 {
                let d = cx.p.read(table.pa(), i);
                if !d.is_valid() || !d.writable() {
                    continue;
                }
                cx.stats.desc_writes += 1;
                cx.p.write(table.pa(), i, d.with_writable(false));
                changed = Some(changed.map_or((i, i), |(a, _)| (a, i)));
            }
            if let Some((a, b)) = changed {
                let va = table.entry(a).va().0;
                cx.gather
                    .add_leaves(va, (b - a + 1) as u64 * PAGE_SIZE, Level::L3);
            }
        }
        cx.finish();
        Ok(())
    }
}

impl Root {
    /// [`Root::set_ptes`] of `nr` pages from the level-3 `slot` on, inside its table, without
    /// a walk: `slot` comes from [`Root::pte_entry`] or [`Root::alloc_pte_entry`] of this root
    /// and no operation that may free a table ran since. The fault path's form: the caller
    /// looked the slot up once to read the entry and maps into it with this.
    ///
    /// Same rules as `set_ptes` otherwise: every page must be unmapped (checked before the
    /// first write: an error changes nothing); with `fold_ok` on a user root with CONTPTE
    /// enabled, whole aligned blocks are written folded and blocks completed by this call are
    /// folded if they qualify. Invalid → valid needs no TLBI: one barrier publishes the
    /// entries.
    pub fn set_ptes_at<P: Platform + ?Sized>(
        &mut self,
        p: &mut P,
        slot: Entry,
        pte: Descriptor,
        nr: usize,
        fold_ok: bool,
    ) -> Result<(), MapError> {
        if nr == 0 {
            return Err(MapError::ZeroLength);
        }
        let va = slot.va();
        let len = (nr as u64).checked_mul(PAGE_SIZE).ok_or(MapError::VaOverflow)?;
        if slot.level() != Level::L3 || slot.index() + nr > crate::ENTRIES {
            return Err(MapError::OutOfRange { va, len });
        }
        self.check_range(va, len)?;
        debug_assert_eq!(
            find_slot(&mut Reader(&*p), self.table, va.0),
            Some(Slot::Pte(slot)),
            "set_ptes_at: the slot is not this root's"
        );
        if !matches!(pte.kind(Level::L3), DescriptorKind::Page { .. }) {
            return Err(MapError::BadDescriptor(pte));
        }
        let pa = pte.address();
        if pa.0.checked_add(len - 1).is_none_or(|last| last >= PA_END) {
            return Err(MapError::PaOutOfRange(pa));
        }
        self.check_attrs(super::attrs::Attrs::from_descriptor(pte))?;
        let table = slot.table();
        let i0 = slot.index();
        if let Some(i) = (i0..i0 + nr).find(|&i| p.read(table.pa(), i).is_valid()) {
            return Err(MapError::AlreadyMapped(table.entry(i).va()));
        }
        let fold = fold_ok && self.contpte;
        let r = PteRun { va, pte, nr, fold_ok };
        write_run(p, &mut self.stats, table, &r, fold);
        self.stats.publishes += 1;
        p.publish();
        let mut partial = super::fold::partial_blocks(va.0, r.end()).peekable();
        if fold && partial.peek().is_some() {
            let scope = self.scope();
            let mut cx = Ctx::new(p, &mut self.stats, scope, Reserve::empty());
            for page in partial {
                cx.try_fold(table, Level::L3.index_of(page) & !(CONT_PTES - 1));
            }
            cx.finish();
        }
        Ok(())
    }
}

impl Root {
    /// [`Root::get_and_clear_ptes`] of the 64 KiB block holding the level-3 `slot`, without a
    /// walk: `slot` comes from [`Root::pte_entry`] or [`Root::alloc_pte_entry`] of this root
    /// and no operation that may free a table ran since. The copy-on-write fault's form: it
    /// clears the old block in the slot it looked up before writing the copy there.
    ///
    /// The block is removed as a unit whether or not it is folded: its valid entries are
    /// written invalid, then every page of the block is invalidated in one maintenance batch
    /// (the break of a break-before-make, as a fold or unfold does); it has completed when this
    /// returns, so the frames may be freed then. Returns the old descriptor of the first mapped
    /// entry with AF and the dirty state gathered over the block, or `None` (nothing written,
    /// no invalidation) if the block held nothing. The table is kept.
    pub fn get_and_clear_block_at<P: Platform + ?Sized>(
        &mut self,
        p: &mut P,
        slot: Entry,
    ) -> Option<Descriptor> {
        debug_assert_eq!(slot.level(), Level::L3);
        debug_assert_eq!(
            find_slot(&mut Reader(&*p), self.table, slot.va().0),
            Some(Slot::Pte(slot)),
            "get_and_clear_block_at: the slot is not this root's"
        );
        let table = slot.table();
        let first = slot.index() & !(CONT_PTES - 1);
        let (old, _) = read_block(&Reader(&*p), table.pa(), first);
        let mut gathered: Option<Descriptor> = None;
        for (i, d) in old.iter().enumerate() {
            if d.is_valid() {
                p.write(table.pa(), first + i, Descriptor::INVALID);
                self.stats.desc_writes += 1;
                gathered = Some(gathered.map_or(*d, |g| g.gather_young_dirty(*d)));
            }
        }
        let g = gathered?;
        if old[0].contiguous() {
            self.stats.cont_blocks_unmapped += 1;
        }
        let block = table.entry(first).va().0;
        let req = FlushRequest {
            scope: self.scope(),
            start: block,
            last: block + (CONT_SIZE - 1),
            stride: PAGE_SIZE,
            leaf_only: true,
            level: Some(Level::L3),
        };
        let has_range = p.has_tlbi_range();
        let mut buf = [TlbOp::All; CONT_PTES];
        let mut n = 0;
        plan_flush(&req, has_range, |op| {
            buf[n] = op;
            n += 1;
        });
        self.stats.count_tlbi(&buf[..n]);
        p.tlb_maintenance(&buf[..n]);
        Some(g)
    }
}

/// Writes the entries of run `r` into the live level-3 `table` (all invalid), folding the
/// blocks it covers whole at an aligned physical address when `fold`.
fn write_run<P: Platform + ?Sized>(p: &mut P, stats: &mut Stats, table: Table, r: &PteRun, fold: bool) {
    let (start, end) = (r.va.0, r.end());
    let tbits = r.pte.0 & TEMPLATE_BITS;
    let pa0 = r.pte.address().0;
    let i0 = Level::L3.index_of(start);
    let mut i = 0;
    while i < r.nr {
        let va = start + i as u64 * PAGE_SIZE;
        let pa = pa0 + i as u64 * PAGE_SIZE;
        let block = va & !(CONT_SIZE - 1);
        let whole = fold && va == block && block_covered(block, start, end) && pa.is_multiple_of(CONT_SIZE);
        let (n, extra) = if whole {
            stats.cont_blocks_mapped += 1;
            (CONT_PTES, bits::CONTIGUOUS)
        } else {
            // Up to the next block boundary (or the end of the run), unfolded.
            let to_block = CONT_PTES - (Level::L3.index_of(va) % CONT_PTES);
            (to_block.min(r.nr - i), 0)
        };
        // The output address is the only field that changes: PAGE_SIZE added per entry.
        let d0 = Descriptor::leaf(Level::L3, PhysAddr(pa)).0 | tbits | extra;
        for k in 0..n {
            p.write(table.pa(), i0 + i + k, Descriptor(d0 + k as u64 * PAGE_SIZE));
        }
        stats.desc_writes += n as u64;
        i += n;
    }
}
