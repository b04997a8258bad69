//! Roots: one translation table tree per TTBR, and the operations on it.

use core::fmt;

use super::asid::Asid;
use super::attrs::{Attrs, AttrsError};
use super::ctx::{leaf_report, Ctx, Reports, Reserve};
use super::desc::DescriptorKind;
use super::error::MapError;
use super::leaf::{Leaf, Translation};
use super::ops::{ChangeOp, LeafChange, MapGeom, MapOp, MapPlan, PteAlloc, PtePlan, SplitPlan, UnmapOp};
use super::platform::Platform;
use super::query::{descend, find_slot, Descent, FirstLeaf, Slot};
use super::stats::Stats;
use super::table::{Entry, Table};
use super::tlb::{scope_op, TlbScope};
use super::walk::{eight_empty, read_block, walk, Reader};
use crate::addr::{
    Level, PhysAddr, VirtAddr, CONT_PTES, CONT_SIZE, KERNEL_BASE, PAGE_SIZE, PA_END, USER_END,
};
use crate::frames::OutOfMemory;

/// Which TTBR a root is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RootKind {
    /// TTBR1_EL1: the upper half, `[0xFFFF_0000_0000_0000, 2^64)`; global mappings, maintained
    /// with the all-ASID TLBI forms.
    Kernel,
    /// TTBR0_EL1: the lower half, `[0, 2^48)`; non-global mappings tagged with `asid`.
    User {
        /// The ASID the address space currently runs with.
        asid: Asid,
    },
}

/// A translation table tree for one TTBR: the level-0 table and what it takes to maintain it.
///
/// All operations take the [`Platform`] explicitly; callers serialise operations on a root.
/// A root must be [`destroy`](Root::destroy)ed to free its tables: dropping it leaks them.
pub struct Root {
    pub(crate) table: Table,
    pub(crate) kind: RootKind,
    pub(crate) stats: Stats,
    /// Whether [`Root::set_ptes`] may set the Contiguous bit (user roots only).
    pub(crate) contpte: bool,
}

impl fmt::Debug for Root {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Root")
            .field("pa", &self.table.pa())
            .field("kind", &self.kind)
            .field("contpte", &self.contpte)
            .finish()
    }
}

impl Root {
    fn new<P: Platform + ?Sized>(p: &mut P, kind: RootKind) -> Result<Root, OutOfMemory> {
        let pa = p.alloc_table()?;
        let va_base = match kind {
            RootKind::Kernel => KERNEL_BASE,
            RootKind::User { .. } => 0,
        };
        let stats = Stats {
            tables_allocated: 1,
            ..Stats::default()
        };
        Ok(Root {
            table: Table::new(pa, Level::L0, va_base),
            kind,
            stats,
            contpte: matches!(kind, RootKind::User { .. }),
        })
    }

    /// An empty kernel (TTBR1) root.
    pub fn new_kernel<P: Platform + ?Sized>(p: &mut P) -> Result<Root, OutOfMemory> {
        Root::new(p, RootKind::Kernel)
    }

    /// An empty user (TTBR0) root running with `asid`.
    pub fn new_user<P: Platform + ?Sized>(p: &mut P, asid: Asid) -> Result<Root, OutOfMemory> {
        Root::new(p, RootKind::User { asid })
    }

    /// Kernel or user, and the ASID.
    pub fn kind(&self) -> RootKind {
        self.kind
    }

    /// The level-0 table.
    pub fn table(&self) -> Table {
        self.table
    }

    /// Physical address of the level-0 table.
    pub fn pa(&self) -> PhysAddr {
        self.table.pa()
    }

    /// The ASID of a user root.
    pub fn asid(&self) -> Option<Asid> {
        match self.kind {
            RootKind::Kernel => None,
            RootKind::User { asid } => Some(asid),
        }
    }

    /// Records the ASID a user root now runs with (after [`crate::AsidAllocator::activate`]
    /// changed it), so that later maintenance targets it.
    ///
    /// # Panics
    /// On the kernel root.
    pub fn set_asid(&mut self, asid: Asid) {
        match &mut self.kind {
            RootKind::Kernel => panic!("the kernel root has no ASID"),
            RootKind::User { asid: a } => *a = asid,
        }
    }

    /// The TTBRn_EL1 value: table address, plus the ASID in bits 63:48 for a user root
    /// (TCR_EL1.A1 = 0 takes the ASID from TTBR0; CnP clear).
    pub fn ttbr(&self) -> u64 {
        self.table.pa().0 | self.asid().map_or(0, |a| (a.0 as u64) << 48)
    }

