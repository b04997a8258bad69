//! The PTE copy of fork, one level-3 table at a time ([`Root::copy_pte_table`]): the parent's
//! entries are read once, the caller accounts each unit (a folded 64 KiB block, or one page),
//! and the child's entries and the parent's write-protection are written in the same pass.
//! The rules are those of the single-range operations (docs/mm.md, "CONTPTE" and "Fork").

use super::ctx::{Ctx, Reserve};
use super::desc::Descriptor;
use super::platform::Platform;
use super::pte_table::{PteTable, PTE_TABLE_SPAN};
use super::root::Root;
use super::table::Table;
use super::walk::{BlockState, Reader};
use crate::addr::{Level, PhysAddr, VirtAddr, CONT_PTES, CONT_SIZE, PAGE_SIZE};
use crate::frames::OutOfMemory;

/// One unit of a parent's level-3 table, as [`Root::copy_pte_table`] shows it to its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CopyUnit {
    /// First VA.
    pub va: VirtAddr,
    /// The entry of the first page; for a folded block (or a page of one the range cuts),
    /// with AF and the dirty state gathered over its 16 entries.
    pub pte: Descriptor,
    /// Pages: [`CONT_PTES`] for a folded block wholly inside the range, else 1.
    pub nr: usize,
}

/// What the child gets for one [`CopyUnit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyPte {
    /// The same pages, read-only and old (a folded block stays folded when the child's root
    /// folds); the parent's writable entries of the unit are write-protected, if the call
    /// protects the parent.
    Share,
    /// A folded block only: unfold the parent's block, then ask again page by page.
    Split,
    /// Nothing for the child; the parent's entries are left as they are.
    Skip,
}

/// The caller's side of [`Root::copy_pte_table`]: what the child gets for each unit. Any
/// `FnMut(&CopyUnit) -> Result<CopyPte, OutOfMemory>` is one; a type of its own lets the
/// per-unit work be inlined into the table's loop.
pub trait CopyPolicy {
    /// The answer for `u`, or an error that stops the pass.
    fn unit(&mut self, u: &CopyUnit) -> Result<CopyPte, OutOfMemory>;
}

impl<F: FnMut(&CopyUnit) -> Result<CopyPte, OutOfMemory>> CopyPolicy for F {
    fn unit(&mut self, u: &CopyUnit) -> Result<CopyPte, OutOfMemory> {
        self(u)
    }
}

