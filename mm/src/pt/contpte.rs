//! The PTE-level operations the fault and fork paths are built on (`set_ptes`, `clear_ptes`,
//! `get_and_clear_ptes`, `wrprotect_ptes`, `pte_get`, `test_and_clear_young`,
//! `set_access_flags`, methods of [`Root`]), which fold and unfold 64 KiB blocks with the
//! Contiguous bit (CONTPTE), and the figures helpers. The rules and the guarantee are in
//! docs/mm.md ("CONTPTE"); the fold and unfold mechanics are in `fold.rs`.

use super::attrs::Attrs;
use super::ctx::{Ctx, Reserve};
use super::desc::{bits, Descriptor, DescriptorKind};
use super::error::MapError;
use super::fold::{block_qualifies, partial_blocks};
use super::leaf::Leaf;
use super::ops::{ChangeOp, LeafChange, MapGeom, MapOp, MapPlan, UnmapOp};
use super::platform::Platform;
use super::query::{find_slot, Slot};
use super::root::Root;
use super::stats::Stats;
use super::table::Entry;
use super::walk::{read_block, walk, Reader};
use crate::addr::{Level, PhysAddr, VirtAddr, PAGE_SIZE, PA_END};

pub use crate::addr::{CONT_PTES, CONT_SIZE};

/// What [`Root::set_access_flags`] grants to an entry. Only relaxations: a flag that is
/// `false` leaves the entry's state as it is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AccessUpdate {
    /// Set AF (after an access-flag fault).
    pub young: bool,
    /// Mark dirty (after a write fault on a writable entry).
    pub dirty: bool,
    /// Grant write permission (e.g. reusing an exclusive copy-on-write page).
    pub writable: bool,
}

impl AccessUpdate {
    /// An access: AF.
    pub const ACCESSED: AccessUpdate = AccessUpdate {
        young: true,
        dirty: false,
        writable: false,
    };
    /// A write to a writable entry: AF and dirty.
    pub const WRITTEN: AccessUpdate = AccessUpdate {
        young: true,
        dirty: true,
        writable: false,
    };
    /// A write that also grants write permission: AF, dirty, writable.
    pub const MADE_WRITABLE: AccessUpdate = AccessUpdate {
        young: true,
        dirty: true,
        writable: true,
    };

    /// `d` with the update applied.
    pub const fn apply(self, d: Descriptor) -> Descriptor {
        let mut n = d;
        if self.young {
            n = n.with_young(true);
        }
        if self.writable && !n.writable() {
            n = n.with_writable(true);
        }
        if self.dirty {
            n = n.with_dirty(true);
        }
        n
    }
}

fn pages_len(nr: usize) -> Result<u64, MapError> {
    if nr == 0 {
        return Err(MapError::ZeroLength);
    }
    (nr as u64).checked_mul(PAGE_SIZE).ok_or(MapError::VaOverflow)
}

impl Root {
    /// Maps `nr` pages from `va` to consecutive frames from the output address of `pte`, each
    /// entry a copy of the page descriptor `pte` (attributes, AF, dirty state, software bits)
    /// with its own address — Linux's `set_ptes`.
    ///
    /// `pte` is a level-3 page descriptor, e.g. `Attrs::USER_RW.leaf(Level::L3, pa)` (young
    /// and dirty) or that `.with_dirty(false)` (clean: the first write faults); its Contiguous
    /// bit is ignored (the engine decides). Every page must be unmapped. Missing tables are
    /// allocated, all of them before the first write (a failure changes nothing).
    ///
    /// With `fold_ok` (the caller's word that each 64 KiB aligned physical block the call
    /// touches lies inside one folio) on a user root with CONTPTE enabled, blocks are folded
    /// as docs/mm.md ("CONTPTE") says: whole aligned blocks written folded directly; blocks completed
    /// by this call folded with break-before-make if they qualify. No TLBI otherwise.
    pub fn set_ptes<P: Platform + ?Sized>(
        &mut self,
        p: &mut P,
        va: VirtAddr,
        pte: Descriptor,
        nr: usize,
        fold_ok: bool,
    ) -> Result<(), MapError> {
        let len = pages_len(nr)?;
        let (start, end) = self.check_range(va, len)?;
        if !matches!(pte.kind(Level::L3), DescriptorKind::Page { .. }) {
            return Err(MapError::BadDescriptor(pte));
        }
        let pa = pte.address();
        if pa.0.checked_add(len - 1).is_none_or(|last| last >= PA_END) {
            return Err(MapError::PaOutOfRange(pa));
        }
        self.check_attrs(Attrs::from_descriptor(pte))?;
        let geom = MapGeom {
            va: start,
            end,
            pa: pa.0,
            allow_blocks: false,
        };
        let mut plan = MapPlan { geom, tables: 0 };
        walk(&mut Reader(&*p), &mut plan, self.table, start, end)?;
        let reserve = Reserve::fill(p, &mut self.stats, plan.tables)?;
        let fold = fold_ok && self.contpte;
        let (table, scope) = (self.table, self.scope());
        let mut cx = Ctx::new(p, &mut self.stats, scope, reserve);
        let mut op = MapOp {
            geom,
            bits: pte.0 & !(bits::ADDR | bits::VALID | bits::TABLE_OR_PAGE | bits::CONTIGUOUS),
            fold,
        };
        let r = walk(&mut cx, &mut op, table, start, end);
        debug_assert!(r.is_ok(), "set_ptes failed after planning: {r:?}");
        cx.publish();
        if fold {
            for page in partial_blocks(start, end) {
                if let Some(Slot::Pte(e)) = find_slot(&mut cx, table, page) {
                    cx.try_fold(e.table(), e.index() & !(CONT_PTES - 1));
                }
            }
        }
        cx.finish();
        r
    }

