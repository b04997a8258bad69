//! Address spaces with process semantics: `mmap` / `munmap` / `mprotect` /
//! `madvise(MADV_DONTNEED)`, demand faults, copy-on-write `fork`, memory-backed files, pins,
//! and exit.
//!
//! Portable (no assembly, no `unsafe`): the page tables go through the engine ([`Root`], the
//! CONTPTE PTE-level API), the frames and their accounting through folios
//! ([`crate::folio`]), the regions through [`VmaTree`], and every physical data access
//! through the [`Machine`] trait. The design (faults, files, the copy-on-write policy, fork,
//! shared page tables, pins, lock order, out of memory, teardown) is described in
//! docs/mm.md ("Address spaces").

mod check;
mod error;
mod fault;
mod file_fault;
mod fork;
mod machine;
mod pin;
mod ptes;
mod share;
mod shm;
mod stats;

#[cfg(test)]
mod tests;

use alloc::collections::BTreeSet;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;

use crate::folio::{Retired, SpaceId, Unmapped};
use crate::vma::{MapAlign, Placement, Plan, VmProt, Vma, VmaConfig, VmaKind, VmaTree};
use crate::{Asid, Level, PhysAddr, Root, VirtAddr, PAGE_SIZE, USER_END};

pub use crate::{Access, El, FaultKind};

pub use check::{check_spaces, SpaceCheckError};
pub use error::{FaultError, SegvCause, SpaceError};
pub use file_fault::{FileFault, Installed};
pub use machine::Machine;
pub use pin::PinHandle;
pub use share::ForkMode;
use share::SharedTables;
pub use shm::Shm;
pub use stats::SpaceStats;

/// What an access to an address would reach, without faulting anything in
/// ([`Space::peek`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Peek {
    /// This byte of RAM: of the mapped page, or of the object's page an unmapped page of a
    /// shared region or of a private object mapping would map.
    Page(PhysAddr),
    /// No page yet: the page reads as zero (never touched, dropped, or an anonymous object's
    /// page not allocated yet).
    Zero,
    /// The page lies past the end of the file its region maps: an access is a bus error.
    PastEof,
    /// No region contains the address (or it is not a user address): an access is a
    /// segmentation fault.
    Unmapped,
}

impl Peek {
    /// The physical address, for [`Peek::Page`].
    pub fn pa(self) -> Option<PhysAddr> {
        match self {
            Peek::Page(pa) => Some(pa),
            Peek::Zero | Peek::PastEof | Peek::Unmapped => None,
        }
    }
}

/// A process address space. See docs/mm.md, "Address spaces".
pub struct Space {
    id: SpaceId,
    root: Root,
    vmas: VmaTree<Shm>,
    stats: SpaceStats,
    /// How `fork` copies this space.
    fork_mode: ForkMode,
    /// The shared level-3 tables of this space's fork family.
    tables: Arc<SharedTables>,
    /// Whether this space ever linked a level-3 table under a write limit (it took part in
    /// a `ShareTables` fork). Sticky; when false, faults and unmaps skip every shared-table
    /// lookup.
    limited_tables: bool,
    /// 2 MiB spans where this space pinned pages (their tables are copied, not shared, at
    /// fork).
    pinned_spans: BTreeSet<u64>,
    /// Reports a space dropped without [`Space::exit`].
    live: Live,
}

/// Whether a [`Space`] has exited: dropping one that has not leaks its pages, its tables and
/// its id, which is reported (see [`report_leak`]).
struct Live {
    id: SpaceId,
    exited: bool,
}

impl Drop for Live {
    fn drop(&mut self) {
        if !self.exited {
            report_leak(format_args!(
                "{} dropped without exit: its pages, tables and id leak",
                self.id
            ));
        }
    }
}