impl Root {
    /// The fork copy of `[start, end)`, a range inside the span of this root's level-3 table
    /// `t` (from [`Root::pte_tables`]), into `child`: every valid entry of the range is shown
    /// to `f` once, a folded block wholly inside the range as one unit, and what `f` answers is
    /// written into the child's table for the span (allocated at the first valid entry, if
    /// missing) and, for
    /// [`CopyPte::Share`] with `protect_parent`, into this table: its writable entries lose
    /// write permission, keeping their dirty state, whole folded blocks staying folded (a
    /// folded block the range covers in part is unfolded first, as
    /// [`Root::wrprotect_ptes`] does).
    ///
    /// The child's entries in the range must be invalid (it is a fresh space's table). They
    /// are written invalid → valid and published with one barrier; the parent's changed
    /// entries are invalidated with one gathered flush, completed when this returns.
    ///
    /// Returns how many of the parent's entries were write-protected. Stops at the first error
    /// of `f` (or when the child's table cannot be allocated): what was written up to then
    /// stays written, and is flushed and published as above.
    pub fn copy_pte_table<P: Platform + ?Sized>(
        &mut self,
        p: &mut P,
        child: &mut Root,
        t: PteTable,
        (start, end): (u64, u64),
        protect_parent: bool,
        mut f: impl CopyPolicy,
    ) -> Result<u64, OutOfMemory> {
        let span = t.va.0;
        assert!(
            span <= start
                && start < end
                && end <= span + PTE_TABLE_SPAN
                && span.is_multiple_of(PTE_TABLE_SPAN),
            "copy_pte_table: [{start:#x}, {end:#x}) is not inside the span at {span:#x}"
        );
        let parent = Table::new(t.pa, Level::L3, span);
        let child_fold = child.contpte;
        let scope = self.scope();
        let mut cx = Ctx::new(p, &mut self.stats, scope, Reserve::empty());
        let (first, last) = (Level::L3.index_of(start), Level::L3.index_of(end - PAGE_SIZE));
        if protect_parent {
            // A folded block the range covers in part would be write-protected in part.
            for i in [first, last] {
                let b = i & !(CONT_PTES - 1);
                if (b < first || b + CONT_PTES - 1 > last) && cx.p.read(t.pa, i).contiguous() {
                    cx.convert_block(parent, b, false);
                }
            }
        }
        // The child's table, looked up (or allocated) at the first valid entry.
        let mut child_table: Option<PhysAddr> = None;
        let mut child_table_of = |p: &mut P| -> Result<PhysAddr, OutOfMemory> {
            if let Some(ct) = child_table {
                return Ok(ct);
            }
            let ct = child
                .alloc_slot(p, VirtAddr(span), Level::L3)
                .map_err(|_| OutOfMemory)?
                .table()
                .pa();
            child_table = Some(ct);
            Ok(ct)
        };
        let mut child_writes = 0u64;
        let mut child_blocks = 0u64;
        let mut result = Ok(());
        let mut protected = 0u64;
        let mut i = first;
        'table: while i <= last {
            let d = cx.p.read(t.pa, i);
            if !d.is_valid() {
                i += 1;
                continue;
            }
            let va = span + i as u64 * PAGE_SIZE;
            // Before the caller accounts anything for the child.
            let ct = match child_table_of(cx.p) {
                Ok(ct) => ct,
                Err(e) => {
                    result = Err(e);
                    break 'table;
                }
            };
            if d.contiguous() && i % CONT_PTES == 0 && i + CONT_PTES - 1 <= last {
                let b = BlockState::read(&Reader(&*cx.p), t.pa, i);
                let g = b.gathered();
                let unit = CopyUnit {
                    va: VirtAddr(va),
                    pte: g,
                    nr: CONT_PTES,
                };
                match f.unit(&unit) {
                    Err(e) => {
                        result = Err(e);
                        break 'table;
                    }
                    Ok(CopyPte::Skip) => {}
                    Ok(CopyPte::Share) => {
                        let c = g
                            .with_writable(false)
                            .with_young(false)
                            .with_contiguous(child_fold);
                        debug_assert!((0..CONT_PTES).all(|k| !cx.p.read(ct, i + k).is_valid()));
                        for k in 0..CONT_PTES {
                            cx.p.write(ct, i + k, Descriptor(c.0 + k as u64 * PAGE_SIZE));
                        }
                        child_writes += CONT_PTES as u64;
                        child_blocks += child_fold as u64;
                        if protect_parent && b.any_writable() {
                            for (k, o) in b.old.iter().enumerate() {
                                cx.p.write(t.pa, i + k, o.with_writable(false));
                            }
                            cx.stats.desc_writes += CONT_PTES as u64;
                            protected += CONT_PTES as u64;
                            cx.gather.add_leaves(va, CONT_SIZE, Level::L3);
                        }
                    }
                    Ok(CopyPte::Split) => {
                        // Page by page from here: the block's entries are read again unfolded.
                        cx.convert_block(parent, i, false);
                        continue 'table;
                    }
                }
                i += CONT_PTES;
                continue;
            }
            // A page of a folded block the range cuts (the parent's block stays folded when
            // it is not written): its state is the block's.
            let d = if d.contiguous() {
                let g = BlockState::read(&Reader(&*cx.p), t.pa, i & !(CONT_PTES - 1)).gathered();
                d.with_young(g.young()).with_dirty(g.dirty())
            } else {
                d
            };
            let unit = CopyUnit {
                va: VirtAddr(va),
                pte: d,
                nr: 1,
            };
            match f.unit(&unit) {
                Err(e) => {
                    result = Err(e);
                    break 'table;
                }
                Ok(CopyPte::Skip) => {}
                Ok(CopyPte::Share) => {
                    debug_assert!(!cx.p.read(ct, i).is_valid());
                    let c = d.with_writable(false).with_young(false).with_contiguous(false);
                    cx.p.write(ct, i, c);
                    child_writes += 1;
                    if protect_parent && d.writable() {
                        cx.p.write(t.pa, i, d.with_writable(false));
                        cx.stats.desc_writes += 1;
                        protected += 1;
                        cx.gather.add_leaves(va, PAGE_SIZE, Level::L3);
                    }
                }
                Ok(CopyPte::Split) => panic!("copy_pte_table: Split answered for one page"),
            }
            i += 1;
        }
        cx.finish();
        if child_table.is_some() {
            child.stats.desc_writes += child_writes;
            child.stats.cont_blocks_mapped += child_blocks;
            child.stats.publishes += 1;
            p.publish();
        }
        result.map(|()| protected)
    }
}
