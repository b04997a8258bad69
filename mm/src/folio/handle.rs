//! The [`Folio`] handle: queries, reference counting, pins, and the locked internals the
//! mapping accounting (`rmap.rs`) is built on.

use alloc::vec::Vec;
use core::fmt;
use core::ops::Range;
use core::sync::atomic::{fence, AtomicU32, Ordering};

use super::meta::{flag, head, second, PageMeta};
use super::{FolioError, FolioKind, FolioOrder, FrameSource, SpaceId};
use crate::{PhysAddr, PAGE_SIZE};

/// Ceiling of every counter: reaching it is a bug (or an attack), and panics.
pub(super) const MAX_COUNT: u32 = i32::MAX as u32;

/// A handle to an allocated folio: 2^order naturally aligned frames accounted as one unit.
///
/// The handle is a plain pointer (`Copy`, like Linux's `struct folio *`): it does not own a
/// reference. References are counted explicitly with [`get`](Self::get) /
/// [`put`](Self::put), and the caller must hold one (directly, through a mapping it is
/// working on, or through a pin) for as long as it uses the handle. Using a handle after the
/// last reference is gone is a bug; it is caught by assertions where cheap.
///
/// Page indices are `0..nr_pages()`. Queries taking a page index panic outside that range;
/// operations taking a run refuse it with [`FolioError::PageRange`].
#[derive(Clone, Copy)]
pub struct Folio<'m> {
    pub(super) pages: &'m [PageMeta],
    pub(super) pa: PhysAddr,
}

impl PartialEq for Folio<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.pa == other.pa && core::ptr::eq(self.pages, other.pages)
    }
}
impl Eq for Folio<'_> {}

/// Holds the folio's mapping lock (a bit of the head's flags word) until dropped.
pub(super) struct Locked<'m> {
    flags: &'m AtomicU32,
    /// The head's flags when the lock was taken, without LOCK.
    held: u32,
}

impl Locked<'_> {
    /// The head's flags as the lock found them (LOCK clear). They stay so while it is held:
    /// every other change of the head's flags is made under the lock (a CPU waiting for it
    /// only sets LOCK, which is already set).
    pub(super) fn head_flags(&self) -> u32 {
        self.held
    }

    /// Unlocks, writing the head's flags as `new` (LOCK cleared) with the same store.
    pub(super) fn unlock_with(self, new: u32) {
        self.flags.store(new & !flag::LOCK, Ordering::Release);
        core::mem::forget(self);
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        self.flags.fetch_and(!flag::LOCK, Ordering::Release);
    }
}

pub(super) fn add(ctr: &AtomicU32, n: u32, what: &str) {
    let old = ctr.fetch_add(n, Ordering::AcqRel);
    assert!(old <= MAX_COUNT - n, "folio {what} overflow");
}

/// [`add`] of a counter only changed under the folio's lock (the per-page, total and slot
/// counts): a load and a store, no read-modify-write. Lock-free readers see either value.
pub(super) fn add_locked(ctr: &AtomicU32, n: u32, what: &str) {
    let old = ctr.load(Ordering::Relaxed);
    assert!(old <= MAX_COUNT - n, "folio {what} overflow");
    ctr.store(old + n, Ordering::Release);
}

pub(super) fn sub(ctr: &AtomicU32, n: u32) {
    let old = ctr.fetch_sub(n, Ordering::AcqRel);
    debug_assert!(old >= n, "folio counter underflow");
}

/// [`sub`] of a counter only changed under the folio's lock (see [`add_locked`]).
pub(super) fn sub_locked(ctr: &AtomicU32, n: u32) {
    let old = ctr.load(Ordering::Relaxed);
    debug_assert!(old >= n, "folio counter underflow");
    ctr.store(old.wrapping_sub(n), Ordering::Release);
}

