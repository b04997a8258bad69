//! Small types: orders, kinds, address-space ids, errors, and the frame source.

use core::fmt;
use core::num::NonZeroU32;

use crate::frames::OutOfMemory;
use crate::{PhysAddr, PAGE_SIZE};

/// The order of a folio: it spans 2^order naturally aligned 4 KiB frames. Orders 0..=9.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FolioOrder(u8);

impl FolioOrder {
    /// One 4 KiB page.
    pub const SMALL: FolioOrder = FolioOrder(0);
    /// 64 KiB: one CONTPTE run (16 level-3 entries).
    pub const CONT: FolioOrder = FolioOrder(4);
    /// 2 MiB: what one level-2 block maps. The only order that can be mapped *entirely*.
    pub const PMD: FolioOrder = FolioOrder(9);
    /// Largest supported order.
    pub const MAX: FolioOrder = FolioOrder::PMD;

    /// The order `order`, if supported (0..=9).
    pub const fn new(order: u32) -> Option<FolioOrder> {
        if order <= Self::MAX.0 as u32 {
            Some(FolioOrder(order as u8))
        } else {
            None
        }
    }
    /// The order as a number.
    pub const fn get(self) -> u8 {
        self.0
    }
    /// Frames in a folio of this order.
    pub const fn pages(self) -> usize {
        1 << self.0
    }
    /// Bytes in a folio of this order.
    pub const fn bytes(self) -> u64 {
        PAGE_SIZE << self.0
    }
}

/// What a folio holds, fixed at allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FolioKind {
    /// Anonymous memory: mapped with the `*_anon_*` operations, has anon-exclusive pages,
    /// copy-on-write after fork.
    Anon,
    /// File / shared memory (page cache, shared anonymous memory, kernel buffers mapped to
    /// users): mapped with the `*_file_*` operations; never anon-exclusive.
    File,
}

/// The identity of an address space for mapcount tracking (Linux's `mm_id`).
///
/// Non-zero (0 marks a free tracking slot, so that zeroed metadata is clean). Ids must be
/// unique among live address spaces; an id may be reused only once the address space that
/// had it has removed all its mappings. [`MemMap::new_space_id`](super::MemMap::new_space_id)
/// hands out such ids (address spaces get theirs there); [`SpaceId::new`] names one directly,
/// for tests of the folio layer alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpaceId(NonZeroU32);

impl SpaceId {
    /// The id `id`, if non-zero.
    pub const fn new(id: u32) -> Option<SpaceId> {
        match NonZeroU32::new(id) {
            Some(n) => Some(SpaceId(n)),
            None => None,
        }
    }
    /// The raw id.
    pub const fn get(self) -> u32 {
        self.0.get()
    }
}

impl fmt::Display for SpaceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "space {}", self.0)
    }
}

/// Why a folio operation was refused. **A refused operation changed nothing.**
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FolioError {
    /// The frame source had no block of the requested order.
    OutOfMemory,
    /// The frame source returned a block that is misaligned or not covered by the memory
    /// map. The block was returned to the source.
    BadFrame(PhysAddr),
    /// `nr == 0`, or pages `[first, first + nr)` are not all inside the folio.
    PageRange {
        /// First page index.
        first: usize,
        /// Number of pages.
        nr: usize,
    },
    /// An anon operation on a file folio.
    NotAnon,
    /// A file operation on an anon folio.
    NotFile,
    /// An entire-mapping operation on a folio whose order is not [`FolioOrder::PMD`].
    NotPmdMappable,
    /// Removing or duplicating a mapping of a page that has none.
    NotMapped {
        /// Page index in the folio.
        page: usize,
    },
    /// Removing, splitting or duplicating an entire mapping of a folio that has none.
    NoEntireMapping,
    /// Adding an exclusive anon mapping of a page that is already mapped.
    AlreadyMapped {
        /// Page index in the folio.
        page: usize,
    },
    /// Adding a second mapping of an anon-exclusive page: duplicate it with
    /// [`try_dup_anon_ptes`](super::Folio::try_dup_anon_ptes) instead.
    AnonExclusive {
        /// Page index in the folio.
        page: usize,
    },
    /// The folio may be pinned and the page is anon-exclusive: it cannot be shared (the
    /// caller copies it instead).
    MaybePinned {
        /// Page index in the folio.
        page: usize,
    },
    /// Pinning an anon page that is not anon-exclusive (unshare it first).
    NotExclusive {
        /// Page index in the folio.
        page: usize,
    },
    /// Unpinning a folio whose pin count is zero.
    NotPinned,
}

