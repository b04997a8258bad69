//! The range walker: the one loop every operation is built on.
//!
//! [`walk`] visits, in address order, every entry of `table` that intersects `[start, end)`,
//! handing the visitor the entry, its current descriptor and the part of the range that falls
//! in it (`[addr, next)`, computed with [`Level::addr_end`]). The visitor decides:
//!
//! * [`Step::Next`]: done with this entry (it wrote a leaf, skipped a hole, …);
//! * [`Step::Descend`]`(child)`: walk `child` (one level down) over the same sub-range, then
//!   call [`Visitor::leave`] for this entry — where the visitor links a table it built,
//!   frees one that became empty, or completes a split;
//! * [`Step::Break`]: stop the whole walk with a value (an error, or the leaf a query found).
//!
//! The same function, generic over the visitor, implements map, unmap, protect, the pre-flight
//! planning passes, translation and the leaf iterator; it recurses at most three times.
//! Ranges use the wrapping convention of [`Level::addr_end`] (`end == 0` is 2^64), so a range
//! ending at the very top of the upper half needs no special case.

use super::desc::{bits, Descriptor};
use super::platform::Platform;
use super::table::{Entry, Table};
use crate::addr::{Level, PhysAddr, CONT_PTES, ENTRIES};

/// What the visitor wants done after visiting an entry.
pub(crate) enum Step<B> {
    /// Go on with the next entry.
    Next,
    /// Walk this child table over the same sub-range, then call [`Visitor::leave`].
    Descend(Table),
    /// Stop the walk.
    Break(B),
}

/// Descriptor reads, the one thing the walker itself needs from its context.
pub(crate) trait ReadDesc {
    fn read_desc(&self, table: PhysAddr, index: usize) -> Descriptor;
}

/// Whether the eight entries of `table` from `i` on are all invalid: how the scans of whole
/// tables skip empty stretches.
#[inline]
pub(crate) fn eight_empty<C: ReadDesc + ?Sized>(cx: &C, table: PhysAddr, i: usize) -> bool {
    (i..i + 8).fold(0, |acc, j| acc | cx.read_desc(table, j).0) & bits::VALID == 0
}

/// The 16 descriptors of the contiguous block starting at `first` in `table`, and their
/// gathered state: the first entry with AF and dirty ORed over all 16.
pub(crate) fn read_block<C: ReadDesc + ?Sized>(
    cx: &C,
    table: PhysAddr,
    first: usize,
) -> ([Descriptor; CONT_PTES], Descriptor) {
    let b = BlockState::read(cx, table, first);
    (b.old, b.gathered())
}

/// The 16 descriptors of a contiguous block with their bits ORed (`any`) and ANDed (`all`).
pub(crate) struct BlockState {
    pub old: [Descriptor; CONT_PTES],
    any: u64,
    all: u64,
}

impl BlockState {
    /// Reads the block starting at `first` in `table`, in one pass.
    pub(crate) fn read<C: ReadDesc + ?Sized>(cx: &C, table: PhysAddr, first: usize) -> BlockState {
        let mut old = [Descriptor::INVALID; CONT_PTES];
        let (mut any, mut all) = (0, u64::MAX);
        for (i, d) in old.iter_mut().enumerate() {
            *d = cx.read_desc(table, first + i);
            any |= d.0;
            all &= d.0;
        }
        BlockState { old, any, all }
    }

    /// The first entry with AF and SW_DIRTY ORed, AP\[2\] ANDed (an entry the hardware may
    /// write is dirty): the same as folding `Descriptor::gather_young_dirty` over the 16.
    pub(crate) fn gathered(&self) -> Descriptor {
        let young = self.any & bits::AF != 0;
        let dirty = self.any & bits::SW_DIRTY != 0 || self.all & bits::AP_RO == 0;
        let gathered = self.old[0].with_young(young).with_dirty(dirty);
        debug_assert_eq!(
            gathered,
            self.old[1..]
                .iter()
                .fold(self.old[0], |g, d| g.gather_young_dirty(*d))
        );
        gathered
    }

