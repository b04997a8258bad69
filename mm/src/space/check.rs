//! The invariant checks of address spaces: each space's entries against its regions and the
//! folio flags, and, over every live space at once, the folio checker and the sharing of
//! level-3 tables.

use alloc::collections::BTreeSet;
use alloc::vec::Vec;

use super::machine::Machine;
use super::{ptes, share, Shm, Space};
use crate::folio::{CheckError, MappedLeaf, SpaceId};
use crate::vma::VmaKind;
use crate::{Level, VirtAddr, PAGE_SIZE, USER_END};

/// Something [`Space::check`] found wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpaceCheckError {
    /// The region tree's own invariants.
    Regions(&'static str),
    /// A leaf outside every region, or not a 4 KiB page.
    StrayLeaf(VirtAddr),
    /// A leaf whose permissions or access flag disagree with its region's.
    Permissions(VirtAddr),
    /// A writable private page that is not anon-exclusive.
    Exclusive(VirtAddr),
    /// A page whose folio does not fit its region's backing: an anon page in a shared
    /// region, a file page in a private anonymous region, or a file page that is not the
    /// object's page at its offset or (in a private object mapping) is writable.
    Backing(VirtAddr),
    /// The folio checker (over the leaves given to [`check_spaces`]).
    Folios(CheckError),
    /// A shared level-3 table (of the span at this address) is linked or recorded wrongly.
    SharedTable(VirtAddr, &'static str),
    /// A live address space of the memory map that [`check_spaces`] was not given (it must
    /// be given all of them).
    MissingSpace(SpaceId),
    /// A space given to [`check_spaces`] twice, or not live in the machine's memory map.
    UnknownSpace(SpaceId),
}

impl Space {
    /// The live leaves accounted to this space, for [`crate::folio::check`]: every leaf,
    /// except those of shared level-3 tables accounted to another space (docs/mm.md,
    /// "Shared page tables").
    pub fn mapped_leaves<'m, M: Machine<'m> + ?Sized>(&self, m: &M) -> Vec<MappedLeaf> {
        self.accounted_leaves(m, &ptes::leaves(&self.root, m))
            .map(|l| MappedLeaf::new(self.id, l))
            .collect()
    }

    /// Checks this space's own invariants: the region tree's; every leaf is a 4 KiB page
    /// inside a region; its permissions are the region's (private pages possibly read-only;
    /// `PROT_NONE` pages in their inaccessible form); a writable private page is
    /// anon-exclusive; private anonymous regions map anon folios, shared ones file folios,
    /// private object mappings either (file folios read-only only); a file page is the
    /// object's page at its offset.
    pub fn check<'m, M: Machine<'m> + ?Sized>(&self, m: &M) -> Result<(), SpaceCheckError> {
        self.check_leaves(m, &ptes::leaves(&self.root, m))
    }

    /// [`Space::check`] over `leaves`, which must be every leaf of this space.
    pub(super) fn check_leaves<'m, M: Machine<'m> + ?Sized>(
        &self,
        m: &M,
        leaves: &[crate::Leaf],
    ) -> Result<(), SpaceCheckError> {
        self.vmas.check().map_err(SpaceCheckError::Regions)?;
        let mem = m.mem();
        // Spans whose level-2 entry forbids writes: their entries are read-only whatever
        // their own permissions say.
        let limited: BTreeSet<u64> = self
            .root
            .pte_tables(m, 0, USER_END)
            .iter()
            .filter(|t| t.write_protected)
            .map(|t| t.va.as_u64())
            .collect();
        for leaf in leaves {
            let va = leaf.va;
            if leaf.level != Level::L3 || leaf.size != PAGE_SIZE {
                return Err(SpaceCheckError::StrayLeaf(va));
            }
            let vma = self.vmas.find(va).ok_or(SpaceCheckError::StrayLeaf(va))?;
            let d = leaf.desc;
            let attrs = ptes::user_attrs(vma.prot.pte_prot());
            let ro = attrs.with_prot(attrs.prot.without(crate::Prot::WRITE));
            let got = leaf.attrs;
            let perms_ok = if vma.prot.is_none() {
                got == attrs && !d.young()
            } else {
                got == attrs || (got == ro)
            };
            if !perms_ok {
                return Err(SpaceCheckError::Permissions(va));
            }
            let (folio, idx) = mem.folio_page(leaf.pa).ok_or(SpaceCheckError::StrayLeaf(va))?;
            let object_page = |obj: &Shm| {
                vma.object_offset(va)
                    .and_then(|off| obj.lookup(off))
                    .is_some_and(|(pa, _, _)| pa == leaf.pa)
            };
            let backing_ok = match &vma.kind {
                VmaKind::AnonPrivate => folio.is_anon(),
                VmaKind::Shared { obj, .. } => !folio.is_anon() && object_page(obj),
                VmaKind::FilePrivate { obj, .. } => folio.is_anon() || (!d.writable() && object_page(obj)),
            };
            if !backing_ok {
                return Err(SpaceCheckError::Backing(va));
            }
            let writable = d.writable() && !limited.contains(&ptes::span_of(va.as_u64()));
            if folio.is_anon() && writable && !folio.is_anon_exclusive(idx) {
                return Err(SpaceCheckError::Exclusive(va));
            }
        }
        Ok(())
    }
}

/// Runs every check over all the live address spaces at once: each space's
/// [`Space::check`], then the folio checker over all their leaves. `all_live` must be
/// exactly the live address spaces of `m.mem()`
/// ([`MemMap::live_space_ids`](crate::folio::MemMap::live_space_ids)), each once: the
/// folio counts cover the mappings of all of them. Anything else is reported as such
/// ([`SpaceCheckError::MissingSpace`], [`SpaceCheckError::UnknownSpace`]) before the rest is
/// checked, instead of as the counts that would not add up.
pub fn check_spaces<'m, M: Machine<'m> + ?Sized>(m: &M, all_live: &[&Space]) -> Result<(), SpaceCheckError> {
    let spaces = all_live;
    let live = m.mem().live_space_ids();
    let mut given: Vec<SpaceId> = spaces.iter().map(|s| s.id).collect();
    given.sort_unstable();
    for pair in given.windows(2) {
        if pair[0] == pair[1] {
            return Err(SpaceCheckError::UnknownSpace(pair[0]));
        }
    }
    if let Some(&id) = given.iter().find(|id| live.binary_search(id).is_err()) {
        return Err(SpaceCheckError::UnknownSpace(id));
    }
    if let Some(&id) = live.iter().find(|id| given.binary_search(id).is_err()) {
        return Err(SpaceCheckError::MissingSpace(id));
    }
    let mut all = Vec::new();
    for s in spaces {
        let leaves = ptes::leaves(&s.root, m);
        s.check_leaves(m, &leaves)?;
        all.extend(s.accounted_leaves(m, &leaves).map(|l| MappedLeaf::new(s.id, l)));
    }
    share::check_sharing(m, spaces)?;
    crate::folio::check(m.mem(), all).map_err(SpaceCheckError::Folios)?;
    Ok(())
}
