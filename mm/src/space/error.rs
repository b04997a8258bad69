//! Why a fault or an address-space operation was refused.

use core::fmt;

use crate::vma::VmaError;
use crate::VirtAddr;

/// Why an access is a segmentation fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SegvCause {
    /// No region contains the address (`SEGV_MAPERR`).
    Unmapped,
    /// The region's permissions forbid the access (`SEGV_ACCERR`).
    Access,
}

/// Why a fault (or a pin) could not be resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultError {
    /// The access is not allowed: deliver an error to the application.
    Segv {
        /// The faulting address.
        va: VirtAddr,
        /// Why.
        cause: SegvCause,
    },
    /// The page lies past the end of the file the region maps (`SIGBUS`, `BUS_ADRERR`):
    /// deliver an error to the application.
    Bus {
        /// The faulting address.
        va: VirtAddr,
    },
    /// No memory for a page or a table. Nothing changed; nothing leaked.
    Oom,
}

impl fmt::Display for FaultError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FaultError::Segv { va, cause } => write!(f, "segmentation fault at {va}: {cause:?}"),
            FaultError::Bus { va } => write!(f, "bus error at {va}: past the end of the file"),
            FaultError::Oom => f.write_str("out of memory"),
        }
    }
}

/// Why an address-space operation was refused. A refused operation changed nothing (see
/// docs/mm.md, "Out of memory", for fork).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SpaceError {
    /// The region layer refused the arguments.
    Vma(VmaError),
    /// No memory for a root, a table or a page.
    OutOfMemory,
    /// A shared mapping of a read-only file would be writable (`mmap` with `WRITE`, or
    /// `mprotect` adding it). (`EACCES`)
    ReadOnly,
}

impl From<VmaError> for SpaceError {
    fn from(e: VmaError) -> SpaceError {
        SpaceError::Vma(e)
    }
}

impl fmt::Display for SpaceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpaceError::Vma(e) => write!(f, "{e}"),
            SpaceError::OutOfMemory => f.write_str("out of memory"),
            SpaceError::ReadOnly => f.write_str("a read-only file cannot be mapped shared and writable"),
        }
    }
}