impl From<OutOfMemory> for FolioError {
    fn from(_: OutOfMemory) -> FolioError {
        FolioError::OutOfMemory
    }
}

impl fmt::Display for FolioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FolioError::OutOfMemory => f.write_str("out of physical memory for a folio"),
            FolioError::BadFrame(pa) => {
                write!(
                    f,
                    "frame source returned {pa}, which the memory map does not cover"
                )
            }
            FolioError::PageRange { first, nr } => {
                write!(f, "pages {first}+{nr} are not a non-empty range of the folio")
            }
            FolioError::NotAnon => f.write_str("anon operation on a file folio"),
            FolioError::NotFile => f.write_str("file operation on an anon folio"),
            FolioError::NotPmdMappable => f.write_str("only order-9 folios can be mapped entirely"),
            FolioError::NotMapped { page } => write!(f, "page {page} is not mapped"),
            FolioError::NoEntireMapping => f.write_str("the folio has no entire mapping"),
            FolioError::AlreadyMapped { page } => {
                write!(
                    f,
                    "page {page} is already mapped; it cannot be mapped exclusively"
                )
            }
            FolioError::AnonExclusive { page } => {
                write!(f, "page {page} is anon-exclusive; duplicate it instead")
            }
            FolioError::MaybePinned { page } => {
                write!(f, "page {page} is anon-exclusive in a possibly pinned folio")
            }
            FolioError::NotExclusive { page } => {
                write!(f, "anon page {page} is not exclusive; unshare it before pinning")
            }
            FolioError::NotPinned => f.write_str("the folio is not pinned"),
        }
    }
}

/// Where folios get their frames and return them: naturally aligned blocks of 2^order frames.
///
/// On the target, implemented by the kernel runtime over its buddy allocator; in tests over
/// [`memory::FrameAllocator`](crate::frames::FrameAllocator) (implemented below).
pub trait FrameSource {
    /// A block of `order.pages()` frames aligned to its size.
    fn alloc(&mut self, order: FolioOrder) -> Result<PhysAddr, OutOfMemory>;
    /// Returns a block obtained from `alloc` with the same order.
    fn free(&mut self, pa: PhysAddr, order: FolioOrder);
    /// Returns every block of `blocks` (as [`free`](Self::free) each): one call for a batch,
    /// which an implementation may serve under one lock.
    fn free_many(&mut self, blocks: &[(PhysAddr, FolioOrder)]) {
        for &(pa, order) in blocks {
            self.free(pa, order);
        }
    }
}

impl<S: FrameSource + ?Sized> FrameSource for &mut S {
    fn alloc(&mut self, order: FolioOrder) -> Result<PhysAddr, OutOfMemory> {
        (**self).alloc(order)
    }
    fn free(&mut self, pa: PhysAddr, order: FolioOrder) {
        (**self).free(pa, order)
    }
    fn free_many(&mut self, blocks: &[(PhysAddr, FolioOrder)]) {
        (**self).free_many(blocks)
    }
}

impl FrameSource for crate::frames::FrameAllocator {
    fn alloc(&mut self, order: FolioOrder) -> Result<PhysAddr, OutOfMemory> {
        crate::frames::FrameAllocator::alloc(self, order.get() as usize)
            .map(PhysAddr)
            .map_err(|_| OutOfMemory)
    }
    fn free(&mut self, pa: PhysAddr, order: FolioOrder) {
        crate::frames::FrameAllocator::free(self, pa.0, order.get() as usize)
            .expect("folio frames returned with a bad order or alignment");
    }
}
