//! Demand faults, access-flag faults and copy-on-write (docs/mm.md, "Faults", "Copy-on-write
//! policy" and "Files").

use super::machine::Machine;
use super::{ptes, Access, El, FaultError, FaultKind, Space};
use crate::folio::{Folio, FolioKind, FolioOrder};
use crate::vma::{VmProt, Vma, VmaKind};
use crate::{AccessUpdate, Descriptor, Entry, Prot, VirtAddr, CONT_PTES, CONT_SIZE, PAGE_SIZE};

use super::file_fault::{FileFault, Installed};
use super::shm::Shm;

/// What a fault needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Need {
    /// The page must end up writable.
    pub write: bool,
    /// The page must end up anon-exclusive (pin of a shared COW page).
    pub unshare: bool,
}

impl Need {
    pub(super) fn of(access: Access) -> Need {
        Need {
            write: access == Access::Write,
            unshare: false,
        }
    }
}

/// Allocates a folio, mapping every failure to "no memory".
fn alloc<'m, M: Machine<'m> + ?Sized>(
    m: &mut M,
    order: FolioOrder,
    kind: FolioKind,
) -> Result<Folio<'m>, FaultError> {
    let mem = m.mem();
    mem.alloc_folio(m, order, kind).map_err(|_| FaultError::Oom)
}

impl Space {
    /// Resolves a fault at `va` — the entry point of the data/instruction-abort hook — of an
    /// `access` made at `el`. `kind` is what the hardware reported; the outcome depends only
    /// on the access, the region and the entry (docs/mm.md, "Faults"): an instruction fetch
    /// at EL1 is always a segmentation fault. Returns `Ok` when the access can be retried.
    pub fn handle_fault<'m, M: Machine<'m> + ?Sized>(
        &mut self,
        m: &mut M,
        va: VirtAddr,
        access: Access,
        el: El,
        kind: FaultKind,
    ) -> Result<(), FaultError> {
        match kind {
            FaultKind::Translation => self.stats.faults_translation += 1,
            FaultKind::Permission => self.stats.faults_permission += 1,
            FaultKind::AccessFlag => self.stats.faults_access_flag += 1,
        }
        let vma = match self.region_for(va, access, el) {
            Ok(v) => v,
            Err(e) => {
                self.stats.segv += 1;
                return Err(e);
            }
        };
        self.fault_in(m, &vma, va.align_down(PAGE_SIZE).as_u64(), Need::of(access))
            .map_err(|e| match e {
                // Report the faulting address, not its page.
                FaultError::Bus { .. } => FaultError::Bus { va },
                e => e,
            })
    }

    /// The fault proper, once the region allows the access: acts on the entry of `page`.
    pub(super) fn fault_in<'m, M: Machine<'m> + ?Sized>(
        &mut self,
        m: &mut M,
        vma: &Vma<Shm>,
        page: u64,
        need: Need,
    ) -> Result<(), FaultError> {
        // Whatever the fault changes, it changes in a table of this space's own.
        self.own_span(m, page)?;
        let r = self.fault_entry(m, vma, page, need);
        if let Err(FaultError::Bus { .. }) = r {
            self.stats.bus += 1;
        }
        r
    }

    /// [`fault_in`](Self::fault_in) proper.
    fn fault_entry<'m, M: Machine<'m> + ?Sized>(
        &mut self,
        m: &mut M,
        vma: &Vma<Shm>,
        page: u64,
        need: Need,
    ) -> Result<(), FaultError> {
        let slot = ptes::slot(&self.root, m, page);
        let Some(d) = slot.and_then(|e| ptes::get_at(&self.root, m, e)) else {
            return match &vma.kind {
                VmaKind::AnonPrivate => self.anon_fault(m, vma, page, slot),
                VmaKind::Shared { obj, .. } => self.object_fault(m, vma, obj, page),
                VmaKind::FilePrivate { obj, .. } if need.write => self.file_cow(m, vma, obj, page, None),
                VmaKind::FilePrivate { obj, .. } => self.object_fault(m, vma, obj, page),
            };
        };
        let shared = vma.kind.is_shared();
        let mem = m.mem();
        let (folio, idx) = mem
            .folio_page(d.address())
            .expect("a user page maps an allocated folio");
        if need.write && !d.writable() {
            if shared {
                ptes::update(&mut self.root, m, page, AccessUpdate::MADE_WRITABLE);
                return Ok(());
            }
            if let VmaKind::FilePrivate { obj, .. } = &vma.kind {
                if !folio.is_anon() {
                    return self.file_cow(m, vma, obj, page, Some(d));
                }
            }
            return self.wp_fault(m, vma, page, slot, d, false);
        }
        // (A file page needs no unsharing: it can be pinned as it is.)
        if need.unshare && !shared && folio.is_anon() && !folio.is_anon_exclusive(idx) {
            return self.wp_fault(m, vma, page, slot, d, true);
        }
        let upd = AccessUpdate {
            young: true,
            dirty: need.write,
            writable: false,
        };
        if ptes::update(&mut self.root, m, page, upd) {
            if !d.young() {
                self.stats.young_set += 1;
            }
        } else {
            self.stats.spurious += 1;
        }
        Ok(())
    }

