//! Why a call on the region tree was refused, and the errno a system call returns for it.

use core::fmt;

#[cfg(doc)]
use crate::{PAGE_SIZE, USER_END};

/// Errors of the [`VmaTree`](crate::vma::VmaTree) calls. On error the tree is unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VmaError {
    /// An address or a length is not a multiple of [`PAGE_SIZE`]. (`EINVAL`)
    Unaligned,
    /// The length is zero. (`EINVAL`)
    ZeroLength,
    /// The address is not a user address: at or above [`USER_END`], in the non-canonical hole
    /// or the kernel half. (`EINVAL`)
    NotUser,
    /// `addr + len` wraps around or passes [`USER_END`]. (`ENOMEM`, as Linux's mmap)
    Overflow,
    /// A fixed mapping starts in the never-mappable first [`MMAP_MIN_ADDR`](crate::vma::MMAP_MIN_ADDR) bytes. (`EPERM`,
    /// as Linux's `mmap_min_addr`)
    Reserved,
    /// A fixed address is not a multiple of the requested [`MapAlign`](crate::vma::MapAlign). (`EINVAL`)
    FixedMisaligned,
    /// An object offset is not page aligned, or `offset + len` wraps. (`EINVAL`)
    BadOffset,
    /// [`Placement::FixedNoReplace`](crate::vma::Placement::FixedNoReplace) and the range is not entirely free. (`EEXIST`)
    Exists,
    /// No free range of the size and alignment in the search window. (`ENOMEM`)
    NoSpace,
    /// `mprotect` / `madvise_dontneed` of a range with unmapped pages. (`ENOMEM`)
    NotMapped,
    /// The call would leave more than [`VmaConfig::max_mappings`](crate::vma::VmaConfig::max_mappings) regions. (`ENOMEM`)
    TooManyMappings,
}

impl VmaError {
    /// The (positive) Linux errno the equivalent system call would return.
    pub const fn errno(self) -> i32 {
        const EPERM: i32 = 1;
        const ENOMEM: i32 = 12;
        const EEXIST: i32 = 17;
        const EINVAL: i32 = 22;
        match self {
            VmaError::Unaligned
            | VmaError::ZeroLength
            | VmaError::NotUser
            | VmaError::FixedMisaligned
            | VmaError::BadOffset => EINVAL,
            VmaError::Reserved => EPERM,
            VmaError::Exists => EEXIST,
            VmaError::Overflow | VmaError::NoSpace | VmaError::NotMapped | VmaError::TooManyMappings => {
                ENOMEM
            }
        }
    }
}

impl fmt::Display for VmaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VmaError::Unaligned => "address or length not page aligned",
            VmaError::ZeroLength => "zero length",
            VmaError::NotUser => "address outside the user half",
            VmaError::Overflow => "range wraps or passes the end of the user half",
            VmaError::Reserved => "range in the never-mappable low 64 KiB",
            VmaError::FixedMisaligned => "fixed address not aligned as requested",
            VmaError::BadOffset => "object offset unaligned or wrapping",
            VmaError::Exists => "range already mapped",
            VmaError::NoSpace => "no free range large enough",
            VmaError::NotMapped => "range not entirely mapped",
            VmaError::TooManyMappings => "too many mappings",
        })
    }
}
