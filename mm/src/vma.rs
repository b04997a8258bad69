//! Virtual memory areas: the per-address-space map of user regions, and the policy of
//! `mmap`, `munmap`, `mprotect`, `madvise(MADV_DONTNEED)` and `fork` on it.
//!
//! This module is a pure data structure. It touches no page table and no folio: every
//! mutating call edits the region map and returns the address ranges whose pages the caller
//! must now unmap, re-protect or zap, together with what was mapped there (permissions, kind,
//! shared object and offset), so that the caller can release or update the pages.
//!
//! # Types
//!
//! * [`Vma`]: one region `[start, end)` — page aligned, non-empty, inside
//!   `[MMAP_MIN_ADDR, USER_END)` — with its permissions [`VmProt`], its [`VmaKind`] and its
//!   [`VmaFlags`]. Pieces of regions returned by the calls are `Vma`s too, clipped to the
//!   affected range (object offsets adjusted accordingly).
//! * [`VmaKind`]: what backs the pages. [`VmaKind::AnonPrivate`] (zero-filled on first touch,
//!   copy-on-write across fork), [`VmaKind::Shared`] (the pages belong to an object `obj` —
//!   shared anonymous memory or a file —, the region's first page being the object's page at
//!   byte `offset`) or [`VmaKind::FilePrivate`] (a private mapping of such an object: its
//!   pages until written, then private copies, copy-on-write across fork). Everything that
//!   depends on the kind (splitting, merging, fork policy, offset lookup) is a method of
//!   `VmaKind`.
//! * `H`, the object handle: any `Clone + Eq` type, [`ObjectId`] by default. The tree
//!   clones it whenever a region is split or forked and drops it when a piece is returned. A
//!   reference-counted handle (a newtype around `Arc<Object>` whose `==` is `Arc::ptr_eq`)
//!   therefore counts exactly the regions, in every address space, that still reference the
//!   object, and the object is freed when the caller drops the last returned piece. `==` must
//!   mean "same object": it is what the merge rule compares.
//! * [`VmaTree`]: the ordered map (a `BTreeMap` keyed by start address) of the non-overlapping
//!   regions of one address space.
//!
//! # Calls
//!
//! Every mutating call validates everything first and either succeeds completely or returns a
//! [`VmaError`] with the tree untouched (on error nothing is changed and nothing is returned;
//! only memory-allocation failure, which aborts, is outside this guarantee). The tree is
//! *maximally merged* after every call (see below).
//!
//! * [`VmaTree::mmap`]: maps `len` bytes at a [`Placement`] with an alignment [`MapAlign`]:
//!   - [`Placement::Any`]: the tree chooses the address by a first-fit search of the
//!     configured search window ([`VmaConfig`]): **top-down** by default (the highest suitable
//!     address, as Linux does), bottom-up on request (the lowest). "Suitable" means a multiple of
//!     the alignment with `[a, a + len)` free and inside the window.
//!   - [`Placement::Hint`]: the hint is rounded up to the alignment and used if that range is
//!     free and inside `[MMAP_MIN_ADDR, USER_END)` (even outside the search window); otherwise
//!     the call behaves as `Any`. A hint is never an error.
//!   - [`Placement::Fixed`] (`MAP_FIXED`): exactly at the address, which must be a multiple of
//!     the alignment. Mappings in the range are replaced; the replaced pieces are returned in
//!     [`Mapped::replaced`] for the caller to unmap and release.
//!   - [`Placement::FixedNoReplace`] (`MAP_FIXED_NOREPLACE`): as `Fixed` but fails with
//!     [`VmaError::Exists`] if anything is mapped in the range.
//!
//!   Alignments above 4 KiB also set [`VmaFlags::LARGE_FOLIOS`]: the region may be populated
//!   with 64 KiB folios where a whole aligned block fits ([`Vma::large_folio_block`]).
//! * [`VmaTree::munmap`]: removes every mapped page of the range; holes are fine, a range
//!   with nothing mapped is a successful no-op (a zero length is refused with
//!   [`VmaError::ZeroLength`], as Linux's `munmap` answers `EINVAL`). Partially covered
//!   regions are split. Returns the removed pieces, in address order.
//! * [`VmaTree::mprotect`]: changes the permissions of the range, which must be mapped
//!   entirely (else [`VmaError::NotMapped`] and nothing changes — Linux instead changes the
//!   part before the first hole and then fails). Regions are split at the range ends and
//!   merged where the new permissions allow. Returns only the pieces whose permissions
//!   actually changed, with their old permissions.
//! * [`VmaTree::madvise_dontneed`]: validates that the range is mapped entirely (else
//!   [`VmaError::NotMapped`]; Linux zaps the mapped parts and then fails) and returns its
//!   pieces, whose pages the caller zaps. The regions themselves do not change: private
//!   pages read back as zero, shared pages are re-read from the object.
//! * [`VmaTree::fork`]: a copy of the tree for the child. Each region's
//!   [`Vma::fork_policy`] tells the caller how to copy its pages: private regions become
//!   copy-on-write in both address spaces, shared regions keep pointing at the same object.
//! * [`VmaTree::plan_mmap`], [`VmaTree::plan_munmap`], [`VmaTree::plan_mprotect`],
//!   [`VmaTree::plan_madvise_dontneed`] and [`VmaTree::apply`]: the same calls in two steps
//!   ("Validate, then change", below).
//! * Queries: [`VmaTree::find`] (the region containing an address: the fault lookup),
//!   [`VmaTree::overlapping`], [`VmaTree::iter`], [`VmaTree::len`],
//!   [`VmaTree::mapped_bytes`], and [`VmaTree::check`] (the structural invariants).
//!
//! # Arguments
//!
//! Addresses and lengths must be multiples of [`PAGE_SIZE`] (Linux rounds lengths up; a
//! system-call layer can do that before calling). Checked in this order, the first failure
//! being reported:
//!
//! 1. [`VmaError::Unaligned`]: address or length not page aligned;
//! 2. [`VmaError::ZeroLength`], for every call (as Linux's `mmap` and `munmap`; Linux's
//!    `mprotect` and `madvise` accept a zero length, not this layer);
//! 3. [`VmaError::NotUser`]: the address is at or above [`USER_END`] (the non-canonical hole
//!    or the kernel half);
//! 4. [`VmaError::Overflow`]: `addr + len` wraps or passes [`USER_END`];
//!
//! then, for a fixed `mmap`: [`VmaError::Reserved`] (the range starts below
//! [`MMAP_MIN_ADDR`]), [`VmaError::FixedMisaligned`], [`VmaError::BadOffset`],
//! [`VmaError::Exists`] (`FixedNoReplace` only); for an `Any` / `Hint` `mmap` (only the length
//! goes through steps 1–2): [`VmaError::BadOffset`], [`VmaError::NoSpace`]; for `mprotect` /
//! `madvise_dontneed`: [`VmaError::NotMapped`]; and last, for every call that edits the tree,
//! [`VmaError::TooManyMappings`].
//!
//! The first [`MMAP_MIN_ADDR`] (64 KiB) of the address space are never mappable, so that a
//! null pointer plus a small offset always faults. `munmap` of a range there is a no-op and
//! `mprotect` of it fails with `NotMapped`, as nothing can be mapped there.
//!
//! # Validate, then change
//!
//! Each call is a `plan_*` step, which checks everything (every error above, including
//! [`VmaError::TooManyMappings`]) and computes the edit and the result without changing the
//! tree, and [`VmaTree::apply`], which carries the [`Plan`] out and cannot fail. The one-step
//! calls are exactly the two in a row. A caller that must prepare something before the tree
//! changes — the address space breaks the sharing of page tables, which can fail for lack
//! of memory — does it between the two, once the arguments are known to be valid and
//! [`Plan::pages`] tells which existing pages the call changes. A plan applies only to the
//! tree it was made from, unchanged since (checked).
//!
//! # The merge rule
//!
//! Two regions `a`, `b` are *mergeable* ([`Vma::mergeable`]) when `a.end == b.start`, they have
//! the same permissions and flags, and `b`'s kind continues `a`'s: both private anonymous, or
//! both of the same kind (shared, or private object mappings) backed by the same object (`==`)
//! with `b.offset == a.offset + a.len()`. After every call
//! no two neighbouring regions are mergeable: the tree is a canonical function of the per-page
//! state (permissions, kind, object, offset of each page, flags), whatever sequence of calls
//! produced it. Merges happen after `mmap` and `mprotect`; `munmap` never creates a merge
//! opportunity.
//!
//! # Limit on the number of regions
//!
//! A call that would leave more than [`VmaConfig::max_mappings`] regions (default
//! [`MAX_MAPPINGS`], 65 536, Linux's `vm.max_map_count`) fails with
//! [`VmaError::TooManyMappings`] before changing anything. The count checked is the exact count
//! after splitting *and* merging, so a call that splits one region but merges others, or that
//! does not increase the count, is never refused (Linux checks intermediate counts instead).
//!
//! # Using it with the page tables
//!
//! The tree and the page tables of an address space change together under one lock. The
//! caller's side of each flow:
//!
//! * **Fault** at `va`: [`VmaTree::find`]; no region, or an access `vma.prot` forbids, is a
//!   segmentation fault. Otherwise the page's attributes come from [`VmProt::pte_prot`]. A
//!   missing page of a private anonymous region is a fresh zeroed folio (64 KiB if
//!   [`Vma::large_folio_block`] allows and the block is empty), of a shared region the
//!   object's page at [`Vma::object_offset`], of a private object mapping that page
//!   read-only (a write copies it instead). A write to a present read-only page of a
//!   writable private region is a copy-on-write break.
//! * **munmap** and the `replaced` pieces of a fixed **mmap**: unmap each piece's range, flush
//!   the TLB, then release the pages (private: drop the folio reference; shared: drop the
//!   mapping only), then drop the piece (its object handle).
//! * **mprotect**: re-protect each [`ProtChange`] piece. Removing permissions applies to every
//!   page; adding `WRITE` to a private piece must not make copy-on-write pages writable (leave
//!   that to the write fault, or check that the folio is exclusive). `PROT_NONE` pages must
//!   keep their contents although no valid descriptor can map them.
//! * **madvise(MADV_DONTNEED)**: unmap each piece and flush; release private pages (they read
//!   back as zero, or as the object's page in a private object mapping); shared pages stay
//!   in their object.
//! * **fork**: [`VmaTree::fork`] for the child, then per parent region by
//!   [`Vma::fork_policy`]: `CopyOnWrite` copies the mapped pages into the child read-only
//!   (`Root::copy_range`), write-protects them in the parent and takes a folio reference per
//!   copy; `Share` copies them unchanged.
//! * **exit**: [`VmaTree::unmap_all`], release everything, destroy the root.
//!
//! # Cost
//!
//! `find` is `O(log n)`. The edits are `O((k + 1) log n)` for `k` regions touching the range.
//! The gap search of `Any` placement is linear in the number of regions it passes over (no gap
//! augmentation as in Linux's maple tree); fine for the region counts of a library OS.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::fmt;
use core::ops::BitOr;

use super::{Prot, VirtAddr, PAGE_SIZE, USER_END};

/// The first 64 KiB of every address space are never mappable: `mmap` refuses them and the
/// search never returns them.
pub const MMAP_MIN_ADDR: u64 = 0x1_0000;

/// Default limit on the number of regions of one address space (Linux's `vm.max_map_count`).
pub const MAX_MAPPINGS: usize = 65_536;

/// The large-folio size, and the block a [`VmaFlags::LARGE_FOLIOS`] region is populated with.
pub const LARGE_FOLIO_SIZE: u64 = 64 * 1024;

/// The default object handle: an opaque number the caller assigns. See the module
/// docs for reference-counted handles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectId(pub u64);

/// User access permissions of a region: a set of `READ`, `WRITE`, `EXEC`. Any combination is
/// accepted, including none (`PROT_NONE`: a reservation whose pages are never mapped).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct VmProt(u8);

impl VmProt {
    /// No access.
    pub const NONE: VmProt = VmProt(0);
    /// Read.
    pub const READ: VmProt = VmProt(1 << 0);
    /// Write.
    pub const WRITE: VmProt = VmProt(1 << 1);
    /// Execute.
    pub const EXEC: VmProt = VmProt(1 << 2);
    /// Read and write.
    pub const RW: VmProt = VmProt(Self::READ.0 | Self::WRITE.0);
    /// Read and execute.
    pub const RX: VmProt = VmProt(Self::READ.0 | Self::EXEC.0);