    /// Whether [`Root::set_ptes`] folds qualifying 64 KiB blocks (the Contiguous bit). On by
    /// default for user roots; always off for the kernel root.
    pub fn contpte_enabled(&self) -> bool {
        self.contpte
    }

    /// Turns folding by [`Root::set_ptes`] on or off (e.g. to compare costs). Blocks already
    /// folded stay folded and are still unfolded when an operation changes part of them.
    ///
    /// # Panics
    /// When turning it on for the kernel root: kernel mappings are never folded at page level
    /// (changing the bit of a live entry needs a break-before-make window, in which an access
    /// by the kernel itself would fault).
    pub fn set_contpte(&mut self, on: bool) {
        assert!(
            !on || matches!(self.kind, RootKind::User { .. }),
            "kernel mappings are never folded"
        );
        self.contpte = on;
    }

    /// The counters of this root's operations.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Zeroes the counters (`tables_allocated`/`tables_freed` included).
    pub fn reset_stats(&mut self) {
        self.stats.reset();
    }

    /// The first and last address of this root's half.
    pub fn va_bounds(&self) -> (VirtAddr, VirtAddr) {
        match self.kind {
            RootKind::Kernel => (VirtAddr(KERNEL_BASE), VirtAddr(u64::MAX)),
            RootKind::User { .. } => (VirtAddr(0), VirtAddr(USER_END - 1)),
        }
    }

    pub(crate) fn scope(&self) -> TlbScope {
        match self.kind {
            RootKind::Kernel => TlbScope::AllAsids,
            RootKind::User { asid } => TlbScope::Asid(asid),
        }
    }

    /// Validates `[va, va + len)` and returns it as `(start, end)` with wrapping `end`.
    pub(crate) fn check_range(&self, va: VirtAddr, len: u64) -> Result<(u64, u64), MapError> {
        if len == 0 {
            return Err(MapError::ZeroLength);
        }
        if !va.is_aligned(PAGE_SIZE) {
            return Err(MapError::UnalignedVa(va));
        }
        if !len.is_multiple_of(PAGE_SIZE) {
            return Err(MapError::UnalignedLen(len));
        }
        let last = va.0.checked_add(len - 1).ok_or(MapError::VaOverflow)?;
        let (lo, hi) = self.va_bounds();
        if va < lo || last > hi.0 {
            return Err(MapError::OutOfRange { va, len });
        }
        Ok((va.0, last.wrapping_add(1)))
    }

    pub(crate) fn check_attrs(&self, attrs: Attrs) -> Result<(), MapError> {
        attrs.validate()?;
        if attrs.global && matches!(self.kind, RootKind::User { .. }) {
            return Err(AttrsError::GlobalInUserSpace.into());
        }
        Ok(())
    }

    /// Maps `[va, va + len)` to `[pa, pa + len)` with `attrs`.
    ///
    /// With `allow_blocks`, every 1 GiB / 2 MiB stretch whose VA and PA are both aligned is
    /// mapped with a single block descriptor; everything else with pages. Intermediate tables
    /// are allocated as needed (all of them before the first write). The range must be
    /// entirely unmapped. No TLB maintenance is needed (invalid → valid); a final
    /// `DSB ISHST; ISB` publishes the new entries.
    pub fn map<P: Platform + ?Sized>(
        &mut self,
        p: &mut P,
        va: VirtAddr,
        pa: PhysAddr,
        len: u64,
        attrs: Attrs,
        allow_blocks: bool,
    ) -> Result<(), MapError> {
        let (start, end) = self.check_range(va, len)?;
        if !pa.is_aligned(PAGE_SIZE) {
            return Err(MapError::UnalignedPa(pa));
        }
        if pa.0.checked_add(len - 1).is_none_or(|last| last >= PA_END) {
            return Err(MapError::PaOutOfRange(pa));
        }
        self.check_attrs(attrs)?;
        let geom = MapGeom {
            va: start,
            end,
            pa: pa.0,
            allow_blocks,
        };
        let mut plan = MapPlan { geom, tables: 0 };
        walk(&mut Reader(&*p), &mut plan, self.table, start, end)?;
        let reserve = Reserve::fill(p, &mut self.stats, plan.tables)?;
        let scope = self.scope();
        let mut cx = Ctx::new(p, &mut self.stats, scope, reserve);
        let mut op = MapOp {
            geom,
            bits: attrs.descriptor_bits(),
            fold: false,
        };
        let r = walk(&mut cx, &mut op, self.table, start, end);
        debug_assert!(r.is_ok(), "map failed after planning: {r:?}");
        cx.publish();
        cx.finish();
        r
    }