    /// A missing page of a private region: a fresh zeroed folio (docs/mm.md, "Faults").
    /// `slot` is the page's level-3 slot if its table exists. One walk found it; the folio's
    /// metadata is written once, already accounting the mapping; the entries are written into
    /// the slot without another walk and without TLB maintenance (they were invalid).
    fn anon_fault<'m, M: Machine<'m> + ?Sized>(
        &mut self,
        m: &mut M,
        vma: &Vma<Shm>,
        page: u64,
        slot: Option<Entry>,
    ) -> Result<(), FaultError> {
        let mem = m.mem();
        let attrs = ptes::user_attrs(vma.prot.pte_prot());
        let large = vma.large_folio_block(VirtAddr(page)).is_some();
        let Some(slot) = slot else {
            return self.anon_fault_new_table(m, page, attrs, large);
        };
        if large {
            let bslot = ptes::block_slot(slot);
            if ptes::block_empty_at(m, bslot) {
                if let Ok(folio) = mem.alloc_anon_mapped(m, FolioOrder::CONT, self.id) {
                    m.zero(folio.pa(), CONT_SIZE);
                    let desc = ptes::page_desc(attrs, folio.pa().0, true);
                    ptes::set_at(&mut self.root, m, bslot, desc, CONT_PTES, true);
                    folio.put(m);
                    self.stats.anon_64k += 1;
                    return Ok(());
                }
            }
        }
        let folio = mem
            .alloc_anon_mapped(m, FolioOrder::SMALL, self.id)
            .map_err(|_| FaultError::Oom)?;
        m.zero(folio.pa(), PAGE_SIZE);
        let desc = ptes::page_desc(attrs, folio.pa().0, true);
        ptes::set_at(&mut self.root, m, slot, desc, 1, false);
        folio.put(m);
        self.stats.anon_4k += 1;
        Ok(())
    }

    /// [`anon_fault`](Self::anon_fault) where the page's level-3 table is missing (its block
    /// is empty then): the folio is allocated before the tables, so that a failure of either
    /// leaves nothing behind.
    fn anon_fault_new_table<'m, M: Machine<'m> + ?Sized>(
        &mut self,
        m: &mut M,
        page: u64,
        attrs: crate::Attrs,
        large: bool,
    ) -> Result<(), FaultError> {
        let big = if large {
            alloc(m, FolioOrder::CONT, FolioKind::Anon).ok()
        } else {
            None
        };
        let (folio, va, nr) = match big {
            Some(f) => (f, ptes::block_of(page), CONT_PTES),
            None => (alloc(m, FolioOrder::SMALL, FolioKind::Anon)?, page, 1),
        };
        let Ok(slot) = ptes::alloc_slot(&mut self.root, m, va) else {
            folio.put(m);
            return Err(FaultError::Oom);
        };
        m.zero(folio.pa(), folio.size());
        folio.add_anon_ptes(self.id, 0, nr, true).expect("fresh folio");
        let desc = ptes::page_desc(attrs, folio.pa().0, true);
        ptes::set_at(&mut self.root, m, slot, desc, nr, nr == CONT_PTES);
        folio.put(m);
        if nr == CONT_PTES {
            self.stats.anon_64k += 1;
        } else {
            self.stats.anon_4k += 1;
        }
        Ok(())
    }

