//! Unmapping a range of level-3 pages in one pass ([`Root::zap_ptes`], munmap's form): each
//! table read once, a folded block removed as one unit, emptied tables unlinked, and one
//! invalidation for the whole call.

use alloc::vec::Vec;

use super::ctx::{issue, leaf_report, Ctx, Reserve};
use super::desc::{Descriptor, DescriptorKind};
use super::error::MapError;
use super::leaf::Leaf;
use super::platform::Platform;
use super::root::Root;
use super::table::Table;
use super::tlb::FlushRequest;
use super::walk::{eight_empty, read_block, Reader};
use crate::addr::{Level, VirtAddr, CONT_PTES, CONT_SIZE, ENTRIES, PAGE_SIZE};

/// What one [`Root::zap_ptes`] pass did.
struct Zap {
    /// Unlinked table frames, freed after the invalidation.
    freed: Vec<crate::addr::PhysAddr>,
    /// Entries written invalid (leaves and table links).
    writes: u64,
    /// Folded blocks removed whole.
    blocks: u64,
}

impl Root {
    /// Unmaps `[va, va + len)` as [`Root::unmap_leaves`] does — the same entries removed, the
    /// same leaves reported (a folded block once, as one 64 KiB leaf with its access and dirty
    /// state gathered), the same tables freed — in one pass: every table of the range is read
    /// once, a folded block the range covers whole is cleared as a unit, and the whole call
    /// issues one invalidation (by-ASID past the per-entry threshold). The folded blocks the
    /// range covers in part (at most two) are unfolded first, as everywhere.
    ///
    /// `f` sees each removed leaf **as it is cleared, before the invalidation**: it may drop
    /// the accounting of the mapping, but must keep the frames (and any reference that keeps
    /// them) until this returns, when the invalidation has completed — munmap's form, whose
    /// caller releases the references afterwards. Tables emptied by the call are unlinked and
    /// freed after the invalidation. Fails with [`MapError::BlockMapped`] before writing
    /// anything if a level-1/2 block lies in the range.
    pub fn zap_ptes<P, F>(&mut self, p: &mut P, va: VirtAddr, len: u64, mut f: F) -> Result<(), MapError>
    where
        P: Platform + ?Sized,
        F: FnMut(&Leaf),
    {
        let (start, end) = self.check_range(va, len)?;
        let last = end.wrapping_sub(1);
        if let Some(at) = find_block(p, self.table, start, last) {
            return Err(MapError::BlockMapped(VirtAddr(at)));
        }
        let scope = self.scope();
        let mut cx = Ctx::new(p, &mut self.stats, scope, Reserve::empty());
        cx.unfold_partial(self.table, start, end);
        cx.finish();
        let mut z = Zap {
            freed: Vec::new(),
            writes: 0,
            blocks: 0,
        };
        zap_table(p, self.table, start, last, true, &mut z, &mut f);
        self.stats.desc_writes += z.writes;
        self.stats.cont_blocks_unmapped += z.blocks;
        if z.writes == 0 {
            return Ok(());
        }
        let leaf_only = z.freed.is_empty();
        let req = FlushRequest {
            scope,
            start,
            last,
            stride: PAGE_SIZE,
            leaf_only,
            level: leaf_only.then_some(Level::L3),
        };
        issue(p, &mut self.stats, &req);
        for t in z.freed {
            self.stats.tables_freed += 1;
            p.free_table(t);
        }
        Ok(())
    }
}

/// The last VA of `table`'s span.
fn span_last(table: Table) -> u64 {
    let size = table.level().entry_size();
    table
        .va_base()
        .0
        .wrapping_add(size.wrapping_mul(ENTRIES as u64))
        .wrapping_sub(1)
}