    /// Removes every mapping in `[va, va + len)`; holes are fine.
    ///
    /// Blocks straddling either end are first split (break-before-make); folded 64 KiB blocks
    /// straddling either end are first unfolded (break-before-make); tables left empty
    /// are unlinked and freed after the walk-cache invalidation; subtrees entirely inside the
    /// range are unlinked with one write. Fails (changing nothing) only if the split tables
    /// cannot be allocated.
    pub fn unmap<P: Platform + ?Sized>(&mut self, p: &mut P, va: VirtAddr, len: u64) -> Result<(), MapError> {
        let (start, end) = self.check_range(va, len)?;
        let mut op = UnmapOp { free_tables: true };
        self.run_split_op(p, start, end, &mut op, None)
    }

    /// [`Root::unmap`], reporting every removed translation to `f` — for the caller to drop
    /// its references to the frames.
    ///
    /// # What is reported
    /// One [`Leaf`] per removed translation unit, with its descriptor as it was (AF, dirty
    /// state and Contiguous bit included): a page (4 KiB); a folded 64 KiB block, once, as one
    /// leaf of `size` 64 KiB whose descriptor has AF and the dirty state gathered over its 16
    /// entries (the hardware may have recorded them in any one); a whole 2 MiB / 1 GiB block;
    /// or, for a block the range covers only in part, the removed piece of it (`size` is the
    /// piece, `pa` its first byte, `desc` the block's descriptor).
    ///
    /// # Ordering guarantee
    /// `f` is called for a leaf only **after** the leaf is invalid in the tables and a TLB
    /// invalidation covering it has **completed** on every PE (`DSB ISH` done): no CPU can
    /// reach the frame through this root any more, so `f` may free it. Calls come in
    /// increasing address order, each removed translation exactly once, all of them before
    /// this returns. The engine queues up to a batch of reports (runs of physically
    /// consecutive leaves with equal descriptors count as one), and flushes the TLB early to
    /// deliver them when the batch is full — so a large unmap of scattered frames may issue
    /// more than one invalidation batch, never more than one per batch of reports.
    ///
    /// `f` must not touch this root (it is borrowed). Fails, changing nothing and calling `f`
    /// for nothing, only if a split table cannot be allocated.
    pub fn unmap_leaves<P, F>(&mut self, p: &mut P, va: VirtAddr, len: u64, mut f: F) -> Result<(), MapError>
    where
        P: Platform + ?Sized,
        F: FnMut(&Leaf),
    {
        let (start, end) = self.check_range(va, len)?;
        let mut op = UnmapOp { free_tables: true };
        self.run_split_op(p, start, end, &mut op, Some(&mut f))
    }
    /// Changes the attributes of every mapping in `[va, va + len)` to `attrs`; holes are
    /// skipped. Output addresses are kept.
    ///
    /// Permission changes are written in place and invalidated in one batch; a change of
    /// memory type or of global/nG is done with break-before-make per leaf (per 64 KiB block
    /// for a folded block). Blocks straddling either end are split first; folded blocks
    /// straddling either end are unfolded first, folded blocks inside the range stay folded.
    ///
    /// AF, the Contiguous bit and the software bits are kept. A writable result is written
    /// writable by the hardware (and so dirty, see [`crate::Descriptor::writable`]); a read-only one
    /// keeps a dirty state in the software dirty bit.
    pub fn protect<P: Platform + ?Sized>(
        &mut self,
        p: &mut P,
        va: VirtAddr,
        len: u64,
        attrs: Attrs,
    ) -> Result<(), MapError> {
        let (start, end) = self.check_range(va, len)?;
        self.check_attrs(attrs)?;
        let mut op = ChangeOp {
            change: LeafChange::Protect(attrs),
        };
        self.run_split_op(p, start, end, &mut op, None)
    }

