//! TLB invalidation policy: which instructions to issue for a set of changed entries
//! (gathered while an operation runs, planned by [`plan_flush`] at its end). The policy and
//! its thresholds are described in docs/mm.md ("TLB maintenance").

use super::asid::Asid;
use super::platform::{TlbOp, TlbRange};
use crate::addr::{Level, PhysAddr, VirtAddr, PAGE_SIZE};

/// Most by-VA TLBIs issued for one flush before falling back to a by-ASID / full flush.
pub const MAX_TLBI_OPS: u64 = 64;

/// Range TLBIs are used for fewer pages than this: `(31 + 1) << (5 * 3 + 1)`, what one
/// `SCALE = 3, NUM = 31` operation would cover.
pub const MAX_TLBI_RANGE_PAGES: u64 = 32 << 16;

/// Which entries a root's maintenance must reach.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TlbScope {
    /// The kernel root: global entries, reached with the all-ASID forms.
    AllAsids,
    /// A user root: entries tagged with this ASID.
    Asid(Asid),
}

/// A pending invalidation: everything cached for `[start, last]` may be stale.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlushRequest {
    /// Whose entries.
    pub scope: TlbScope,
    /// First byte (a multiple of `stride`).
    pub start: u64,
    /// Last byte (inclusive, so that a range ending at 2^64 is representable).
    pub last: u64,
    /// Smallest entry size affected: every affected entry is stride-aligned and at least
    /// stride long, so one TLBI per stride reaches all of them.
    pub stride: u64,
    /// Only leaf entries changed (use the last-level forms).
    pub leaf_only: bool,
    /// Every affected entry is a leaf at this level (TTL hint).
    pub level: Option<Level>,
}

fn va_op(scope: TlbScope, va: u64, leaf_only: bool, level: Option<Level>) -> TlbOp {
    match scope {
        TlbScope::AllAsids => TlbOp::VaAllAsids {
            va: VirtAddr(va),
            leaf_only,
            level,
        },
        TlbScope::Asid(asid) => TlbOp::Va {
            va: VirtAddr(va),
            asid,
            leaf_only,
            level,
        },
    }
}

/// Whole-scope invalidation for `scope`.
pub fn scope_op(scope: TlbScope) -> TlbOp {
    match scope {
        TlbScope::AllAsids => TlbOp::All,
        TlbScope::Asid(asid) => TlbOp::Asid(asid),
    }
}

/// Emits the instructions that invalidate `req`, as few as the policy (docs/mm.md, "TLB
/// maintenance") allows. Emits at most `max(MAX_TLBI_OPS, 5)` operations.
pub fn plan_flush(req: &FlushRequest, has_range: bool, mut emit: impl FnMut(TlbOp)) {
    debug_assert!(req.stride.is_power_of_two() && req.stride >= PAGE_SIZE);
    debug_assert!(
        req.start.is_multiple_of(req.stride) && req.last.wrapping_add(1).is_multiple_of(req.stride)
    );
    let span = req.last - req.start + 1; // at most 2^48: never overflows
    let count = span / req.stride;
    let hint = if req.leaf_only { req.level } else { None };
    let pages = span / PAGE_SIZE;

    if count == 1 {
        emit(va_op(req.scope, req.start, req.leaf_only, hint));
    } else if has_range && pages < MAX_TLBI_RANGE_PAGES {
        let asid = match req.scope {
            TlbScope::AllAsids => None,
            TlbScope::Asid(a) => Some(a),
        };
        range_ops(req.start, pages, |base, pages_or_range| match pages_or_range {
            None => emit(va_op(req.scope, base, req.leaf_only, hint)),
            Some((scale, num)) => emit(TlbOp::Range(TlbRange {
                base: VirtAddr(base),
                scale,
                num,
                asid,
                leaf_only: req.leaf_only,
                level: hint,
            })),
        });
    } else if count <= MAX_TLBI_OPS {
        for i in 0..count {
            emit(va_op(req.scope, req.start + i * req.stride, req.leaf_only, hint));
        }
    } else {
        emit(scope_op(req.scope));
    }
}

/// Splits `pages` pages from `start` (`pages < MAX_TLBI_RANGE_PAGES`) into encodable pieces:
/// `emit(addr, None)` for a single page, `emit(addr, Some((scale, num)))` for a range of
/// `(num + 1) << (5 * scale + 1)` pages.
pub fn range_ops(start: u64, mut pages: u64, mut emit: impl FnMut(u64, Option<(u8, u8)>)) {
    debug_assert!(pages > 0 && pages < MAX_TLBI_RANGE_PAGES);
    let mut addr = start;
    // The running address may reach 2^64 (wrap to 0) after the last piece of a range that
    // ends at the top of the upper half; it is never used then.
    if pages % 2 == 1 {
        emit(addr, None);
        addr = addr.wrapping_add(PAGE_SIZE);
        pages -= 1;
    }
    // `pages` is now even and below 2^21: bits 1..=20, five per SCALE.
    for scale in 0..4u8 {
        let shift = 5 * scale as u32 + 1;
        let chunk = (pages >> shift) & 31;
        if chunk != 0 {
            emit(addr, Some((scale, (chunk - 1) as u8)));
            let covered = chunk << shift;
            addr = addr.wrapping_add(covered * PAGE_SIZE);
            pages -= covered;
        }
    }
    debug_assert_eq!(pages, 0);
}