    /// The set with the given bits (`READ = 1`, `WRITE = 2`, `EXEC = 4`; others ignored).
    pub const fn from_bits_truncate(bits: u8) -> VmProt {
        VmProt(bits & 0b111)
    }
    /// The raw bits.
    pub const fn bits(self) -> u8 {
        self.0
    }
    /// Whether every permission of `other` is in `self`.
    pub const fn contains(self, other: VmProt) -> bool {
        self.0 & other.0 == other.0
    }
    /// Union.
    pub const fn union(self, other: VmProt) -> VmProt {
        VmProt(self.0 | other.0)
    }
    /// Whether no access at all is allowed.
    pub const fn is_none(self) -> bool {
        self.0 == 0
    }
    /// The engine permissions of a present page of a region with these permissions, or `None`
    /// for `NONE` (no page may be mapped). Stage 1 cannot express write-only or execute-only
    /// user pages, so any access implies read, as on Linux/arm64 without FEAT_EPAN. The caller
    /// still maps copy-on-write pages without `WRITE` (see [`Vma::fork_policy`]).
    pub const fn pte_prot(self) -> Option<Prot> {
        if self.is_none() {
            return None;
        }
        let mut p = Prot::READ.union(Prot::USER);
        if self.contains(VmProt::WRITE) {
            p = p.union(Prot::WRITE);
        }
        if self.contains(VmProt::EXEC) {
            p = p.union(Prot::EXEC_USER);
        }
        Some(p)
    }
}

impl BitOr for VmProt {
    type Output = VmProt;
    fn bitor(self, rhs: VmProt) -> VmProt {
        self.union(rhs)
    }
}

impl fmt::Debug for VmProt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = |p: VmProt, ch: char| if self.contains(p) { ch } else { '-' };
        write!(
            f,
            "{}{}{}",
            c(VmProt::READ, 'r'),
            c(VmProt::WRITE, 'w'),
            c(VmProt::EXEC, 'x')
        )
    }
}

/// Region flags: properties other than permissions and backing. Regions merge only with equal
/// flags.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct VmaFlags(u8);

impl VmaFlags {
    /// No flag.
    pub const NONE: VmaFlags = VmaFlags(0);
    /// The region was mapped with at least 64 KiB alignment: its pages may be allocated as
    /// 64 KiB folios wherever an aligned 64 KiB block lies entirely inside the region.
    pub const LARGE_FOLIOS: VmaFlags = VmaFlags(1 << 0);

    /// The raw bits.
    pub const fn bits(self) -> u8 {
        self.0
    }
    /// Whether every flag of `other` is in `self`.
    pub const fn contains(self, other: VmaFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl fmt::Debug for VmaFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.contains(VmaFlags::LARGE_FOLIOS) {
            f.write_str("LARGE_FOLIOS")
        } else {
            f.write_str("-")
        }
    }
}

/// How a region's pages are copied into a child on fork.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ForkPolicy {
    /// Private pages: the child maps the parent's pages read-only, and the parent's writable
    /// pages become read-only too; the first write in either copies the page (unless the
    /// writer is by then its only user). Pages never touched stay unmapped in both.
    CopyOnWrite,
    /// Shared pages: the child maps the same pages with the same permissions (or leaves them
    /// to be faulted in from the object).
    Share,
}

/// What backs a region's pages. `H` is the object handle (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum VmaKind<H = ObjectId> {
    /// Private anonymous memory: zero-filled on first touch, copy-on-write across fork.
    AnonPrivate,
    /// Shared memory (`MAP_SHARED`): the page at `start + i` is the page at byte `offset + i`
    /// of `obj` (shared anonymous memory or a file), in every address space that maps it
    /// (fork keeps the object).
    Shared {
        /// The object.
        obj: H,
        /// Byte offset in `obj` of the region's first page (page aligned).
        offset: u64,
    },
    /// A private mapping of an object (`MAP_PRIVATE` of a file or of a shared memory
    /// object): the page at `start + i` reads as the page at byte `offset + i` of `obj`
    /// until this address space writes it, which gives it a private copy (copy-on-write,
    /// also across fork).
    FilePrivate {
        /// The object.
        obj: H,
        /// Byte offset in `obj` of the region's first page (page aligned).
        offset: u64,
    },
}

impl<H: Clone + Eq> VmaKind<H> {
    /// Whether the pages are shared with the backing object (writes are visible to every
    /// mapping of it) rather than private to this address space.
    pub fn is_shared(&self) -> bool {
        match self {
            VmaKind::AnonPrivate | VmaKind::FilePrivate { .. } => false,
            VmaKind::Shared { .. } => true,
        }
    }

    /// The backing object, if any.
    pub fn object(&self) -> Option<&H> {
        match self {
            VmaKind::AnonPrivate => None,
            VmaKind::Shared { obj, .. } | VmaKind::FilePrivate { obj, .. } => Some(obj),
        }
    }

    /// The byte offset in the backing object of the region's first page, if any.
    pub fn offset(&self) -> Option<u64> {
        match self {
            VmaKind::AnonPrivate => None,
            VmaKind::Shared { offset, .. } | VmaKind::FilePrivate { offset, .. } => Some(*offset),
        }
    }

    /// How pages of this kind are copied on fork.
    pub fn fork_policy(&self) -> ForkPolicy {
        if self.is_shared() {
            ForkPolicy::Share
        } else {
            ForkPolicy::CopyOnWrite
        }
    }

    /// The kind of the part of a region starting `by` bytes after the region's start.
    fn advanced(&self, by: u64) -> Self {
        match self {
            VmaKind::AnonPrivate => VmaKind::AnonPrivate,
            VmaKind::Shared { obj, offset } => VmaKind::Shared {
                obj: obj.clone(),
                offset: offset + by,
            },
            VmaKind::FilePrivate { obj, offset } => VmaKind::FilePrivate {
                obj: obj.clone(),
                offset: offset + by,
            },
        }
    }

    /// Whether `self` continues `prev`, a kind of a region `prev_len` bytes long ending where
    /// `self` starts.
    fn continues(&self, prev: &Self, prev_len: u64) -> bool {
        match (prev, self) {
            (VmaKind::AnonPrivate, VmaKind::AnonPrivate) => true,
            (VmaKind::Shared { obj: o1, offset: f1 }, VmaKind::Shared { obj: o2, offset: f2 })
            | (VmaKind::FilePrivate { obj: o1, offset: f1 }, VmaKind::FilePrivate { obj: o2, offset: f2 }) => {
                o1 == o2 && f1.checked_add(prev_len) == Some(*f2)
            }
            _ => false,
        }
    }

    /// Checks the offset of a new region of `len` bytes: page aligned, and the object range
    /// `[offset, offset + len)` must not wrap.
    fn check_offset(&self, len: u64) -> Result<(), VmaError> {
        match self.offset() {
            Some(off) if !off.is_multiple_of(PAGE_SIZE) || off.checked_add(len).is_none() => {
                Err(VmaError::BadOffset)
            }
            _ => Ok(()),
        }
    }
}

/// A region `[start, end)` of an address space, or a piece of one returned by a call.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Vma<H = ObjectId> {
    /// First address (page aligned).
    pub start: VirtAddr,
    /// End address, exclusive (page aligned, above `start`).
    pub end: VirtAddr,
    /// Access permissions.
    pub prot: VmProt,
    /// Backing.
    pub kind: VmaKind<H>,
    /// Flags.
    pub flags: VmaFlags,
}

impl<H: Clone + Eq> Vma<H> {
    /// Size in bytes.
    pub fn len(&self) -> u64 {
        self.end.as_u64() - self.start.as_u64()
    }
    /// Always false: regions are never empty (provided for the `len` convention).
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }
    /// Whether `va` lies in the region.
    pub fn contains(&self, va: VirtAddr) -> bool {
        self.start <= va && va < self.end
    }
    /// How the region's pages are copied on fork.
    pub fn fork_policy(&self) -> ForkPolicy {
        self.kind.fork_policy()
    }
    /// The byte offset in the backing object of the page containing `va`, or `None` if the
    /// region has no object or does not contain `va`. This is the page-cache index a fault
    /// at `va` looks up.
    pub fn object_offset(&self, va: VirtAddr) -> Option<u64> {
        if !self.contains(va) {
            return None;
        }
        let page = va.align_down(PAGE_SIZE).as_u64() - self.start.as_u64();
        self.kind.offset().map(|off| off + page)
    }
    /// For a region with [`VmaFlags::LARGE_FOLIOS`], the start of the 64 KiB-aligned block
    /// containing `va` if the whole block lies inside the region and, for object-backed
    /// regions, its object offset is 64 KiB aligned too (so that the folio can be the object's
    /// folio); else `None` (populate with 4 KiB pages).
    pub fn large_folio_block(&self, va: VirtAddr) -> Option<VirtAddr> {
        if !self.flags.contains(VmaFlags::LARGE_FOLIOS) || !self.contains(va) {
            return None;
        }
        let block = va.align_down(LARGE_FOLIO_SIZE);
        if block < self.start || block.as_u64() + LARGE_FOLIO_SIZE > self.end.as_u64() {
            return None;
        }
        match self.object_offset(block) {
            Some(off) if !off.is_multiple_of(LARGE_FOLIO_SIZE) => None,
            _ => Some(block),
        }
    }
    /// The merge rule: `next` starts where `self` ends, with the same permissions and flags,
    /// and its backing continues `self`'s (both private anonymous, or the same kind over the
    /// same object at the following offset).
    pub fn mergeable(&self, next: &Vma<H>) -> bool {
        self.end == next.start
            && self.prot == next.prot
            && self.flags == next.flags
            && next.kind.continues(&self.kind, self.len())
    }

    /// The part `[a, b)` of the region (`start <= a < b <= end`), offsets adjusted.
    fn clip(&self, a: u64, b: u64) -> Vma<H> {
        debug_assert!(self.start.as_u64() <= a && a < b && b <= self.end.as_u64());
        Vma {
            start: VirtAddr::new(a),
            end: VirtAddr::new(b),
            prot: self.prot,
            kind: self.kind.advanced(a - self.start.as_u64()),
            flags: self.flags,
        }
    }
}

/// Where [`VmaTree::mmap`] places a mapping.
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

/// Errors of the [`VmaTree`] calls. On error the tree is unchanged.
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
    /// A fixed mapping starts in the never-mappable first [`MMAP_MIN_ADDR`] bytes. (`EPERM`,
    /// as Linux's `mmap_min_addr`)
    Reserved,
    /// A fixed address is not a multiple of the requested [`MapAlign`]. (`EINVAL`)
    FixedMisaligned,
    /// An object offset is not page aligned, or `offset + len` wraps. (`EINVAL`)
    BadOffset,
    /// [`Placement::FixedNoReplace`] and the range is not entirely free. (`EEXIST`)
    Exists,
    /// No free range of the size and alignment in the search window. (`ENOMEM`)
    NoSpace,
    /// `mprotect` / `madvise_dontneed` of a range with unmapped pages. (`ENOMEM`)
    NotMapped,
    /// The call would leave more than [`VmaConfig::max_mappings`] regions. (`ENOMEM`)
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

/// Result of [`VmaTree::mmap`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapped<H = ObjectId> {
    /// Start of the new mapping (`[addr, addr + len)`; it may have merged with neighbours).
    pub addr: VirtAddr,
    /// The pieces a [`Placement::Fixed`] mapping replaced, in address order: the caller
    /// unmaps and releases their pages as for `munmap`. Empty for the other placements.
    pub replaced: Vec<Vma<H>>,
}

/// One piece whose permissions [`VmaTree::mprotect`] changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtChange<H = ObjectId> {
    /// The piece, with its new permissions.
    pub piece: Vma<H>,
    /// Its permissions before the call.
    pub old: VmProt,
}

/// The regions of one address space. See the module docs.
#[derive(Clone, Debug)]
pub struct VmaTree<H = ObjectId> {
    /// Regions keyed by start address.
    map: BTreeMap<u64, Vma<H>>,
    /// Sum of the region sizes.
    mapped: u64,
    config: VmaConfig,
    /// Edits committed so far: a [`Plan`] applies only to the version it was made for.
    version: u64,
}

