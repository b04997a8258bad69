//! `fork`: the child's regions and copy-on-write entries, batched per folio (docs/mm.md,
//! "Fork").

use alloc::vec::Vec;

use super::machine::Machine;
use super::{ptes, ForkMode, Space, SpaceError, SpaceStats};
use crate::folio::{Folio, FolioError, FolioKind, FolioOrder, MemMap, SpaceId};
use crate::vma::VmProt;
use crate::{CopyPolicy, CopyPte, CopyUnit, OutOfMemory, PhysAddr, PteTable};
use crate::{PAGE_SIZE, USER_END};

/// The fork of one region failed for lack of memory (the child is then discarded).
struct NoMemory;

impl Space {
    /// Forks the address space: returns the child (with its own id and first ASID, as
    /// [`Space::new`]), whose private memory is copy-on-write with this one and whose shared
    /// regions map the same objects.
    ///
    /// On [`SpaceError::OutOfMemory`] no child exists (everything it took is released) and
    /// this space's contents and regions are unchanged (docs/mm.md, "Out of memory").
    pub fn fork<'m, M: Machine<'m> + ?Sized>(&mut self, m: &mut M) -> Result<Space, SpaceError> {
        let mut child = Space::with_regions(m, self.vmas.fork(), self.tables.clone())?;
        child.fork_mode = self.fork_mode;
        let result = match self.fork_mode {
            ForkMode::Copy => self.fork_copy(m, &mut child, 0, USER_END),
            ForkMode::ShareTables => self.fork_share_tables(m, &mut child),
        };
        if result.is_err() {
            child.exit(m);
            return Err(SpaceError::OutOfMemory);
        }
        Ok(child)
    }

    /// `Copy` mode over `[start, end)`: the entries of every private region there, one
    /// present level-3 table of this space at a time (spans without a table cost nothing,
    /// and only the tables of the regions' spans are looked up), each table copied in one
    /// pass ([`Root::copy_pte_table`](crate::Root::copy_pte_table)) that also write-protects
    /// the parent's shared runs, even when failing half-way (so that the parent's writable
    /// private pages stay anon-exclusive).
    fn fork_copy<'m, M: Machine<'m> + ?Sized>(
        &mut self,
        m: &mut M,
        child: &mut Space,
        start: u64,
        end: u64,
    ) -> Result<(), SpaceError> {
        // The private regions as plain ranges: no region (nor object handle) is cloned.
        let private: Vec<(u64, u64, VmProt)> = self
            .vmas
            .iter()
            .filter(|v| !v.kind.is_shared() && v.end.as_u64() > start && v.start.as_u64() < end)
            .map(|v| (v.start.as_u64().max(start), v.end.as_u64().min(end), v.prot))
            .collect();
        let mut copies = Vec::new();
        for &(s, e, prot) in &private {
            // Only the tables of the region's own spans are read.
            for t in self.root.pte_tables(m, s, e) {
                let span = t.va.as_u64();
                let piece = (s.max(span), e.min(span + ptes::TABLE_SPAN));
                copies.clear();
                let r = self.fork_table(m, child, t, piece, &mut copies);
                // Pages of pinned folios the child gets a copy of, after the table's pass.
                let c = self.fork_pinned_copies(m, child, prot, &copies);
                if r.is_err() || c.is_err() {
                    return Err(SpaceError::OutOfMemory);
                }
            }
        }
        Ok(())
    }

    /// `Copy` mode for the 2 MiB span at `span` (a span `ShareTables` does not share).
    pub(super) fn fork_span_copy<'m, M: Machine<'m> + ?Sized>(
        &mut self,
        m: &mut M,
        child: &mut Space,
        span: u64,
    ) -> Result<(), SpaceError> {
        self.stats.fork_tables_copied += 1;
        self.fork_copy(m, child, span, span + ptes::TABLE_SPAN)
    }