    /// Whether any of the 16 entries is writable ([`Descriptor::writable`]): DBM set, or
    /// AP\[2\] clear.
    pub(crate) fn any_writable(&self) -> bool {
        let w = self.any & bits::DBM != 0 || self.all & bits::AP_RO == 0;
        debug_assert_eq!(w, self.old.iter().any(|d| d.writable()));
        w
    }
}

/// A read-only context over a platform.
pub(crate) struct Reader<'a, P: ?Sized>(pub &'a P);

impl<P: Platform + ?Sized> ReadDesc for Reader<'_, P> {
    fn read_desc(&self, table: PhysAddr, index: usize) -> Descriptor {
        self.0.read(table, index)
    }
}

/// Per-operation behaviour plugged into [`walk`].
pub(crate) trait Visitor<C: ?Sized> {
    type Break;

    /// Visits `entry`, which currently holds `desc`, for the sub-range `[addr, next)`.
    fn visit(
        &mut self,
        cx: &mut C,
        entry: Entry,
        desc: Descriptor,
        addr: u64,
        next: u64,
    ) -> Step<Self::Break>;

    /// Called after walking `child` (returned by `visit` as `Descend(child)`) over
    /// `[addr, next)`.
    fn leave(
        &mut self,
        _cx: &mut C,
        _entry: Entry,
        _child: Table,
        _addr: u64,
        _next: u64,
    ) -> Result<(), Self::Break> {
        Ok(())
    }
}

/// Walks `table` over `[start, end)` (wrapping end; the range must lie within the table's span
/// and be non-empty).
pub(crate) fn walk<C, V>(cx: &mut C, v: &mut V, table: Table, start: u64, end: u64) -> Result<(), V::Break>
where
    C: ReadDesc + ?Sized,
    V: Visitor<C> + ?Sized,
{
    let level = table.level();
    let mut addr = start;
    let mut steps = 0;
    loop {
        steps += 1;
        assert!(
            steps <= ENTRIES,
            "walker took more than 512 steps in one {level:?} table: bad range arithmetic"
        );
        let next = level.addr_end(addr, end);
        let entry = table.entry_for(addr);
        let desc = cx.read_desc(table.pa(), entry.index());
        match v.visit(cx, entry, desc, addr, next) {
            Step::Next => {}
            Step::Descend(child) => {
                debug_assert_eq!(Some(child.level()), level.next());
                walk(cx, v, child, addr, next)?;
                v.leave(cx, entry, child, addr, next)?;
            }
            Step::Break(b) => return Err(b),
        }
        addr = next;
        if addr == end {
            return Ok(());
        }
    }
}

/// The cost in new tables of mapping `[addr, next)` below an *empty* entry at `level`, where
/// `can_leaf(level, addr, next)` says whether a leaf may be written at a level for a sub-range.
/// Mirrors what the map visitor does when it finds an invalid entry.
pub(crate) fn tables_for_empty(
    level: Level,
    addr: u64,
    next: u64,
    can_leaf: &impl Fn(Level, u64, u64) -> bool,
) -> usize {
    if can_leaf(level, addr, next) {
        return 0;
    }
    let child = level.next().expect("level 3 always takes a leaf");
    if child.is_page_level() {
        return 1;
    }
    let mut n = 1;
    let mut a = addr;
    loop {
        let b = child.addr_end(a, next);
        n += tables_for_empty(child, a, b, can_leaf);
        a = b;
        if a == next {
            return n;
        }
    }
}

/// The cost in new tables of splitting the leaf at `level` so that `[addr, next)` (a strict part
/// of it) can be changed on its own: one table for this leaf, plus the splits of the (at most
/// two) partially covered next-level blocks at the ends.
pub(crate) fn tables_for_split(level: Level, addr: u64, next: u64) -> usize {
    let child = level.next().expect("pages cannot be split");
    let mut n = 1;
    if child.is_page_level() {
        return n;
    }
    let mut a = addr;
    loop {
        let b = child.addr_end(a, next);
        if !crate::addr::covers_entry(child, a, b) {
            n += tables_for_split(child, a, b);
        }
        a = b;
        if a == next {
            return n;
        }
    }
}