impl<'m> Folio<'m> {
    pub(super) fn from_parts(pages: &'m [PageMeta], pa: PhysAddr) -> Folio<'m> {
        debug_assert!(pages.len().is_power_of_two());
        Folio { pages, pa }
    }

    // -------------------------------------------------------------------------------------
    // Geometry and plain queries (lock-free single loads).

    /// Physical address of the first frame.
    pub fn pa(&self) -> PhysAddr {
        self.pa
    }
    /// The order.
    pub fn order(&self) -> FolioOrder {
        FolioOrder::new(self.pages.len().trailing_zeros()).expect("folio order")
    }
    /// Number of 4 KiB pages.
    pub fn nr_pages(&self) -> usize {
        self.pages.len()
    }
    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.pages.len() as u64 * PAGE_SIZE
    }
    /// Physical address of page `page`.
    pub fn page_pa(&self, page: usize) -> PhysAddr {
        assert!(page < self.pages.len(), "page {page} outside the folio");
        PhysAddr(self.pa.0 + page as u64 * PAGE_SIZE)
    }
    /// Anon or file.
    #[inline]
    pub fn kind(&self) -> FolioKind {
        if self.head().flags() & flag::ANON != 0 {
            FolioKind::Anon
        } else {
            FolioKind::File
        }
    }
    /// Whether the folio is anonymous.
    #[inline]
    pub fn is_anon(&self) -> bool {
        self.kind() == FolioKind::Anon
    }
    /// Whether the folio's frames were adopted rather than allocated
    /// ([`MemMap::adopt_folio`](super::MemMap::adopt_folio)): they never go to a frame source.
    pub fn is_adopted(&self) -> bool {
        self.head().flags() & flag::ADOPTED != 0
    }
    /// The reference count.
    pub fn refcount(&self) -> u32 {
        self.head().w[head::REFS].load(Ordering::Acquire)
    }
    /// The pin count (each pin also holds one reference).
    pub fn pincount(&self) -> u32 {
        self.head().w[head::PINS].load(Ordering::Acquire)
    }
    /// The total mapcount: every PTE mapping of every page counts one, every entire mapping
    /// counts one (Linux's `folio_mapcount`).
    pub fn mapcount(&self) -> u32 {
        self.total_ctr().load(Ordering::Acquire)
    }
    /// The number of entire (2 MiB block) mappings.
    pub fn entire_mapcount(&self) -> u32 {
        self.entire_ctr().map_or(0, |c| c.load(Ordering::Acquire))
    }
    /// The number of PTE (level-3) mappings of page `page`.
    pub fn pte_mapcount(&self, page: usize) -> u32 {
        self.pages[page].mapcount.load(Ordering::Acquire)
    }
    /// The number of mappings covering page `page`: its PTE mappings plus the entire
    /// mappings (Linux's precise page mapcount).
    pub fn page_mapcount(&self, page: usize) -> u32 {
        self.pte_mapcount(page) + self.entire_mapcount()
    }
    /// Whether any page is mapped anywhere.
    pub fn is_mapped(&self) -> bool {
        self.mapcount() != 0
    }
    /// Whether page `page` is anon-exclusive.
    pub fn is_anon_exclusive(&self, page: usize) -> bool {
        self.pages[page].flags() & flag::ANON_EXCLUSIVE != 0
    }
    /// Whether the folio may be mapped by more than one address space. `false` is exact
    /// (all mappings belong to one address space, or there are none); `true` is conservative
    /// (see docs/mm.md, "Mapped shared").
    pub fn maybe_mapped_shared(&self) -> bool {
        self.head().flags() & flag::SHARED != 0
    }
    /// Whether the folio may be pinned. Exact here (the pin count is kept for every order),
    /// at the instant of the read.
    pub fn maybe_pinned(&self) -> bool {
        self.pincount() != 0
    }
    /// Whether every mapping of the folio belongs to `space` (and there is at least one).
    /// `true` is exact; `false` may be conservative after more than two address spaces
    /// mapped the folio at once (docs/mm.md, "Mapped shared").
    pub fn mapped_exclusively_by(&self, space: SpaceId) -> bool {
        let _g = self.lock();
        self.mapped_exclusively_by_locked(space)
    }
    /// The two address-space tracking slots: `(space, mapcount)` or `None` when free.
    pub fn tracked_spaces(&self) -> [Option<(SpaceId, u32)>; 2] {
        let _g = self.lock();
        core::array::from_fn(|i| self.slot(i))
    }