/// A validated edit: the regions to remove and the (merged) ones replacing them.
#[derive(Debug)]
struct Edit<H> {
    remove: Vec<u64>,
    removed_bytes: u64,
    insert: Vec<Vma<H>>,
}

/// A call the tree validated completely and has not carried out yet (module docs,
/// "Validate, then change"): made by [`VmaTree::plan_mmap`], [`VmaTree::plan_munmap`],
/// [`VmaTree::plan_mprotect`] or [`VmaTree::plan_madvise_dontneed`], carried out by
/// [`VmaTree::apply`], which cannot fail and returns the call's result `T`. Dropping a plan
/// changes nothing.
#[derive(Debug)]
#[must_use = "a plan changes nothing until applied"]
pub struct Plan<H, T> {
    /// The range whose existing pages the call unmaps, re-protects or zaps, if any.
    pages: Option<(u64, u64)>,
    edit: Option<Edit<H>>,
    out: T,
    version: u64,
}

impl<H, T> Plan<H, T> {
    /// The range `[start, end)` whose existing pages the call changes once applied (pages it
    /// unmaps, re-protects or zaps), or `None` if it changes no existing page (an `mmap` that
    /// replaces nothing, an `munmap` of holes only, an `mprotect` to the same permissions).
    /// What the page tables must be ready to change before [`VmaTree::apply`].
    pub fn pages(&self) -> Option<(VirtAddr, VirtAddr)> {
        self.pages.map(|(s, e)| (VirtAddr::new(s), VirtAddr::new(e)))
    }

    /// What [`VmaTree::apply`] will return.
    pub fn output(&self) -> &T {
        &self.out
    }
}

/// Checks a user range: page aligned, non-empty, inside `[0, USER_END)`. Returns `(start, end)`.
fn user_range(addr: VirtAddr, len: u64) -> Result<(u64, u64), VmaError> {
    let a = addr.as_u64();
    if !a.is_multiple_of(PAGE_SIZE) || !len.is_multiple_of(PAGE_SIZE) {
        return Err(VmaError::Unaligned);
    }
    if len == 0 {
        return Err(VmaError::ZeroLength);
    }
    if a >= USER_END {
        return Err(VmaError::NotUser);
    }
    match a.checked_add(len) {
        Some(end) if end <= USER_END => Ok((a, end)),
        _ => Err(VmaError::Overflow),
    }
}

/// The highest multiple of `align` at which `len` bytes fit in `[gs, ge)`.
fn fit_top(gs: u64, ge: u64, len: u64, align: u64) -> Option<u64> {
    if ge <= gs || ge - gs < len {
        return None;
    }
    let a = (ge - len) & !(align - 1);
    (a >= gs).then_some(a)
}

/// The lowest multiple of `align` at which `len` bytes fit in `[gs, ge)`.
fn fit_bottom(gs: u64, ge: u64, len: u64, align: u64) -> Option<u64> {
    let a = gs.checked_add(align - 1)? & !(align - 1);
    (a < ge && ge - a >= len).then_some(a)
}

/// Merges the mergeable neighbours of an address-ordered run of regions.
fn merge_run<H: Clone + Eq>(seq: Vec<Vma<H>>) -> Vec<Vma<H>> {
    let mut out: Vec<Vma<H>> = Vec::with_capacity(seq.len());
    for v in seq {
        if let Some(last) = out.last_mut() {
            if last.mergeable(&v) {
                last.end = v.end;
                continue;
            }
        }
        out.push(v);
    }
    out
}

/// `NotMapped` unless the address-ordered pieces tile `[s, e)` exactly.
fn check_covered<H>(pieces: &[Vma<H>], s: u64, e: u64) -> Result<(), VmaError> {
    let mut at = s;
    for p in pieces {
        if p.start.as_u64() != at {
            return Err(VmaError::NotMapped);
        }
        at = p.end.as_u64();
    }
    if at == e {
        Ok(())
    } else {
        Err(VmaError::NotMapped)
    }
}

impl<H: Clone + Eq> Default for VmaTree<H> {
    fn default() -> Self {
        Self::new()
    }
}

impl<H: Clone + Eq> VmaTree<H> {
    /// An empty address space with the default [`VmaConfig`].
    pub fn new() -> Self {
        Self::with_config(VmaConfig::default())
    }

    /// An empty address space with `config`.
    ///
    /// # Panics
    /// If the search window is not page aligned, not inside `[MMAP_MIN_ADDR, USER_END]`, or
    /// empty (a configuration bug).
    pub fn with_config(config: VmaConfig) -> Self {
        let (lo, hi) = (config.search_low.as_u64(), config.search_high.as_u64());
        assert!(
            lo.is_multiple_of(PAGE_SIZE) && hi.is_multiple_of(PAGE_SIZE),
            "vma: search window not page aligned"
        );
        assert!(
            MMAP_MIN_ADDR <= lo && lo < hi && hi <= USER_END,
            "vma: search window outside [MMAP_MIN_ADDR, USER_END]"
        );
        VmaTree {
            map: BTreeMap::new(),
            mapped: 0,
            config,
            version: 0,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &VmaConfig {
        &self.config
    }

    /// Number of regions.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether nothing is mapped.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Total bytes mapped.
    pub fn mapped_bytes(&self) -> u64 {
        self.mapped
    }

    /// The regions in address order.
    pub fn iter(&self) -> impl Iterator<Item = &Vma<H>> + '_ {
        self.map.values()
    }

    /// The region containing `va` (the fault lookup).
    pub fn find(&self, va: VirtAddr) -> Option<&Vma<H>> {
        self.map
            .range(..=va.as_u64())
            .next_back()
            .map(|(_, v)| v)
            .filter(|v| va < v.end)
    }

    /// The regions intersecting `[start, end)`, in address order, unclipped. Empty if
    /// `end <= start`.
    pub fn overlapping(&self, start: VirtAddr, end: VirtAddr) -> impl Iterator<Item = &Vma<H>> + '_ {
        self.overlap_iter(start.as_u64(), end.as_u64())
    }

    /// Maps `len` bytes: see the module docs for the placements and the order of the checks.
    /// Returns the start address and, for [`Placement::Fixed`], the replaced pieces.
    /// [`plan_mmap`](Self::plan_mmap) then [`apply`](Self::apply).
    pub fn mmap(
        &mut self,
        placement: Placement,
        len: u64,
        prot: VmProt,
        kind: VmaKind<H>,
        align: MapAlign,
    ) -> Result<Mapped<H>, VmaError> {
        let plan = self.plan_mmap(placement, len, prot, &kind, align)?;
        Ok(self.apply(plan))
    }

    /// Validates [`mmap`](Self::mmap) and plans it, changing nothing. The plan holds its own
    /// clone of `kind`'s handle.
    pub fn plan_mmap(
        &self,
        placement: Placement,
        len: u64,
        prot: VmProt,
        kind: &VmaKind<H>,
        align: MapAlign,
    ) -> Result<Plan<H, Mapped<H>>, VmaError> {
        let a = align.bytes();
        let start = match placement {
            Placement::Fixed(addr) | Placement::FixedNoReplace(addr) => {
                let (s, e) = user_range(addr, len)?;
                if s < MMAP_MIN_ADDR {
                    return Err(VmaError::Reserved);
                }
                if !s.is_multiple_of(a) {
                    return Err(VmaError::FixedMisaligned);
                }
                kind.check_offset(len)?;
                if matches!(placement, Placement::FixedNoReplace(_))
                    && self.overlap_iter(s, e).next().is_some()
                {
                    return Err(VmaError::Exists);
                }
                s
            }
            Placement::Any | Placement::Hint(_) => {
                if !len.is_multiple_of(PAGE_SIZE) {
                    return Err(VmaError::Unaligned);
                }
                if len == 0 {
                    return Err(VmaError::ZeroLength);
                }
                kind.check_offset(len)?;
                let hinted = match placement {
                    Placement::Hint(h) => self.try_hint(h.as_u64(), len, a),
                    _ => None,
                };
                match hinted {
                    Some(s) => s,
                    None => self.find_gap(len, a).ok_or(VmaError::NoSpace)?,
                }
            }
        };
        let end = start + len;
        let replaced = self.clipped(start, end);
        let new = Vma {
            start: VirtAddr::new(start),
            end: VirtAddr::new(end),
            prot,
            kind: kind.clone(),
            flags: align.flags(),
        };
        let edit = self.prepare(start, end, alloc::vec![new])?;
        let pages = (!replaced.is_empty()).then_some((start, end));
        let out = Mapped {
            addr: VirtAddr::new(start),
            replaced,
        };
        Ok(self.plan(pages, Some(edit), out))
    }

    /// Unmaps every mapped page of `[addr, addr + len)`, splitting partially covered regions.
    /// Returns the removed pieces in address order (empty if nothing was mapped). A zero
    /// `len` is [`VmaError::ZeroLength`].
    /// [`plan_munmap`](Self::plan_munmap) then [`apply`](Self::apply).
    pub fn munmap(&mut self, addr: VirtAddr, len: u64) -> Result<Vec<Vma<H>>, VmaError> {
        let plan = self.plan_munmap(addr, len)?;
        Ok(self.apply(plan))
    }

    /// Validates [`munmap`](Self::munmap) and plans it, changing nothing.
    pub fn plan_munmap(&self, addr: VirtAddr, len: u64) -> Result<Plan<H, Vec<Vma<H>>>, VmaError> {
        let (s, e) = user_range(addr, len)?;
        let removed = self.clipped(s, e);
        if removed.is_empty() {
            return Ok(self.plan(None, None, removed));
        }
        let edit = self.prepare(s, e, Vec::new())?;
        Ok(self.plan(Some((s, e)), Some(edit), removed))
    }

    /// Sets the permissions of `[addr, addr + len)`, which must be entirely mapped. Returns
    /// the pieces whose permissions changed, in address order, with their old permissions.
    /// [`plan_mprotect`](Self::plan_mprotect) then [`apply`](Self::apply).
    pub fn mprotect(
        &mut self,
        addr: VirtAddr,
        len: u64,
        prot: VmProt,
    ) -> Result<Vec<ProtChange<H>>, VmaError> {
        let plan = self.plan_mprotect(addr, len, prot)?;
        Ok(self.apply(plan))
    }

    /// Validates [`mprotect`](Self::mprotect) and plans it, changing nothing.
    pub fn plan_mprotect(
        &self,
        addr: VirtAddr,
        len: u64,
        prot: VmProt,
    ) -> Result<Plan<H, Vec<ProtChange<H>>>, VmaError> {
        let (s, e) = user_range(addr, len)?;
        let pieces = self.clipped(s, e);
        check_covered(&pieces, s, e)?;
        if pieces.iter().all(|p| p.prot == prot) {
            return Ok(self.plan(None, None, Vec::new()));
        }
        let middle: Vec<Vma<H>> = pieces.iter().map(|p| Vma { prot, ..p.clone() }).collect();
        let edit = self.prepare(s, e, middle)?;
        let changes = pieces
            .into_iter()
            .filter(|p| p.prot != prot)
            .map(|p| ProtChange {
                old: p.prot,
                piece: Vma { prot, ..p },
            })
            .collect();
        Ok(self.plan(Some((s, e)), Some(edit), changes))
    }

    /// Validates `madvise(addr, len, MADV_DONTNEED)`: the range must be entirely mapped.
    /// Returns its pieces in address order; the caller zaps their pages. The tree does not
    /// change.
    pub fn madvise_dontneed(&self, addr: VirtAddr, len: u64) -> Result<Vec<Vma<H>>, VmaError> {
        Ok(self.plan_madvise_dontneed(addr, len)?.out)
    }

    /// [`madvise_dontneed`](Self::madvise_dontneed) as a plan (whose application changes no
    /// region, only returns the pieces), for callers that handle every call as a plan.
    pub fn plan_madvise_dontneed(&self, addr: VirtAddr, len: u64) -> Result<Plan<H, Vec<Vma<H>>>, VmaError> {
        let (s, e) = user_range(addr, len)?;
        let pieces = self.clipped(s, e);
        check_covered(&pieces, s, e)?;
        Ok(self.plan(Some((s, e)), None, pieces))
    }

