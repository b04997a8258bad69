//! Per-frame metadata ([`PageMeta`]) and the array covering RAM ([`MemMap`]).

use alloc::collections::BTreeSet;
use alloc::vec::Vec;
use core::fmt;
use core::mem::{align_of, size_of, MaybeUninit};
use core::sync::atomic::{AtomicU32, Ordering};

use spin::Mutex;

use super::{Folio, FolioError, FolioOrder, SpaceId};
use crate::{PhysAddr, PAGE_SHIFT, PAGE_SIZE, PA_END};

/// Flag bits of [`PageMeta::flags`].
pub(super) mod flag {
    /// First frame of an allocated folio.
    pub const HEAD: u32 = 1 << 0;
    /// Any other frame of an allocated folio.
    pub const TAIL: u32 = 1 << 1;
    /// The folio's order, on the head and on every tail (so a tail finds its head by
    /// alignment, without a pointer).
    pub const ORDER_SHIFT: u32 = 2;
    /// Mask of the order field.
    pub const ORDER_MASK: u32 = 0xF << ORDER_SHIFT;
    /// Head only: the folio is anonymous memory (otherwise file / shared memory).
    pub const ANON: u32 = 1 << 6;
    /// Head only: the folio's mapping lock (serialises the mapping operations).
    pub const LOCK: u32 = 1 << 7;
    /// Head only: cached answer of `maybe_mapped_shared`.
    pub const SHARED: u32 = 1 << 8;
    /// Per page: the page is anon-exclusive.
    pub const ANON_EXCLUSIVE: u32 = 1 << 9;
    /// Head only: the folio's frames were adopted, not taken from the frame source
    /// ([`MemMap::adopt_folio`](super::MemMap::adopt_folio)): the last reference resets the
    /// metadata and keeps the frames.
    pub const ADOPTED: u32 = 1 << 10;
    /// Every bit that means something.
    pub const ALL: u32 = HEAD | TAIL | ORDER_MASK | ANON | LOCK | SHARED | ANON_EXCLUSIVE | ADOPTED;
}

/// Indices into [`PageMeta::w`] of the head frame.
pub(super) mod head {
    /// Reference count.
    pub const REFS: usize = 0;
    /// Pin count.
    pub const PINS: usize = 1;
    /// Address-space slot `i` (0 or 1): id at `SLOT_ID + 2 * i`, mapcount at
    /// `SLOT_COUNT + 2 * i`. Id 0 means "free".
    pub const SLOT_ID: usize = 2;
    /// See [`SLOT_ID`].
    pub const SLOT_COUNT: usize = 3;
}

/// Indices into [`PageMeta::w`] of the second frame of a large folio.
pub(super) mod second {
    /// Entire mapcount.
    pub const ENTIRE: usize = 0;
    /// Total mapcount (for order 0 the total is the head's `mapcount`).
    pub const TOTAL: usize = 1;
}

/// Metadata of one 4 KiB frame of RAM — Tessera's `struct page`.
///
/// 32 bytes (eight 32-bit atomics), 32-byte aligned so that no entry straddles a cache line:
/// 0.78 % of RAM. **All-zero bytes are the valid state of a free frame**, so the array is
/// initialised by zeroing it and nothing else.
///
/// | word | every frame | head frame | second frame (order ≥ 1) |
/// |------|-------------|------------|---------------------------|
/// | `flags` | HEAD / TAIL, order, ANON-EXCLUSIVE | + ANON, LOCK, SHARED | |
/// | `mapcount` | PTE mapcount of this page | | |
/// | `w[0]` | | refcount | entire mapcount |
/// | `w[1]` | | pincount | total mapcount |
/// | `w[2..6]` | | two (space id, mapcount) slots | |
///
/// An order-0 folio has no second frame: its total mapcount is its one PTE mapcount and its
/// entire mapcount is always 0. Other tail words stay zero.
#[repr(C, align(32))]
pub struct PageMeta {
    pub(super) flags: AtomicU32,
    pub(super) mapcount: AtomicU32,
    pub(super) w: [AtomicU32; 6],
}