    /// Removes the `nr` pages from `va` (holes are fine), keeping the tables. Folded blocks
    /// the range covers whole are cleared as they are (16 writes, no unfold); the at most two
    /// it covers in part are unfolded first. One gathered invalidation; it has completed when
    /// this returns, so the frames may be freed then. Fails (changing nothing) only if a
    /// block in the range must be split and its table cannot be allocated.
    pub fn clear_ptes<P: Platform + ?Sized>(
        &mut self,
        p: &mut P,
        va: VirtAddr,
        nr: usize,
    ) -> Result<(), MapError> {
        let (start, end) = self.check_range(va, pages_len(nr)?)?;
        let mut op = UnmapOp { free_tables: false };
        self.run_split_op(p, start, end, &mut op, None)
    }

    /// [`Root::clear_ptes`], returning the old descriptor of the first mapped page with AF
    /// and the dirty state ORed over every removed entry (so a batch that mapped one folio
    /// tells whether the folio was accessed or written), or `None` if nothing was mapped.
    pub fn get_and_clear_ptes<P: Platform + ?Sized>(
        &mut self,
        p: &mut P,
        va: VirtAddr,
        nr: usize,
    ) -> Result<Option<Descriptor>, MapError> {
        let (start, end) = self.check_range(va, pages_len(nr)?)?;
        let mut first: Option<Descriptor> = None;
        let mut gather = |l: &Leaf| {
            first = Some(match first {
                None => l.desc,
                Some(f) => f.gather_young_dirty(l.desc),
            });
        };
        let mut op = UnmapOp { free_tables: false };
        self.run_split_op(p, start, end, &mut op, Some(&mut gather))?;
        Ok(first)
    }

    /// Revokes write permission on the `nr` pages from `va`, keeping their dirty state (in the
    /// software dirty bit) — the parent's side of fork. Folded blocks the range covers whole
    /// stay folded (all 16 entries changed in place); the at most two it covers in part are
    /// unfolded first. One gathered invalidation.
    pub fn wrprotect_ptes<P: Platform + ?Sized>(
        &mut self,
        p: &mut P,
        va: VirtAddr,
        nr: usize,
    ) -> Result<(), MapError> {
        let (start, end) = self.check_range(va, pages_len(nr)?)?;
        let mut op = ChangeOp {
            change: LeafChange::WrProtect,
        };
        self.run_split_op(p, start, end, &mut op, None)
    }

    /// The leaf descriptor mapping `va` — a page normally, a block if `va` is in one — with AF
    /// and the dirty state gathered over its folded block if it is in one (the hardware may
    /// have recorded them in any of the 16 entries); `None` if unmapped. Linux's `ptep_get`.
    pub fn pte_get<P: Platform + ?Sized>(&self, p: &P, va: VirtAddr) -> Option<Descriptor> {
        let (lo, hi) = self.va_bounds();
        if va < lo || va > hi {
            return None;
        }
        match find_slot(&mut Reader(p), self.table, va.0)? {
            Slot::Pte(e) => self.pte_get_at(p, e),
            Slot::Block(e) => Some(e.read(p)),
        }
    }

    /// [`Root::pte_get`] of the level-3 `slot` (from [`Root::pte_entry`] of this root), without
    /// a walk: the page descriptor there with AF and the dirty state gathered over its folded
    /// block if it is in one; `None` if it holds no page.
    pub fn pte_get_at<P: Platform + ?Sized>(&self, p: &P, slot: Entry) -> Option<Descriptor> {
        debug_assert_eq!(slot.level(), Level::L3);
        let d = slot.read(p);
        if !d.is_leaf(Level::L3) {
            None
        } else if d.contiguous() {
            let first = slot.index() & !(CONT_PTES - 1);
            let (_, g) = read_block(&Reader(p), slot.table().pa(), first);
            Some(g.with_address(d.address()))
        } else {
            Some(d)
        }
    }

