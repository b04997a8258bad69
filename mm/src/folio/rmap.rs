//! The mapping accounting of a [`Folio`] (the reverse-map side of mapping and unmapping it):
//! adding and removing PTE and entire mappings, fork, anon-exclusive and copy-on-write reuse.

use core::sync::atomic::Ordering;

use super::handle::{sub, sub_locked, MAX_COUNT};
use super::meta::{flag, head, PageMeta};
use super::{Folio, FolioError, FolioKind, FolioOrder, Retired, SpaceId, Unmapped};

impl<'m> Folio<'m> {
    // -------------------------------------------------------------------------------------
    // Adding mappings. Each takes its references before raising any mapcount.

    /// Accounts `nr` new PTE mappings of pages `first..first + nr` of an anon folio in
    /// `space` (one each), taking `nr` references first. With `exclusive`, the pages become
    /// anon-exclusive; they must then be unmapped ([`FolioError::AlreadyMapped`]). Without,
    /// none of them may be anon-exclusive ([`FolioError::AnonExclusive`]: use
    /// [`try_dup_anon_ptes`](Self::try_dup_anon_ptes)).
    pub fn add_anon_ptes(
        &self,
        space: SpaceId,
        first: usize,
        nr: usize,
        exclusive: bool,
    ) -> Result<(), FolioError> {
        self.require(FolioKind::Anon)?;
        let range = self.range(first, nr)?;
        let _g = self.lock();
        for i in range.clone() {
            if exclusive && self.page_mapcount(i) != 0 {
                return Err(FolioError::AlreadyMapped { page: i });
            }
            if !exclusive && self.is_anon_exclusive(i) {
                return Err(FolioError::AnonExclusive { page: i });
            }
        }
        self.add_ptes_locked(space, range.clone());
        if exclusive {
            for i in range {
                self.set_exclusive(i);
            }
        }
        self.debug_check_locked();
        Ok(())
    }

    /// Accounts `nr` new PTE mappings of pages `first..first + nr` of a file folio in
    /// `space`, taking `nr` references first. Also the fork path for file mappings.
    pub fn add_file_ptes(&self, space: SpaceId, first: usize, nr: usize) -> Result<(), FolioError> {
        self.require(FolioKind::File)?;
        let range = self.range(first, nr)?;
        let _g = self.lock();
        self.add_ptes_locked(space, range);
        self.debug_check_locked();
        Ok(())
    }

    /// Accounts a new entire mapping (a 2 MiB level-2 block) of an order-9 anon folio in
    /// `space`, taking one reference first. `exclusive` as for
    /// [`add_anon_ptes`](Self::add_anon_ptes), for all 512 pages.
    pub fn add_anon_entire(&self, space: SpaceId, exclusive: bool) -> Result<(), FolioError> {
        self.require(FolioKind::Anon)?;
        self.require_pmd()?;
        let _g = self.lock();
        for i in 0..self.pages.len() {
            if exclusive && self.page_mapcount(i) != 0 {
                return Err(FolioError::AlreadyMapped { page: i });
            }
            if !exclusive && self.is_anon_exclusive(i) {
                return Err(FolioError::AnonExclusive { page: i });
            }
        }
        self.add_entire_locked(space);
        if exclusive {
            for i in 0..self.pages.len() {
                self.set_exclusive(i);
            }
        }
        self.debug_check_locked();
        Ok(())
    }

    /// Accounts a new entire mapping of an order-9 file folio in `space`, taking one
    /// reference first.
    pub fn add_file_entire(&self, space: SpaceId) -> Result<(), FolioError> {
        self.require(FolioKind::File)?;
        self.require_pmd()?;
        let _g = self.lock();
        self.add_entire_locked(space);
        self.debug_check_locked();
        Ok(())
    }

    // -------------------------------------------------------------------------------------
    // Removing mappings. Each lowers mapcounts and hands the references back as an
    // `Unmapped`, to be released only after the TLB invalidation.