/// The first VA of a level-1/2 block in `[start, last]` below `table`, if any (reads the
/// levels above 3 only).
fn find_block<P: Platform + ?Sized>(p: &P, table: Table, start: u64, last: u64) -> Option<u64> {
    let level = table.level();
    if level == Level::L3 {
        return None;
    }
    for i in level.index_of(start)..=level.index_of(last) {
        let d = p.read(table.pa(), i);
        let e = table.entry(i);
        match d.kind(level) {
            DescriptorKind::Invalid => {}
            DescriptorKind::Table { next } if level != Level::L2 => {
                let lo = e.va().0.max(start);
                let hi = e.va().0.wrapping_add(e.size() - 1).min(last);
                if let Some(at) = find_block(p, e.child(next), lo, hi) {
                    return Some(at);
                }
            }
            DescriptorKind::Table { .. } => {}
            _ => return Some(e.va().0.max(start)),
        }
    }
    None
}

/// Clears `[start, last]` (inside `table`'s span) below `table`, reporting leaves to `f` and
/// unlinking the child tables it empties into `z.freed`; returns whether `table` is empty now.
/// A child table whose span lies inside the range is unlinked first and then only read: its
/// leaves are reported and its tables freed after the invalidation, its entries are never
/// written (`live` is false below it).
fn zap_table<P, F>(p: &mut P, table: Table, start: u64, last: u64, live: bool, z: &mut Zap, f: &mut F) -> bool
where
    P: Platform + ?Sized,
    F: FnMut(&Leaf),
{
    let level = table.level();
    let (i0, i1) = (level.index_of(start), level.index_of(last));
    let t = table.pa();
    let mut i = i0;
    while i <= i1 {
        if i % 8 == 0 && i + 8 <= i1 + 1 && eight_empty(&Reader(&*p), t, i) {
            i += 8;
            continue;
        }
        let d = p.read(t, i);
        if !d.is_valid() {
            i += 1;
            continue;
        }
        let e = table.entry(i);
        if level.is_page_level() {
            if d.contiguous() {
                // The blocks the range covers in part were unfolded: this one starts here and
                // lies inside the range.
                debug_assert!(i % CONT_PTES == 0 && i + CONT_PTES - 1 <= i1);
                let (_, g) = read_block(&Reader(&*p), t, i);
                if live {
                    for k in 0..CONT_PTES {
                        p.write(t, i + k, Descriptor::INVALID);
                    }
                    z.writes += CONT_PTES as u64;
                }
                z.blocks += 1;
                f(&leaf_report(
                    e.va().0,
                    d.output_address(level).0,
                    CONT_SIZE,
                    level,
                    g,
                ));
                i += CONT_PTES;
                continue;
            }
            if live {
                p.write(t, i, Descriptor::INVALID);
                z.writes += 1;
            }
            f(&leaf_report(
                e.va().0,
                d.output_address(level).0,
                PAGE_SIZE,
                level,
                d,
            ));
        } else if let DescriptorKind::Table { next } = d.kind(level) {
            let lo = e.va().0.max(start);
            let hi = e.va().0.wrapping_add(e.size() - 1).min(last);
            let whole = lo == e.va().0 && hi == e.va().0.wrapping_add(e.size() - 1);
            if live && whole {
                // Unlinked before it is read: nothing below needs a write.
                p.write(t, i, Descriptor::INVALID);
                z.writes += 1;
                zap_table(p, e.child(next), lo, hi, false, z, f);
                z.freed.push(next);
            } else if !live {
                zap_table(p, e.child(next), lo, hi, false, z, f);
                z.freed.push(next);
            } else if zap_table(p, e.child(next), lo, hi, true, z, f) {
                p.write(t, i, Descriptor::INVALID);
                z.writes += 1;
                z.freed.push(next);
            }
        }
        i += 1;
    }
    if !live || (start <= table.va_base().0 && last >= span_last(table)) {
        // Every entry was in the range: the leaves are cleared and the children emptied.
        return true;
    }
    (0..ENTRIES).step_by(8).all(|i| eight_empty(&Reader(&*p), t, i))
}
