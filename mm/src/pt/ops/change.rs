//! Protect and write-protect: a change applied to every leaf of a range, in place or with
//! break-before-make (a folded block as a unit).

use crate::addr::{covers_entry, CONT_PTES};
use crate::pt::attrs::{leaf_change_needs_bbm, reprotect, Attrs};
use crate::pt::ctx::Ctx;
use crate::pt::desc::{Descriptor, DescriptorKind};
use crate::pt::platform::Platform;
use crate::pt::table::{Entry, Table};
use crate::pt::walk::{Step, Visitor};

/// A change applied to every leaf of a range.
#[derive(Clone, Copy, Debug)]
pub(crate) enum LeafChange {
    /// [`crate::Root::protect`]: attributes replaced (see [`reprotect`]).
    Protect(Attrs),
    /// Write permission revoked, dirty state kept ([`Descriptor::with_writable`]).
    WrProtect,
}

impl LeafChange {
    fn apply(self, d: Descriptor) -> Descriptor {
        match self {
            LeafChange::Protect(a) => reprotect(d, a),
            LeafChange::WrProtect => d.with_writable(false),
        }
    }
}

/// Protect / write-protect, pass 2. Changes are idempotent, so entries of a folded block
/// rewritten together at its first entry are seen unchanged when the walk reaches them.
pub(crate) struct ChangeOp {
    pub change: LeafChange,
}

impl<P: Platform + ?Sized> Visitor<Ctx<'_, P>> for ChangeOp {
    type Break = core::convert::Infallible;
    fn visit(
        &mut self,
        cx: &mut Ctx<'_, P>,
        e: Entry,
        d: Descriptor,
        addr: u64,
        next: u64,
    ) -> Step<Self::Break> {
        let level = e.level();
        match d.kind(level) {
            DescriptorKind::Invalid => Step::Next,
            DescriptorKind::Table { next: t } => Step::Descend(e.child(t)),
            _ => {
                if covers_entry(level, addr, next) {
                    let new = self.change.apply(d);
                    if new == d {
                        return Step::Next;
                    }
                    if level.is_page_level() && d.contiguous() && cx.live() && leaf_change_needs_bbm(d, new) {
                        // Memory type / nG of a whole folded block: all 16 entries break
                        // together, so the group never holds two memory types.
                        debug_assert_eq!(e.index() % CONT_PTES, 0, "folded block covered in part");
                        let change = self.change;
                        cx.bbm_block(e.table(), e.index(), |_, o| change.apply(o));
                    } else {
                        cx.change_leaf(e, d, new);
                    }
                    Step::Next
                } else {
                    Step::Descend(cx.split_start(e, d))
                }
            }
        }
    }

    fn leave(
        &mut self,
        cx: &mut Ctx<'_, P>,
        e: Entry,
        child: Table,
        _: u64,
        _: u64,
    ) -> Result<(), Self::Break> {
        cx.link_if_new(e, child);
        Ok(())
    }
}