const _: () = assert!(size_of::<PageMeta>() == PageMeta::SIZE);
const _: () = assert!(align_of::<PageMeta>() == PageMeta::SIZE);

impl PageMeta {
    /// Bytes per frame: 32.
    pub const SIZE: usize = 32;

    /// The metadata of a free frame (all zero).
    pub const fn new() -> PageMeta {
        PageMeta {
            flags: AtomicU32::new(0),
            mapcount: AtomicU32::new(0),
            w: [const { AtomicU32::new(0) }; 6],
        }
    }

    /// Whether every word is zero (the state of a free frame).
    pub fn is_clean(&self) -> bool {
        self.flags.load(Ordering::Relaxed) == 0
            && self.mapcount.load(Ordering::Relaxed) == 0
            && self.w.iter().all(|w| w.load(Ordering::Relaxed) == 0)
    }

    /// Resets every word to zero.
    pub(super) fn clear(&self) {
        self.mapcount.store(0, Ordering::Relaxed);
        for w in &self.w {
            w.store(0, Ordering::Relaxed);
        }
        self.flags.store(0, Ordering::Release);
    }

    /// Resets a tail frame other than the second, whose words besides the flags and the PTE
    /// mapcount are zero at all times (the invariant checker's rule): the two words only.
    pub(super) fn clear_tail(&self) {
        debug_assert!(self.w.iter().all(|w| w.load(Ordering::Relaxed) == 0));
        self.mapcount.store(0, Ordering::Relaxed);
        self.flags.store(0, Ordering::Relaxed);
    }

    pub(super) fn flags(&self) -> u32 {
        self.flags.load(Ordering::Acquire)
    }

    /// The order recorded in the flags (head or tail).
    pub(super) fn order_bits(flags: u32) -> u32 {
        (flags & flag::ORDER_MASK) >> flag::ORDER_SHIFT
    }
}

impl Default for PageMeta {
    fn default() -> Self {
        PageMeta::new()
    }
}

impl fmt::Debug for PageMeta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w: [u32; 6] = core::array::from_fn(|i| self.w[i].load(Ordering::Relaxed));
        f.debug_struct("PageMeta")
            .field(
                "flags",
                &format_args!("{:#x}", self.flags.load(Ordering::Relaxed)),
            )
            .field("mapcount", &self.mapcount.load(Ordering::Relaxed))
            .field("w", &w)
            .finish()
    }
}

/// Why a [`MemMap`] cannot be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemMapError {
    /// The base address is not page aligned.
    UnalignedBase(PhysAddr),
    /// The covered range is empty or ends beyond the 48-bit physical address space.
    BadRange {
        /// Requested base.
        base: PhysAddr,
        /// Requested number of frames.
        frames: usize,
    },
    /// The byte storage is not 32-byte aligned.
    UnalignedStorage,
    /// The byte storage is smaller than [`MemMap::bytes_needed`].
    StorageTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes given.
        given: usize,
    },
}

impl fmt::Display for MemMapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemMapError::UnalignedBase(b) => write!(f, "memory map base {b} is not page aligned"),
            MemMapError::BadRange { base, frames } => {
                write!(f, "memory map {base} + {frames} frames is empty or beyond 2^48")
            }
            MemMapError::UnalignedStorage => f.write_str("page metadata storage is not 32-byte aligned"),
            MemMapError::StorageTooSmall { needed, given } => {
                write!(f, "page metadata storage has {given} bytes, needs {needed}")
            }
        }
    }
}