    /// Clears the access flag of the leaf mapping `va` and returns whether it was set — over
    /// the whole folded block if `va` is in one (Linux's reasoning: the state is tracked per
    /// folio and a block is one folio, so no unfold). If it was set, the entries are
    /// invalidated (the whole 64 KiB for a block), so that the next access is seen again.
    /// `false` if unmapped.
    pub fn test_and_clear_young<P: Platform + ?Sized>(&mut self, p: &mut P, va: VirtAddr) -> bool {
        let (lo, hi) = self.va_bounds();
        if va < lo || va > hi {
            return false;
        }
        let (table, scope) = (self.table, self.scope());
        let Some(slot) = find_slot(&mut Reader(&*p), table, va.0) else {
            return false;
        };
        let (Slot::Pte(e) | Slot::Block(e)) = slot;
        let d = e.read(&*p);
        if !d.is_leaf(e.level()) {
            return false;
        }
        let mut cx = Ctx::new(p, &mut self.stats, scope, Reserve::empty());
        let young = if e.level().is_page_level() && d.contiguous() {
            let first = e.index() & !(CONT_PTES - 1);
            let (old, g) = read_block(&cx, e.table().pa(), first);
            if g.young() {
                for (i, o) in old.iter().enumerate() {
                    let slot = e.table().entry(first + i);
                    if o.young() {
                        cx.write(slot, o.with_young(false));
                    }
                    cx.gather.add_leaf(slot.va().0, Level::L3);
                }
            }
            g.young()
        } else if d.young() {
            cx.write(e, d.with_young(false));
            cx.gather.add_leaf(e.va().0, e.level());
            true
        } else {
            false
        };
        cx.finish();
        young
    }

    /// Applies `upd` to the leaf mapping `va` (relaxations only: set AF, mark dirty, grant
    /// write) — Linux's `ptep_set_access_flags`, for the access-flag and write-fault paths.
    /// Returns whether anything changed.
    ///
    /// On a folded block the no-op test looks at **every** one of the 16 entries (the
    /// gathered state may say "young" while the faulting entry's own AF is clear: answering
    /// "nothing to do" would fault forever). If the write permission changes, the block is
    /// unfolded (break-before-make) and only the page at `va` is updated; otherwise the
    /// update is applied to all 16 entries in place, keeping the block folded. Entries whose
    /// permissions were relaxed (AP\[2\] cleared) are invalidated, by the engine's policy;
    /// AF-only and software-bit updates need no TLBI (an entry with AF clear is never cached).
    ///
    /// Fails with [`MapError::NotMapped`] if nothing maps `va`, and with
    /// [`MapError::BadAttrs`] if granting write gives attributes that cannot be used.
    pub fn set_access_flags<P: Platform + ?Sized>(
        &mut self,
        p: &mut P,
        va: VirtAddr,
        upd: AccessUpdate,
    ) -> Result<bool, MapError> {
        self.check_range(va.align_down(PAGE_SIZE), PAGE_SIZE)?;
        let (table, scope) = (self.table, self.scope());
        let e = match find_slot(&mut Reader(&*p), table, va.0) {
            Some(Slot::Pte(e) | Slot::Block(e)) => e,
            None => return Err(MapError::NotMapped(va)),
        };
        let d = e.read(&*p);
        if !d.is_leaf(e.level()) {
            return Err(MapError::NotMapped(va));
        }
        let new = upd.apply(d);
        let write_change = new.writable() != d.writable();
        if write_change {
            self.check_attrs(Attrs::from_descriptor(new))?;
        }
        let first = e.index() & !(CONT_PTES - 1);
        let block = if e.level().is_page_level() && d.contiguous() {
            let old = read_block(&Reader(&*p), e.table().pa(), first).0;
            let news = old.map(|o| upd.apply(o));
            if news == old {
                return Ok(false);
            }
            Some((old, news))
        } else if new == d {
            return Ok(false);
        } else {
            None
        };
        let mut cx = Ctx::new(p, &mut self.stats, scope, Reserve::empty());
        match block {
            Some(_) if write_change => {
                cx.convert_block(e.table(), first, false);
                let cur = cx.read(e);
                let n = upd.apply(cur);
                if n != cur {
                    cx.update_leaf(e, cur, n);
                }
            }
            Some((old, news)) => {
                for i in 0..CONT_PTES {
                    if news[i] != old[i] {
                        cx.update_leaf(e.table().entry(first + i), old[i], news[i]);
                    }
                }
            }
            None => cx.update_leaf(e, d, new),
        }
        cx.finish();
        Ok(true)
    }
}