    /// A missing page of a shared region, or read (or fetch) of a missing page of a private
    /// object mapping: the object's folio (allocated if an anonymous object has none; past
    /// the end of a file, [`FaultError::Bus`]), mapped with the region's permissions —
    /// read-only in a private mapping.
    fn object_fault<'m, M: Machine<'m> + ?Sized>(
        &mut self,
        m: &mut M,
        vma: &Vma<Shm>,
        obj: &Shm,
        page: u64,
    ) -> Result<(), FaultError> {
        let mem = m.mem();
        let off = vma.object_offset(VirtAddr(page)).expect("page inside its region");
        if obj.past_eof(off) {
            return Err(FaultError::Bus { va: VirtAddr(page) });
        }
        let prot = vma.prot.pte_prot();
        let attrs = if vma.kind.is_shared() {
            ptes::user_attrs(prot)
        } else {
            ptes::user_attrs(prot.map(|p| p.without(Prot::WRITE)))
        };
        let block = vma.large_folio_block(VirtAddr(page)).map(VirtAddr::as_u64);
        let (folio, fresh) = match obj.lookup(off) {
            Some((_, fpa, _)) => (mem.folio(fpa).expect("object folio"), false),
            None => {
                assert!(!obj.is_read_only(), "a file object has every page before its end");
                let off64 = off & !(CONT_SIZE - 1);
                let big = block.is_some() && !obj.any_in(off64, CONT_SIZE);
                let folio = match big
                    .then(|| alloc(m, FolioOrder::CONT, FolioKind::File).ok())
                    .flatten()
                {
                    Some(f) => f,
                    None => alloc(m, FolioOrder::SMALL, FolioKind::File)?,
                };
                (folio, true)
            }
        };
        if ptes::ensure_table(&mut self.root, m, page).is_err() {
            if fresh {
                folio.put(m);
            }
            return Err(FaultError::Oom);
        }
        let order = folio.order();
        let folio_off = off - (off % order.bytes());
        if fresh {
            m.zero(folio.pa(), folio.size());
            obj.insert(folio_off, folio.pa(), order);
            if order == FolioOrder::CONT {
                self.stats.shm_64k += 1;
            } else {
                self.stats.shm_4k += 1;
            }
        }
        // Map the whole folio if it is a 64 KiB folio lined up with an empty block of this
        // region; else just the page.
        let whole = match block {
            Some(b) => {
                order == FolioOrder::CONT
                    && vma.object_offset(VirtAddr(b)) == Some(folio_off)
                    && ptes::block_empty(&self.root, m, b)
            }
            None => false,
        };
        let (va, first, nr) = if whole {
            (block.unwrap_or(page), 0, CONT_PTES)
        } else {
            (page, ((off - folio_off) / PAGE_SIZE) as usize, 1)
        };
        folio
            .add_file_ptes(self.id, first, nr)
            .expect("file folio, pages inside it");
        let desc = ptes::page_desc(attrs, folio.page_pa(first).0, true);
        ptes::set(&mut self.root, m, va, desc, nr, ptes::foldable(order));
        self.stats.shm_pages_mapped += nr as u64;
        Ok(())
    }

    /// A write to page `page` of a private object mapping that maps no private page yet
    /// (`old` is the read-only mapping of the object's page, if any): allocates the
    /// destination page and the table first, then lets the object's fault handler fill and
    /// install it (docs/mm.md, "Files"). On any failure the destination is freed and no
    /// entry, page or count changed (only a table allocated for the page may stay, empty,
    /// when the handler fails: it is freed with the region, as Linux keeps the tables it
    /// allocated before calling a fault handler).
    fn file_cow<'m, M: Machine<'m> + ?Sized>(
        &mut self,
        m: &mut M,
        vma: &Vma<Shm>,
        obj: &Shm,
        page: u64,
        old: Option<Descriptor>,
    ) -> Result<(), FaultError> {
        let offset = vma.object_offset(VirtAddr(page)).expect("page inside its region");
        debug_assert!(vma.prot.contains(VmProt::WRITE), "the write was allowed");
        let attrs = ptes::user_attrs(vma.prot.pte_prot());
        let dest = alloc(m, FolioOrder::SMALL, FolioKind::Anon)?;
        if old.is_none() && ptes::ensure_table(&mut self.root, m, page).is_err() {
            dest.put(m);
            return Err(FaultError::Oom);
        }
        let mut vmf = FileFault {
            space: self,
            va: page,
            offset,
            attrs,
            old,
            dest: Some(dest),
        };
        let r = obj.fault(m, &mut vmf);
        if let Some(dest) = vmf.dest.take() {
            // Not installed: nothing changed but the destination, which goes back.
            debug_assert!(r.is_err(), "a handler returns Ok only once installed");
            dest.put(m);
        }
        r.map(|Installed(())| ())
    }