/// Reports a value dropped without the release its type requires — the last handle of a
/// [`Shm`], a [`PinHandle`], a [`Space`] that did not exit — whose memory therefore leaks:
/// an error in the log and, in debug builds (every host test), a panic, so that a test doing
/// it fails. Not while the thread is already panicking (a failing test dropping its values
/// on the way out).
pub(crate) fn report_leak(what: fmt::Arguments<'_>) {
    log::error!("{what}");
    if cfg!(debug_assertions) && !panicking() {
        panic!("leak: {what}");
    }
}

#[cfg(test)]
fn panicking() -> bool {
    std::thread::panicking()
}

#[cfg(not(test))]
fn panicking() -> bool {
    false
}

impl fmt::Debug for Space {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Space")
            .field("id", &self.id)
            .field("root", &self.root)
            .field("regions", &self.vmas.len())
            .finish()
    }
}

impl Space {
    /// An empty address space with the default region configuration. Its [`SpaceId`] comes
    /// from the memory map ([`MemMap::new_space_id`](crate::folio::MemMap::new_space_id))
    /// and its root's first ASID from the machine ([`Machine::new_asid`]): no live address
    /// space shares either.
    pub fn new<'m, M: Machine<'m> + ?Sized>(m: &mut M) -> Result<Space, SpaceError> {
        Space::with_config(m, VmaConfig::default())
    }

    /// An empty address space with a region configuration (search window, limits).
    pub fn with_config<'m, M: Machine<'m> + ?Sized>(
        m: &mut M,
        config: VmaConfig,
    ) -> Result<Space, SpaceError> {
        Space::with_regions(m, VmaTree::with_config(config), Arc::new(SharedTables::default()))
    }

    fn with_regions<'m, M: Machine<'m> + ?Sized>(
        m: &mut M,
        vmas: VmaTree<Shm>,
        tables: Arc<SharedTables>,
    ) -> Result<Space, SpaceError> {
        // On failure `vmas` is dropped: a new tree is empty, and a forked one's object
        // handles are clones of the parent's (never the last).
        let asid = m.new_asid();
        let root = Root::new_user(m, asid).map_err(|_| SpaceError::OutOfMemory)?;
        m.root_created(&root);
        let id = m.mem().new_space_id();
        Ok(Space {
            id,
            root,
            vmas,
            stats: SpaceStats::default(),
            fork_mode: ForkMode::default(),
            tables,
            limited_tables: false,
            pinned_spans: BTreeSet::new(),
            live: Live { id, exited: false },
        })
    }

    /// The folio layer's id of this space (unique among the live spaces of its memory map).
    pub fn id(&self) -> SpaceId {
        self.id
    }

    /// The translation tables (for TTBR0: [`Root::ttbr`]).
    pub fn root(&self) -> &Root {
        &self.root
    }

    /// Records the ASID the space now runs with, as the ASID allocator assigned it when the
    /// space was activated ([`AsidAllocator::activate`](crate::AsidAllocator::activate)).
    pub fn set_asid(&mut self, asid: Asid) {
        self.root.set_asid(asid);
    }

    /// The regions.
    pub fn regions(&self) -> &VmaTree<Shm> {
        &self.vmas
    }

    /// The counters.
    pub fn stats(&self) -> &SpaceStats {
        &self.stats
    }