    /// Carries out a plan of this tree. Cannot fail.
    ///
    /// # Panics
    /// If the tree changed since the plan was made (a plan is only valid for the tree it
    /// was made from, as it was then).
    pub fn apply<T>(&mut self, plan: Plan<H, T>) -> T {
        assert_eq!(plan.version, self.version, "vma: plan applied to a changed tree");
        if let Some(edit) = plan.edit {
            self.commit(edit);
        }
        plan.out
    }

    /// The child's copy of the tree (same regions, same objects, same configuration). The
    /// caller copies the pages region by region according to [`Vma::fork_policy`].
    pub fn fork(&self) -> Self {
        self.clone()
    }

    /// Removes every region (process exit), returning them in address order.
    pub fn unmap_all(&mut self) -> Vec<Vma<H>> {
        self.version += 1;
        self.mapped = 0;
        core::mem::take(&mut self.map).into_values().collect()
    }

    /// Checks the structural invariants: each region page aligned, non-empty, inside
    /// `[MMAP_MIN_ADDR, USER_END)` with a valid object range; regions sorted and disjoint; no
    /// two neighbours mergeable; the byte count and the region limit respected.
    pub fn check(&self) -> Result<(), &'static str> {
        let mut prev: Option<&Vma<H>> = None;
        let mut total = 0u64;
        for (&key, v) in &self.map {
            let (s, e) = (v.start.as_u64(), v.end.as_u64());
            if key != s {
                return Err("key differs from region start");
            }
            if !s.is_multiple_of(PAGE_SIZE) || !e.is_multiple_of(PAGE_SIZE) {
                return Err("region not page aligned");
            }
            if s >= e {
                return Err("empty region");
            }
            if s < MMAP_MIN_ADDR || e > USER_END {
                return Err("region outside the mappable range");
            }
            if v.kind.check_offset(e - s).is_err() {
                return Err("invalid object offset");
            }
            if let Some(p) = prev {
                if p.end > v.start {
                    return Err("overlapping regions");
                }
                if p.mergeable(v) {
                    return Err("mergeable neighbours");
                }
            }
            total += e - s;
            prev = Some(v);
        }
        if total != self.mapped {
            return Err("mapped byte count out of date");
        }
        if self.map.len() > self.config.max_mappings {
            return Err("more regions than max_mappings");
        }
        Ok(())
    }

    fn overlap_iter(&self, s: u64, e: u64) -> impl Iterator<Item = &Vma<H>> + '_ {
        let e = e.max(s);
        let head = if s < e {
            self.map
                .range(..s)
                .next_back()
                .map(|(_, v)| v)
                .filter(|v| v.end.as_u64() > s)
        } else {
            None
        };
        head.into_iter().chain(self.map.range(s..e).map(|(_, v)| v))
    }

    /// The mapped pieces of `[s, e)`, clipped, in address order.
    fn clipped(&self, s: u64, e: u64) -> Vec<Vma<H>> {
        self.overlap_iter(s, e)
            .map(|v| v.clip(v.start.as_u64().max(s), v.end.as_u64().min(e)))
            .collect()
    }

    /// `h` rounded up to `align`, if `len` bytes there are mappable and free.
    fn try_hint(&self, h: u64, len: u64, align: u64) -> Option<u64> {
        let s = h.checked_add(align - 1)? & !(align - 1);
        let e = s.checked_add(len)?;
        (s >= MMAP_MIN_ADDR && e <= USER_END && self.overlap_iter(s, e).next().is_none()).then_some(s)
    }

    /// First fit in the search window, in the configured direction.
    fn find_gap(&self, len: u64, align: u64) -> Option<u64> {
        let (low, high) = (self.config.search_low.as_u64(), self.config.search_high.as_u64());
        if len > high - low {
            return None;
        }
        match self.config.direction {
            SearchDirection::TopDown => {
                let mut gap_end = high;
                for v in self.map.range(..high).rev().map(|(_, v)| v) {
                    let gap_start = v.end.as_u64().max(low);
                    if let Some(a) = fit_top(gap_start, gap_end, len, align) {
                        return Some(a);
                    }
                    gap_end = gap_end.min(v.start.as_u64());
                    if gap_end <= low {
                        return None;
                    }
                }
                fit_top(low, gap_end, len, align)
            }
            SearchDirection::BottomUp => {
                let mut gap_start = self
                    .map
                    .range(..low)
                    .next_back()
                    .map_or(low, |(_, v)| v.end.as_u64().max(low));
                for v in self.map.range(low..high).map(|(_, v)| v) {
                    if let Some(a) = fit_bottom(gap_start, v.start.as_u64(), len, align) {
                        return Some(a);
                    }
                    gap_start = gap_start.max(v.end.as_u64());
                    if gap_start >= high {
                        return None;
                    }
                }
                fit_bottom(gap_start, high, len, align)
            }
        }
    }

    /// Plans replacing the contents of `[s, e)` by `middle` (address-ordered regions inside
    /// it, possibly with holes): the regions touching the range (overlapping it or adjacent
    /// to it) are removed and replaced by their parts outside the range, `middle`, all merged.
    /// Fails with `TooManyMappings` if that would exceed the limit. Changes nothing.
    fn prepare(&self, s: u64, e: u64, middle: Vec<Vma<H>>) -> Result<Edit<H>, VmaError> {
        let head = self
            .map
            .range(..s)
            .next_back()
            .map(|(_, v)| v)
            .filter(|v| v.end.as_u64() >= s);
        let window: Vec<&Vma<H>> = head
            .into_iter()
            .chain(self.map.range(s..=e).map(|(_, v)| v))
            .collect();
        let mut seq = Vec::with_capacity(middle.len() + 2);
        if let Some(first) = window.first() {
            if first.start.as_u64() < s {
                seq.push(first.clip(first.start.as_u64(), first.end.as_u64().min(s)));
            }
        }
        seq.extend(middle);
        if let Some(last) = window.last() {
            if last.end.as_u64() > e {
                seq.push(last.clip(last.start.as_u64().max(e), last.end.as_u64()));
            }
        }
        let insert = merge_run(seq);
        let after = self.map.len() - window.len() + insert.len();
        if after > self.config.max_mappings && after > self.map.len() {
            return Err(VmaError::TooManyMappings);
        }
        Ok(Edit {
            remove: window.iter().map(|v| v.start.as_u64()).collect(),
            removed_bytes: window.iter().map(|v| v.len()).sum(),
            insert,
        })
    }

    fn plan<T>(&self, pages: Option<(u64, u64)>, edit: Option<Edit<H>>, out: T) -> Plan<H, T> {
        Plan {
            pages,
            edit,
            out,
            version: self.version,
        }
    }

    fn commit(&mut self, edit: Edit<H>) {
        self.version += 1;
        for k in edit.remove {
            self.map.remove(&k);
        }
        self.mapped -= edit.removed_bytes;
        for v in edit.insert {
            self.mapped += v.len();
            self.map.insert(v.start.as_u64(), v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KERNEL_BASE;
    use alloc::vec;

    const P: u64 = PAGE_SIZE;
    type T = VmaTree<ObjectId>;

    fn va(x: u64) -> VirtAddr {
        VirtAddr::new(x)
    }
    fn anon() -> VmaKind {
        VmaKind::AnonPrivate
    }
    fn shared(obj: u64, offset: u64) -> VmaKind {
        VmaKind::Shared {
            obj: ObjectId(obj),
            offset,
        }
    }
    fn file_private(obj: u64, offset: u64) -> VmaKind {
        VmaKind::FilePrivate {
            obj: ObjectId(obj),
            offset,
        }
    }
    fn fixed(t: &mut T, at: u64, pages: u64, prot: VmProt, kind: VmaKind) -> Vec<Vma> {
        t.mmap(Placement::Fixed(va(at)), pages * P, prot, kind, MapAlign::Page)
            .unwrap()
            .replaced
    }
    /// `(start, end, prot, offset)` of every region.
    fn layout(t: &T) -> Vec<(u64, u64, VmProt, Option<u64>)> {
        t.iter()
            .map(|v| (v.start.as_u64(), v.end.as_u64(), v.prot, v.kind.offset()))
            .collect()
    }
    fn snapshot(t: &T) -> (Vec<Vma>, u64) {
        (t.iter().cloned().collect(), t.mapped_bytes())
    }
    fn small(max: usize) -> T {
        T::with_config(VmaConfig {
            max_mappings: max,
            ..VmaConfig::default()
        })
    }
    const B: u64 = 0x100_0000; // a base address for fixed mappings

    #[test]
    fn any_is_top_down_first_fit_and_merges() {
        let mut t = T::new();
        let a = t
            .mmap(Placement::Any, 3 * P, VmProt::RW, anon(), MapAlign::Page)
            .unwrap();
        assert_eq!(a.addr, va(USER_END - 3 * P));
        assert!(a.replaced.is_empty());
        let b = t
            .mmap(Placement::Any, 2 * P, VmProt::RW, anon(), MapAlign::Page)
            .unwrap();
        assert_eq!(b.addr, va(USER_END - 5 * P));
        // Same permissions and kind: one region.
        assert_eq!(layout(&t), vec![(USER_END - 5 * P, USER_END, VmProt::RW, None)]);
        // 64 KiB alignment: highest aligned fit below, separate region (different flags).
        let c = t
            .mmap(Placement::Any, 16 * P, VmProt::RW, anon(), MapAlign::Size64K)
            .unwrap();
        assert_eq!(c.addr, va((USER_END - 5 * P - 16 * P) & !(LARGE_FOLIO_SIZE - 1)));
        assert_eq!(t.len(), 2);
        assert_eq!(t.find(c.addr).unwrap().flags, VmaFlags::LARGE_FOLIOS);
        let d = t
            .mmap(Placement::Any, P, VmProt::READ, anon(), MapAlign::Size2M)
            .unwrap();
        assert_eq!(d.addr, va(USER_END - (2 << 20)));
        t.check().unwrap();
    }

    #[test]
    fn any_bottom_up_and_window() {
        let mut t = T::with_config(VmaConfig {
            search_low: va(B),
            search_high: va(B + 64 * P),
            direction: SearchDirection::BottomUp,
            max_mappings: MAX_MAPPINGS,
        });
        let map = |t: &mut T, pages, align| {
            t.mmap(Placement::Any, pages * P, VmProt::READ, anon(), align)
                .map(|m| m.addr.as_u64())
        };
        assert_eq!(map(&mut t, 2, MapAlign::Page), Ok(B));
        assert_eq!(map(&mut t, 1, MapAlign::Size64K), Ok(B + LARGE_FOLIO_SIZE));
        assert_eq!(map(&mut t, 3, MapAlign::Page), Ok(B + 2 * P));
        // A gap of 11 pages before the 64K region, 47 after it.
        assert_eq!(map(&mut t, 47, MapAlign::Page), Ok(B + 17 * P));
        assert_eq!(map(&mut t, 12, MapAlign::Page), Err(VmaError::NoSpace));
        assert_eq!(map(&mut t, 11, MapAlign::Page), Ok(B + 5 * P));
        assert_eq!(map(&mut t, 1, MapAlign::Page), Err(VmaError::NoSpace));
        assert_eq!(t.mapped_bytes(), 64 * P);
        // Fixed and hinted mappings may lie outside the window.
        fixed(&mut t, B + 100 * P, 1, VmProt::READ, anon());
        t.check().unwrap();
    }

    #[test]
    fn hint_is_rounded_used_or_ignored() {
        let mut t = T::new();
        let m = |t: &mut T, h: u64, align| {
            t.mmap(Placement::Hint(va(h)), 2 * P, VmProt::RW, anon(), align)
                .unwrap()
                .addr
                .as_u64()
        };
        assert_eq!(m(&mut t, B, MapAlign::Page), B);
        // Occupied: falls back to the search (top-down).
        assert_eq!(m(&mut t, B + P, MapAlign::Page), USER_END - 2 * P);
        // Unaligned hint: rounded up to the alignment.
        assert_eq!(m(&mut t, B + 0x20_0001, MapAlign::Size64K), B + 0x21_0000);
        // Reserved low range, kernel address, wrapping: ignored.
        assert_eq!(m(&mut t, 0, MapAlign::Page), USER_END - 4 * P);
        assert_eq!(m(&mut t, KERNEL_BASE, MapAlign::Page), USER_END - 6 * P);
        assert_eq!(m(&mut t, u64::MAX, MapAlign::Page), USER_END - 8 * P);
        assert_eq!(m(&mut t, USER_END - P, MapAlign::Page), USER_END - 10 * P);
        t.check().unwrap();
    }

    #[test]
    fn fixed_replaces_and_returns_the_pieces() {
        let mut t = T::new();
        fixed(&mut t, B, 4, VmProt::RW, shared(7, 0x10_0000));
        fixed(&mut t, B + 6 * P, 4, VmProt::READ, anon());
        // [B+2P, B+8P) covers the tail of the first, a hole, the head of the second.
        let replaced = fixed(&mut t, B + 2 * P, 6, VmProt::RX, anon());
        assert_eq!(
            replaced,
            vec![
                Vma {
                    start: va(B + 2 * P),
                    end: va(B + 4 * P),
                    prot: VmProt::RW,
                    kind: shared(7, 0x10_0000 + 2 * P),
                    flags: VmaFlags::NONE,
                },
                Vma {
                    start: va(B + 6 * P),
                    end: va(B + 8 * P),
                    prot: VmProt::READ,
                    kind: anon(),
                    flags: VmaFlags::NONE,
                },
            ]
        );
        assert_eq!(
            layout(&t),
            vec![
                (B, B + 2 * P, VmProt::RW, Some(0x10_0000)),
                (B + 2 * P, B + 8 * P, VmProt::RX, None),
                (B + 8 * P, B + 10 * P, VmProt::READ, None),
            ]
        );
        // Fixed over the whole of it with the neighbours' attributes merges everything.
        let replaced = fixed(&mut t, B + 2 * P, 6, VmProt::READ, anon());
        assert_eq!(replaced.len(), 1);
        assert_eq!(
            layout(&t),
            vec![
                (B, B + 2 * P, VmProt::RW, Some(0x10_0000)),
                (B + 2 * P, B + 10 * P, VmProt::READ, None),
            ]
        );
        t.check().unwrap();
    }

    #[test]
    fn fixed_noreplace() {
        let mut t = T::new();
        fixed(&mut t, B, 2, VmProt::RW, anon());
        let before = snapshot(&t);
        let r = t.mmap(
            Placement::FixedNoReplace(va(B + P)),
            2 * P,
            VmProt::RW,
            anon(),
            MapAlign::Page,
        );
        assert_eq!(r, Err(VmaError::Exists));
        assert_eq!(snapshot(&t), before);
        let r = t
            .mmap(
                Placement::FixedNoReplace(va(B + 2 * P)),
                2 * P,
                VmProt::RW,
                anon(),
                MapAlign::Page,
            )
            .unwrap();
        assert!(r.replaced.is_empty());
        assert_eq!(layout(&t), vec![(B, B + 4 * P, VmProt::RW, None)]);
    }

    #[test]
    fn argument_errors_change_nothing() {
        use VmaError::*;
        let mut t = T::new();
        fixed(&mut t, B, 4, VmProt::RW, anon());
        let before = snapshot(&t);
        let mm = |t: &mut T, place, len, kind, align| t.mmap(place, len, VmProt::RW, kind, align).map(|_| ());
        let f = |a| Placement::Fixed(va(a));
        let cases: Vec<(Result<(), VmaError>, VmaError)> = vec![
            (mm(&mut t, f(B + 1), P, anon(), MapAlign::Page), Unaligned),
            (mm(&mut t, f(B), P + 1, anon(), MapAlign::Page), Unaligned),
            (mm(&mut t, Placement::Any, 3, anon(), MapAlign::Page), Unaligned),
            (mm(&mut t, f(B), 0, anon(), MapAlign::Page), ZeroLength),
            (mm(&mut t, Placement::Any, 0, anon(), MapAlign::Page), ZeroLength),
            (mm(&mut t, f(USER_END), P, anon(), MapAlign::Page), NotUser),
            (mm(&mut t, f(KERNEL_BASE), P, anon(), MapAlign::Page), NotUser),
            (mm(&mut t, f(!(P - 1)), P, anon(), MapAlign::Page), NotUser),
            (
                mm(&mut t, f(USER_END - P), 2 * P, anon(), MapAlign::Page),
                Overflow,
            ),
            (mm(&mut t, f(B), !(P - 1), anon(), MapAlign::Page), Overflow),
            (mm(&mut t, f(0), P, anon(), MapAlign::Page), Reserved),
            (
                mm(&mut t, f(MMAP_MIN_ADDR - P), 2 * P, anon(), MapAlign::Page),
                Reserved,
            ),
            (
                mm(&mut t, f(B + P), P, anon(), MapAlign::Size64K),
                FixedMisaligned,
            ),
            (
                mm(&mut t, f(B + LARGE_FOLIO_SIZE), P, anon(), MapAlign::Size2M),
                FixedMisaligned,
            ),
            (mm(&mut t, f(B), P, shared(1, 5), MapAlign::Page), BadOffset),
            (
                mm(&mut t, f(B), 2 * P, shared(1, !(P - 1)), MapAlign::Page),
                BadOffset,
            ),
            (
                mm(&mut t, Placement::Any, P, shared(1, 1), MapAlign::Page),
                BadOffset,
            ),
            (
                mm(&mut t, Placement::Any, USER_END, anon(), MapAlign::Page),
                NoSpace,
            ),
            (t.munmap(va(B + 1), P).map(|_| ()), Unaligned),
            (t.munmap(va(B), 0).map(|_| ()), ZeroLength),
            (t.munmap(va(KERNEL_BASE), P).map(|_| ()), NotUser),
            (t.munmap(va(B), !(P - 1)).map(|_| ()), Overflow),
            (t.munmap(va(USER_END - P), 2 * P).map(|_| ()), Overflow),
            (t.mprotect(va(B), P + 1, VmProt::READ).map(|_| ()), Unaligned),
            (t.mprotect(va(B), 0, VmProt::READ).map(|_| ()), ZeroLength),
            (t.mprotect(va(B), 5 * P, VmProt::READ).map(|_| ()), NotMapped),
            (t.mprotect(va(B - P), 2 * P, VmProt::READ).map(|_| ()), NotMapped),
            (t.mprotect(va(0), P, VmProt::READ).map(|_| ()), NotMapped),
            (t.mprotect(va(USER_END), P, VmProt::READ).map(|_| ()), NotUser),
            (t.madvise_dontneed(va(B), 5 * P).map(|_| ()), NotMapped),
            (t.madvise_dontneed(va(B + 3), P).map(|_| ()), Unaligned),
            (t.madvise_dontneed(va(B), 0).map(|_| ()), ZeroLength),
        ];
        for (i, (got, want)) in cases.into_iter().enumerate() {
            assert_eq!(got, Err(want), "case {i}");
        }
        assert_eq!(snapshot(&t), before);
        // munmap of the reserved low range: nothing there, a no-op.
        assert_eq!(t.munmap(va(0), MMAP_MIN_ADDR), Ok(vec![]));
        assert_eq!(snapshot(&t), before);
    }

    #[test]
    fn plans_change_nothing_until_applied() {
        let mut t = T::new();
        fixed(&mut t, B, 4, VmProt::RW, anon());
        let before = snapshot(&t);
        // Every error of the one-step calls comes from the plan, the region limit's too.
        let mut one = small(1);
        fixed(&mut one, B, 4, VmProt::RW, anon());
        let split = one.plan_munmap(va(B + P), P).map(|_| ());
        assert_eq!(split, Err(VmaError::TooManyMappings));
        // Plans: what they will change, nothing changed yet.
        let p = t.plan_munmap(va(B + P), P).unwrap();
        assert_eq!(p.pages(), Some((va(B + P), va(B + 2 * P))));
        assert_eq!(p.output().len(), 1);
        assert_eq!(t.plan_munmap(va(B + 8 * P), P).unwrap().pages(), None, "a hole");
        let same = t.plan_mprotect(va(B), P, VmProt::RW).unwrap();
        assert_eq!(same.pages(), None, "same permissions");
        let m = t
            .plan_mmap(Placement::Any, P, VmProt::READ, &anon(), MapAlign::Page)
            .unwrap();
        assert_eq!(m.pages(), None, "replaces nothing");
        let m = t
            .plan_mmap(
                Placement::Fixed(va(B + 3 * P)),
                2 * P,
                VmProt::READ,
                &anon(),
                MapAlign::Page,
            )
            .unwrap();
        assert_eq!(m.pages(), Some((va(B + 3 * P), va(B + 5 * P))));
        let d = t.plan_madvise_dontneed(va(B), 4 * P).unwrap();
        assert_eq!(d.pages(), Some((va(B), va(B + 4 * P))));
        assert_eq!(snapshot(&t), before);
        // Applied: the same as the one-step call.
        assert_eq!(t.apply(same), vec![]);
        let mut u = t.clone();
        assert_eq!(t.apply(p), u.munmap(va(B + P), P).unwrap());
        assert_eq!(snapshot(&t), snapshot(&u));
    }

    #[test]
    #[should_panic(expected = "plan applied to a changed tree")]
    fn a_plan_applies_only_to_the_tree_it_was_made_from() {
        let mut t = T::new();
        fixed(&mut t, B, 4, VmProt::RW, anon());
        let p = t.plan_munmap(va(B), P).unwrap();
        t.munmap(va(B + 2 * P), P).unwrap();
        t.apply(p);
    }

    #[test]
    fn munmap_splits_over_holes() {
        let mut t = T::new();
        fixed(&mut t, B, 8, VmProt::RW, shared(3, 0));
        fixed(&mut t, B + 10 * P, 4, VmProt::READ, anon());
        // Middle of the first: split in two, offsets kept.
        let removed = t.munmap(va(B + 2 * P), 2 * P).unwrap();
        assert_eq!(removed.len(), 1);
        assert_eq!(removed[0].kind, shared(3, 2 * P));
        assert_eq!(
            layout(&t),
            vec![
                (B, B + 2 * P, VmProt::RW, Some(0)),
                (B + 4 * P, B + 8 * P, VmProt::RW, Some(4 * P)),
                (B + 10 * P, B + 14 * P, VmProt::READ, None),
            ]
        );
        // Across a hole: the tail of one, the head of the next.
        let removed = t.munmap(va(B + 6 * P), 6 * P).unwrap();
        let r: Vec<_> = removed
            .iter()
            .map(|v| (v.start.as_u64(), v.end.as_u64(), v.kind.offset()))
            .collect();
        assert_eq!(
            r,
            vec![
                (B + 6 * P, B + 8 * P, Some(6 * P)),
                (B + 10 * P, B + 12 * P, None)
            ]
        );
        // Nothing mapped: empty result, nothing changes.
        let before = snapshot(&t);
        assert_eq!(t.munmap(va(B + 20 * P), 100 * P), Ok(vec![]));
        assert_eq!(snapshot(&t), before);
        // Everything.
        let removed = t.munmap(va(MMAP_MIN_ADDR), USER_END - MMAP_MIN_ADDR).unwrap();
        assert_eq!(removed.len(), 3);
        assert!(t.is_empty());
        assert_eq!(t.mapped_bytes(), 0);
    }

    #[test]
    fn mprotect_splits_and_merges_back() {
        let mut t = T::new();
        fixed(&mut t, B, 8, VmProt::RW, shared(1, 0));
        let ch = t.mprotect(va(B + 2 * P), 3 * P, VmProt::READ).unwrap();
        assert_eq!(ch.len(), 1);
        assert_eq!(ch[0].old, VmProt::RW);
        assert_eq!(ch[0].piece.prot, VmProt::READ);
        assert_eq!(ch[0].piece.kind, shared(1, 2 * P));
        assert_eq!(
            layout(&t),
            vec![
                (B, B + 2 * P, VmProt::RW, Some(0)),
                (B + 2 * P, B + 5 * P, VmProt::READ, Some(2 * P)),
                (B + 5 * P, B + 8 * P, VmProt::RW, Some(5 * P)),
            ]
        );
        // Over the whole range: only the read-only piece changes, and all merges back.
        let ch = t.mprotect(va(B), 8 * P, VmProt::RW).unwrap();
        assert_eq!(ch.len(), 1);
        assert_eq!(
            (ch[0].piece.start, ch[0].piece.end),
            (va(B + 2 * P), va(B + 5 * P))
        );
        assert_eq!(layout(&t), vec![(B, B + 8 * P, VmProt::RW, Some(0))]);
        // No-op: nothing returned.
        assert_eq!(t.mprotect(va(B + P), P, VmProt::RW), Ok(vec![]));
        // Merges with a compatible neighbour region too.
        fixed(&mut t, B + 8 * P, 2, VmProt::READ, shared(1, 8 * P));
        assert_eq!(t.len(), 2);
        t.mprotect(va(B + 8 * P), 2 * P, VmProt::RW).unwrap();
        assert_eq!(layout(&t), vec![(B, B + 10 * P, VmProt::RW, Some(0))]);
        t.check().unwrap();
    }

    #[test]
    fn mprotect_over_several_regions_and_holes() {
        let mut t = T::new();
        fixed(&mut t, B, 2, VmProt::RW, anon());
        fixed(&mut t, B + 2 * P, 2, VmProt::RW, shared(1, 0));
        fixed(&mut t, B + 5 * P, 2, VmProt::RW, anon());
        let before = snapshot(&t);
        assert_eq!(t.mprotect(va(B), 7 * P, VmProt::READ), Err(VmaError::NotMapped));
        assert_eq!(snapshot(&t), before);
        let ch = t.mprotect(va(B + P), 3 * P, VmProt::NONE).unwrap();
        assert_eq!(ch.len(), 2);
        assert_eq!(
            layout(&t),
            vec![
                (B, B + P, VmProt::RW, None),
                (B + P, B + 2 * P, VmProt::NONE, None),
                (B + 2 * P, B + 4 * P, VmProt::NONE, Some(0)),
                (B + 5 * P, B + 7 * P, VmProt::RW, None),
            ]
        );
    }

    #[test]
    fn madvise_returns_pieces_and_changes_nothing() {
        let mut t = T::new();
        fixed(&mut t, B, 4, VmProt::RW, anon());
        fixed(&mut t, B + 4 * P, 4, VmProt::READ, shared(2, 0));
        let before = snapshot(&t);
        let pieces = t.madvise_dontneed(va(B + 3 * P), 2 * P).unwrap();
        assert_eq!(pieces.len(), 2);
        assert_eq!(pieces[0].fork_policy(), ForkPolicy::CopyOnWrite);
        assert_eq!(pieces[1].kind, shared(2, 0));
        assert_eq!(pieces[1].end, va(B + 5 * P));
        assert_eq!(snapshot(&t), before);
        assert_eq!(t.madvise_dontneed(va(B + 7 * P), 2 * P), Err(VmaError::NotMapped));
    }

    #[test]
    fn merge_rule() {
        let mut t = T::new();
        // Same object, contiguous offsets: merged. Discontiguous / other object: not.
        fixed(&mut t, B, 2, VmProt::RW, shared(1, 4 * P));
        fixed(&mut t, B + 2 * P, 2, VmProt::RW, shared(1, 6 * P));
        assert_eq!(t.len(), 1);
        fixed(&mut t, B + 4 * P, 2, VmProt::RW, shared(1, 9 * P));
        fixed(&mut t, B + 6 * P, 2, VmProt::RW, shared(2, 11 * P));
        fixed(&mut t, B + 8 * P, 2, VmProt::RW, anon());
        fixed(&mut t, B + 10 * P, 2, VmProt::READ, anon());
        t.mmap(
            Placement::Fixed(va(B + 16 * P)),
            2 * P,
            VmProt::READ,
            anon(),
            MapAlign::Size64K,
        )
        .unwrap();
        fixed(&mut t, B + 18 * P, 2, VmProt::READ, anon());
        assert_eq!(t.len(), 7);
        t.check().unwrap();
        // Filling the hole merges the anonymous read-only regions on both sides, except the
        // one with other flags.
        fixed(&mut t, B + 12 * P, 4, VmProt::READ, anon());
        assert_eq!(t.len(), 7);
        assert_eq!(t.find(va(B + 15 * P)).unwrap().start, va(B + 10 * P));
        t.check().unwrap();
    }

    #[test]
    fn mapping_limit() {
        let mut t = small(3);
        fixed(&mut t, B, 8, VmProt::RW, anon());
        fixed(&mut t, B + 10 * P, 2, VmProt::RW, anon());
        fixed(&mut t, B + 20 * P, 2, VmProt::RW, anon());
        let before = snapshot(&t);
        let e = Err(VmaError::TooManyMappings);
        assert_eq!(
            t.mmap(Placement::Any, P, VmProt::RW, anon(), MapAlign::Page)
                .map(|_| ()),
            e
        );
        assert_eq!(t.munmap(va(B + 2 * P), P).map(|_| ()), e);
        assert_eq!(
            t.mprotect(va(B + 2 * P), P, VmProt::READ).map(|_| ()),
            Err(VmaError::TooManyMappings)
        );
        // Even a change that splits once and then merges is judged on the final count: the
        // end of the first region cannot become read-only (4 regions) ...
        assert_eq!(
            t.mprotect(va(B + 6 * P), 2 * P, VmProt::READ).map(|_| ()),
            Err(VmaError::TooManyMappings)
        );
        assert_eq!(snapshot(&t), before);
        // ... but trimming does not add a region, merging removes one, and so on.
        t.munmap(va(B), P).unwrap();
        fixed(&mut t, B + 8 * P, 2, VmProt::RW, anon());
        assert_eq!(t.len(), 2);
        t.mprotect(va(B + P), P, VmProt::READ).unwrap();
        assert_eq!(t.len(), 3);
        t.check().unwrap();
    }

    #[test]
    fn default_limit_is_65536() {
        let mut t = T::new();
        // Alternate permissions so that nothing merges: 65536 one-page regions.
        for i in 0..MAX_MAPPINGS as u64 {
            let prot = if i % 2 == 0 { VmProt::RW } else { VmProt::READ };
            fixed(&mut t, B + i * P, 1, prot, anon());
        }
        assert_eq!(t.len(), MAX_MAPPINGS);
        let end = B + MAX_MAPPINGS as u64 * P;
        let r = t.mmap(
            Placement::Fixed(va(end + P)),
            P,
            VmProt::RW,
            anon(),
            MapAlign::Page,
        );
        assert_eq!(r, Err(VmaError::TooManyMappings));
        // Adjacent and compatible with the last region (READ): merges, allowed.
        fixed(&mut t, end, 2, VmProt::READ, anon());
        assert_eq!(t.len(), MAX_MAPPINGS);
        // Splitting its middle would add two.
        assert_eq!(t.mprotect(va(end), P, VmProt::RW), Err(VmaError::TooManyMappings));
        // Making page 1 RW merges pages 0..=2: two fewer.
        t.mprotect(va(B + P), P, VmProt::RW).unwrap();
        assert_eq!(t.len(), MAX_MAPPINGS - 2);
        t.check().unwrap();
    }

    #[test]
    fn fork_copies_and_is_independent() {
        let mut t = T::new();
        fixed(&mut t, B, 4, VmProt::RW, anon());
        fixed(&mut t, B + 4 * P, 4, VmProt::RW, shared(9, 0));
        let mut child = t.fork();
        assert_eq!(snapshot(&child), snapshot(&t));
        assert_eq!(child.config(), t.config());
        let policies: Vec<_> = child.iter().map(|v| v.fork_policy()).collect();
        assert_eq!(policies, vec![ForkPolicy::CopyOnWrite, ForkPolicy::Share]);
        assert_eq!(
            child.find(va(B + 5 * P)).unwrap().kind.object(),
            Some(&ObjectId(9))
        );
        let before = snapshot(&t);
        child.munmap(va(B), 6 * P).unwrap();
        child.mprotect(va(B + 6 * P), P, VmProt::READ).unwrap();
        assert_eq!(snapshot(&t), before);
        assert_eq!(child.find(va(B + 7 * P)).unwrap().kind, shared(9, 3 * P));
    }

    #[test]
    fn private_object_mappings() {
        let mut t = T::new();
        let k = file_private(5, 3 * P);
        assert!(!k.is_shared());
        assert_eq!(k.object(), Some(&ObjectId(5)));
        assert_eq!(k.offset(), Some(3 * P));
        assert_eq!(k.fork_policy(), ForkPolicy::CopyOnWrite);
        // Continuing offsets of the same object merge; a shared mapping of the same object
        // at the continuing offset does not, nor does another object.
        fixed(&mut t, B, 2, VmProt::RW, file_private(5, 0));
        fixed(&mut t, B + 2 * P, 2, VmProt::RW, file_private(5, 2 * P));
        assert_eq!(t.len(), 1);
        fixed(&mut t, B + 4 * P, 2, VmProt::RW, shared(5, 4 * P));
        fixed(&mut t, B + 6 * P, 2, VmProt::RW, file_private(6, 6 * P));
        fixed(&mut t, B + 8 * P, 2, VmProt::RW, anon());
        assert_eq!(t.len(), 4);
        // Splitting adjusts the offsets; the pieces keep the kind.
        let ch = t.mprotect(va(B + P), 2 * P, VmProt::READ).unwrap();
        assert_eq!(ch.len(), 1);
        assert_eq!(ch[0].piece.kind, file_private(5, P));
        assert_eq!(
            layout(&t)[..3],
            [
                (B, B + P, VmProt::RW, Some(0)),
                (B + P, B + 3 * P, VmProt::READ, Some(P)),
                (B + 3 * P, B + 4 * P, VmProt::RW, Some(3 * P)),
            ]
        );
        let v = t.find(va(B + 3 * P)).unwrap();
        assert_eq!(v.object_offset(va(B + 3 * P + 5)), Some(3 * P));
        assert_eq!(v.fork_policy(), ForkPolicy::CopyOnWrite);
        // Fork keeps the kind.
        let child = t.fork();
        assert_eq!(child.find(va(B)).unwrap().kind, file_private(5, 0));
        // Bad offsets are refused as for shared mappings.
        assert_eq!(
            t.mmap(
                Placement::Fixed(va(B + 16 * P)),
                P,
                VmProt::READ,
                file_private(5, 1),
                MapAlign::Page
            )
            .unwrap_err(),
            VmaError::BadOffset
        );
        t.check().unwrap();
    }

    #[test]
    fn queries() {
        let mut t = T::new();
        assert!(t.find(va(B)).is_none());
        fixed(&mut t, B, 2, VmProt::RW, anon());
        fixed(&mut t, B + 4 * P, 2, VmProt::READ, shared(1, 0x8000));
        assert_eq!(t.find(va(B + 2 * P - 1)).unwrap().start, va(B));
        assert!(t.find(va(B + 2 * P)).is_none());
        assert!(t.find(va(B - 1)).is_none());
        let v = t.find(va(B + 5 * P + 12)).unwrap();
        assert_eq!(v.object_offset(va(B + 5 * P + 12)), Some(0x8000 + P));
        assert_eq!(v.object_offset(va(B)), None);
        assert_eq!(t.overlapping(va(B + P), va(B + 5 * P)).count(), 2);
        assert_eq!(t.overlapping(va(B + 2 * P), va(B + 4 * P)).count(), 0);
        assert_eq!(t.overlapping(va(B + 5 * P), va(B + P)).count(), 0);
        assert_eq!(t.overlapping(va(0), va(u64::MAX)).count(), 2);
        assert_eq!(t.mapped_bytes(), 4 * P);
        assert_eq!(t.len(), 2);
        let all = t.unmap_all();
        assert_eq!(all.len(), 2);
        assert!(t.is_empty());
        t.check().unwrap();
    }

    #[test]
    fn large_folio_blocks() {
        let mut t = T::new();
        let k = LARGE_FOLIO_SIZE;
        let a = t
            .mmap(Placement::Any, 3 * k, VmProt::RW, anon(), MapAlign::Size64K)
            .unwrap()
            .addr;
        // Trim a page off both ends: only the middle block stays whole.
        t.munmap(a, P).unwrap();
        t.munmap(va(a.as_u64() + 3 * k - P), P).unwrap();
        let v = t.find(va(a.as_u64() + k)).unwrap();
        assert_eq!(v.large_folio_block(va(a.as_u64() + P)), None);
        assert_eq!(
            v.large_folio_block(va(a.as_u64() + k + 5 * P)),
            Some(va(a.as_u64() + k))
        );
        assert_eq!(v.large_folio_block(va(a.as_u64() + 2 * k + P)), None);
        // Shared: the object offset must be aligned too.
        fixed(&mut t, B, 16, VmProt::RW, anon());
        assert_eq!(t.find(va(B)).unwrap().large_folio_block(va(B)), None);
        for (off, want) in [(0, Some(va(0x200_0000))), (P, None)] {
            t.mmap(
                Placement::Fixed(va(0x200_0000)),
                k,
                VmProt::RW,
                shared(1, off),
                MapAlign::Size64K,
            )
            .unwrap();
            let v = t.find(va(0x200_0000)).unwrap();
            assert_eq!(v.large_folio_block(va(0x200_0000 + P)), want);
        }
    }

    #[test]
    fn reference_counted_handles() {
        use std::sync::Arc;
        #[derive(Clone, Debug)]
        struct Obj(Arc<u32>);
        impl PartialEq for Obj {
            fn eq(&self, other: &Obj) -> bool {
                Arc::ptr_eq(&self.0, &other.0)
            }
        }
        impl Eq for Obj {}

        let obj = Obj(Arc::new(0));
        let count = |o: &Obj| Arc::strong_count(&o.0) - 1; // minus our own
        let mut t: VmaTree<Obj> = VmaTree::new();
        let kind = VmaKind::Shared {
            obj: obj.clone(),
            offset: 0,
        };
        t.mmap(Placement::Fixed(va(B)), 8 * P, VmProt::RW, kind, MapAlign::Page)
            .unwrap();
        assert_eq!(count(&obj), 1);
        t.mprotect(va(B + 2 * P), P, VmProt::READ).unwrap();
        assert_eq!(count(&obj), 3);
        let child = t.fork();
        assert_eq!(count(&obj), 6);
        drop(child);
        // A different object with equal contents does not merge.
        let other = Obj(Arc::new(0));
        t.mmap(
            Placement::Fixed(va(B + 8 * P)),
            P,
            VmProt::RW,
            VmaKind::Shared {
                obj: other.clone(),
                offset: 8 * P,
            },
            MapAlign::Page,
        )
        .unwrap();
        assert_eq!(t.len(), 4);
        t.mprotect(va(B + 2 * P), P, VmProt::RW).unwrap();
        assert_eq!(count(&obj), 1);
        let removed = t.munmap(va(B), 9 * P).unwrap();
        assert_eq!(count(&obj), 1); // held by the returned piece
        drop(removed);
        assert_eq!(count(&obj), 0);
        assert_eq!(count(&other), 0);
    }

    #[test]
    fn errno_and_pte_prot() {
        assert_eq!(VmaError::Exists.errno(), 17);
        assert_eq!(VmaError::NotMapped.errno(), 12);
        assert_eq!(VmaError::Unaligned.errno(), 22);
        assert_eq!(VmaError::Reserved.errno(), 1);
        assert_eq!(VmProt::NONE.pte_prot(), None);
        assert_eq!(VmProt::READ.pte_prot(), Some(Prot::READ | Prot::USER));
        assert_eq!(
            VmProt::WRITE.pte_prot(),
            Some(Prot::READ | Prot::USER | Prot::WRITE)
        );
        assert_eq!(
            VmProt::RX.pte_prot(),
            Some(Prot::READ | Prot::USER | Prot::EXEC_USER)
        );
        assert_eq!(alloc::format!("{:?}", VmProt::RX), "r-x");
    }
}

/// Property tests: random call sequences against a per-page reference model.
#[cfg(test)]
mod props {
    use super::*;
    use crate::KERNEL_BASE;
    use alloc::vec;
    use proptest::prelude::*;
    use std::collections::BTreeMap as Map;

    const P: u64 = PAGE_SIZE;
    /// The search window: 128 pages (eight 64 KiB blocks) just above the reserved range.
    const LOW: u64 = MMAP_MIN_ADDR;
    const HIGH: u64 = MMAP_MIN_ADDR + 128 * P;
    /// Generated addresses mostly lie in the first `SPAN` pages: the reserved range, the
    /// window, and some room above it.
    const SPAN: u64 = 176;
    const TOP_PAGE: u64 = !(P - 1);

    /// The state of one mapped page: permissions, `(object, offset of this page, shared)`,
    /// flags.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    struct Page {
        prot: VmProt,
        obj: Option<(u64, u64, bool)>,
        flags: VmaFlags,
    }
    /// Page number → state.
    type Model = Map<u64, Page>;

    /// The merge rule, restated on pages: `b` (the next page) continues `a`.
    fn continues(a: &Page, b: &Page) -> bool {
        a.prot == b.prot
            && a.flags == b.flags
            && match (a.obj, b.obj) {
                (None, None) => true,
                (Some((o1, f1, s1)), Some((o2, f2, s2))) => {
                    o1 == o2 && s1 == s2 && f1.checked_add(P) == Some(f2)
                }
                _ => false,
            }
    }

    /// Number of regions of a maximally merged tree with this per-page state.
    fn runs(m: &Model) -> usize {
        let mut n = 0;
        let mut prev: Option<(u64, &Page)> = None;
        for (&p, s) in m {
            match prev {
                Some((q, t)) if q + 1 == p && continues(t, s) => {}
                _ => n += 1,
            }
            prev = Some((p, s));
        }
        n
    }

    /// Per-page view of address-ordered regions (or pieces); checks they are well formed.
    fn pages_of(vmas: &[&Vma]) -> Model {
        let mut m = Model::new();
        let mut last_end = 0;
        for v in vmas {
            let (s, e) = (v.start.as_u64(), v.end.as_u64());
            assert!(
                s.is_multiple_of(P) && e.is_multiple_of(P) && s < e,
                "bad piece {v:?}"
            );
            assert!(s >= last_end, "pieces unsorted or overlapping");
            last_end = e;
            for (i, pg) in (s / P..e / P).enumerate() {
                let obj = match &v.kind {
                    VmaKind::AnonPrivate => None,
                    VmaKind::Shared { obj, offset } => Some((obj.0, offset + i as u64 * P, true)),
                    VmaKind::FilePrivate { obj, offset } => Some((obj.0, offset + i as u64 * P, false)),
                };
                m.insert(
                    pg,
                    Page {
                        prot: v.prot,
                        obj,
                        flags: v.flags,
                    },
                );
            }
        }
        m
    }
    fn view(t: &VmaTree) -> Model {
        pages_of(&t.iter().collect::<Vec<_>>())
    }
    fn pieces(v: &[Vma]) -> Model {
        pages_of(&v.iter().collect::<Vec<_>>())
    }
    fn restrict(m: &Model, s: u64, e: u64) -> Model {
        m.range(s / P..e / P).map(|(&k, &v)| (k, v)).collect()
    }
    fn all_mapped(m: &Model, s: u64, e: u64) -> bool {
        m.range(s / P..e / P).count() as u64 == (e - s) / P
    }

    /// The argument checks, restated.
    fn range(addr: u64, len: u64) -> Result<(u64, u64), VmaError> {
        if !addr.is_multiple_of(P) || !len.is_multiple_of(P) {
            Err(VmaError::Unaligned)
        } else if len == 0 {
            Err(VmaError::ZeroLength)
        } else if addr >= USER_END {
            Err(VmaError::NotUser)
        } else if addr as u128 + len as u128 > USER_END as u128 {
            Err(VmaError::Overflow)
        } else {
            Ok((addr, addr + len))
        }
    }

    #[derive(Clone, Copy, Debug)]
    enum Place {
        Any,
        Hint(u64),
        Fixed(u64),
        NoReplace(u64),
    }

    /// The range of a munmap / mprotect / madvise: absolute, or relative to an existing region
    /// (chosen when the call runs) so that calls often hit mapped memory.
    #[derive(Clone, Copy, Debug)]
    enum Rng {
        Abs {
            addr: u64,
            len: u64,
        },
        /// Starts `off` pages into region `idx`; its length is derived from `pages`.
        Rel {
            idx: prop::sample::Index,
            off: u8,
            pages: u8,
        },
    }

    fn resolve(t: &VmaTree, r: Rng) -> (u64, u64) {
        match r {
            Rng::Abs { addr, len } => (addr, len),
            Rng::Rel { idx, off, pages } => {
                let regions: Vec<&Vma> = t.iter().collect();
                if regions.is_empty() {
                    return (LOW, u64::from(pages) * P);
                }
                let v = regions[idx.index(regions.len())];
                let n = v.len() / P;
                let first = u64::from(off) % n;
                let pages = u64::from(pages);
                let len = if pages < 160 {
                    // Inside the region, often up to one of its ends.
                    match pages % 3 {
                        0 => n - first,
                        _ => 1 + pages % (n - first),
                    }
                } else {
                    // Possibly into the next region or a hole (or of length 0).
                    pages % (2 * n + 2)
                };
                (v.start.as_u64() + first * P, len * P)
            }
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        Mmap {
            place: Place,
            len: u64,
            prot: VmProt,
            obj: Option<(u64, u64, bool)>,
            align: MapAlign,
        },
        /// A fixed mapping of `pages` right before or after region `idx`, with its
        /// permissions, kind (offset continuing) and alignment: a merge candidate.
        MmapNextTo {
            idx: prop::sample::Index,
            after: bool,
            pages: u64,
        },
        Munmap {
            rng: Rng,
        },
        Mprotect {
            rng: Rng,
            prot: VmProt,
        },
        Madvise {
            rng: Rng,
        },
        /// Fork; continue with the child if `switch`, else with the parent.
        Fork {
            switch: bool,
        },
    }

    fn addr_s() -> impl Strategy<Value = u64> {
        prop_oneof![
            16 => (0..SPAN).prop_map(|p| p * P),
            4 => (0..SPAN / 16).prop_map(|b| b * LARGE_FOLIO_SIZE),
            1 => 0..SPAN * P,
            1 => prop::sample::select(vec![
                0,
                2 << 20,
                USER_END - P,
                USER_END - 16 * P,
                USER_END,
                KERNEL_BASE,
                TOP_PAGE,
                1 << 63,
            ]),
        ]
    }
    /// Lengths for mmap: every valid one is small (the model is per page).
    fn map_len_s() -> impl Strategy<Value = u64> {
        prop_oneof![
            16 => (0..=24u64).prop_map(|n| n * P),
            3 => (1..=4u64).prop_map(|n| n * LARGE_FOLIO_SIZE),
            1 => 0..64 * P,
            1 => prop::sample::select(vec![USER_END, TOP_PAGE, 1 << 63]),
        ]
    }
    /// Lengths for the other calls: may be huge and valid.
    fn len_s() -> impl Strategy<Value = u64> {
        prop_oneof![
            16 => (0..=40u64).prop_map(|n| n * P),
            1 => 0..64 * P,
            1 => prop::sample::select(vec![1 << 47, USER_END, TOP_PAGE]),
        ]
    }
    fn rng_s() -> impl Strategy<Value = Rng> {
        prop_oneof![
            1 => (addr_s(), len_s()).prop_map(|(addr, len)| Rng::Abs { addr, len }),
            1 => (any::<prop::sample::Index>(), any::<u8>(), any::<u8>())
                .prop_map(|(idx, off, pages)| Rng::Rel { idx, off, pages }),
        ]
    }
    fn prot_s() -> impl Strategy<Value = VmProt> {
        prop_oneof![
            3 => Just(VmProt::RW),
            3 => Just(VmProt::READ),
            1 => (0..8u8).prop_map(VmProt::from_bits_truncate),
        ]
    }
    fn op_s() -> impl Strategy<Value = Op> {
        let place = prop_oneof![
            3 => Just(Place::Any),
            2 => addr_s().prop_map(Place::Hint),
            4 => addr_s().prop_map(Place::Fixed),
            2 => addr_s().prop_map(Place::NoReplace),
        ];
        let obj = prop_oneof![
            3 => Just(None),
            3 => (1..=3u64, 0..8u64, any::<bool>()).prop_map(|(o, f, s)| Some((o, f * P, s))),
            1 => (prop::sample::select(vec![(1, 1), (2, TOP_PAGE)]), any::<bool>())
                .prop_map(|((o, f), s)| Some((o, f, s))),
        ];
        let align = prop_oneof![
            4 => Just(MapAlign::Page),
            3 => Just(MapAlign::Size64K),
            1 => Just(MapAlign::Size2M),
        ];
        prop_oneof![
            6 => (place, map_len_s(), prot_s(), obj, align).prop_map(
                |(place, len, prot, obj, align)| Op::Mmap { place, len, prot, obj, align }
            ),
            2 => (any::<prop::sample::Index>(), any::<bool>(), 1..=8u64)
                .prop_map(|(idx, after, pages)| Op::MmapNextTo { idx, after, pages }),
            3 => rng_s().prop_map(|rng| Op::Munmap { rng }),
            4 => (rng_s(), prot_s()).prop_map(|(rng, prot)| Op::Mprotect { rng, prot }),
            1 => rng_s().prop_map(|rng| Op::Madvise { rng }),
            1 => any::<bool>().prop_map(|switch| Op::Fork { switch }),
        ]
    }

    /// The address the model expects `mmap` to choose, or its argument/placement error.
    fn model_place(
        m: &Model,
        cfg: &VmaConfig,
        place: Place,
        len: u64,
        obj: Option<(u64, u64, bool)>,
        align: MapAlign,
    ) -> Result<u64, VmaError> {
        let a = align.bytes();
        let free = |s: u64, e: u64| m.range(s / P..e / P).next().is_none();
        let offset_ok = |len: u64| match obj {
            Some((_, off, _)) => off.is_multiple_of(P) && off as u128 + len as u128 <= u64::MAX as u128,
            None => true,
        };
        match place {
            Place::Fixed(addr) | Place::NoReplace(addr) => {
                let (s, e) = range(addr, len)?;
                if s < MMAP_MIN_ADDR {
                    return Err(VmaError::Reserved);
                }
                if !s.is_multiple_of(a) {
                    return Err(VmaError::FixedMisaligned);
                }
                if !offset_ok(len) {
                    return Err(VmaError::BadOffset);
                }
                if matches!(place, Place::NoReplace(_)) && !free(s, e) {
                    return Err(VmaError::Exists);
                }
                Ok(s)
            }
            Place::Any | Place::Hint(_) => {
                if !len.is_multiple_of(P) {
                    return Err(VmaError::Unaligned);
                }
                if len == 0 {
                    return Err(VmaError::ZeroLength);
                }
                if !offset_ok(len) {
                    return Err(VmaError::BadOffset);
                }
                if let Place::Hint(h) = place {
                    let s = (h as u128).div_ceil(a as u128) * a as u128;
                    let e = s + len as u128;
                    if s >= MMAP_MIN_ADDR as u128 && e <= USER_END as u128 && free(s as u64, e as u64) {
                        return Ok(s as u64);
                    }
                }
                let (lo, hi) = (cfg.search_low.as_u64(), cfg.search_high.as_u64());
                if len > hi - lo {
                    return Err(VmaError::NoSpace);
                }
                let first = lo.div_ceil(a) * a;
                let mut cands: Vec<u64> = (first..=hi - len).step_by(a as usize).collect();
                if cfg.direction == SearchDirection::TopDown {
                    cands.reverse();
                }
                cands
                    .into_iter()
                    .find(|&s| free(s, s + len))
                    .ok_or(VmaError::NoSpace)
            }
        }
    }

    /// The `Mmap` op of `MmapNextTo`, or `None` if the tree is empty or there is no room.
    fn next_to(t: &VmaTree, idx: prop::sample::Index, after: bool, pages: u64) -> Option<Op> {
        let regions: Vec<&Vma> = t.iter().collect();
        if regions.is_empty() {
            return None;
        }
        let v = regions[idx.index(regions.len())];
        let len = pages * P;
        let (addr, obj) = if after {
            let off = v.kind.offset().map(|o| o + v.len());
            (v.end.as_u64(), off)
        } else {
            let off = v.kind.offset().map(|o| o.wrapping_sub(len));
            (v.start.as_u64().checked_sub(len)?, off)
        };
        let obj = v
            .kind
            .object()
            .map(|o| o.0)
            .zip(obj)
            .map(|(o, f)| (o, f, v.kind.is_shared()));
        let align = if v.flags.contains(VmaFlags::LARGE_FOLIOS) {
            MapAlign::Size64K
        } else {
            MapAlign::Page
        };
        Some(Op::Mmap {
            place: Place::Fixed(addr),
            len,
            prot: v.prot,
            obj,
            align,
        })
    }

    /// Whether the model would have too many regions after going from `m` to `next`.
    fn too_many(m: &Model, next: &Model, max: usize) -> bool {
        let after = runs(next);
        after > max && after > runs(m)
    }

    fn unchanged(t: &VmaTree, before: &(Vec<Vma>, u64)) {
        assert_eq!(&t.iter().cloned().collect::<Vec<_>>(), &before.0);
        assert_eq!(t.mapped_bytes(), before.1);
    }

    fn run(cfg: VmaConfig, ops: Vec<Op>) {
        let max = cfg.max_mappings;
        let mut t: VmaTree = VmaTree::with_config(cfg);
        let mut m = Model::new();
        // The other side of the last fork, with its state then: it must never change.
        let mut other: Option<(VmaTree, Model)> = None;
        for op in ops {
            let before = (t.iter().cloned().collect::<Vec<_>>(), t.mapped_bytes());
            let op = match op {
                Op::MmapNextTo { idx, after, pages } => match next_to(&t, idx, after, pages) {
                    Some(op) => op,
                    None => continue,
                },
                op => op,
            };
            match op {
                Op::MmapNextTo { .. } => unreachable!(),
                Op::Mmap {
                    place,
                    len,
                    prot,
                    obj,
                    align,
                } => {
                    let want = model_place(&m, &cfg, place, len, obj, align).and_then(|s| {
                        let e = s + len;
                        let mut next = m.clone();
                        let replaced = restrict(&m, s, e);
                        for (i, pg) in (s / P..e / P).enumerate() {
                            let obj = obj.map(|(o, off, sh)| (o, off + i as u64 * P, sh));
                            let flags = align.flags();
                            next.insert(pg, Page { prot, obj, flags });
                        }
                        if too_many(&m, &next, max) {
                            return Err(VmaError::TooManyMappings);
                        }
                        Ok((s, replaced, next))
                    });
                    let placement = match place {
                        Place::Any => Placement::Any,
                        Place::Hint(a) => Placement::Hint(VirtAddr::new(a)),
                        Place::Fixed(a) => Placement::Fixed(VirtAddr::new(a)),
                        Place::NoReplace(a) => Placement::FixedNoReplace(VirtAddr::new(a)),
                    };
                    let kind = match obj {
                        None => VmaKind::AnonPrivate,
                        Some((o, offset, true)) => VmaKind::Shared {
                            obj: ObjectId(o),
                            offset,
                        },
                        Some((o, offset, false)) => VmaKind::FilePrivate {
                            obj: ObjectId(o),
                            offset,
                        },
                    };
                    let got = t.mmap(placement, len, prot, kind, align);
                    match (want, got) {
                        (Ok((s, replaced, next)), Ok(got)) => {
                            assert_eq!(got.addr.as_u64(), s);
                            assert_eq!(pieces(&got.replaced), replaced);
                            m = next;
                        }
                        (Err(w), Err(g)) => {
                            assert_eq!(w, g);
                            unchanged(&t, &before);
                        }
                        (w, g) => panic!("mmap: model {w:?}, tree {g:?}"),
                    }
                }
                Op::Munmap { rng } => {
                    let (addr, len) = resolve(&t, rng);
                    let want = range(addr, len).and_then(|(s, e)| {
                        let removed = restrict(&m, s, e);
                        let mut next = m.clone();
                        next.retain(|&k, _| k < s / P || k >= e / P);
                        if too_many(&m, &next, max) {
                            return Err(VmaError::TooManyMappings);
                        }
                        Ok((removed, next))
                    });
                    match (want, t.munmap(VirtAddr::new(addr), len)) {
                        (Ok((removed, next)), Ok(got)) => {
                            assert_eq!(pieces(&got), removed);
                            m = next;
                        }
                        (Err(w), Err(g)) => {
                            assert_eq!(w, g);
                            unchanged(&t, &before);
                        }
                        (w, g) => panic!("munmap: model {w:?}, tree {g:?}"),
                    }
                }
                Op::Mprotect { rng, prot } => {
                    let (addr, len) = resolve(&t, rng);
                    let want = range(addr, len).and_then(|(s, e)| {
                        if !all_mapped(&m, s, e) {
                            return Err(VmaError::NotMapped);
                        }
                        let mut next = m.clone();
                        let mut changed = Map::new();
                        for (&k, pg) in next.range_mut(s / P..e / P) {
                            if pg.prot != prot {
                                changed.insert(k, (Page { prot, ..*pg }, pg.prot));
                                pg.prot = prot;
                            }
                        }
                        if too_many(&m, &next, max) {
                            return Err(VmaError::TooManyMappings);
                        }
                        Ok((changed, next))
                    });
                    match (want, t.mprotect(VirtAddr::new(addr), len, prot)) {
                        (Ok((changed, next)), Ok(got)) => {
                            let new_pieces: Vec<Vma> = got.iter().map(|c| c.piece.clone()).collect();
                            let mut seen = Map::new();
                            for (c, (k, pg)) in got
                                .iter()
                                .flat_map(|c| {
                                    let n = c.piece.len() / P;
                                    core::iter::repeat_n(c, n as usize)
                                })
                                .zip(pieces(&new_pieces))
                            {
                                assert_ne!(c.old, c.piece.prot);
                                seen.insert(k, (pg, c.old));
                            }
                            assert_eq!(seen, changed);
                            m = next;
                        }
                        (Err(w), Err(g)) => {
                            assert_eq!(w, g);
                            unchanged(&t, &before);
                        }
                        (w, g) => panic!("mprotect: model {w:?}, tree {g:?}"),
                    }
                }
                Op::Madvise { rng } => {
                    let (addr, len) = resolve(&t, rng);
                    let want = range(addr, len).and_then(|(s, e)| {
                        if all_mapped(&m, s, e) {
                            Ok(restrict(&m, s, e))
                        } else {
                            Err(VmaError::NotMapped)
                        }
                    });
                    match (want, t.madvise_dontneed(VirtAddr::new(addr), len)) {
                        (Ok(zap), Ok(got)) => assert_eq!(pieces(&got), zap),
                        (Err(w), Err(g)) => assert_eq!(w, g),
                        (w, g) => panic!("madvise: model {w:?}, tree {g:?}"),
                    }
                    unchanged(&t, &before);
                }
                Op::Fork { switch } => {
                    let child = t.fork();
                    child.check().unwrap();
                    assert_eq!(view(&child), m);
                    assert_eq!(child.config(), t.config());
                    if switch {
                        other = Some((core::mem::replace(&mut t, child), m.clone()));
                    } else {
                        other = Some((child, m.clone()));
                    }
                }
            }
            // After every step: the tree is well formed, maximally merged, and its per-page
            // view is the model's.
            t.check().unwrap();
            assert_eq!(view(&t), m);
            assert_eq!(t.len(), runs(&m));
            assert_eq!(t.mapped_bytes(), m.len() as u64 * P);
            let regions: Vec<&Vma> = t.iter().collect();
            for w in regions.windows(2) {
                if w[0].end == w[1].start {
                    let last = pages_of(&[w[0]]).into_values().next_back().unwrap();
                    let first = pages_of(&[w[1]]).into_values().next().unwrap();
                    assert!(!continues(&last, &first), "not merged: {w:?}");
                }
            }
            for v in &regions {
                assert!(v.start.as_u64() >= MMAP_MIN_ADDR);
                assert_eq!(t.find(v.start).unwrap(), *v);
                assert_eq!(t.find(VirtAddr::new(v.end.as_u64() - 1)).unwrap(), *v);
            }
        }
        if let Some((o, om)) = other {
            o.check().unwrap();
            assert_eq!(view(&o), om);
        }
    }

    fn cfg_s() -> impl Strategy<Value = VmaConfig> {
        let dir = prop_oneof![Just(SearchDirection::TopDown), Just(SearchDirection::BottomUp)];
        let max = prop_oneof![Just(3usize), Just(8), Just(MAX_MAPPINGS)];
        (dir, max).prop_map(|(direction, max_mappings)| VmaConfig {
            search_low: VirtAddr::new(LOW),
            search_high: VirtAddr::new(HIGH),
            direction,
            max_mappings,
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 512,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn random_sequences_match_the_page_model(
            cfg in cfg_s(),
            ops in prop::collection::vec(op_s(), 1..64),
        ) {
            run(cfg, ops);
        }
    }
}
