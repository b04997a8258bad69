//! The machine interface the translation-table engine runs over.
//!
//! The engine never touches memory, system registers or barriers itself: every descriptor
//! read/write, every table frame, every TLB maintenance operation goes through [`Platform`].
//! On the target it is implemented over the kernel linear map, the frame allocator and
//! `arch::tlb`; in host tests over the hardware model (`mm::model`), which checks every step.

use super::asid::Asid;
use super::desc::Descriptor;
use crate::addr::{Level, PhysAddr, VirtAddr, PAGE_SHIFT};

/// A table frame could not be allocated ([`Platform::alloc_table`]): the frame allocator's
/// error, the same type folio frames fail with.
use crate::frames::OutOfMemory;

/// One TLB maintenance instruction (EL1&0 regime, Inner Shareable broadcast).
///
/// `level` is the TTL hint: the level of the *leaf* entries being invalidated. The architecture
/// lets an implementation skip entries of other levels when a hint is given, so the engine
/// only passes one when every affected entry is a leaf of that level, and never for
/// non-leaf (walk-cache) invalidation. Implementations without FEAT_TTL drop the hint (for the
/// non-range forms) — it is only ever an optimisation.
///
/// `leaf_only` selects the "last level" forms (`VALE1IS`, ...), which leave cached table
/// (walk-cache) entries alone: correct when only leaves changed, not when a table was freed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TlbOp {
    /// `TLBI VAE1IS` / `TLBI VALE1IS`: entries translating `va` that are global or tagged
    /// with `asid`.
    Va {
        /// Any address in the entry to invalidate.
        va: VirtAddr,
        /// ASID of non-global entries.
        asid: Asid,
        /// Last-level form.
        leaf_only: bool,
        /// TTL hint.
        level: Option<Level>,
    },
    /// `TLBI VAAE1IS` / `TLBI VAALE1IS`: entries translating `va`, any ASID. Used for the
    /// kernel (TTBR1) root.
    VaAllAsids {
        /// Any address in the entry to invalidate.
        va: VirtAddr,
        /// Last-level form.
        leaf_only: bool,
        /// TTL hint.
        level: Option<Level>,
    },
    /// `TLBI RVAE1IS` / `RVALE1IS` / `RVAAE1IS` / `RVAALE1IS` (FEAT_TLBIRANGE). Only issued
    /// when [`Platform::has_tlbi_range`] says so.
    Range(TlbRange),
    /// `TLBI ASIDE1IS`: every non-global entry tagged with the ASID (including walk-cache
    /// entries for that ASID).
    Asid(Asid),
    /// `TLBI VMALLE1IS`: everything for the EL1&0 regime (current VMID).
    All,
}

/// The operand of a range TLBI, already in its encodable form.
///
/// The range is `pages()` 4 KiB pages from `base`, where
/// `pages() = (num + 1) << (5 * scale + 1)` — exactly what the instruction encodes
/// (`TG = 4K`, `SCALE`, `NUM`, `TTL`, `BaseADDR = VA[48:12]`, `ASID`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TlbRange {
    /// First address, page aligned.
    pub base: VirtAddr,
    /// `SCALE`, 0..=3.
    pub scale: u8,
    /// `NUM`, 0..=31.
    pub num: u8,
    /// `Some(asid)`: `RVAE1IS`/`RVALE1IS` (global entries and entries of `asid`);
    /// `None`: `RVAAE1IS`/`RVAALE1IS` (all ASIDs).
    pub asid: Option<Asid>,
    /// Last-level form.
    pub leaf_only: bool,
    /// TTL hint (levels 1..=3 only; the 2-bit field has no level-0 encoding).
    pub level: Option<Level>,
}

impl TlbRange {
    /// Number of 4 KiB pages covered.
    pub const fn pages(&self) -> u64 {
        (self.num as u64 + 1) << (5 * self.scale as u32 + 1)
    }
    /// Bytes covered.
    pub const fn len(&self) -> u64 {
        self.pages() << PAGE_SHIFT
    }
    /// Never empty; provided for symmetry with `len`.
    pub const fn is_empty(&self) -> bool {
        false
    }
}

/// The machine the engine runs on.
///
/// Every method is infallible except `alloc_table`. The engine holds no lock: callers
/// serialise operations on one root (and on the shared frame allocator) themselves.
///
/// # Safety
/// An implementation writes physical memory the engine names and controls the TLB: the engine's
/// memory safety (and that of everything mapped through it) rests on it keeping this contract.
///
/// # Contract
/// * `read`/`write` access descriptor `index` (0..512) of the 4 KiB table frame at `table`,
///   as single-copy-atomic 64-bit accesses (the walker may read concurrently). They do not
///   include barriers.
/// * `alloc_table` returns a frame that is zero-filled, 4 KiB aligned, below 2^48, and owned by
///   the caller until `free_table`. The zeroing need not be visible to the table walker yet:
///   the engine calls [`Platform::publish`] before linking a new table into a live tree.
/// * `tlb_maintenance` issues the operations in order, bracketed by the architecture's
///   barriers: **`DSB ISHST` before** (descriptor writes reach the point where the walker of
///   every PE sees them before any invalidation starts) and **`DSB ISH; ISB` after** (the
///   invalidations are complete on every PE in the Inner Shareable domain, and this PE's
///   pipeline refetches). When it returns, no PE holds the invalidated entries.
/// * `publish` makes prior descriptor writes visible to the walker: `DSB ISHST; ISB`. Used
///   where no TLBI is needed (invalid → valid) and before a new table is linked.
/// * `has_tlbi_range` reports FEAT_TLBIRANGE (`ID_AA64ISAR0_EL1.TLB == 0b0010`).
pub unsafe trait Platform {
    /// Reads descriptor `index` of the table at `table`.
    fn read(&self, table: PhysAddr, index: usize) -> Descriptor;
    /// Writes descriptor `index` of the table at `table`.
    fn write(&mut self, table: PhysAddr, index: usize, desc: Descriptor);
    /// Allocates a zeroed 4 KiB table frame.
    fn alloc_table(&mut self) -> Result<PhysAddr, OutOfMemory>;
    /// Returns a table frame. The engine only does this once no live descriptor and no
    /// walk-cache entry can reference it.
    fn free_table(&mut self, table: PhysAddr);
    /// Issues `ops` as one barrier-bracketed batch (see the trait docs).
    fn tlb_maintenance(&mut self, ops: &[TlbOp]);
    /// `DSB ISHST; ISB`.
    fn publish(&mut self);
    /// Whether the range forms of TLBI exist (FEAT_TLBIRANGE).
    fn has_tlbi_range(&self) -> bool;
}
