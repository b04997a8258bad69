//! Virtual memory areas: the per-address-space map of user regions ([`VmaTree`]) and the
//! policy of `mmap`, `munmap`, `mprotect`, `madvise(MADV_DONTNEED)` and `fork` on it. A pure
//! data structure: it touches no page table and no folio; every mutating call returns the
//! ranges whose pages the caller must unmap, re-protect or zap. The calls, their arguments,
//! the merge rule and how the address space uses them are described in docs/mm.md ("VMAs").

mod args;
mod error;
mod region;
mod tree;

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;

pub use args::{MapAlign, Placement, SearchDirection, VmaConfig};
pub use error::VmaError;
pub use region::{
    ForkPolicy, ObjectId, VmProt, Vma, VmaFlags, VmaKind, LARGE_FOLIO_SIZE, MAX_MAPPINGS, MMAP_MIN_ADDR,
};
pub use tree::{Mapped, Plan, ProtChange, VmaTree};