impl Root {
    /// Applies `upd` to the 16 entries of the 64 KiB block at `block` (64 KiB aligned, every
    /// entry a valid page): the whole-block form of [`Root::set_access_flags`], for a
    /// copy-on-write reuse of a whole 64 KiB folio. A folded block stays folded and is
    /// changed in place — a permission, AF or dirty change of a whole block needs no
    /// break-before-make (docs/mm.md, "CONTPTE") — with one invalidation of the entries whose
    /// permissions changed. An unfolded block whose new entries qualify is folded, when
    /// `fold_ok` (the caller's word that the physical block is one folio) on a user root with
    /// CONTPTE enabled, by one break-before-make writing the new entries; otherwise it is
    /// changed in place entry by entry. Returns whether anything changed.
    ///
    /// Fails with [`MapError::NotMapped`] if an entry of the block is not a valid page, and
    /// with [`MapError::BadAttrs`] if granting write gives attributes that cannot be used;
    /// nothing is changed then.
    pub fn set_access_flags_block<P: Platform + ?Sized>(
        &mut self,
        p: &mut P,
        block: VirtAddr,
        upd: AccessUpdate,
        fold_ok: bool,
    ) -> Result<bool, MapError> {
        let (start, _) = self.check_range(block, CONT_SIZE)?;
        if !start.is_multiple_of(CONT_SIZE) {
            return Err(MapError::UnalignedVa(block));
        }
        let (table, scope) = (self.table, self.scope());
        let e = match find_slot(&mut Reader(&*p), table, start) {
            Some(Slot::Pte(e)) => e,
            Some(Slot::Block(_)) => return Err(MapError::BlockMapped(block)),
            None => return Err(MapError::NotMapped(block)),
        };
        let (t, first) = (e.table(), e.index());
        let old = read_block(&Reader(&*p), t.pa(), first).0;
        if let Some(i) = old.iter().position(|d| !d.is_leaf(Level::L3)) {
            return Err(MapError::NotMapped(t.entry(first + i).va()));
        }
        let news = old.map(|o| upd.apply(o));
        if news[0].writable() != old[0].writable() {
            self.check_attrs(Attrs::from_descriptor(news[0]))?;
        }
        let fold = !old[0].contiguous() && fold_ok && self.contpte && block_qualifies(&news);
        if news == old && !fold {
            return Ok(false);
        }
        let mut cx = Ctx::new(p, &mut self.stats, scope, Reserve::empty());
        if fold {
            cx.bbm_block(t, first, |i, _| news[i].with_contiguous(true));
            cx.stats.folds += 1;
        } else {
            for i in 0..CONT_PTES {
                if news[i] != old[i] {
                    cx.update_leaf(t.entry(first + i), old[i], news[i]);
                }
            }
        }
        cx.finish();
        Ok(true)
    }
}

/// Figures helper: maps `count` folios of `folio_size` bytes (a multiple of 4 KiB; 64 KiB for
/// the CONTPTE figures) at consecutive addresses from `va`, the `i`-th at `pa_of(i)`, with one
/// [`Root::set_ptes`] per folio (`fold_ok`, young, dirty if writable) — what the fault path
/// does for freshly allocated folios. Folding follows [`Root::contpte_enabled`], so running it
/// on a root with [`Root::set_contpte`] on and off compares the two. Returns the counters of
/// the step; the caller measures the time around it.
pub fn map_folios<P, F>(
    root: &mut Root,
    p: &mut P,
    va: VirtAddr,
    folio_size: u64,
    count: usize,
    mut pa_of: F,
    attrs: Attrs,
) -> Result<Stats, MapError>
where
    P: Platform + ?Sized,
    F: FnMut(usize) -> PhysAddr,
{
    if folio_size == 0 || !folio_size.is_multiple_of(PAGE_SIZE) {
        return Err(MapError::UnalignedLen(folio_size));
    }
    let before = *root.stats();
    let nr = (folio_size / PAGE_SIZE) as usize;
    for i in 0..count {
        let at = (i as u64)
            .checked_mul(folio_size)
            .and_then(|off| va.checked_add(off))
            .ok_or(MapError::VaOverflow)?;
        root.set_ptes(p, at, attrs.leaf(Level::L3, pa_of(i)), nr, true)?;
    }
    Ok(root.stats().since(&before))
}

/// Figures helper: unmaps `[va, va + len)` with [`Root::unmap_leaves`] (one operation, as
/// `munmap` would), handing every removed leaf to `on_leaf` after the invalidation. Returns the
/// counters of the step.
pub fn unmap_folios<P, F>(
    root: &mut Root,
    p: &mut P,
    va: VirtAddr,
    len: u64,
    on_leaf: F,
) -> Result<Stats, MapError>
where
    P: Platform + ?Sized,
    F: FnMut(&Leaf),
{
    let before = *root.stats();
    root.unmap_leaves(p, va, len, on_leaf)?;
    Ok(root.stats().since(&before))
}
