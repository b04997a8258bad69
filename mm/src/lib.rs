//! Tessera's memory manager: translation tables and TLB maintenance for AArch64 stage 1,
//! EL1&0 regime, 4 KiB granule, 48-bit virtual addresses; physical frames, folios, VMAs and
//! address spaces with process-fork semantics.
//!
//! Portable: no assembly, no system register. Everything machine-specific goes through
//! [`Platform`]; in host tests `model` implements it as a checking simulation of the MMU and
//! its TLB. The folders are layers, bottom up: `addr.rs`, `access.rs` and `frames.rs`; `pt/`
//! (the translation-table engine); `folio/`; `vma/`; `space/`. docs/mm.md has the map and
//! the design.

#![cfg_attr(not(any(test, feature = "model")), no_std)]
#![deny(clippy::undocumented_unsafe_blocks)]

extern crate alloc;

mod access;
mod addr;
pub mod folio;
pub mod frames;
mod pt;
pub mod space;
pub mod vma;

#[cfg(test)]
mod fixture;
#[cfg(any(test, feature = "model"))]
pub mod model;
#[cfg(test)]
mod tests;

pub use access::{Access, El, FaultKind};
pub use addr::{
    Level, PhysAddr, VirtAddr, ENTRIES, KERNEL_BASE, PAGE_SHIFT, PAGE_SIZE, PA_BITS, PA_END, USER_END,
    VA_BITS,
};
pub use frames::{OutOfMemory, PhysRange};
pub use pt::contpte::{CONT_PTES, CONT_SIZE};
pub use pt::{asid, contpte, tlb};
pub use pt::{
    bits, AccessPerm, AccessUpdate, Activation, ApTable, Asid, AsidAllocator, AsidContext, Attrs, AttrsError,
    CopyPolicy, CopyPte, CopyUnit, Descriptor, DescriptorKind, Entry, FlushRequest, Leaf, Leaves, MapError,
    MemType, NewPteTable, Platform, Prot, PteTable, Root, RootKind, Shareability, Stats, Table, TlbOp,
    TlbRange, TlbScope, Translation, MAIR_EL1_VALUE, MAX_TLBI_OPS, MAX_TLBI_RANGE_PAGES, PTE_TABLE_SPAN,
};