    /// `mmap`: a new region of `len` bytes at `placement` with `prot`, backed by `kind`
    /// (`VmaKind::AnonPrivate`, or `VmaKind::Shared` / `VmaKind::FilePrivate` with a [`Shm`]
    /// object — anonymous or a file — and the offset of the region's first page in it),
    /// aligned to `align` ([`MapAlign::Size64K`] and above let faults use 64 KiB folios).
    /// Pages are populated on demand. A [`Placement::Fixed`] mapping first unmaps what it
    /// replaces. Returns the start address.
    ///
    /// A shared mapping of a read-only file with `WRITE` is refused with
    /// [`SpaceError::ReadOnly`] (checked first), changing nothing; a private one may be
    /// writable (writes make private copies). The object handle in `kind` is taken over
    /// either way: a refused mapping releases it ([`Shm::release`]).
    pub fn mmap<'m, M: Machine<'m> + ?Sized>(
        &mut self,
        m: &mut M,
        placement: Placement,
        len: u64,
        prot: VmProt,
        kind: VmaKind<Shm>,
        align: MapAlign,
    ) -> Result<VirtAddr, SpaceError> {
        let plan = if prot.contains(VmProt::WRITE) && read_only_shared(&kind) {
            Err(SpaceError::ReadOnly)
        } else {
            self.vmas
                .plan_mmap(placement, len, prot, &kind, align)
                .map_err(SpaceError::Vma)
        };
        let mapped = plan.and_then(|plan| self.carry_out(m, plan, false));
        // The plan held its own handle, now in the tree or dropped: releasing `kind`'s frees
        // the object of a refused mapping if it was the last handle.
        release_kind(m, kind);
        let mapped = mapped?;
        if !mapped.replaced.is_empty() {
            self.zap(m, mapped.addr.as_u64(), len);
            release_regions(m, mapped.replaced);
        }
        Ok(mapped.addr)
    }

    /// `munmap`: removes every mapped page of `[addr, addr + len)` (holes are fine; a range
    /// with nothing mapped is a no-op) and releases them once the TLB invalidation has
    /// completed. A zero `len` is refused ([`VmaError::ZeroLength`](crate::vma::VmaError::ZeroLength), Linux's `EINVAL`).
    pub fn munmap<'m, M: Machine<'m> + ?Sized>(
        &mut self,
        m: &mut M,
        addr: VirtAddr,
        len: u64,
    ) -> Result<(), SpaceError> {
        let plan = self.vmas.plan_munmap(addr, len)?;
        let pieces = self.carry_out(m, plan, false)?;
        if !pieces.is_empty() {
            self.zap(m, addr.as_u64(), len);
            release_regions(m, pieces);
        }
        Ok(())
    }

    /// `mprotect`: sets the permissions of `[addr, addr + len)`, which must be mapped
    /// entirely. Present pages are re-protected (see docs/mm.md, "PROT_NONE": private
    /// pages become writable only if anon-exclusive).
    ///
    /// Adding `WRITE` to any part of a shared mapping of a read-only file is refused with
    /// [`SpaceError::ReadOnly`], changing nothing (checked after the alignment and range
    /// checks, before [`VmaError::NotMapped`](crate::vma::VmaError::NotMapped)).
    pub fn mprotect<'m, M: Machine<'m> + ?Sized>(
        &mut self,
        m: &mut M,
        addr: VirtAddr,
        len: u64,
        prot: VmProt,
    ) -> Result<(), SpaceError> {
        if prot.contains(VmProt::WRITE) && addr.is_aligned(PAGE_SIZE) {
            let end = addr
                .as_u64()
                .checked_add(len)
                .filter(|&e| e <= USER_END && len.is_multiple_of(PAGE_SIZE));
            if let Some(end) = end {
                let mut regions = self.vmas.overlapping(addr, VirtAddr(end));
                if regions.any(|v| read_only_shared(&v.kind)) {
                    return Err(SpaceError::ReadOnly);
                }
            }
        }
        let plan = self.vmas.plan_mprotect(addr, len, prot)?;
        for c in self.carry_out(m, plan, true)? {
            self.reprotect(m, &c.piece);
        }
        Ok(())
    }

    /// `madvise(MADV_DONTNEED)`: drops the pages of `[addr, addr + len)`, which must be mapped
    /// entirely. Private anonymous pages read back as zero, private copies in a private
    /// object mapping as the object's page again; shared pages are re-read from their object.
    pub fn madvise_dontneed<'m, M: Machine<'m> + ?Sized>(
        &mut self,
        m: &mut M,
        addr: VirtAddr,
        len: u64,
    ) -> Result<(), SpaceError> {
        let plan = self.vmas.plan_madvise_dontneed(addr, len)?;
        let pieces = self.carry_out(m, plan, false)?;
        if !pieces.is_empty() {
            self.zap(m, addr.as_u64(), len);
        }
        Ok(())
    }