    // -------------------------------------------------------------------------------------
    // References.

    /// Takes a reference. The caller must already hold one (or a mapping or pin).
    pub fn get(&self) {
        self.take_refs(1);
    }

    /// Takes a reference unless the count is zero (the folio is being freed): the
    /// speculative form for lookups that hold nothing yet.
    pub fn try_get(&self) -> bool {
        let refs = &self.head().w[head::REFS];
        let mut cur = refs.load(Ordering::Relaxed);
        loop {
            if cur == 0 {
                return false;
            }
            assert!(cur < MAX_COUNT, "folio refcount overflow");
            match refs.compare_exchange_weak(cur, cur + 1, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(now) => cur = now,
            }
        }
    }

    /// Drops a reference; the last one returns the frames to `source` with the metadata
    /// reset to the free state (an adopted folio's frames are kept, not returned). Returns
    /// whether the folio was freed.
    pub fn put<S: FrameSource + ?Sized>(self, source: &mut S) -> bool {
        self.put_many(1, source)
    }

    /// Drops `n` references at once (see [`put`](Self::put)).
    pub fn put_many<S: FrameSource + ?Sized>(self, n: u32, source: &mut S) -> bool {
        if n == 0 {
            return false;
        }
        let old = self.head().w[head::REFS].fetch_sub(n, Ordering::Release);
        assert!(old >= n, "folio {}: refcount underflow ({old} - {n})", self.pa);
        if old != n {
            return false;
        }
        fence(Ordering::Acquire);
        self.free(source);
        true
    }

    fn free<S: FrameSource + ?Sized>(self, source: &mut S) {
        assert!(
            self.mapcount() == 0 && self.pincount() == 0,
            "folio {} freed while mapped ({}) or pinned ({})",
            self.pa,
            self.mapcount(),
            self.pincount()
        );
        debug_assert!(
            self.pages.iter().all(|p| p.mapcount.load(Ordering::Relaxed) == 0),
            "folio {} freed with a page still PTE-mapped",
            self.pa
        );
        let order = self.order();
        let adopted = self.is_adopted();
        for p in &self.pages[1..] {
            p.clear();
        }
        self.pages[0].clear();
        if !adopted {
            source.free(self.pa, order);
        }
    }

    // -------------------------------------------------------------------------------------
    // Pins.

    /// Pins the folio for access to page `page` (DMA, long-term GUP): one reference and one
    /// pin. An anon page must be anon-exclusive ([`FolioError::NotExclusive`]: unshare it
    /// first), so that fork never shares a pinned page. The caller holds a reference or the
    /// page table lock of a mapping of the page.
    pub fn pin(&self, page: usize) -> Result<(), FolioError> {
        self.range(page, 1)?;
        let _g = self.lock();
        if self.is_anon() && !self.is_anon_exclusive(page) {
            return Err(FolioError::NotExclusive { page });
        }
        self.take_refs(1);
        add(&self.head().w[head::PINS], 1, "pincount");
        self.debug_check_locked();
        Ok(())
    }

    /// Drops a pin and its reference (the pin first). Returns whether the folio was freed.
    pub fn unpin<S: FrameSource + ?Sized>(self, source: &mut S) -> Result<bool, FolioError> {
        {
            let _g = self.lock();
            let pins = &self.head().w[head::PINS];
            if pins.load(Ordering::Acquire) == 0 {
                return Err(FolioError::NotPinned);
            }
            sub(pins, 1);
        }
        Ok(self.put(source))
    }

    // -------------------------------------------------------------------------------------
    // Internals.

