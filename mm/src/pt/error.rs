//! Why a translation-table operation was refused.

use core::fmt;

use super::attrs::AttrsError;
use super::desc::Descriptor;
use crate::addr::{PhysAddr, VirtAddr};
use crate::frames::OutOfMemory;

/// Why an operation was refused. A refused operation changed nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// `len == 0`.
    ZeroLength,
    /// The virtual address is not page aligned.
    UnalignedVa(VirtAddr),
    /// The physical address is not page aligned.
    UnalignedPa(PhysAddr),
    /// The length is not a multiple of the page size.
    UnalignedLen(u64),
    /// `va + len` overflows 64 bits.
    VaOverflow,
    /// The range is not inside this root's half of the address space.
    OutOfRange {
        /// Start of the request.
        va: VirtAddr,
        /// Length of the request.
        len: u64,
    },
    /// `pa + len` exceeds the 48-bit output address space.
    PaOutOfRange(PhysAddr),
    /// The range already has a mapping at this address (the first one found).
    AlreadyMapped(VirtAddr),
    /// The attributes cannot be used here.
    BadAttrs(AttrsError),
    /// A table frame could not be allocated.
    OutOfMemory,
    /// The address is mapped by a level-1 or level-2 block: there is no level-3 entry.
    BlockMapped(VirtAddr),
    /// Nothing is mapped at this address.
    NotMapped(VirtAddr),
    /// Not a level-3 page descriptor (a PTE-level operation was given something else).
    BadDescriptor(Descriptor),
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MapError::ZeroLength => f.write_str("zero-length range"),
            MapError::UnalignedVa(va) => write!(f, "virtual address {va} is not page aligned"),
            MapError::UnalignedPa(pa) => write!(f, "physical address {pa} is not page aligned"),
            MapError::UnalignedLen(len) => write!(f, "length {len:#x} is not a multiple of 4 KiB"),
            MapError::VaOverflow => f.write_str("virtual range wraps around 2^64"),
            MapError::OutOfRange { va, len } => {
                write!(
                    f,
                    "range {va}+{len:#x} is outside this root's half of the address space"
                )
            }
            MapError::PaOutOfRange(pa) => write!(f, "physical range from {pa} exceeds 48 bits"),
            MapError::AlreadyMapped(va) => write!(f, "{va} is already mapped"),
            MapError::BadAttrs(e) => write!(f, "bad attributes: {e}"),
            MapError::OutOfMemory => f.write_str("out of memory for translation tables"),
            MapError::BlockMapped(va) => write!(f, "{va} is mapped by a block, not a page"),
            MapError::NotMapped(va) => write!(f, "{va} is not mapped"),
            MapError::BadDescriptor(d) => write!(f, "{d:?} is not a page descriptor"),
        }
    }
}

impl From<OutOfMemory> for MapError {
    fn from(_: OutOfMemory) -> MapError {
        MapError::OutOfMemory
    }
}

impl From<AttrsError> for MapError {
    fn from(e: AttrsError) -> MapError {
        MapError::BadAttrs(e)
    }
}