    /// Process exit: unmaps everything, releases every page and shared object, destroys the
    /// tables. Outstanding pins keep their frames until released.
    ///
    /// One pass over the populated tables: shared tables are unlinked (as [`Space::zap`]
    /// does), then the root is torn down with one whole-ASID invalidation, every leaf's
    /// folio accounting removed and its references released as the tables are read, and each
    /// table freed after its leaves ([`Root::destroy_leaves`]); a folio that one leaf maps
    /// whole and that nothing else maps or references is freed in one step
    /// ([`Folio::remove_sole_ptes`](crate::folio::Folio::remove_sole_ptes)).
    pub fn exit<'m, M: Machine<'m> + ?Sized>(mut self, m: &mut M) {
        self.pinned_spans.clear();
        if self.limited_tables {
            let all = self.root.pte_tables(m, 0, USER_END);
            // The tables left are this space's own: the teardown below frees them.
            let _own = self.drop_shares(m, 0, USER_END, all);
        }
        let regions = self.vmas.unmap_all();
        m.root_retiring(&self.root);
        let mem = m.mem();
        let id = self.id;
        let root = self.root;
        let mut pending: Option<Unmapped<'m>> = None;
        root.destroy_leaves(m, |m, leaf| {
            match remove_leaf(mem, id, leaf) {
                // The whole ASID is invalidated already: a folio this leaf alone mapped goes
                // back at once.
                LeafRemoved::Frames(frames) => frames.release(m),
                LeafRemoved::Refs(u) => match pending.as_mut() {
                    Some(last) if last.folio() == u.folio() => last.merge(u),
                    _ => {
                        if let Some(done) = pending.replace(u) {
                            done.release(m);
                        }
                    }
                },
            }
        });
        if let Some(done) = pending {
            done.release(m);
        }
        release_regions(m, regions);
        m.mem().free_space_id(self.id);
        self.live.exited = true;
    }

    /// What an access to `va` would reach right now, without faulting in anything new: the
    /// mapped page (even a `PROT_NONE` one), or for an unmapped page of a shared region or a
    /// private object mapping the object's page ([`Peek::Page`]); else whether the page reads
    /// as zero ([`Peek::Zero`]), lies past the end of a file ([`Peek::PastEof`]) or in no
    /// region ([`Peek::Unmapped`]). For inspection (debuggers, core dumps, tests).
    pub fn peek<'m, M: Machine<'m> + ?Sized>(&self, m: &M, va: VirtAddr) -> Peek {
        if va.as_u64() >= USER_END {
            return Peek::Unmapped;
        }
        let off = va.as_u64() & (PAGE_SIZE - 1);
        let page = va.as_u64() - off;
        if let Some(d) = ptes::get(&self.root, m, page) {
            return Peek::Page(PhysAddr(d.address().0 + off));
        }
        let Some(vma) = self.vmas.find(va) else {
            return Peek::Unmapped;
        };
        let (Some(obj), Some(offset)) = (vma.kind.object(), vma.object_offset(va)) else {
            return Peek::Zero;
        };
        if obj.past_eof(offset) {
            return Peek::PastEof;
        }
        match obj.lookup(offset) {
            Some((pa, _, _)) => Peek::Page(PhysAddr(pa.0 + off)),
            None => Peek::Zero,
        }
    }

    // -------------------------------------------------------------------------------------
    // Internals shared by the operations.

    /// The region containing `va` if it allows `access` at `el`.
    fn region_for(&self, va: VirtAddr, access: Access, el: El) -> Result<Vma<Shm>, FaultError> {
        let segv = |cause| FaultError::Segv { va, cause };
        if va.as_u64() >= USER_END {
            return Err(segv(SegvCause::Unmapped));
        }
        let vma = self.vmas.find(va).ok_or(segv(SegvCause::Unmapped))?;
        let allowed = match access {
            Access::Read => !vma.prot.is_none(),
            Access::Write => vma.prot.contains(VmProt::WRITE),
            // The kernel never executes user memory (user pages are PXN).
            Access::Exec => el == El::El0 && vma.prot.contains(VmProt::EXEC),
        };
        if !allowed {
            return Err(segv(SegvCause::Access));
        }
        Ok(vma.clone())
    }