    /// Plans the splits, reserves their tables, unfolds the folded blocks the range covers in
    /// part, then runs `op` over the range; `reports` receives removed leaves (unmap).
    pub(crate) fn run_split_op<P, V>(
        &mut self,
        p: &mut P,
        start: u64,
        end: u64,
        op: &mut V,
        reports: Option<&mut dyn FnMut(&Leaf)>,
    ) -> Result<(), MapError>
    where
        P: Platform + ?Sized,
        V: for<'c> super::walk::Visitor<Ctx<'c, P>, Break = core::convert::Infallible>,
    {
        let mut plan = SplitPlan { tables: 0 };
        let Ok(()) = walk(&mut Reader(&*p), &mut plan, self.table, start, end);
        let reserve = Reserve::fill(p, &mut self.stats, plan.tables)?;
        let scope = self.scope();
        let mut queue;
        let mut cx = Ctx::new(p, &mut self.stats, scope, reserve);
        if let Some(f) = reports {
            queue = Reports::new(f);
            cx.reports = Some(&mut queue);
        }
        cx.unfold_partial(self.table, start, end);
        let Ok(()) = walk(&mut cx, op, self.table, start, end);
        cx.finish();
        Ok(())
    }

    /// The level-3 slot for `va` (page aligned or not) if the tables down to level 3 exist:
    /// `Ok(None)` if the path stops earlier at an invalid entry, [`MapError::BlockMapped`] if
    /// a block covers `va`. The slot may hold any descriptor, valid or not; read it with
    /// [`Entry::read`] (but prefer [`Root::pte_get`], which gathers the A/D state of a folded
    /// block). Changes nothing. Entries are changed only through the PTE-level operations
    /// (`set_ptes`, `clear_ptes`, …), which keep folded blocks consistent and do the TLB
    /// maintenance.
    pub fn pte_entry<P: Platform + ?Sized>(&self, p: &P, va: VirtAddr) -> Result<Option<Entry>, MapError> {
        self.check_range(va.align_down(PAGE_SIZE), PAGE_SIZE)?;
        match find_slot(&mut Reader(p), self.table, va.0) {
            None => Ok(None),
            Some(Slot::Pte(e)) => Ok(Some(e)),
            Some(Slot::Block(_)) => Err(MapError::BlockMapped(va)),
        }
    }

    /// The level-3 slot for `va`, allocating the missing intermediate tables.
    ///
    /// Like every mutating operation it plans first (how many tables are missing) and
    /// reserves them all before writing, so a failure ([`MapError::OutOfMemory`]) changes
    /// nothing. New tables are linked with invalid → table writes after a barrier; no TLB
    /// maintenance is needed. Fails with [`MapError::BlockMapped`] if a block covers `va`.
    pub fn alloc_pte_entry<P: Platform + ?Sized>(
        &mut self,
        p: &mut P,
        va: VirtAddr,
    ) -> Result<Entry, MapError> {
        self.alloc_slot(p, va, Level::L3)
    }

    /// The slot at `target` level (3: a page's entry; 2: the entry of its level-3 table) on
    /// `va`'s path, allocating the missing tables above it: plan, reserve all, then build and
    /// link (see [`Root::alloc_pte_entry`]).
    pub(crate) fn alloc_slot<P: Platform + ?Sized>(
        &mut self,
        p: &mut P,
        va: VirtAddr,
        target: Level,
    ) -> Result<Entry, MapError> {
        let page = va.align_down(PAGE_SIZE);
        let (start, end) = self.check_range(page, PAGE_SIZE)?;
        // Every table on the path exists (the common case): one read per level.
        match descend(&Reader(&*p), self.table, start, target) {
            Descent::Reached(e) => return Ok(e),
            Descent::Block(_) => return Err(MapError::BlockMapped(page)),
            Descent::Missing => {}
        }
        let mut plan = PtePlan {
            tables: 0,
            target,
            slot: None,
        };
        walk(&mut Reader(&*p), &mut plan, self.table, start, end)?;
        if plan.tables == 0 {
            // Every table on the path exists: the plan's walk found the slot.
            return Ok(plan.slot.expect("the walk reaches the target level"));
        }
        let reserve = Reserve::fill(p, &mut self.stats, plan.tables)?;
        let scope = self.scope();
        let mut cx = Ctx::new(p, &mut self.stats, scope, reserve);
        let mut op = PteAlloc { slot: None, target };
        let r = walk(&mut cx, &mut op, self.table, start, end);
        debug_assert!(r.is_ok(), "allocation walk failed after planning: {r:?}");
        cx.finish();
        r?;
        Ok(op.slot.expect("the walk reaches the target level"))
    }

