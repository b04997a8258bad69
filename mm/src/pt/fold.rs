//! The CONTPTE mechanics: folding and unfolding a 64 KiB block of 16 level-3 entries (the
//! Contiguous bit), and rewriting a folded block as a unit with one break-before-make. The
//! rules they follow are in docs/mm.md ("CONTPTE"); the PTE-level operations that use them are
//! in `contpte.rs`.

use super::ctx::Ctx;
use super::desc::{Descriptor, DescriptorKind};
use super::platform::Platform;
use super::query::{find_slot, Slot};
use super::table::Table;
use super::tlb::FlushRequest;
use super::walk::read_block;
use crate::addr::{Level, CONT_PTES, CONT_SIZE, PAGE_SIZE};

impl<P: Platform + ?Sized> Ctx<'_, P> {
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

/// The (at most two) 64 KiB blocks that `[start, end)` touches without covering them whole,
/// each with a page of the range inside it.
pub(crate) fn partial_blocks(start: u64, end: u64) -> impl Iterator<Item = u64> {
    let last = end.wrapping_sub(PAGE_SIZE);
    let first_block = start & !(CONT_SIZE - 1);
    let last_block = last & !(CONT_SIZE - 1);
    let a = (!block_covered(first_block, start, end)).then_some(start);
    let b = (last_block != first_block && !block_covered(last_block, start, end)).then_some(last);
    a.into_iter().chain(b)
}