    pub(super) fn head(&self) -> &'m PageMeta {
        &self.pages[0]
    }

    pub(super) fn total_ctr(&self) -> &'m AtomicU32 {
        match self.pages.get(1) {
            Some(p) => &p.w[second::TOTAL],
            // Order 0: the one page's PTE mapcount is the total.
            None => &self.pages[0].mapcount,
        }
    }

    pub(super) fn entire_ctr(&self) -> Option<&'m AtomicU32> {
        self.pages.get(1).map(|p| &p.w[second::ENTIRE])
    }

    #[inline]
    pub(super) fn lock(&self) -> Locked<'m> {
        let flags = &self.head().flags;
        debug_assert!(
            flags.load(Ordering::Relaxed) & flag::HEAD != 0,
            "folio {} is free",
            self.pa
        );
        loop {
            let held = flags.fetch_or(flag::LOCK, Ordering::Acquire);
            if held & flag::LOCK == 0 {
                return Locked { flags, held };
            }
            while flags.load(Ordering::Relaxed) & flag::LOCK != 0 {
                core::hint::spin_loop();
            }
        }
    }

    pub(super) fn require(&self, kind: FolioKind) -> Result<(), FolioError> {
        match (self.kind(), kind) {
            (FolioKind::Anon, FolioKind::Anon) | (FolioKind::File, FolioKind::File) => Ok(()),
            (_, FolioKind::Anon) => Err(FolioError::NotAnon),
            (_, FolioKind::File) => Err(FolioError::NotFile),
        }
    }

    pub(super) fn require_pmd(&self) -> Result<(), FolioError> {
        if self.order() == FolioOrder::PMD {
            Ok(())
        } else {
            Err(FolioError::NotPmdMappable)
        }
    }

    pub(super) fn range(&self, first: usize, nr: usize) -> Result<Range<usize>, FolioError> {
        match first.checked_add(nr) {
            Some(end) if nr > 0 && end <= self.pages.len() => Ok(first..end),
            _ => Err(FolioError::PageRange { first, nr }),
        }
    }

    #[inline]
    pub(super) fn take_refs(&self, n: u32) {
        let old = self.head().w[head::REFS].fetch_add(n, Ordering::AcqRel);
        assert!(old != 0, "folio {}: reference taken on a freed folio", self.pa);
        assert!(old <= MAX_COUNT - n, "folio {}: refcount overflow", self.pa);
    }

    pub(super) fn set_exclusive(&self, page: usize) {
        self.pages[page]
            .flags
            .fetch_or(flag::ANON_EXCLUSIVE, Ordering::AcqRel);
    }

    pub(super) fn clear_exclusive(&self, page: usize) {
        self.pages[page]
            .flags
            .fetch_and(!flag::ANON_EXCLUSIVE, Ordering::AcqRel);
    }

    /// References first, then one PTE mapcount per page, then the folio-wide counts.
    /// The per-page counts change under the lock only: a load and a store each, one
    /// overflow check for the run.
    pub(super) fn add_ptes_locked(&self, space: SpaceId, range: Range<usize>) {
        let n = range.len() as u32;
        self.take_refs(n);
        let mut highest = 0;
        for p in &self.pages[range] {
            let c = p.mapcount.load(Ordering::Relaxed);
            highest = highest.max(c);
            p.mapcount.store(c.wrapping_add(1), Ordering::Release);
        }
        assert!(highest < MAX_COUNT, "folio {}: mapcount overflow", self.pa);
        self.account_add(space, n);
    }

    pub(super) fn add_entire_locked(&self, space: SpaceId) {
        self.take_refs(1);
        add(self.entire_ctr().expect("order 9"), 1, "entire mapcount");
        self.account_add(space, 1);
    }

    /// `(space, count)` of slot `i`, if occupied.
    #[inline]
    pub(super) fn slot(&self, i: usize) -> Option<(SpaceId, u32)> {
        let h = self.head();
        let id = h.w[head::SLOT_ID + 2 * i].load(Ordering::Relaxed);
        let n = h.w[head::SLOT_COUNT + 2 * i].load(Ordering::Relaxed);
        SpaceId::new(id).map(|s| (s, n))
    }

    #[inline]
    pub(super) fn set_slot(&self, i: usize, v: Option<(SpaceId, u32)>) {
        let h = self.head();
        let (id, n) = v.map_or((0, 0), |(s, n)| (s.get(), n));
        h.w[head::SLOT_ID + 2 * i].store(id, Ordering::Relaxed);
        h.w[head::SLOT_COUNT + 2 * i].store(n, Ordering::Relaxed);
    }

    /// `d` new mappings in `space`, whose per-page / entire counters are already raised:
    /// raises the total (for order 0 the page's PTE mapcount *is* the total), updates the
    /// space's slot (taking a free one if it has none) and the shared flag.
    pub(super) fn account_add(&self, space: SpaceId, d: u32) {
        if self.pages.len() > 1 {
            add_locked(self.total_ctr(), d, "total mapcount");
        }
        self.slot_add(space, d);
        self.update_shared();
    }

    /// `d` more mappings of `space` in its slot, taking a free one if it has none (if both
    /// are taken by other spaces, they stay untracked).
    #[inline]
    pub(super) fn slot_add(&self, space: SpaceId, d: u32) {
        let mut free = None;
        for i in 0..2 {
            match self.slot(i) {
                Some((s, n)) if s == space => return self.set_slot(i, Some((s, n + d))),
                None if free.is_none() => free = Some(i),
                _ => {}
            }
        }
        if let Some(i) = free {
            self.set_slot(i, Some((space, d)));
        }
    }

    /// `d` mappings in `space` gone, per-page / entire counters already lowered.
    pub(super) fn account_sub(&self, space: SpaceId, d: u32) {
        if self.pages.len() > 1 {
            sub_locked(self.total_ctr(), d);
        }
        self.slot_sub(space, d);
        self.update_shared();
    }

    /// `d` fewer mappings of `space` in its slot, if it has one.
    pub(super) fn slot_sub(&self, space: SpaceId, d: u32) {
        for i in 0..2 {
            if let Some((s, n)) = self.slot(i) {
                if s == space {
                    // A slot may hold fewer than the space's mappings (it was taken while the
                    // space already had untracked ones): at or below zero, free it.
                    self.set_slot(i, (n > d).then(|| (s, n - d)));
                    break;
                }
            }
        }
    }

    /// SHARED := the folio is mapped and no slot accounts for all of its mappings.
    pub(super) fn update_shared(&self) {
        let total = self.mapcount();
        let one_space = total == 0 || (0..2).any(|i| self.slot(i).is_some_and(|(_, n)| n == total));
        let flags = &self.head().flags;
        // The flag word is also the lock others spin on: changed only when the answer does.
        let shared = flags.load(Ordering::Relaxed) & flag::SHARED != 0;
        if one_space && shared {
            flags.fetch_and(!flag::SHARED, Ordering::Release);
        } else if !one_space && !shared {
            flags.fetch_or(flag::SHARED, Ordering::Release);
        }
    }

    pub(super) fn mapped_exclusively_by_locked(&self, space: SpaceId) -> bool {
        let total = self.mapcount();
        total != 0 && (0..2).any(|i| self.slot(i) == Some((space, total)))
    }

    pub(super) fn reusable_locked(&self, space: SpaceId, extra_refs: u32) -> bool {
        self.mapped_exclusively_by_locked(space)
            && !self.maybe_pinned()
            && self.refcount() as u64 == self.mapcount() as u64 + extra_refs as u64
    }

    /// The reference rule, with the mapping counts stable (lock held).
    pub(super) fn debug_check_locked(&self) {
        debug_assert!(
            self.refcount() as u64 >= self.mapcount() as u64 + self.pincount() as u64,
            "folio {}: refcount {} < mapcount {} + pincount {}",
            self.pa,
            self.refcount(),
            self.mapcount(),
            self.pincount()
        );
    }
}