    /// The step `mmap`, `munmap`, `mprotect` and `madvise` share once the region tree has
    /// validated the call (`plan`: every argument error was reported before): the sharing of
    /// the level-3 tables whose entries the call changes is broken
    /// ([`Space::break_shares_in`], `whole` as there), which is the only step that can fail
    /// (for lack of memory, with the regions unchanged), then the tree changes. Returns the
    /// call's result for the caller to change the entries accordingly.
    fn carry_out<'m, M: Machine<'m> + ?Sized, T>(
        &mut self,
        m: &mut M,
        plan: Plan<Shm, T>,
        whole: bool,
    ) -> Result<T, SpaceError> {
        if let Some((start, end)) = plan.pages() {
            self.break_shares_in(m, start.as_u64(), end.as_u64(), whole)?;
        }
        Ok(self.vmas.apply(plan))
    }

    /// Unmaps `[start, start + len)` and releases every folio reference the removed mappings
    /// held, after the invalidation.
    fn zap<'m, M: Machine<'m> + ?Sized>(&mut self, m: &mut M, start: u64, len: u64) {
        let end = start.saturating_add(len).min(USER_END);
        if start >= end {
            return;
        }
        self.forget_pins_in(start, end);
        // Shared tables are unlinked, not unmapped. The rest goes in pieces of at most
        // `ZAP_BATCH` that hold level-3 tables: the references waiting for a piece's
        // invalidation stay bounded (16384 for 4 KiB folios, 512 KiB of heap), however large
        // the range; empty stretches cost nothing.
        let all = self.root.pte_tables(m, start, end);
        let tables = self.drop_shares(m, start, end, all);
        let mut i = 0;
        while i < tables.len() {
            let first = tables[i].va.as_u64();
            let mut j = i;
            while j + 1 < tables.len() && tables[j + 1].va.as_u64() < first + ZAP_BATCH {
                j += 1;
            }
            let piece_end = (tables[j].va.as_u64() + ptes::TABLE_SPAN).min(end);
            self.zap_piece(m, first.max(start), piece_end);
            i = j + 1;
        }
    }

    /// [`Space::zap`] of `[start, end)` in one engine call (one pass, one invalidation): the
    /// mappings' accounting is removed as each leaf is cleared, their references are released
    /// once the call (and so the invalidation) is over. A folio that one leaf maps whole and
    /// that nothing else maps or references has its metadata reset as the leaf is cleared
    /// ([`Folio::remove_sole_ptes`](crate::folio::Folio::remove_sole_ptes)); its frames go
    /// back after the call.
    fn zap_piece<'m, M: Machine<'m> + ?Sized>(&mut self, m: &mut M, start: u64, end: u64) {
        let mem = m.mem();
        let id = self.id;
        let mut refs: Vec<Unmapped<'m>> = Vec::new();
        // One per 64 KiB block at most without growing (a piece is at most `ZAP_BATCH`).
        let mut retired: Vec<Retired> = Vec::with_capacity(((end - start) / crate::CONT_SIZE) as usize + 1);
        ptes::zap(&mut self.root, m, start, end - start, |leaf| {
            match remove_leaf(mem, id, leaf) {
                LeafRemoved::Frames(frames) => retired.push(frames),
                LeafRemoved::Refs(u) => match refs.last_mut() {
                    Some(last) if last.folio() == u.folio() => last.merge(u),
                    _ => refs.push(u),
                },
            }
        });
        for u in refs {
            u.release(m);
        }
        crate::folio::Retired::release_all(&mut retired, m);
    }

