//! One region of an address space ([`Vma`]): its range, permissions, flags and kind (what
//! backs its pages), and the rules that depend on the kind (splitting, merging, fork policy).

use core::fmt;
use core::ops::BitOr;

use super::error::VmaError;
use crate::{Prot, VirtAddr, PAGE_SIZE};

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

/// What backs a region's pages. `H` is the object handle (see docs/mm.md, "VMAs").
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
    pub(super) fn check_offset(&self, len: u64) -> Result<(), VmaError> {
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
    pub(super) fn clip(&self, a: u64, b: u64) -> Vma<H> {
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