    /// Copies the entries of `[start, end)` (part of a private region, inside the span of this
    /// space's level-3 table `t`) into `child`: each folio's pages are accounted in one call
    /// and shared read-only; object pages (private object mappings) are mapped read-only in
    /// the child too. The pages of a pinned folio that are exclusive to this space are left
    /// out and listed in `copies` (`(va, pa)`): the child gets copies of them. A table under
    /// a write limit (shared, or left so by sharing) is not written: the limit already keeps
    /// its entries read-only, and its last holder write-protects what is no longer exclusive
    /// when it takes it (docs/mm.md, "Shared page tables").
    fn fork_table<'m, M: Machine<'m> + ?Sized>(
        &mut self,
        m: &mut M,
        child: &mut Space,
        t: PteTable,
        piece: (u64, u64),
        copies: &mut Vec<(u64, u64)>,
    ) -> Result<(), NoMemory> {
        let policy = ForkPolicy {
            mem: m.mem(),
            child_id: child.id,
            stats: &mut self.stats,
            copies,
        };
        let protect = !t.write_protected;
        self.root
            .copy_pte_table(m, &mut child.root, t, piece, protect, policy)
            .map(|protected| {
                if protected > 0 {
                    self.stats.fork_wrprotects += 1;
                }
            })
            .map_err(|_| NoMemory)
    }

    /// Maps into `child` a copy of each page of `copies` (`(va, pa)`, pages of pinned folios
    /// exclusive to this space, in a private region with permissions `prot`).
    fn fork_pinned_copies<'m, M: Machine<'m> + ?Sized>(
        &mut self,
        m: &mut M,
        child: &mut Space,
        prot: VmProt,
        copies: &[(u64, u64)],
    ) -> Result<(), NoMemory> {
        let mem = m.mem();
        let attrs = ptes::user_attrs(prot.pte_prot());
        for &(va, pa) in copies {
            let Ok(new) = mem.alloc_folio(m, FolioOrder::SMALL, FolioKind::Anon) else {
                return Err(NoMemory);
            };
            m.copy(new.pa(), PhysAddr(pa), PAGE_SIZE);
            new.add_anon_ptes(child.id, 0, 1, true).expect("fresh folio");
            let d = ptes::page_desc(attrs, new.pa().0, true).with_young(!prot.is_none());
            ptes::set(&mut child.root, m, va, d, 1, false);
            new.put(m);
            self.stats.fork_copies += 1;
        }
        Ok(())
    }
}

/// What a `Copy` fork gives the child for each unit of a parent's table
/// ([`Space::fork_table`]).
struct ForkPolicy<'a, 'm> {
    mem: &'m MemMap<'m>,
    child_id: SpaceId,
    stats: &'a mut SpaceStats,
    /// Pages of pinned folios exclusive to the parent, `(va, pa)`: the child gets copies.
    copies: &'a mut Vec<(u64, u64)>,
}

impl CopyPolicy for ForkPolicy<'_, '_> {
    /// Inlined into the table's loop: the common case is anon pages shared at once.
    #[inline(always)]
    fn unit(&mut self, u: &CopyUnit) -> Result<CopyPte, OutOfMemory> {
        let (folio, idx) = self
            .mem
            .folio_page(u.pte.address())
            .expect("a user page maps an allocated folio");
        if !folio.is_anon() {
            return Ok(fork_object_pages(folio, idx, u, self.child_id, self.stats));
        }
        match folio.try_dup_anon_ptes(self.child_id, idx, u.nr) {
            Ok(()) => {
                self.stats.fork_dup_batches += 1;
                self.stats.fork_dup_pages += u.nr as u64;
                Ok(CopyPte::Share)
            }
            Err(e) => Ok(fork_refused(e, u, self.copies)),
        }
    }
}

/// [`ForkPolicy`]'s answer for object pages (a private object mapping): shared read-only.
#[cold]
#[inline(never)]
fn fork_object_pages(
    folio: Folio<'_>,
    idx: usize,
    u: &CopyUnit,
    child_id: SpaceId,
    stats: &mut SpaceStats,
) -> CopyPte {
    debug_assert!(!u.pte.writable(), "object pages are mapped read-only");
    folio
        .add_file_ptes(child_id, idx, u.nr)
        .expect("file folio, pages inside it");
    stats.fork_file_batches += 1;
    CopyPte::Share
}

/// [`ForkPolicy`]'s answer for anon pages whose dup was refused (`error`, nothing changed): a
/// pinned folio's pages are taken page by page, and those exclusive to the parent are listed in
/// `copies` (the child gets copies of them).
#[cold]
#[inline(never)]
fn fork_refused(error: FolioError, u: &CopyUnit, copies: &mut Vec<(u64, u64)>) -> CopyPte {
    match error {
        FolioError::MaybePinned { .. } if u.nr > 1 => CopyPte::Split,
        FolioError::MaybePinned { .. } => {
            copies.push((u.va.as_u64(), u.pte.address().0));
            CopyPte::Skip
        }
        e => panic!("fork of mapped anon pages refused: {e:?}"),
    }
}