    /// Rewrites the present pages of `piece` (whose permissions changed) for its new
    /// permissions: one clear of the whole piece (one invalidation), then one `set_ptes` per
    /// run. The folio accounting does not change (same pages, same space).
    fn reprotect<'m, M: Machine<'m> + ?Sized>(&mut self, m: &mut M, piece: &Vma<Shm>) {
        let mem = m.mem();
        let (start, end) = (piece.start.as_u64(), piece.end.as_u64());
        let shared = piece.kind.is_shared();
        let prot = piece.prot.pte_prot();
        let can_write = piece.prot.contains(VmProt::WRITE);
        let runs = ptes::runs(&self.root, m, mem, start, end, |folio, idx, _| {
            can_write && (shared || folio.is_anon_exclusive(idx))
        });
        if runs.is_empty() {
            return;
        }
        ptes::clear(&mut self.root, m, start, ((end - start) / PAGE_SIZE) as usize);
        for run in runs {
            let attrs = match prot {
                Some(p) if !run.key => ptes::user_attrs(Some(p.without(crate::Prot::WRITE))),
                p => ptes::user_attrs(p),
            };
            let young = prot.is_some() && run.desc.young();
            let desc = ptes::page_desc(attrs, run.pa, run.desc.dirty()).with_young(young);
            ptes::set(
                &mut self.root,
                m,
                run.va,
                desc,
                run.nr,
                ptes::foldable(run.folio.order()),
            );
        }
    }
}

/// Most bytes [`Space::zap`] unmaps in one engine call (32 level-3 tables).
const ZAP_BATCH: u64 = 64 << 20;

/// Drops region pieces removed from a tree, releasing objects whose last region went.
fn release_regions<'m, M: Machine<'m> + ?Sized>(m: &mut M, pieces: Vec<Vma<Shm>>) {
    for piece in pieces {
        release_kind(m, piece.kind);
    }
}

/// Releases the object handle of `kind`, if any (freeing the object if it was the last).
fn release_kind<'m, M: Machine<'m> + ?Sized>(m: &mut M, kind: VmaKind<Shm>) {
    match kind {
        VmaKind::Shared { obj, .. } | VmaKind::FilePrivate { obj, .. } => {
            obj.release(m);
        }
        VmaKind::AnonPrivate => {}
    }
}

/// Whether `kind` is a shared mapping of a read-only file (which must never be writable).
fn read_only_shared(kind: &VmaKind<Shm>) -> bool {
    matches!(kind, VmaKind::Shared { obj, .. } if obj.is_read_only())
}

/// What removing one unmapped leaf of `space` from its folio's accounting left to release.
enum LeafRemoved<'m> {
    /// The leaf was the folio's only mapping: the whole folio, its metadata already clean, whose
    /// frames go back once the leaf's invalidation has completed.
    Frames(Retired),
    /// The leaf's references, to release after the invalidation.
    Refs(Unmapped<'m>),
}

/// Removes the mapping accounting of `leaf` (a cleared level-3 leaf of `space`): a folio the
/// leaf maps whole and alone is retired in one step ([`Folio::remove_sole_ptes`]), anything
/// else through [`Folio::remove_ptes`].
///
/// [`Folio::remove_sole_ptes`]: crate::folio::Folio::remove_sole_ptes
/// [`Folio::remove_ptes`]: crate::folio::Folio::remove_ptes
fn remove_leaf<'m>(mem: &crate::folio::MemMap<'m>, space: SpaceId, leaf: &crate::Leaf) -> LeafRemoved<'m> {
    debug_assert_eq!(leaf.level, Level::L3, "user spaces map pages only");
    let (folio, idx) = mem
        .folio_page(leaf.pa)
        .expect("a user page maps an allocated folio");
    let nr = (leaf.size / PAGE_SIZE) as usize;
    if idx == 0 && nr == folio.nr_pages() {
        if let Some(frames) = folio.remove_sole_ptes(space) {
            return LeafRemoved::Frames(frames);
        }
    }
    LeafRemoved::Refs(
        folio
            .remove_ptes(space, idx, nr)
            .expect("every user mapping is accounted"),
    )
}