    /// Copy-on-write (or unshare) of the present, read-only or shared private page `page`,
    /// whose entry is `d`: the policy of docs/mm.md, "Copy-on-write policy".
    fn wp_fault<'m, M: Machine<'m> + ?Sized>(
        &mut self,
        m: &mut M,
        vma: &Vma<Shm>,
        page: u64,
        slot: Option<Entry>,
        d: Descriptor,
        unshare: bool,
    ) -> Result<(), FaultError> {
        let slot = slot.expect("a present entry has a slot");
        let mem = m.mem();
        let (folio, idx) = mem
            .folio_page(d.address())
            .expect("a user page maps an allocated folio");
        debug_assert!(folio.is_anon(), "private regions map anon folios");
        let id = self.id;
        let write = !unshare;
        // The new entries: the region's permissions, read-only for an unshare.
        let prot = vma.prot.pte_prot().expect("the access was allowed");
        let prot = if write && vma.prot.contains(VmProt::WRITE) {
            prot
        } else {
            prot.without(Prot::WRITE)
        };
        let attrs = ptes::user_attrs(Some(prot));
        if unshare {
            self.stats.unshares += 1;
        }

        let block = ptes::block_of(page);
        let whole = folio.order() == FolioOrder::CONT
            && vma.start.as_u64() <= block
            && block + CONT_SIZE <= vma.end.as_u64()
            && ptes::block_maps_at(m, ptes::block_slot(slot), folio.pa().0);

        // 2. Reuse.
        let reuse = folio.try_reuse_anon(id, idx, 0);
        if reuse && whole && (0..CONT_PTES).all(|i| i == idx || folio.try_reuse_anon(id, i, 0)) {
            if write {
                // The same pages made writable, young and dirty in place: a permission
                // change of the whole block keeps it folded (folding it if it was not).
                ptes::update_block(&mut self.root, m, block, AccessUpdate::MADE_WRITABLE, true);
            } else {
                ptes::update(&mut self.root, m, page, AccessUpdate::ACCESSED);
            }
            self.stats.cow_reuse_64k += 1;
            return Ok(());
        }
        if reuse {
            let upd = if write {
                AccessUpdate::MADE_WRITABLE
            } else {
                AccessUpdate::ACCESSED
            };
            ptes::update(&mut self.root, m, page, upd);
            self.stats.cow_reuse_4k += 1;
            return Ok(());
        }

        // 3. Copy the whole folio.
        if whole && !folio.maybe_pinned() {
            if let Ok(new) = alloc(m, FolioOrder::CONT, FolioKind::Anon) {
                m.copy(new.pa(), folio.pa(), CONT_SIZE);
                ptes::clear_block_at(&mut self.root, m, slot);
                let old = folio
                    .remove_ptes(id, 0, CONT_PTES)
                    .expect("the block mapped the folio");
                new.add_anon_ptes(id, 0, CONT_PTES, true).expect("fresh folio");
                let desc = ptes::page_desc(attrs, new.pa().0, true);
                ptes::set_at(&mut self.root, m, ptes::block_slot(slot), desc, CONT_PTES, true);
                new.put(m);
                old.release(m);
                self.stats.cow_copy_64k += 1;
                return Ok(());
            }
        }

        // 4. Copy the page.
        let new = alloc(m, FolioOrder::SMALL, FolioKind::Anon)?;
        m.copy(new.pa(), d.address(), PAGE_SIZE);
        ptes::clear(&mut self.root, m, page, 1);
        let old = folio.remove_ptes(id, idx, 1).expect("the entry mapped the page");
        new.add_anon_ptes(id, 0, 1, true).expect("fresh folio");
        let desc = ptes::page_desc(attrs, new.pa().0, true);
        ptes::set_at(&mut self.root, m, slot, desc, 1, false);
        new.put(m);
        old.release(m);
        self.stats.cow_copy_4k += 1;
        Ok(())
    }
}