impl fmt::Debug for Folio<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Folio")
            .field("pa", &self.pa)
            .field("order", &self.order().get())
            .field("kind", &self.kind())
            .field("refs", &self.refcount())
            .field("mapcount", &self.mapcount())
            .field("entire", &self.entire_mapcount())
            .field("pins", &self.pincount())
            .field("shared", &self.maybe_mapped_shared())
            .finish()
    }
}

/// References detached from mappings that were just removed: the page-table entries are
/// gone, but a TLB may still hold them, so the frames must not be freed yet. Release them
/// with [`release`](Self::release) **after** the TLB invalidation has completed (Linux's
/// `mmu_gather`). Dropping an unreleased `Unmapped` leaks the references (and panics in
/// debug builds).
#[must_use = "release the references after the TLB invalidation"]
pub struct Unmapped<'m> {
    folio: Folio<'m>,
    refs: u32,
}

impl<'m> Unmapped<'m> {
    pub(super) fn new(folio: Folio<'m>, refs: u32) -> Unmapped<'m> {
        Unmapped { folio, refs }
    }

    /// The folio.
    pub fn folio(&self) -> Folio<'m> {
        self.folio
    }

    /// Number of references held.
    pub fn refs(&self) -> u32 {
        self.refs
    }

    /// Adds `other`'s references to `self` (same folio), for batching.
    pub fn merge(&mut self, mut other: Unmapped<'m>) {
        assert!(
            self.folio == other.folio,
            "merging references of different folios"
        );
        self.refs += core::mem::take(&mut other.refs);
    }

