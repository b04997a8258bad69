//! What the queries and the unmap callbacks report: one leaf mapping, or the translation of
//! one address.

use super::attrs::Attrs;
use super::desc::Descriptor;
use crate::addr::{Level, PhysAddr, VirtAddr};

/// Result of [`crate::Root::translate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// Physical address of the translated byte.
    pub pa: PhysAddr,
    /// Attributes of the leaf.
    pub attrs: Attrs,
    /// Level of the leaf (1 or 2: block; 3: page).
    pub level: Level,
    /// The leaf descriptor.
    pub desc: Descriptor,
}

/// A leaf mapping, as reported by the leaf iterator and the copy callback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leaf {
    /// First virtual address.
    pub va: VirtAddr,
    /// Physical address of `va`.
    pub pa: PhysAddr,
    /// Bytes mapped: the entry size, or the part inside the requested range for
    /// [`crate::Root::copy_range`].
    pub size: u64,
    /// Level of the leaf descriptor.
    pub level: Level,
    /// Its attributes.
    pub attrs: Attrs,
    /// The leaf descriptor.
    pub desc: Descriptor,
}
