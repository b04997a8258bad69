//! PTE operations into a level-3 slot looked up once, without a walk: the fault path's
//! [`Root::set_ptes_at`] and the copy-on-write fault's [`Root::get_and_clear_block_at`]. The
//! rules are those of the single-range operations (docs/mm.md, "CONTPTE").

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
use crate::addr::{Level, PhysAddr, CONT_PTES, CONT_SIZE, PAGE_SIZE, PA_END};

/// The bits of a leaf other than its output address and type (what a template contributes).
const TEMPLATE_BITS: u64 = !(bits::ADDR | bits::VALID | bits::TABLE_OR_PAGE | bits::CONTIGUOUS);

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
        let end = va.0 + len;
        write_run(p, &mut self.stats, table, (va.0, end), pte, fold);
        self.stats.publishes += 1;
        p.publish();
        let mut partial = super::fold::partial_blocks(va.0, end).peekable();
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

/// Writes the pages of `[start, end)` after the template page descriptor `pte` into the live
/// level-3 `table` (all invalid), folding the blocks the range covers whole at an aligned
/// physical address when `fold`.
fn write_run<P: Platform + ?Sized>(
    p: &mut P,
    stats: &mut Stats,
    table: Table,
    (start, end): (u64, u64),
    pte: Descriptor,
    fold: bool,
) {
    let nr = ((end - start) / PAGE_SIZE) as usize;
    let tbits = pte.0 & TEMPLATE_BITS;
    let pa0 = pte.address().0;
    let i0 = Level::L3.index_of(start);
    let mut i = 0;
    while i < nr {
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
            (to_block.min(nr - i), 0)
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
