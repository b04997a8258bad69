//! Tessera's memory manager: translation tables and TLB maintenance for AArch64 stage 1,
//! EL1&0 regime, 4 KiB granule, 48-bit virtual addresses; physical frames, folios, VMAs and
//! address spaces with process-fork semantics.
//!
//! This module is portable: it has no assembly and touches no system register. Everything
//! machine-specific goes through [`Platform`] (descriptor access, table frames, TLB
//! maintenance, barriers). The same code runs on the target and in host tests, where
//! `mm::model` implements `Platform` as a checking simulation of the MMU and its TLB.
//!
//! # Address space layout and levels
//!
//! `TCR_EL1.T0SZ = T1SZ = 16`: the lower half `[0, 2^48)` is translated through TTBR0 (user
//! address spaces, one [`Root`] each, [`RootKind::User`]) and the upper half
//! `[0xFFFF_0000_0000_0000, 2^64)` through TTBR1 (the kernel, [`RootKind::Kernel`]). Each tree
//! has four levels, numbered as the Arm ARM does: level 0 is the top (the table TTBRn points
//! to, 512 GiB per entry), level 3 the bottom (4 KiB pages). Blocks exist at level 1 (1 GiB)
//! and level 2 (2 MiB). See [`Level`].
//!
//! # Types
//!
//! * [`PhysAddr`], [`VirtAddr`]: address newtypes. [`Level`]: a level, with the index and
//!   boundary arithmetic.
//! * [`Table`] (a frame of 512 descriptors at a level and a VA) and [`Entry`] (one slot of a
//!   table) are different types. [`Descriptor`] is the raw `u64` with typed accessors for every
//!   field; [`Descriptor::kind`] decodes it at a level into [`DescriptorKind`].
//! * [`Attrs`] (permissions [`Prot`], memory type [`MemType`], global) is what callers pass;
//!   it maps to descriptor bits under the MAIR contract of [`MAIR_EL1_VALUE`].
//! * [`Root`]: map / unmap / protect / translate / leaves / copy_range / destroy; unmap with a
//!   per-leaf callback delivered after the TLB invalidation ([`Root::unmap_leaves`]); the
//!   level-3 slot of an address ([`Root::pte_entry`], [`Root::alloc_pte_entry`]).
//! * [`contpte`]: the PTE-level operations for the fault and fork paths (`set_ptes`,
//!   `clear_ptes`, `get_and_clear_ptes`, `wrprotect_ptes`, `pte_get`, `test_and_clear_young`,
//!   `set_access_flags`, methods of [`Root`]) and the Contiguous bit (CONTPTE: 16 level-3
//!   entries cached as one 64 KiB TLB entry), with its own design notes.
//! * [`AsidAllocator`]: ASIDs with generation rollover.
//! * [`Access`], [`El`], [`FaultKind`]: what an access is and how the MMU refused it (the
//!   fault handler's input, and the hardware model's output in host tests).
//!
//! # The walker
//!
//! Every operation is one call of a single generic range walker (`walk.rs`) with a different
//! visitor. At each level it steps through the entries intersecting `[addr, end)` with Linux's
//! `pXd_addr_end` arithmetic ([`Level::addr_end`]): `next = min(align_down(addr) + size, end)`
//! computed in wrapping arithmetic with the comparison done on `x - 1`, so that a range ending
//! at 2^64 (`end == 0`) or an entry whose end wraps to 0 needs no special case and nothing
//! overflows. Ranges are validated first: page aligned, non-empty, not wrapping, inside the
//! root's half (so a user range ends at most at 2^48 and a kernel range at 2^64).
//!
//! # Atomicity
//!
//! Each mutating operation first walks the range read-only to validate it (map: nothing already
//! mapped) and to count the table frames it will need, reserves all of them, and only then
//! writes. If the reservation fails the operation returns [`MapError::OutOfMemory`] with the
//! tables untouched; once writing starts it cannot fail.
//!
//! # Break-before-make
//!
//! The MMU may cache any valid descriptor it can reach, at any time (speculative walks), in the
//! TLB (leaves) and in walk caches (table descriptors). Replacing a live valid descriptor with
//! a different valid one can therefore leave the old and the new translation cached at once —
//! a TLB conflict, or a loss of coherency/ordering — unless the change is one the architecture
//! allows in place. The engine classifies a change of a live leaf as:
//!
//! * **in place**: only AP (permissions), PXN/UXN, AF, DBM or software bits differ. Written
//!   directly; a stricter permission still needs its TLBI (so does a relaxation: we invalidate
//!   it too rather than rely on spurious-fault handling).
//! * **break-before-make**: anything else — output address, memory type (AttrIndx),
//!   shareability, NS, nG, the Contiguous bit, or block ↔ table. Sequence: write the entry
//!   invalid; TLBI for it (`DSB ISHST; TLBI …; DSB ISH; ISB`), so that no PE holds the old
//!   entry; then write the new one. In between, accesses to the range fault — so the kernel
//!   must never break a block that maps what the break itself needs (its stack, its code, the
//!   tables being edited): keep those in regions that are never split.
//!
//! A folded (contiguous) 64 KiB block is changed as a unit: setting or clearing its Contiguous
//! bit is one break-before-make of all 16 entries with one invalidation of every page of the
//! block; a change that covers only part of a block unfolds it first; whole-block permission
//! and A/D changes are made in place. See [`contpte`].
//!
//! Splitting a block (unmap or protect of part of it) builds the replacement table first,
//! unlinked, with the 512 equivalent next-level leaves and the requested change already
//! applied (writes to an unlinked table need neither TLBI nor BBM), then replaces the block by
//! the table with break-before-make: one write invalid, one leaf TLBI for the block, one write.
//! New intermediate tables for map are likewise filled before being linked with a single
//! invalid → table write, preceded by `DSB ISHST` so the walker never sees the link before the
//! table's (zeroed) contents.
//!
//! # TLB maintenance
//!
//! See `tlb.rs` for the policy: operations gather the stale range and issue, at the end, one
//! by-VA TLBI per entry up to [`MAX_TLBI_OPS`], or range TLBIs when FEAT_TLBIRANGE exists, or
//! one by-ASID (user) / full (kernel) invalidation. Leaf-only changes use the last-level forms
//! with a TTL hint when all leaves share a level. Freeing a table needs the non-last-level form
//! (the walk caches may hold the descriptor that pointed to it) and happens only after the
//! invalidation has completed: empty tables left by an unmap, subtrees entirely inside the
//! unmapped range (unlinked with one write and freed whole), and everything on
//! [`Root::destroy`] (after one `ASIDE1IS` / `VMALLE1IS`).
//!
//! Invalid → valid (map) needs no TLBI: the architecture does not cache invalid entries, and a
//! final `DSB ISHST; ISB` ([`Platform::publish`]) makes the new entries visible.
//!
//! # Counters
//!
//! Each root keeps a [`Stats`]: descriptor writes, TLBIs by kind, barrier batches, tables
//! allocated/freed, break-before-make sequences and splits, folds and unfolds of 64 KiB
//! blocks, blocks mapped folded and removed whole.
//!
//! # Not yet
//!
//! The engine does not enable hardware AF/dirty management (the access and dirty state is kept
//! in the format that allows it, see [`Descriptor::writable`]; with it enabled, reading and
//! clearing an entry would need an atomic swap in [`Platform`], which it does not have yet),
//! does not use FEAT_BBM level 1/2 to avoid the BBM window (and so never folds kernel
//! mappings), does not fold level-2 blocks (32 MiB contiguous groups), and
//! [`Root::copy_range`] maps the copies unfolded.

#![cfg_attr(not(test), no_std)]
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
    Descriptor, DescriptorKind, Entry, FlushRequest, Leaf, Leaves, MapError, MemType, NewPteTable, Platform,
    Prot, PteTable, Root, RootKind, Shareability, Stats, Table, TlbOp, TlbRange, TlbScope, Translation,
    MAIR_EL1_VALUE, MAX_TLBI_OPS, MAX_TLBI_RANGE_PAGES, PTE_TABLE_SPAN,
};