    /// Removes one PTE mapping in `space` of each page `first..first + nr`. Every page must
    /// have one ([`FolioError::NotMapped`]). The pages lose their anon-exclusive flag. The
    /// `nr` references the mappings held come back as an [`Unmapped`].
    pub fn remove_ptes(&self, space: SpaceId, first: usize, nr: usize) -> Result<Unmapped<'m>, FolioError> {
        let range = self.range(first, nr)?;
        let _g = self.lock();
        if let Some(i) = range.clone().find(|&i| self.pte_mapcount(i) == 0) {
            return Err(FolioError::NotMapped { page: i });
        }
        for i in range.clone() {
            // An exclusive page has exactly one mapping, this one.
            if self.is_anon_exclusive(i) {
                self.clear_exclusive(i);
            }
            sub_locked(&self.pages[i].mapcount, 1);
        }
        let n = range.len() as u32;
        self.account_sub(space, n);
        self.debug_check_locked();
        Ok(Unmapped::new(*self, n))
    }

    /// Removes the PTE mappings of all pages of an anon folio mapped once each, in `space`
    /// only, by the caller's entries, and frees the folio when those mappings held its only
    /// references: the state [`remove_ptes`](Self::remove_ptes)`(space, 0, pages)` followed by
    /// releasing the returned references leaves, without the per-page atomics. The metadata
    /// returns to the free state in one pass; the frames come back as a [`Retired`], to be
    /// returned to the frame source after the TLB invalidation.
    ///
    /// Read from the head: the folio is anon, not adopted, unpinned, without an entire
    /// mapping, with a total mapcount equal to its page count, all of it in `space`'s slot,
    /// and a reference count equal to that mapcount (frozen to zero with one compare and
    /// swap, so a speculative [`try_get`](Self::try_get) fails from then on). Since the
    /// caller's entries map every page, each page has exactly this one mapping. Otherwise
    /// `None`, with nothing changed: the caller takes the general path.
    pub fn remove_sole_ptes(&self, space: SpaceId) -> Option<Retired> {
        let n = self.pages.len() as u32;
        let h = self.head();
        let hf = h.flags();
        if hf & (flag::ANON | flag::ADOPTED) != flag::ANON
            || h.w[head::PINS].load(Ordering::Relaxed) != 0
            || self.total_ctr().load(Ordering::Relaxed) != n
            || self.entire_ctr().is_some_and(|e| e.load(Ordering::Relaxed) != 0)
            || h.w[head::SLOT_ID].load(Ordering::Relaxed) != space.get()
            || h.w[head::SLOT_COUNT].load(Ordering::Relaxed) != n
        {
            return None;
        }
        h.w[head::REFS]
            .compare_exchange(n, 0, Ordering::Acquire, Ordering::Relaxed)
            .ok()?;
        debug_assert!(
            hf & flag::LOCK == 0,
            "folio {} locked without a reference",
            self.pa
        );
        debug_assert!(
            self.pages.iter().all(|p| p.mapcount.load(Ordering::Relaxed) == 1),
            "folio {}: a page is not mapped exactly once",
            self.pa
        );
        let order = self.order();
        for p in self.pages.iter().skip(2) {
            p.clear_tail();
        }
        if let Some(p) = self.pages.get(1) {
            p.clear();
        }
        h.clear();
        debug_assert!(self.pages.iter().all(PageMeta::is_clean));
        Some(Retired::new(self.pa, order))
    }

    /// Removes one entire mapping in `space`. Pages that were mapped only by it lose their
    /// anon-exclusive flag. The reference comes back as an [`Unmapped`].
    pub fn remove_entire(&self, space: SpaceId) -> Result<Unmapped<'m>, FolioError> {
        self.require_pmd()?;
        let _g = self.lock();
        let entire = self.entire_ctr().expect("order 9");
        if entire.load(Ordering::Acquire) == 0 {
            return Err(FolioError::NoEntireMapping);
        }
        for i in 0..self.pages.len() {
            // An exclusive page has exactly one mapping; with an entire mapping present, it
            // is that one.
            self.clear_exclusive(i);
        }
        sub(entire, 1);
        self.account_sub(space, 1);
        self.debug_check_locked();
        Ok(Unmapped::new(*self, 1))
    }

    /// Converts an entire mapping in `space` into PTE mappings of pages `first..first + nr`
    /// (the PMD split, possibly with a partial unmap): first adds one PTE mapping per kept
    /// page (taking `nr` references), then removes the entire mapping, whose reference comes
    /// back as an [`Unmapped`]. Kept pages keep their anon-exclusive flag (their mapcount
    /// does not change); the others lose it. To keep nothing use
    /// [`remove_entire`](Self::remove_entire); to unmap a hole in the middle, convert all 512
    /// pages and then [`remove_ptes`](Self::remove_ptes) the hole.
    pub fn split_entire(&self, space: SpaceId, first: usize, nr: usize) -> Result<Unmapped<'m>, FolioError> {
        self.require_pmd()?;
        let range = self.range(first, nr)?;
        let _g = self.lock();
        let entire = self.entire_ctr().expect("order 9");
        if entire.load(Ordering::Acquire) == 0 {
            return Err(FolioError::NoEntireMapping);
        }
        self.add_ptes_locked(space, range.clone());
        for i in (0..self.pages.len()).filter(|i| !range.contains(i)) {
            self.clear_exclusive(i);
        }
        sub(entire, 1);
        self.account_sub(space, 1);
        self.debug_check_locked();
        Ok(Unmapped::new(*self, 1))
    }

    // -------------------------------------------------------------------------------------
    // Fork.

    /// Fork of `nr` PTE-mapped anon pages `first..first + nr` into `child`, in one call:
    /// takes `nr` references, adds one PTE mapping of each page in `child`, and clears the
    /// pages' anon-exclusive flags (parent and child now share them; the caller
    /// write-protects the parent's entries). Every page must be mapped.
    ///
    /// Refused with [`FolioError::MaybePinned`], **changing nothing**, if the folio may be
    /// pinned and any of the pages is anon-exclusive: the caller must copy those pages for
    /// the child instead (the pinned page stays exclusive to the parent).
    #[inline]
    pub fn try_dup_anon_ptes(&self, child: SpaceId, first: usize, nr: usize) -> Result<(), FolioError> {
        if self.pages.len() == 1 && first == 0 && nr == 1 {
            self.try_dup_small(child)
        } else {
            self.try_dup_large(child, first, nr)
        }
    }

    /// [`try_dup_anon_ptes`](Self::try_dup_anon_ptes) of a large folio (or of a run the
    /// small form does not take).
    #[inline(never)]
    fn try_dup_large(&self, child: SpaceId, first: usize, nr: usize) -> Result<(), FolioError> {
        self.require(FolioKind::Anon)?;
        let range = self.range(first, nr)?;
        let _g = self.lock();
        let n = nr as u32;
        self.take_refs(n);
        // One pass raises every page's count (under the lock: a load and a store) while it
        // gathers the checks without a branch per page: the lowest and highest count before,
        // and whether any page is anon-exclusive. A refusal undoes it: nothing changes.
        let pages = &self.pages[range.clone()];
        let (mut lowest, mut highest, mut flags) = (u32::MAX, 0, 0);
        for p in pages {
            let c = p.mapcount.load(Ordering::Relaxed);
            lowest = lowest.min(c);
            highest = highest.max(c);
            flags |= p.flags.load(Ordering::Relaxed);
            p.mapcount.store(c.wrapping_add(1), Ordering::Release);
        }
        let exclusive = flags & flag::ANON_EXCLUSIVE != 0;
        let refusal = if lowest == 0 && self.entire_mapcount() == 0 {
            Some(FolioError::NotMapped {
                page: range
                    .clone()
                    .find(|&i| self.pte_mapcount(i) == 1)
                    .expect("found above"),
            })
        } else if exclusive && self.maybe_pinned() {
            Some(FolioError::MaybePinned {
                page: range
                    .clone()
                    .find(|&i| self.is_anon_exclusive(i))
                    .expect("found above"),
            })
        } else {
            None
        };
        if let Some(e) = refusal {
            for p in pages {
                sub_locked(&p.mapcount, 1);
            }
            sub(&self.head().w[head::REFS], n);
            return Err(e);
        }
        assert!(highest < MAX_COUNT, "folio {}: mapcount overflow", self.pa);
        if exclusive {
            for i in range {
                if self.is_anon_exclusive(i) {
                    self.clear_exclusive(i);
                }
            }
        }
        self.account_add(child, n);
        self.debug_check_locked();
        Ok(())
    }

    /// [`try_dup_anon_ptes`](Self::try_dup_anon_ptes) of an order-0 folio, the per-page
    /// fork's unit: one word of flags holds everything the checks read, the page's PTE
    /// mapcount is the total, and the unlock writes the new flags (anon-exclusive cleared,
    /// SHARED updated).
    #[inline]
    fn try_dup_small(&self, child: SpaceId) -> Result<(), FolioError> {
        let h = self.head();
        let g = self.lock();
        let f = g.head_flags();
        let c = h.mapcount.load(Ordering::Relaxed);
        let refusal = if f & flag::ANON == 0 {
            Some(FolioError::NotAnon)
        } else if c == 0 {
            Some(FolioError::NotMapped { page: 0 })
        } else if f & flag::ANON_EXCLUSIVE != 0 && self.maybe_pinned() {
            Some(FolioError::MaybePinned { page: 0 })
        } else {
            None
        };
        if let Some(e) = refusal {
            drop(g);
            return Err(e);
        }
        assert!(c < MAX_COUNT, "folio {}: mapcount overflow", self.pa);
        self.take_refs(1);
        h.mapcount.store(c + 1, Ordering::Release);
        self.slot_add(child, 1);
        let total = c + 1;
        let one_space = (0..2).any(|i| self.slot(i).is_some_and(|(_, n)| n == total));
        let shared = if one_space { 0 } else { flag::SHARED };
        self.debug_check_locked();
        g.unlock_with((f & !(flag::ANON_EXCLUSIVE | flag::SHARED)) | shared);
        Ok(())
    }

    /// Re-attributes `nr` existing mappings of this folio from address space `from` to `to`:
    /// the leaves, mapcounts, references and flags stay as they are; only the "mapped shared"
    /// tracking slots move. For a level-3 table shared by several address spaces, whose
    /// entries are accounted once, under one of them (see docs/mm.md,
    /// "Shared page tables"), when that space stops linking it.
    pub fn transfer_mappings(&self, from: SpaceId, to: SpaceId, nr: u32) {
        if from == to || nr == 0 {
            return;
        }
        let _g = self.lock();
        assert!(
            nr <= self.mapcount(),
            "folio {}: transferring {nr} mappings of {}",
            self.pa,
            self.mapcount()
        );
        self.slot_sub(from, nr);
        self.slot_add(to, nr);
        self.update_shared();
    }

    /// Fork of an entire anon mapping into `child`: one reference, one entire mapping in
    /// `child`, anon-exclusive cleared on every page. Refused like
    /// [`try_dup_anon_ptes`](Self::try_dup_anon_ptes) if the folio may be pinned and any
    /// page is anon-exclusive.
    pub fn try_dup_anon_entire(&self, child: SpaceId) -> Result<(), FolioError> {
        self.require(FolioKind::Anon)?;
        self.require_pmd()?;
        let _g = self.lock();
        if self.entire_mapcount() == 0 {
            return Err(FolioError::NoEntireMapping);
        }
        if self.maybe_pinned() {
            if let Some(i) = (0..self.pages.len()).find(|&i| self.is_anon_exclusive(i)) {
                return Err(FolioError::MaybePinned { page: i });
            }
        }
        for i in 0..self.pages.len() {
            self.clear_exclusive(i);
        }
        self.add_entire_locked(child);
        self.debug_check_locked();
        Ok(())
    }

    // -------------------------------------------------------------------------------------
    // Anon-exclusive and COW reuse.

    /// Marks pages `first..first + nr` possibly shared (clears anon-exclusive), e.g. before
    /// making them reachable other than through their one mapping. Refused with
    /// [`FolioError::MaybePinned`], changing nothing, if the folio may be pinned and any of
    /// the pages is exclusive (a pinned page must stay exclusive).
    pub fn try_clear_anon_exclusive(&self, first: usize, nr: usize) -> Result<(), FolioError> {
        self.require(FolioKind::Anon)?;
        let range = self.range(first, nr)?;
        let _g = self.lock();
        if self.maybe_pinned() {
            if let Some(i) = range.clone().find(|&i| self.is_anon_exclusive(i)) {
                return Err(FolioError::MaybePinned { page: i });
            }
        }
        for i in range {
            self.clear_exclusive(i);
        }
        Ok(())
    }

    /// The COW reuse decision for a write fault on page `page`, PTE-mapped (read-only) in
    /// `space`, with `extra_refs` references held by the caller besides the mappings
    /// (normally 0 under the page table lock, 1 if the fault path took a reference).
    ///
    /// Returns `true` — and marks the page anon-exclusive, so the caller may map it writable
    /// in place — if the folio is anon, the page has exactly one mapping (the faulting one)
    /// and either the page is already anon-exclusive, or all of:
    /// * every mapping of the folio belongs to `space` ([`mapped_exclusively_by`]);
    /// * the folio is not pinned;
    /// * `refcount == mapcount + extra_refs`: every reference is a mapping in `space` or the
    ///   caller's, so nothing else (I/O, a cache, a lookup) can reach the page.
    ///
    /// Returns `false` otherwise (the caller copies the page), changing nothing.
    ///
    /// [`mapped_exclusively_by`]: Self::mapped_exclusively_by
    pub fn try_reuse_anon(&self, space: SpaceId, page: usize, extra_refs: u32) -> bool {
        if !self.is_anon() || page >= self.pages.len() {
            return false;
        }
        let _g = self.lock();
        if self.page_mapcount(page) != 1 {
            return false;
        }
        if self.is_anon_exclusive(page) {
            return true;
        }
        if !self.reusable_locked(space, extra_refs) {
            return false;
        }
        self.set_exclusive(page);
        true
    }

    /// The COW reuse decision for a write fault on an entire mapping in `space`: as
    /// [`try_reuse_anon`](Self::try_reuse_anon), requiring that the entire mapping is the
    /// only mapping of the folio (so every page has mapcount 1); marks all 512 pages
    /// anon-exclusive.
    pub fn try_reuse_anon_entire(&self, space: SpaceId, extra_refs: u32) -> bool {
        if !self.is_anon() || self.order() != FolioOrder::PMD {
            return false;
        }
        let _g = self.lock();
        if self.entire_mapcount() != 1 || self.mapcount() != 1 {
            return false;
        }
        if (0..self.pages.len()).all(|i| self.is_anon_exclusive(i)) {
            return true;
        }
        if !self.reusable_locked(space, extra_refs) {
            return false;
        }
        for i in 0..self.pages.len() {
            self.set_exclusive(i);
        }
        true
    }
}