    /// Translates `va` through the tables (not through any TLB).
    pub fn translate<P: Platform + ?Sized>(&self, p: &P, va: VirtAddr) -> Option<Translation> {
        let (lo, hi) = self.va_bounds();
        if va < lo || va > hi {
            return None;
        }
        let page = va.0 & !(PAGE_SIZE - 1);
        let Err((e, desc)) = walk(
            &mut Reader(p),
            &mut FirstLeaf,
            self.table,
            page,
            page.wrapping_add(PAGE_SIZE),
        ) else {
            return None;
        };
        let level = e.level();
        Some(Translation {
            pa: PhysAddr(desc.output_address(level).0 + (va.0 - e.va().0)),
            attrs: Attrs::from_descriptor(desc),
            level,
            desc,
        })
    }

    /// The first leaf intersecting `[start, end)` (wrapping end), whole.
    fn next_leaf<P: Platform + ?Sized>(&self, p: &P, start: u64, end: u64) -> Option<Leaf> {
        let Err((e, desc)) = walk(&mut Reader(p), &mut FirstLeaf, self.table, start, end) else {
            return None;
        };
        let level = e.level();
        Some(Leaf {
            va: e.va(),
            pa: desc.output_address(level),
            size: e.size(),
            level,
            attrs: Attrs::from_descriptor(desc),
            desc,
        })
    }

    /// Iterates over every leaf of the tree in address order.
    pub fn leaves<'a, P: Platform + ?Sized>(&'a self, p: &'a P) -> Leaves<'a, P> {
        let (lo, _) = self.va_bounds();
        Leaves {
            root: self,
            p,
            cursor: lo.0,
            end: lo.0.wrapping_add(USER_END),
            done: false,
        }
    }

    /// Copies the leaves of `self` in `[va, va + len)` into `dst` at the same addresses.
    ///
    /// For each leaf (clipped to the range) `f` decides: `None` skips it, `Some((pa, attrs))`
    /// maps it in `dst` at `pa` with `attrs` (blocks are kept where `pa` allows). `dst` must
    /// have nothing mapped in the range. On failure `dst` is restored (what was copied is
    /// unmapped again) and the error returned. Returns the number of leaves copied.
    /// The source is not modified: write-protecting it for copy-on-write is a separate
    /// [`Root::protect`].
    pub fn copy_range<P, F>(
        &self,
        p: &mut P,
        dst: &mut Root,
        va: VirtAddr,
        len: u64,
        mut f: F,
    ) -> Result<usize, MapError>
    where
        P: Platform + ?Sized,
        F: FnMut(&Leaf) -> Option<(PhysAddr, Attrs)>,
    {
        let (start, end) = self.check_range(va, len)?;
        dst.check_range(va, len)?;
        if let Some(l) = dst.next_leaf(p, start, end) {
            return Err(MapError::AlreadyMapped(VirtAddr(l.va.0.max(start))));
        }
        let mut copied = 0;
        let mut cursor = start;
        while let Some(leaf) = self.next_leaf(p, cursor, end) {
            let piece_start = leaf.va.0.max(cursor);
            let leaf_end = leaf.va.0.wrapping_add(leaf.size);
            // The piece ends at the leaf's end or the range's end, whichever is first
            // (comparing `x - 1` as in `Level::addr_end`).
            let piece_end = if leaf_end.wrapping_sub(1) < end.wrapping_sub(1) {
                leaf_end
            } else {
                end
            };
            let piece = Leaf {
                va: VirtAddr(piece_start),
                pa: PhysAddr(leaf.pa.0 + (piece_start - leaf.va.0)),
                size: piece_end.wrapping_sub(piece_start),
                ..leaf
            };
            if let Some((pa, attrs)) = f(&piece) {
                if let Err(e) = dst.map(p, piece.va, pa, piece.size, attrs, true) {
                    // Only whole pieces inside the range were mapped: no split, cannot fail.
                    let undo = dst.unmap(p, va, len);
                    debug_assert!(undo.is_ok());
                    return Err(e);
                }
                copied += 1;
            }
            if piece_end == end {
                break;
            }
            cursor = piece_end;
        }
        Ok(copied)
    }

