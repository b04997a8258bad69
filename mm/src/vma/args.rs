//! The arguments of the tree's calls: placement, alignment, and the search window and limits
//! of a tree.

#[cfg(doc)]
use super::error::VmaError;
use super::region::{VmaFlags, LARGE_FOLIO_SIZE, MAX_MAPPINGS, MMAP_MIN_ADDR};
use crate::{VirtAddr, PAGE_SIZE, USER_END};

/// Where [`VmaTree::mmap`](crate::vma::VmaTree::mmap) places a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Placement {
    /// Anywhere: searched in the configured window.
    Any,
    /// At this address (rounded up to the alignment) if it is free and valid, else as `Any`.
    Hint(VirtAddr),
    /// Exactly here, replacing what is mapped there (`MAP_FIXED`).
    Fixed(VirtAddr),
    /// Exactly here, failing with [`VmaError::Exists`] if anything is mapped there
    /// (`MAP_FIXED_NOREPLACE`).
    FixedNoReplace(VirtAddr),
}

/// Alignment of a new mapping's start address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MapAlign {
    /// 4 KiB: a page.
    Page,
    /// 64 KiB: a large folio (sets [`VmaFlags::LARGE_FOLIOS`]).
    Size64K,
    /// 2 MiB: a level-2 block (sets [`VmaFlags::LARGE_FOLIOS`]; nothing maps 2 MiB folios yet,
    /// but the alignment keeps that possible).
    Size2M,
}

impl MapAlign {
    /// The alignment in bytes.
    pub const fn bytes(self) -> u64 {
        match self {
            MapAlign::Page => PAGE_SIZE,
            MapAlign::Size64K => LARGE_FOLIO_SIZE,
            MapAlign::Size2M => 2 << 20,
        }
    }
    /// The flags a region mapped with this alignment gets.
    pub const fn flags(self) -> VmaFlags {
        match self {
            MapAlign::Page => VmaFlags::NONE,
            MapAlign::Size64K | MapAlign::Size2M => VmaFlags::LARGE_FOLIOS,
        }
    }
}

/// Direction of the gap search of [`Placement::Any`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SearchDirection {
    /// The highest suitable address (Linux's default layout).
    TopDown,
    /// The lowest suitable address (Linux's legacy layout).
    BottomUp,
}

/// Per-address-space configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VmaConfig {
    /// Lowest address [`Placement::Any`] may return (page aligned, `>= MMAP_MIN_ADDR`).
    pub search_low: VirtAddr,
    /// End of the window [`Placement::Any`] searches (page aligned, `<= USER_END`). Set it
    /// below the stack and whatever else the process layout reserves.
    pub search_high: VirtAddr,
    /// Search direction.
    pub direction: SearchDirection,
    /// Maximum number of regions.
    pub max_mappings: usize,
}

impl Default for VmaConfig {
    /// The whole mappable user range, top-down, [`MAX_MAPPINGS`] regions.
    fn default() -> Self {
        VmaConfig {
            search_low: VirtAddr::new(MMAP_MIN_ADDR),
            search_high: VirtAddr::new(USER_END),
            direction: SearchDirection::TopDown,
            max_mappings: MAX_MAPPINGS,
        }
    }
}