/// The page metadata of a physical range `[base, base + frames * 4 KiB)`: one [`PageMeta`]
/// per frame, in storage the caller provides; and the names of the address spaces that map
/// its folios ([`MemMap::new_space_id`]).
///
/// Every operation takes `&self` (the counters are atomics); the storage is borrowed
/// exclusively for `'a` (on the target `'static`, carved out of RAM at boot).
pub struct MemMap<'a> {
    base_pfn: u64,
    pages: &'a [PageMeta],
    spaces: Mutex<SpaceIds>,
}

/// The [`SpaceId`]s handed out by a [`MemMap`] and not returned yet.
struct SpaceIds {
    live: BTreeSet<u32>,
    /// The next id to try.
    next: u32,
}

impl SpaceIds {
    const fn new() -> SpaceIds {
        SpaceIds {
            live: BTreeSet::new(),
            next: 1,
        }
    }
}

impl<'a> MemMap<'a> {
    /// Bytes of metadata for `frames` frames.
    pub const fn bytes_needed(frames: usize) -> usize {
        frames * PageMeta::SIZE
    }

    /// The map of `[base, base + storage.len() * 4 KiB)` over `storage`.
    ///
    /// The storage must be in the free state (all zero, e.g. from [`PageMeta::new`]); this
    /// is checked in debug builds and by [`check`](super::check).
    pub fn new(base: PhysAddr, storage: &'a mut [PageMeta]) -> Result<MemMap<'a>, MemMapError> {
        Self::validate(base, storage.len())?;
        debug_assert!(storage.iter().all(PageMeta::is_clean), "page metadata not zeroed");
        Ok(MemMap {
            base_pfn: base.0 >> PAGE_SHIFT,
            pages: storage,
            spaces: Mutex::new(SpaceIds::new()),
        })
    }

    /// The map of `[base, base + frames * 4 KiB)` over raw bytes (e.g. a carve-out of RAM),
    /// which are zero-filled: the only initialisation the metadata needs. `bytes` must be
    /// 32-byte aligned and at least [`bytes_needed`](Self::bytes_needed)`(frames)` long.
    pub fn from_bytes(
        base: PhysAddr,
        frames: usize,
        bytes: &'a mut [MaybeUninit<u8>],
    ) -> Result<MemMap<'a>, MemMapError> {
        let needed = Self::check_storage(base, frames, bytes)?;
        let ptr = bytes.as_mut_ptr();
        // SAFETY: `ptr` is valid for writes of `needed <= bytes.len()` bytes (it comes from the
        // exclusive borrow `bytes`).
        unsafe { core::ptr::write_bytes(ptr, 0, needed) };
        // SAFETY: just zeroed.
        unsafe { Self::from_zeroed_bytes(base, frames, bytes) }
    }