    /// Frees every table of the tree and returns how many.
    ///
    /// The root must not be installed in any TTBR on any CPU. One `TLBI ASIDE1IS` (user) or
    /// `VMALLE1IS` (kernel) first drops every leaf and walk-cache entry that could still
    /// reference the tables.
    pub fn destroy<P: Platform + ?Sized>(mut self, p: &mut P) -> usize {
        let op = scope_op(self.scope());
        self.stats.count_tlbi(&[op]);
        p.tlb_maintenance(&[op]);
        free_tree(p, self.table.pa(), Level::L0)
    }
    /// [`Root::destroy`], reporting every leaf of the tree to `f` before the tables go: the
    /// teardown of an address space in one pass over its populated tables.
    ///
    /// The root must not be installed in any TTBR on any CPU. One `TLBI ASIDE1IS` (user) or
    /// `VMALLE1IS` (kernel) first, so every report comes **after** an invalidation covering
    /// the leaf has completed, as with [`Root::unmap_leaves`], and `f` may free the frames.
    /// Then each table is read once, in address order: its leaves are reported (a folded
    /// 64 KiB block once, as one 64 KiB leaf with AF and the dirty state gathered over its 16
    /// entries), the tables below it are visited, and it is freed. `f` gets the platform
    /// back (for releasing frames). Level-3 tables another root still links must have been
    /// unlinked first. Returns how many tables were freed.
    pub fn destroy_leaves<P, F>(mut self, p: &mut P, mut f: F) -> usize
    where
        P: Platform + ?Sized,
        F: FnMut(&mut P, &Leaf),
    {
        let op = scope_op(self.scope());
        self.stats.count_tlbi(&[op]);
        p.tlb_maintenance(&[op]);
        let va = self.table.va_base().0;
        teardown(p, self.table.pa(), Level::L0, va, &mut f)
    }
}

/// Reports the leaves of `table` (at `level`, mapping from `va`) and of the tables below it to
/// `f`, freeing each table after its leaves; see [`Root::destroy_leaves`].
fn teardown<P, F>(p: &mut P, table: PhysAddr, level: Level, va: u64, f: &mut F) -> usize
where
    P: Platform + ?Sized,
    F: FnMut(&mut P, &Leaf),
{
    let mut n = 1;
    let mut i = 0;
    while i < crate::addr::ENTRIES {
        // Empty stretches eight entries at a time (`i` is a multiple of 8 after every skip
        // and every folded block).
        if i % 8 == 0 && eight_empty(&Reader(&*p), table, i) {
            i += 8;
            continue;
        }
        let d = p.read(table, i);
        if !d.is_valid() {
            i += 1;
            continue;
        }
        let at = va.wrapping_add((i as u64) << level.shift());
        match d.kind(level) {
            DescriptorKind::Invalid => {}
            DescriptorKind::Table { next } => {
                let child = level.next().expect("tables only above level 3");
                n += teardown(p, next, child, at, f);
            }
            _ if level.is_page_level() && d.contiguous() && i % CONT_PTES == 0 => {
                let (_, g) = read_block(&Reader(&*p), table, i);
                f(
                    p,
                    &leaf_report(at, d.output_address(level).0, CONT_SIZE, level, g),
                );
                i += CONT_PTES;
                continue;
            }
            _ => f(
                p,
                &leaf_report(at, d.output_address(level).0, level.entry_size(), level, d),
            ),
        }
        i += 1;
    }
    p.free_table(table);
    n
}

fn free_tree<P: Platform + ?Sized>(p: &mut P, table: PhysAddr, level: Level) -> usize {
    let mut n = 1;
    if let Some(child) = level.next() {
        for i in 0..crate::addr::ENTRIES {
            if let DescriptorKind::Table { next } = p.read(table, i).kind(level) {
                n += free_tree(p, next, child);
            }
        }
    }
    p.free_table(table);
    n
}

/// Iterator over the leaves of a root, see [`Root::leaves`].
pub struct Leaves<'a, P: Platform + ?Sized> {
    root: &'a Root,
    p: &'a P,
    cursor: u64,
    end: u64,
    done: bool,
}

impl<P: Platform + ?Sized> Iterator for Leaves<'_, P> {
    type Item = Leaf;
    fn next(&mut self) -> Option<Leaf> {
        if self.done {
            return None;
        }
        let leaf = self.root.next_leaf(self.p, self.cursor, self.end);
        match leaf {
            Some(l) => {
                self.cursor = l.va.0.wrapping_add(l.size);
                self.done = self.cursor == self.end;
            }
            None => self.done = true,
        }
        leaf
    }
}