    /// Drops the references; returns whether that freed the folio.
    pub fn release<S: FrameSource + ?Sized>(mut self, source: &mut S) -> bool {
        let n = core::mem::take(&mut self.refs);
        self.folio.put_many(n, source)
    }
}

/// The frames of a folio freed by [`Folio::remove_sole_ptes`] whose metadata is already in the
/// free state, waiting for the TLB invalidation before they go back to the frame source with
/// [`release`](Self::release). Dropping it unreleased is a bug: the frames leak.
#[must_use = "the frames must be returned with `release` after the invalidation"]
pub struct Retired {
    pa: PhysAddr,
    order: Option<FolioOrder>,
}

impl Retired {
    pub(super) fn new(pa: PhysAddr, order: FolioOrder) -> Retired {
        Retired {
            pa,
            order: Some(order),
        }
    }

    /// The folio's first frame.
    pub fn pa(&self) -> PhysAddr {
        self.pa
    }

    /// Returns the frames to `source`.
    pub fn release<S: FrameSource + ?Sized>(mut self, source: &mut S) {
        if let Some(order) = self.order.take() {
            source.free(self.pa, order);
        }
    }

    /// Returns the frames of every one of `all` to `source` with one
    /// [`FrameSource::free_many`], and empties `all`.
    pub fn release_all<S: FrameSource + ?Sized>(all: &mut Vec<Retired>, source: &mut S) {
        let mut blocks: Vec<(PhysAddr, FolioOrder)> = Vec::with_capacity(all.len());
        blocks.extend(all.iter_mut().filter_map(|r| r.order.take().map(|o| (r.pa, o))));
        source.free_many(&blocks);
        all.clear();
    }
}

impl fmt::Debug for Retired {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Retired({:?} at {})", self.order, self.pa)
    }
}

impl Drop for Retired {
    fn drop(&mut self) {
        let Some(order) = self.order else { return };
        #[cfg(test)]
        if std::thread::panicking() {
            return;
        }
        if cfg!(debug_assertions) {
            panic!("frames of folio {} ({order:?}) dropped without release", self.pa);
        }
        log::error!(
            "frames of folio {} ({order:?}) dropped without release (leaked)",
            self.pa
        );
    }
}

impl fmt::Debug for Unmapped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Unmapped({} refs of folio {})", self.refs, self.folio.pa)
    }
}

impl Drop for Unmapped<'_> {
    fn drop(&mut self) {
        if self.refs == 0 {
            return;
        }
        #[cfg(test)]
        if std::thread::panicking() {
            return;
        }
        if cfg!(debug_assertions) {
            panic!(
                "{} references of folio {} dropped without release",
                self.refs, self.folio.pa
            );
        }
        log::error!(
            "{} references of folio {} dropped without release (leaked)",
            self.refs,
            self.folio.pa
        );
    }
}