    /// [`from_bytes`](Self::from_bytes) over bytes the caller has already zeroed (at boot, with
    /// the fastest way the machine has: zeroing is most of the boot time).
    ///
    /// # Safety
    /// The first [`bytes_needed`](Self::bytes_needed)`(frames)` bytes must all be initialised to
    /// zero.
    pub unsafe fn from_zeroed_bytes(
        base: PhysAddr,
        frames: usize,
        bytes: &'a mut [MaybeUninit<u8>],
    ) -> Result<MemMap<'a>, MemMapError> {
        Self::check_storage(base, frames, bytes)?;
        let ptr = bytes.as_mut_ptr();
        // SAFETY: the `needed = frames * 32` bytes at `ptr` are exclusively borrowed for `'a`
        // (the borrow of `bytes` moves into the returned slice), 32-byte aligned (checked
        // above), and initialised to zero (the caller's contract), which is a valid `PageMeta`
        // (eight `AtomicU32`s holding 0, no padding).
        let pages = unsafe { core::slice::from_raw_parts_mut(ptr.cast::<PageMeta>(), frames) };
        debug_assert!(pages.iter().all(PageMeta::is_clean), "page metadata not zeroed");
        Ok(MemMap {
            base_pfn: base.0 >> PAGE_SHIFT,
            pages,
            spaces: Mutex::new(SpaceIds::new()),
        })
    }

    /// Checks the arguments of [`from_bytes`](Self::from_bytes); returns the bytes needed.
    fn check_storage(base: PhysAddr, frames: usize, bytes: &[MaybeUninit<u8>]) -> Result<usize, MemMapError> {
        Self::validate(base, frames)?;
        let needed = Self::bytes_needed(frames);
        if bytes.len() < needed {
            return Err(MemMapError::StorageTooSmall {
                needed,
                given: bytes.len(),
            });
        }
        if !(bytes.as_ptr() as usize).is_multiple_of(align_of::<PageMeta>()) {
            return Err(MemMapError::UnalignedStorage);
        }
        Ok(needed)
    }

    fn validate(base: PhysAddr, frames: usize) -> Result<(), MemMapError> {
        if !base.is_aligned(PAGE_SIZE) {
            return Err(MemMapError::UnalignedBase(base));
        }
        let end = (frames as u64)
            .checked_mul(PAGE_SIZE)
            .and_then(|len| base.0.checked_add(len));
        match end {
            Some(end) if frames > 0 && end <= PA_END => Ok(()),
            _ => Err(MemMapError::BadRange { base, frames }),
        }
    }

    /// A name for a new address space mapping folios of this map: an id no live address
    /// space has (ids are handed out in increasing order, wrapping around, so an id comes
    /// back only after about 2^32 others). Return it with
    /// [`free_space_id`](Self::free_space_id) once the address space has removed all its
    /// mappings.
    ///
    /// # Panics
    /// If 2^32 - 1 address spaces are live.
    pub fn new_space_id(&self) -> SpaceId {
        let mut ids = self.spaces.lock();
        assert!(ids.live.len() < u32::MAX as usize, "address space ids exhausted");
        let mut id = ids.next;
        while ids.live.contains(&id) {
            id = id.checked_add(1).unwrap_or(1);
        }
        ids.live.insert(id);
        ids.next = id.checked_add(1).unwrap_or(1);
        SpaceId::new(id).expect("ids start at 1")
    }

    /// Returns an id from [`new_space_id`](Self::new_space_id): its address space is gone
    /// and maps nothing any more.
    ///
    /// # Panics
    /// If the id is not live.
    pub fn free_space_id(&self, id: SpaceId) {
        let freed = self.spaces.lock().live.remove(&id.get());
        assert!(freed, "{id} was not handed out or is already free");
    }

    /// The ids handed out and not returned: the live address spaces, in increasing order.
    pub fn live_space_ids(&self) -> Vec<SpaceId> {
        let ids = self.spaces.lock();
        ids.live
            .iter()
            .map(|&i| SpaceId::new(i).expect("ids start at 1"))
            .collect()
    }

    /// First covered address.
    pub fn base(&self) -> PhysAddr {
        PhysAddr(self.base_pfn << PAGE_SHIFT)
    }

    /// One past the last covered address.
    pub fn end(&self) -> PhysAddr {
        PhysAddr((self.base_pfn + self.pages.len() as u64) << PAGE_SHIFT)
    }

    /// Number of frames covered.
    pub fn frames(&self) -> usize {
        self.pages.len()
    }

    /// Whether `pa` is covered.
    pub fn contains(&self, pa: PhysAddr) -> bool {
        self.index(pa).is_some()
    }

    /// The index of the frame holding `pa`.
    pub(super) fn index(&self, pa: PhysAddr) -> Option<usize> {
        let pfn = pa.0 >> PAGE_SHIFT;
        let i = pfn.checked_sub(self.base_pfn)?;
        (i < self.pages.len() as u64).then_some(i as usize)
    }

    pub(super) fn pages(&self) -> &'a [PageMeta] {
        self.pages
    }

    pub(super) fn pa_of(&self, index: usize) -> PhysAddr {
        PhysAddr((self.base_pfn + index as u64) << PAGE_SHIFT)
    }

    /// The metadata of the frame holding `pa`.
    pub fn page_meta(&self, pa: PhysAddr) -> Option<&'a PageMeta> {
        self.index(pa).map(|i| &self.pages[i])
    }

    /// Whether the frame holding `pa` is covered and free (not part of a folio).
    pub fn is_free(&self, pa: PhysAddr) -> bool {
        self.page_meta(pa)
            .is_some_and(|m| m.flags() & (flag::HEAD | flag::TAIL) == 0)
    }

    /// The folio containing `pa` and the index of `pa`'s page in it, or `None` if the frame
    /// is free or not covered.
    ///
    /// The answer is stable only while the caller holds a reference (or a mapping, or the
    /// lock of a page table mapping the page) that keeps the folio from being freed.
    #[inline]
    pub fn folio_page(&self, pa: PhysAddr) -> Option<(Folio<'a>, usize)> {
        let i = self.index(pa)?;
        let f = self.pages[i].flags();
        if f & (flag::HEAD | flag::TAIL) == 0 {
            return None;
        }
        let order = PageMeta::order_bits(f);
        if f & flag::HEAD != 0 && order == 0 {
            // An order-0 folio: the page is its own head.
            return Some((
                Folio::from_parts(&self.pages[i..i + 1], PhysAddr(pa.0 & !(PAGE_SIZE - 1))),
                0,
            ));
        }
        let pfn = self.base_pfn + i as u64;
        let head_pfn = pfn & !((1u64 << order) - 1);
        let head = head_pfn.checked_sub(self.base_pfn)? as usize;
        let n = 1usize << order;
        let pages = self.pages.get(head..head + n)?;
        let hf = pages[0].flags();
        if hf & flag::HEAD == 0 || PageMeta::order_bits(hf) != order {
            return None;
        }
        Some((
            Folio::from_parts(pages, PhysAddr(head_pfn << PAGE_SHIFT)),
            (pfn - head_pfn) as usize,
        ))
    }

    /// The folio containing `pa` (see [`folio_page`](Self::folio_page)).
    pub fn folio(&self, pa: PhysAddr) -> Option<Folio<'a>> {
        self.folio_page(pa).map(|(f, _)| f)
    }

    /// Every allocated folio, in address order. Meant for checks and statistics while the
    /// map is quiescent.
    pub fn folios(&self) -> impl Iterator<Item = Folio<'a>> + '_ {
        let mut i = 0;
        core::iter::from_fn(move || {
            while i < self.pages.len() {
                let f = self.pages[i].flags();
                if f & flag::HEAD != 0 {
                    let n = 1usize << PageMeta::order_bits(f);
                    if let Some(pages) = self.pages.get(i..i + n) {
                        let folio = Folio::from_parts(pages, self.pa_of(i));
                        i += n;
                        return Some(folio);
                    }
                }
                i += 1;
            }
            None
        })
    }

    /// Initialises the metadata of the frames at `pa` as a new folio and returns it, or
    /// `None` if the block is not covered or not aligned.
    ///
    /// # Panics
    /// If a frame of the block is not free: the frame source handed out a block that is in
    /// use.
    pub(super) fn init_folio(&self, pa: PhysAddr, order: FolioOrder, anon: bool) -> Option<Folio<'a>> {
        self.init_folio_flags(pa, order, if anon { flag::ANON } else { 0 })
    }

    /// A file folio over frames that hold data already and do not come from the frame
    /// source (the kernel image's, or memory some other owner gives up for good): the caller
    /// holds the one reference. When the last reference is dropped the metadata returns to
    /// the free state and the frames are kept — never handed to a [`FrameSource`](super::FrameSource).
    ///
    /// Refused with [`FolioError::BadFrame`] if the block is not aligned to its size, not
    /// covered by the map, or any of its frames is part of a folio already.
    ///
    /// The frame source must never hand these frames out while the folio lives (they are not
    /// in it, or the source would fail its own allocations' checks): the folio layer only
    /// keeps the accounting; what the frames hold is the caller's business.
    pub fn adopt_folio(&self, pa: PhysAddr, order: FolioOrder) -> Result<Folio<'a>, FolioError> {
        let free = pa.is_aligned(order.bytes())
            && self
                .index(pa)
                .and_then(|i| self.pages.get(i..i + order.pages()))
                .is_some_and(|pages| pages.iter().all(PageMeta::is_clean));
        if !free {
            return Err(FolioError::BadFrame(pa));
        }
        self.init_folio_flags(pa, order, flag::ADOPTED)
            .ok_or(FolioError::BadFrame(pa))
    }

    /// The metadata of the fresh anon folio at `pa` mapped whole by PTEs of `space`, each page
    /// anon-exclusive (see [`MemMap::alloc_anon_mapped`]): per page its flags and a PTE
    /// mapcount of 1; on the head the caller's reference plus one per page and `space`'s slot;
    /// the folio-wide total on the second frame.
    pub(super) fn init_anon_mapped(
        &self,
        pa: PhysAddr,
        order: FolioOrder,
        space: SpaceId,
    ) -> Option<Folio<'a>> {
        let n = order.pages();
        if !pa.is_aligned(order.bytes()) {
            return None;
        }
        let i = self.index(pa)?;
        let pages = self.pages.get(i..i + n)?;
        // A frame of a folio has HEAD or TAIL set: a clean flags word is enough to tell.
        let used = pages
            .iter()
            .fold(0, |acc, p| acc | p.flags.load(Ordering::Relaxed));
        assert!(used == 0, "frame source returned {pa}, which is in use");
        debug_assert!(pages.iter().all(PageMeta::is_clean));
        let order_bits = (order.get() as u32) << flag::ORDER_SHIFT;
        for p in &pages[1..] {
            p.mapcount.store(1, Ordering::Relaxed);
            p.flags
                .store(flag::TAIL | order_bits | flag::ANON_EXCLUSIVE, Ordering::Relaxed);
        }
        let h = &pages[0];
        h.mapcount.store(1, Ordering::Relaxed);
        if let Some(s2) = pages.get(1) {
            s2.w[second::TOTAL].store(n as u32, Ordering::Relaxed);
        }
        h.w[head::REFS].store(1 + n as u32, Ordering::Relaxed);
        h.w[head::SLOT_ID].store(space.get(), Ordering::Relaxed);
        h.w[head::SLOT_COUNT].store(n as u32, Ordering::Relaxed);
        h.flags.store(
            flag::HEAD | order_bits | flag::ANON | flag::ANON_EXCLUSIVE,
            Ordering::Release,
        );
        Some(Folio::from_parts(pages, pa))
    }

    fn init_folio_flags(&self, pa: PhysAddr, order: FolioOrder, kind: u32) -> Option<Folio<'a>> {
        let n = order.pages();
        if !pa.is_aligned(order.bytes()) {
            return None;
        }
        let i = self.index(pa)?;
        let pages = self.pages.get(i..i + n)?;
        assert!(
            pages.iter().all(PageMeta::is_clean),
            "frame source returned {pa}, which is in use"
        );
        let order_bits = (order.get() as u32) << flag::ORDER_SHIFT;
        for p in &pages[1..] {
            p.flags.store(flag::TAIL | order_bits, Ordering::Relaxed);
        }
        pages[0].w[head::REFS].store(1, Ordering::Relaxed);
        pages[0]
            .flags
            .store(flag::HEAD | order_bits | kind, Ordering::Release);
        Some(Folio::from_parts(pages, pa))
    }
}

impl fmt::Debug for MemMap<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "MemMap[{}..{}, {} frames]",
            self.base(),
            self.end(),
            self.frames()
        )
    }
}