/// A table frame to free once the pending invalidation is complete.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PendingFree {
    pub table: PhysAddr,
    pub level: Level,
    /// Free the whole subtree below it too.
    pub subtree: bool,
}

/// How many frees a gather holds before it must be flushed.
pub(crate) const FREE_BATCH: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hint {
    Empty,
    Level(Level),
    Mixed,
}

/// Accumulates stale ranges and frames to free for one operation (see docs/mm.md, "TLB maintenance").
pub(crate) struct Gather {
    scope: TlbScope,
    dirty: bool,
    start: u64,
    last: u64,
    stride: u64,
    leaf_only: bool,
    hint: Hint,
    frees: [Option<PendingFree>; FREE_BATCH],
    nfrees: usize,
}

impl Gather {
    pub fn new(scope: TlbScope) -> Gather {
        Gather {
            scope,
            dirty: false,
            start: 0,
            last: 0,
            stride: 0,
            leaf_only: true,
            hint: Hint::Empty,
            frees: [None; FREE_BATCH],
            nfrees: 0,
        }
    }

    fn add_range(&mut self, va: u64, size: u64, stride: u64, leaf: Option<Level>) {
        let last = va + (size - 1);
        if self.dirty {
            self.start = self.start.min(va);
            self.last = self.last.max(last);
            self.stride = self.stride.min(stride);
        } else {
            self.dirty = true;
            self.start = va;
            self.last = last;
            self.stride = stride;
        }
        self.hint = match (self.hint, leaf) {
            (Hint::Empty, Some(l)) => Hint::Level(l),
            (Hint::Level(a), Some(b)) if a == b => Hint::Level(a),
            _ => Hint::Mixed,
        };
        if leaf.is_none() {
            self.leaf_only = false;
        }
    }

    /// A live leaf at `level` mapping `[va, va + size)` was changed or removed.
    pub fn add_leaf(&mut self, va: u64, level: Level) {
        let size = level.entry_size();
        self.add_range(va, size, size, Some(level));
    }

    /// The live leaves at `level` mapping `[va, va + size)` were changed or removed.
    pub fn add_leaves(&mut self, va: u64, size: u64, level: Level) {
        self.add_range(va, size, level.entry_size(), Some(level));
    }

    /// A live level-2 (or higher) table descriptor mapping `[va, va + size)` changed in place
    /// (hierarchical limits) or was unlinked without freeing what it pointed to: every leaf
    /// and walk-cache entry of the span may be stale.
    pub fn add_table_span(&mut self, va: u64, size: u64) {
        self.add_range(va, size, PAGE_SIZE, None);
    }

    /// The live table entry mapping `[va, va + size)` was invalidated; `table` (at `level`) and
    /// everything below it is to be freed.
    pub fn add_detached(&mut self, va: u64, size: u64, table: PhysAddr, level: Level) {
        self.add_range(va, size, PAGE_SIZE, None);
        self.push_free(PendingFree {
            table,
            level,
            subtree: true,
        });
    }

    /// The live table entry for a table that became empty was invalidated; `table` is to be
    /// freed. `va` is an address it mapped.
    pub fn add_emptied(&mut self, va: u64, table: PhysAddr, level: Level) {
        let page = va & !(PAGE_SIZE - 1);
        if self.dirty && page >= self.start && page <= self.last {
            // Already covered by the leaves removed from it; just drop the last-level form.
            self.leaf_only = false;
            self.hint = Hint::Mixed;
        } else {
            self.add_range(page, PAGE_SIZE, PAGE_SIZE, None);
        }
        self.push_free(PendingFree {
            table,
            level,
            subtree: false,
        });
    }

    fn push_free(&mut self, f: PendingFree) {
        assert!(self.nfrees < FREE_BATCH, "gather full: flush before adding");
        self.frees[self.nfrees] = Some(f);
        self.nfrees += 1;
    }

    /// Whether another free can be queued without flushing first.
    pub fn has_room(&self) -> bool {
        self.nfrees < FREE_BATCH
    }

    /// The invalidation to perform, if any.
    pub fn request(&self) -> Option<FlushRequest> {
        self.dirty.then_some(FlushRequest {
            scope: self.scope,
            start: self.start,
            last: self.last,
            stride: self.stride,
            leaf_only: self.leaf_only,
            level: match self.hint {
                Hint::Level(l) => Some(l),
                _ => None,
            },
        })
    }

    /// Takes the last queued free, if any (in place: nothing else of the gather moves).
    pub fn pop_free(&mut self) -> Option<PendingFree> {
        if self.nfrees == 0 {
            return None;
        }
        self.nfrees -= 1;
        self.frees[self.nfrees].take()
    }

    /// Forgets the gathered range, once it has been invalidated.
    pub fn clear_range(&mut self) {
        self.dirty = false;
        self.leaf_only = true;
        self.hint = Hint::Empty;
    }
}
