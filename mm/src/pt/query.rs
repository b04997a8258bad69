//! Read-only queries over a tree: the first leaf of a range, and where the translation of one
//! page is held.

use super::desc::{Descriptor, DescriptorKind};
use super::table::{Entry, Table};
use super::walk::{ReadDesc, Step, Visitor};
use crate::addr::Level;

/// Query: stops at the first leaf in the range.
pub(crate) struct FirstLeaf;

impl<C: ?Sized> Visitor<C> for FirstLeaf {
    type Break = (Entry, Descriptor);
    fn visit(&mut self, _: &mut C, e: Entry, d: Descriptor, _: u64, _: u64) -> Step<Self::Break> {
        match d.kind(e.level()) {
            DescriptorKind::Invalid => Step::Next,
            DescriptorKind::Table { next } => Step::Descend(e.child(next)),
            _ => Step::Break((e, d)),
        }
    }
}

/// Where the translation of one page is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Slot {
    /// The level-3 entry (valid or not).
    Pte(Entry),
    /// A level-1 or level-2 block covering the page.
    Block(Entry),
}

/// Where the path of one page ends when followed down to a target level ([`descend`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Descent {
    /// The slot at the target level (valid or not).
    Reached(Entry),
    /// A level-1 or level-2 block covers the page.
    Block(Entry),
    /// The entry above the target level is invalid: a table is missing.
    Missing,
}

/// Follows the path of the page at `va` from `root` down to `target`, reading one entry per
/// level (no visitor: nothing is copied per level).
#[inline]
pub(crate) fn descend<C: ReadDesc + ?Sized>(cx: &C, root: Table, va: u64, target: Level) -> Descent {
    let mut table = root;
    loop {
        let e = table.entry_for(va);
        if table.level() == target {
            return Descent::Reached(e);
        }
        match cx.read_desc(table.pa(), e.index()).kind(table.level()) {
            DescriptorKind::Invalid => return Descent::Missing,
            DescriptorKind::Table { next } => table = e.child(next),
            _ => return Descent::Block(e),
        }
    }
}

/// The slot of the page at `va` under `root`, if the path reaches a level-3 table or a block.
pub(crate) fn find_slot<C: ReadDesc + ?Sized>(cx: &mut C, root: Table, va: u64) -> Option<Slot> {
    match descend(cx, root, va, Level::L3) {
        Descent::Reached(e) => Some(Slot::Pte(e)),
        Descent::Block(e) => Some(Slot::Block(e)),
        Descent::Missing => None,
    }
}
