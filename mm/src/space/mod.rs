//! Address spaces with process semantics: `mmap` / `munmap` / `mprotect` /
//! `madvise(MADV_DONTNEED)`, demand faults, copy-on-write `fork`, memory-backed files, pins,
//! and exit.
//!
//! Portable (no assembly, no `unsafe`): the page tables go through the engine ([`Root`], the
//! CONTPTE PTE-level API), the frames and their accounting through folios
//! ([`crate::folio`]), the regions through [`VmaTree`], and every physical data access
//! through the [`Machine`] trait.
//!
//! # Pieces
//!
//! * [`Space`]: one per process — a user [`Root`] (TTBR0, with its ASID), a [`VmaTree`] of
//!   regions and a [`SpaceId`] (the folio layer's name for it). The space takes its id from
//!   the memory map and its root's first ASID from the machine: no two live spaces share
//!   either.
//! * [`Machine`]: what the machine provides (engine [`Platform`](crate::Platform), folio
//!   [`FrameSource`](crate::folio::FrameSource), the page metadata, zero / copy / read /
//!   write of physical memory, the first ASID of a new root, root hooks).
//! * [`Shm`]: memory objects — shared anonymous memory, or read-only files in RAM — backing
//!   `Shared` and `FilePrivate` regions; [`FileFault`], the context of an object's fault
//!   handler ("Files", below).
//! * [`ForkMode`]: how [`Space::fork`] copies a space — entries (`Copy`) or level-3 tables
//!   shared until first changed (`ShareTables`, "Shared page tables", below).
//! * [`PinHandle`]: pinned user pages (the GUP `FOLL_PIN` analogue).
//! * [`SpaceStats`]: what the address space did (faults, COW decisions, fork batches).
//! * Checks: [`Space::check`] (entries against regions and folio flags) and
//!   [`check_spaces`] (that, plus the folio checker, over every live space, which it must be
//!   given and verifies it was); [`Space::peek`] reads where an address leads without
//!   faulting anything in ([`Peek`]).
//!
//! Every page-table call goes through one internal module (`pt.rs`) over the engine's
//! PTE-level API (`set_ptes`, `get_and_clear_ptes`, `wrprotect_ptes`, `set_access_flags`,
//! `pte_get`, `alloc_pte_entry`, `unmap_leaves`): user spaces hold level-3 pages only (folded
//! or not), never blocks, so nothing but table allocation can fail there.
//!
//! # Faults
//!
//! [`Space::handle_fault`]`(va, access, el, kind)` is what the abort hook calls (the
//! application runs at EL1 and touches user addresses directly; `el` is the exception level
//! of the access). It looks up the region ([`VmaTree::find`]); no region, or an access the
//! region's permissions forbid (a read needs any permission — stage 1 cannot express write-
//! or execute-only —, a write `WRITE`, a fetch `EXEC`), is [`FaultError::Segv`] (the caller
//! turns it into an error for the application, never a panic). An instruction fetch at EL1
//! is always refused (`Segv`, [`SegvCause::Access`], at its first fault): the kernel never
//! executes user memory — user pages are PXN, so answering `Ok` would only have the fetch
//! fault again, forever. Otherwise it acts on the state of the page-table entry; `kind`
//! only feeds the statistics (it may be stale: another CPU may have resolved the fault since,
//! and the outcome must be the same):
//!
//! * **no entry** (translation fault): a private region gets a fresh zero-filled anonymous
//!   folio, mapped with the region's permissions, anon-exclusive: **64 KiB** (one folded
//!   CONTPTE block, one `set_ptes`) when [`Vma::large_folio_block`] gives a 64 KiB block
//!   lying entirely inside the region, the block has nothing mapped yet, and an order-4 block
//!   can be allocated; else **4 KiB**. A shared region maps the object's folio for the page,
//!   allocating it (zero-filled, 64 KiB under the same conditions, the object's offset being
//!   64 KiB aligned) if the object has none; a 64 KiB object folio is mapped whole (folded)
//!   if its block is empty in this space, else page by page. A private object mapping maps
//!   the object's page the same way but read-only for a read or a fetch, and has the
//!   object's fault handler make a private copy for a write ("Files").
//! * **entry present, access flag clear** (access-flag fault): AF is set (over the whole
//!   folded block, which stays folded).
//! * **write to a read-only entry of a writable region**: copy-on-write, below, for an anon
//!   page; the object's fault handler for an object page of a private object mapping
//!   ("Files"). (A shared region's entry is simply made writable.)
//! * a write to a writable but clean entry (DBM set, no hardware dirty management): marked
//!   dirty. (Entries are mapped dirty when writable, so this only follows hardware or
//!   engine state changes.)
//! * anything else is spurious (a stale TLB entry, or another CPU was faster): nothing to do.
//!
//! Pages are mapped with the region's permissions from [`VmProt::pte_prot`] (user pages are
//! PXN: an application running at EL1 reads and writes them but cannot execute from them).
//!
//! # Files
//!
//! A file is a read-only [`Shm`] made by [`Shm::file`] from bytes in RAM (an in-image blob,
//! or a RAM region acting as a DAX device): its folios (file folios, 64 KiB where the offset
//! is 64 KiB aligned, else 4 KiB) are allocated and filled when it is made, the tail of the
//! last page zeroed, and it never allocates again. It is mapped like any object:
//!
//! * **shared** ([`VmaKind::Shared`]): the file's own pages are mapped, read-only. A shared
//!   mapping of a file with `WRITE` is refused ([`SpaceError::ReadOnly`], by `mmap`, and by
//!   `mprotect` adding `WRITE` to any part of one), changing nothing.
//! * **private** ([`VmaKind::FilePrivate`], which also maps an anonymous [`Shm`] privately):
//!   a read or fetch maps the object's page read-only (for an anonymous object, allocated
//!   as a shared region would); a write — to a missing page or to the read-only mapping of
//!   the object's page — is a copy-on-write performed by the **object's fault handler**
//!   ([`Shm::fault`]); anon pages (the private copies) then behave as in any private region
//!   ("Copy-on-write policy").
//!
//! A byte offset at or past the file's size rounded up to a page is past the end: any
//! access there is [`FaultError::Bus`] (`SIGBUS`), after the region's permission check.
//!
//! **The fault handler contract.** For a private write the address space first allocates
//! the destination, a 4 KiB anon folio, and the missing tables (so installing cannot fail),
//! then calls `obj.fault(m, &mut FileFault)`. The handler looks up its page at
//! [`FileFault::offset`] and copies it **straight into** [`FileFault::dest`] — one copy;
//! the source is never mapped first to be copied by a second fault — (zeroes it when an
//! anonymous object has no page there yet), and installs it with [`FileFault::install`],
//! which clears the old entry if any (break-before-make through the engine: the
//! invalidation has completed before the new entry is written), removes the old mapping's
//! accounting, maps the destination writable, young, dirty and anon-exclusive, and releases
//! the old mapping's reference after the invalidation. Success is an [`Installed`] token,
//! which only `install` makes. **Error paths**: if the handler fails (past the end:
//! `Bus`) it installs nothing and the address space frees the destination — no page is
//! leaked or left half-installed and no entry or count changed; if the destination or a
//! table cannot be allocated the handler is not called (`Oom`, nothing changed). The
//! file's pages are never written: no writable entry ever maps them (checked by
//! [`Space::check`]).
//!
//! # Copy-on-write policy
//!
//! A write fault on a read-only private page at `va`, page `i` of anon folio `F`. "Reusable"
//! is the folio layer's rule ([`Folio::try_reuse_anon`](crate::folio::Folio)): the page
//! has exactly one mapping (this one) and either it is already anon-exclusive, or every
//! mapping of `F` is in this space, `F` is not pinned and `refcount == mapcount` — no other
//! address space, pin, I/O or not-yet-released unmap can see the page. The decision, in
//! order:
//!
//! 1. **Whole-block candidate**: `F` is a 64 KiB folio, the 64 KiB block containing `va` lies
//!    in the region and maps `F`'s 16 pages in order (the block is still mapped by this folio
//!    in this space).
//! 2. If page `i` is reusable: **reuse without copying** — the whole block if it is a
//!    candidate and its 15 other pages are reusable too (its 16 entries are cleared and
//!    rewritten writable, young and dirty as one folded block: one invalidation), else page
//!    `i` alone, made writable in place ([`Root::set_access_flags`], which unfolds its block
//!    if it was folded). The same PA stays mapped: nothing is allocated or copied.
//! 3. Else, for a whole-block candidate whose folio is not pinned: allocate a 64 KiB folio,
//!    **copy the whole folio**, and replace the block by the copy, folded and writable — one
//!    fault makes the whole block private (Linux copies page by page and takes up to 16 faults;
//!    this costs up to 15 pages of copying that might never have been needed, and wins when
//!    the block is written further, the common case after fork). If the 64 KiB allocation
//!    fails, fall through.
//! 4. Else **copy the faulting page** into a new 4 KiB folio (the old folio's other pages stay
//!    shared).
//!
//! The old mapping is cleared and invalidated before the new one is written (break-before-
//! make through the engine) and the old folio's references are released after that
//! invalidation. Pinned folios are never copied away from their owner: a pinned page is
//! anon-exclusive, so a fault on it takes branch 2, and branch 3 is skipped for pinned folios,
//! so a pinned page stays the page its address space sees.
//!
//! **Unshare** (Linux's `FAULT_FLAG_UNSHARE`, used by [`Space::pin`]): the same decision for a
//! read access that needs the page exclusive. The result keeps the entry read-only (a later
//! write fault reuses it without copying: it is anon-exclusive).
//!
//! # Fork
//!
//! [`Space::fork`] builds the child's region tree ([`VmaTree::fork`]); in [`ForkMode::Copy`]
//! (the default) it copies page-table entries region by region (for
//! [`ForkMode::ShareTables`] see "Shared page tables"):
//!
//! * **shared regions**: nothing is copied; the child faults the object's pages in on demand
//!   (Linux's `vma_needs_copy`).
//! * **private object mappings**: copied as private regions (below): their anon pages are
//!   shared copy-on-write; their runs of object pages are mapped in the child with the same
//!   read-only entries (one `add_file_ptes` per run, [`SpaceStats::fork_file_batches`]).
//! * **private regions**, batched per folio as Linux's `copy_present_ptes` /
//!   `folio_pte_batch`: the parent's entries are cut into *runs* — consecutive pages of one
//!   folio at consecutive addresses in one level-3 table with equal attributes. Per run: one
//!   [`try_dup_anon_ptes`](crate::folio::Folio) (one reference add, one batched mapcount
//!   increment, anon-exclusive cleared) and one `set_ptes` into the child (read-only, access
//!   flag clear as Linux's `pte_mkold`, folded when the run covers a 64 KiB block of a 64 KiB
//!   folio). The parent's runs that had writable entries are merged into maximal address
//!   ranges and write-protected with one `wrprotect_ptes` per range, which keeps whole
//!   folded blocks folded and issues **one TLB invalidation batch per range**, not per page or
//!   per folio. [`SpaceStats::fork_dup_batches`] counts the runs: forking 1 MiB of 64 KiB
//!   folios costs 16 dup calls and one write-protect.
//! * **pinned folios**: `try_dup` refuses a run of a maybe-pinned folio containing
//!   anon-exclusive pages. The run is then taken page by page: pages that can be shared are
//!   dup'd as above; each exclusive page is **copied for the child** into a new 4 KiB folio
//!   (mapped with the region's permissions), and the parent's page stays writable and
//!   exclusive — the pin keeps seeing exactly what the parent sees.
//!
//! # Shared page tables
//!
//! [`ForkMode`] is chosen per address space ([`Space::set_fork_mode`], inherited by
//! children). In [`ForkMode::Copy`] fork copies entries as above. In
//! [`ForkMode::ShareTables`] it copies **tables, not entries**: for every level-3 table of the
//! parent, the child's level-2 descriptor points at the same table, and both level-2
//! descriptors carry `APTable = NoWrite`, so any write below either one faults. Fork then
//! costs one level-2 write in each space per 2 MiB span (plus the child's level-1/2 tables and
//! one gathered invalidation for the parent), whatever the number of pages; no folio is
//! touched. Spans where the parent ever pinned a page are copied as in `Copy` mode instead
//! (their pinned pages must be copied for the child, and copying needs the entries).
//!
//! **Accounting is per table, not per space.** A valid entry of a level-3 table is one
//! mapping — one PTE mapcount of its page, one folio reference — however many address spaces
//! link the table. The folios' "mapped shared" slots attribute the entries of a shared table
//! to one of the spaces linking it, the table's *owner*. A family of spaces (a process and
//! everything forked from it) records its shared tables in one registry: table address →
//! owner and holders (the spaces linking it; two or more, else the table is not listed).
//! With that definition every counter stays exact at every instant:
//!
//! * mapcounts and references count each table once, which is what the folio checker
//!   recomputes: [`check_spaces`] takes each shared table's leaves once, under its owner
//!   ([`Space::mapped_leaves`] likewise);
//! * "exclusive" decisions consult the table's sharing: a page mapped through a shared table
//!   is reachable from every holder, so nothing is ever decided under a shared table — every
//!   change first gives the changing space its own table (below), where the page's mapcount
//!   and slots are those of a normal private table. An anon-exclusive flag on a page of a
//!   shared table means "exclusive to that table";
//! * pins never go through a shared table ([`Space::pin`] breaks the sharing first), and a
//!   table holding a pinned page is never shared, so the flags and counts pins rely on are
//!   those of private tables.
//!
//! **Breaking the sharing.** Before any entry of a shared table would change — a fault of
//! any kind under it, `mprotect` of any part of it, `munmap` / `madvise(MADV_DONTNEED)` /
//! `mmap(MAP_FIXED)` of part of its span, a pin — the acting space **copies the table**: a new
//! level-3 table gets the same entries, anon pages read-only (they are shared with the
//! other holders now), object pages (of shared regions and private object mappings)
//! unchanged; the accounting is applied per folio run, as fork does (one
//! `try_dup_anon_ptes`, which clears anon-exclusive, or `add_file_ptes` per run); then the
//! space's level-2 entry is replaced by break-before-make with one invalidation of the 2 MiB
//! span, and the write limit is gone. If the acting space was the owner, the runs are
//! recorded for the next holder instead, so the copies take over the owner's slot counts and
//! the old entries stay attributed to a space that links them. The old table loses one
//! holder; it is never written while shared.
//!
//! **The last holder** of a formerly shared table keeps the write limit until it needs to
//! write under it; it then takes the table over: entries of anon pages that are writable but
//! no longer anon-exclusive (another holder copied them) are write-protected, and the limit is
//! lifted with one invalidation of the span. Ordinary COW faults follow. A page that nobody
//! copied is still anon-exclusive and is written in place (a fork whose child exited at once
//! costs the parent one table scan per span, and no copy).
//!
//! **Dropping.** Unmapping a whole span whose table is shared (including at exit) just
//! unlinks it from this space (one invalidation) and drops this space from the holders; if it
//! was the owner, its slot counts for the table's runs move to the next holder
//! ([`Folio::transfer_mappings`](crate::folio::Folio::transfer_mappings)).
//!
//! **Copy-mode fork under a shared table** reads the entries and dups them into the child's
//! own tables, but does not write-protect the shared table's entries (it cannot be written);
//! the write limit keeps them read-only, and the take-over above write-protects what is no
//! longer exclusive.
//!
//! # PROT_NONE
//!
//! Pages of a `PROT_NONE` region keep their contents ([`VmaTree::mprotect`] requires it) and
//! stay mapped, by valid level-3 leaves no access can use: EL1 read-only, no EL0 access,
//! PXN/UXN, **access flag clear**. Any access (EL0 or EL1) takes a fault (access flag, or
//! permission at EL0) which the handler answers with `Segv`, since the region allows nothing.
//! Keeping them mapped keeps the folio accounting exact (they are ordinary mappings to the
//! checker, fork and unmap). It requires that the hardware does not manage the access flag
//! (`TCR_EL1.HA = 0`), which the engine assumes anyway. `mprotect` rewrites the entries of
//! each changed piece with one clear (one invalidation) and one `set_ptes` per run; a private
//! page becomes writable only if it is anon-exclusive (copy-on-write pages stay read-only
//! until their write fault).
//!
//! # Pins
//!
//! [`Space::pin`]`(va, len, write)` pins the folio of every page of the range for device-style
//! access, as GUP with `FOLL_PIN`: it faults missing pages in, breaks COW for a write pin,
//! and **unshares** a read pin of a page that is not anon-exclusive, so that a pinned anon
//! page is always exclusive to its address space (the folio layer enforces it). Pins survive
//! fork (the child gets copies, above) and do not follow the page after `munmap` /
//! `MADV_DONTNEED` (the pinned frame then lives on, unmapped, until unpinned). A pin holds a
//! folio reference: [`PinHandle::release`] (or [`Space::unpin`]) drops it, after which the
//! frame may be freed.
//!
//! # Lock order
//!
//! `&mut Space` stands for the address-space lock (Linux's `mmap_lock` taken for writing, which
//! here also covers the page-table lock): every operation on a space holds it, so regions,
//! entries and folio mapcounts of one space change together. Nested inside, in this order:
//!
//! 1. the parent's space, then the child's (fork; the child is not reachable by anyone else
//!    yet, so this cannot deadlock);
//! 2. the family's shared-table registry (held only to look up or change one record; every
//!    holder of a shared table is in the family, and a table is only written by a space
//!    that no longer shares it, so the registry is the only state two spaces share here);
//! 3. an object's lock ([`Shm`], held only to look up or insert a folio; not held while its
//!    fault handler copies or installs);
//! 4. a folio's mapping lock (inside the folio operations);
//! 5. the frame allocator and the TLB maintenance (inside the [`Machine`]).
//!
//! Nothing is ever taken in the reverse order. Pins are released with the machine only
//! (no space lock needed).
//!
//! # Out of memory
//!
//! Frames are allocated in five places: folios (fault, COW, fork copies of pinned pages),
//! level-3 and intermediate tables (fault, fork), the child's root (fork), shared-object
//! folios, file folios ([`Shm::file`]). Every path allocates **before** it changes anything it cannot undo, and returns
//! [`FaultError::Oom`] / [`SpaceError::OutOfMemory`] with nothing leaked:
//!
//! * **fault**: folio first, then the missing tables (all or nothing); if the tables fail the
//!   folio is freed. A 64 KiB attempt that fails falls back to 4 KiB; only the 4 KiB failure
//!   is an error. Nothing changed.
//! * **COW**: the copy is allocated before the old mapping is touched (64 KiB failing falls
//!   back to 4 KiB). Nothing changed (a reuse needs no memory).
//! * **file COW**: the destination page, then the missing tables, before the handler is
//!   called; either failing frees what was taken. Nothing changed.
//! * **file creation**: a 64 KiB folio failing falls back to 4 KiB; a 4 KiB failure frees
//!   every folio taken so far and returns `OutOfMemory`.
//! * **fork**: the child's tables for each run are allocated before its dup. On any failure
//!   the child is torn down completely (every reference it took released), so it does not
//!   exist; the parent keeps its data and regions — only some of its private pages may have
//!   been write-protected, exactly as after a fork whose child exited at once (the next write
//!   reuses them without copying).
//! * **pin**: faults as above; on failure every pin the call took is released. Pages it faulted
//!   in stay mapped (that is invisible: they read as before).
//! * **shared tables**: breaking a share allocates the copy's table first; on failure
//!   nothing changed. A `ShareTables` fork allocates only the child's level-1/2 tables (and
//!   copies of pinned spans); on failure the child is torn down, which drops its links.
//! * **mmap**, **munmap**, **mprotect**, **madvise**, **exit** allocate no frames (munmap and
//!   friends never split a block: user spaces have none) and cannot fail after the region
//!   tree accepted the arguments — except that `mmap(MAP_FIXED)`, `munmap` and `madvise` of
//!   part of a shared table's span, and `mprotect` of any of it, first break the sharing
//!   ([`SpaceError::OutOfMemory`] before anything else changed; tables already broken by the
//!   call stay private, which is invisible). The four calls share one order: **validate,
//!   then break shares, then change**. The region tree validates the call completely first
//!   ([`VmaTree::plan_mmap`] and friends, [`VmaError::TooManyMappings`] included; or
//!   [`SpaceError::ReadOnly`]), so an argument error changes nothing — no table is copied —
//!   and is reported as such even when no memory is left; only then are the shares of the
//!   tables whose entries the call changes broken, and the regions and entries changed.
//!
//! # Teardown
//!
//! [`Space::exit`] unmaps everything in one pass (one invalidation batch per engine report
//! batch), releases every folio reference and shared object, and destroys the root: every
//! frame is back once the pins are released, and the space's id is returned to the memory
//! map. A `Space` dropped without `exit` leaks all of that: it is reported as an error, and
//! in debug builds it panics (so does dropping the last handle of a [`Shm`] without
//! [`Shm::release`], or a [`PinHandle`] without [`PinHandle::release`]).

mod fault;
mod file_fault;
mod fork;
mod machine;
mod pin;
mod pt;
mod share;
mod shm;

#[cfg(test)]
mod tests;

use alloc::collections::BTreeSet;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;

use crate::folio::{CheckError, MappedLeaf, SpaceId, Unmapped};
use crate::vma::{MapAlign, Placement, Plan, VmProt, Vma, VmaConfig, VmaError, VmaKind, VmaTree};
use crate::{Asid, Level, PhysAddr, Root, VirtAddr, PAGE_SIZE, USER_END};

pub use crate::{Access, El, FaultKind};

pub use file_fault::{FileFault, Installed};
pub use machine::Machine;
pub use pin::PinHandle;
pub use share::ForkMode;
use share::SharedTables;
pub use shm::Shm;

/// What an access to an address would reach, without faulting anything in
/// ([`Space::peek`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Peek {
    /// This byte of RAM: of the mapped page, or of the object's page an unmapped page of a
    /// shared region or of a private object mapping would map.
    Page(PhysAddr),
    /// No page yet: the page reads as zero (never touched, dropped, or an anonymous object's
    /// page not allocated yet).
    Zero,
    /// The page lies past the end of the file its region maps: an access is a bus error.
    PastEof,
    /// No region contains the address (or it is not a user address): an access is a
    /// segmentation fault.
    Unmapped,
}

impl Peek {
    /// The physical address, for [`Peek::Page`].
    pub fn pa(self) -> Option<PhysAddr> {
        match self {
            Peek::Page(pa) => Some(pa),
            Peek::Zero | Peek::PastEof | Peek::Unmapped => None,
        }
    }
}

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

/// Why an address-space operation was refused. A refused operation changed nothing (see the
/// module docs, "Out of memory", for fork).
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

/// Counters of what an address space did, cumulative. Fork counters are the parent's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpaceStats {
    /// Calls of [`Space::handle_fault`] (and internal faults of `pin`), by reported kind.
    pub faults_translation: u64,
    /// Permission faults.
    pub faults_permission: u64,
    /// Access-flag faults.
    pub faults_access_flag: u64,
    /// Faults answered with `Segv`.
    pub segv: u64,
    /// Faults answered with `Bus` (past the end of a file).
    pub bus: u64,
    /// Faults with nothing to do (spurious, or resolved by someone else).
    pub spurious: u64,
    /// Access flags set by faults.
    pub young_set: u64,
    /// Fresh anonymous folios mapped: 4 KiB.
    pub anon_4k: u64,
    /// Fresh anonymous folios mapped: 64 KiB.
    pub anon_64k: u64,
    /// Shared-object folios allocated: 4 KiB.
    pub shm_4k: u64,
    /// Shared-object folios allocated: 64 KiB.
    pub shm_64k: u64,
    /// Object pages mapped by faults (pages, not calls): in shared regions, and read-only in
    /// private object mappings.
    pub shm_pages_mapped: u64,
    /// Private copies of object pages made by an object's fault handler (writes to private
    /// object mappings).
    pub file_cow: u64,
    /// COW faults answered by reusing one page.
    pub cow_reuse_4k: u64,
    /// COW faults answered by reusing a whole 64 KiB block.
    pub cow_reuse_64k: u64,
    /// COW faults answered by copying one page.
    pub cow_copy_4k: u64,
    /// COW faults answered by copying a whole 64 KiB folio.
    pub cow_copy_64k: u64,
    /// Of the COW decisions above, those made for an unshare (pin) rather than a write.
    pub unshares: u64,
    /// Fork: `try_dup_anon_ptes` calls (runs).
    pub fork_dup_batches: u64,
    /// Fork: pages shared with the child through them.
    pub fork_dup_pages: u64,
    /// Fork: pages of pinned folios copied for the child.
    pub fork_copies: u64,
    /// Fork: `add_file_ptes` calls (runs of object pages in private object mappings).
    pub fork_file_batches: u64,
    /// Fork: `wrprotect_ptes` calls on the parent (one invalidation batch each).
    pub fork_wrprotects: u64,
    /// Pages pinned.
    pub pins: u64,
    /// Fork (`ShareTables`): level-3 tables linked into the child instead of copied.
    pub fork_tables_shared: u64,
    /// Fork (`ShareTables`): 2 MiB spans copied entry by entry (pinned pages there).
    pub fork_tables_copied: u64,
    /// Shared level-3 tables this space copied to change something under them.
    pub table_breaks: u64,
    /// Formerly shared level-3 tables this space took over as their last holder.
    pub table_takeovers: u64,
    /// Shared level-3 tables this space stopped linking without copying (whole-span unmap).
    pub table_drops: u64,
}

/// A process address space. See the module docs.
pub struct Space {
    id: SpaceId,
    root: Root,
    vmas: VmaTree<Shm>,
    stats: SpaceStats,
    /// How `fork` copies this space.
    fork_mode: ForkMode,
    /// The shared level-3 tables of this space's fork family.
    tables: Arc<SharedTables>,
    /// Whether this space ever linked a level-3 table under a write limit (it took part in
    /// a `ShareTables` fork). Sticky; when false, faults and unmaps skip every shared-table
    /// lookup.
    limited_tables: bool,
    /// 2 MiB spans where this space pinned pages (their tables are copied, not shared, at
    /// fork).
    pinned_spans: BTreeSet<u64>,
    /// Reports a space dropped without [`Space::exit`].
    live: Live,
}

/// Whether a [`Space`] has exited: dropping one that has not leaks its pages, its tables and
/// its id, which is reported (see [`report_leak`]).
struct Live {
    id: SpaceId,
    exited: bool,
}

impl Drop for Live {
    fn drop(&mut self) {
        if !self.exited {
            report_leak(format_args!(
                "{} dropped without exit: its pages, tables and id leak",
                self.id
            ));
        }
    }
}

/// Reports a value dropped without the release its type requires — the last handle of a
/// [`Shm`], a [`PinHandle`], a [`Space`] that did not exit — whose memory therefore leaks:
/// an error in the log and, in debug builds (every host test), a panic, so that a test doing
/// it fails. Not while the thread is already panicking (a failing test dropping its values
/// on the way out).
pub(crate) fn report_leak(what: fmt::Arguments<'_>) {
    log::error!("{what}");
    if cfg!(debug_assertions) && !panicking() {
        panic!("leak: {what}");
    }
}

#[cfg(test)]
fn panicking() -> bool {
    std::thread::panicking()
}

#[cfg(not(test))]
fn panicking() -> bool {
    false
}

impl fmt::Debug for Space {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Space")
            .field("id", &self.id)
            .field("root", &self.root)
            .field("regions", &self.vmas.len())
            .finish()
    }
}

/// Something [`Space::check`] found wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpaceCheckError {
    /// The region tree's own invariants.
    Regions(&'static str),
    /// A leaf outside every region, or not a 4 KiB page.
    StrayLeaf(VirtAddr),
    /// A leaf whose permissions or access flag disagree with its region's.
    Permissions(VirtAddr),
    /// A writable private page that is not anon-exclusive.
    Exclusive(VirtAddr),
    /// A page whose folio does not fit its region's backing: an anon page in a shared
    /// region, a file page in a private anonymous region, or a file page that is not the
    /// object's page at its offset or (in a private object mapping) is writable.
    Backing(VirtAddr),
    /// The folio checker (over the leaves given to [`check_spaces`]).
    Folios(CheckError),
    /// A shared level-3 table (of the span at this address) is linked or recorded wrongly.
    SharedTable(VirtAddr, &'static str),
    /// A live address space of the memory map that [`check_spaces`] was not given (it must
    /// be given all of them).
    MissingSpace(SpaceId),
    /// A space given to [`check_spaces`] twice, or not live in the machine's memory map.
    UnknownSpace(SpaceId),
}

impl Space {
    /// An empty address space with the default region configuration. Its [`SpaceId`] comes
    /// from the memory map ([`MemMap::new_space_id`](crate::folio::MemMap::new_space_id))
    /// and its root's first ASID from the machine ([`Machine::new_asid`]): no live address
    /// space shares either.
    pub fn new<'m, M: Machine<'m> + ?Sized>(m: &mut M) -> Result<Space, SpaceError> {
        Space::with_config(m, VmaConfig::default())
    }

    /// An empty address space with a region configuration (search window, limits).
    pub fn with_config<'m, M: Machine<'m> + ?Sized>(
        m: &mut M,
        config: VmaConfig,
    ) -> Result<Space, SpaceError> {
        Space::with_regions(m, VmaTree::with_config(config), Arc::new(SharedTables::default()))
    }

    fn with_regions<'m, M: Machine<'m> + ?Sized>(
        m: &mut M,
        vmas: VmaTree<Shm>,
        tables: Arc<SharedTables>,
    ) -> Result<Space, SpaceError> {
        // On failure `vmas` is dropped: a new tree is empty, and a forked one's object
        // handles are clones of the parent's (never the last).
        let asid = m.new_asid();
        let root = Root::new_user(m, asid).map_err(|_| SpaceError::OutOfMemory)?;
        m.root_created(&root);
        let id = m.mem().new_space_id();
        Ok(Space {
            id,
            root,
            vmas,
            stats: SpaceStats::default(),
            fork_mode: ForkMode::default(),
            tables,
            limited_tables: false,
            pinned_spans: BTreeSet::new(),
            live: Live { id, exited: false },
        })
    }

    /// The folio layer's id of this space (unique among the live spaces of its memory map).
    pub fn id(&self) -> SpaceId {
        self.id
    }

    /// The translation tables (for TTBR0: [`Root::ttbr`]).
    pub fn root(&self) -> &Root {
        &self.root
    }

    /// Records the ASID the space now runs with, as the ASID allocator assigned it when the
    /// space was activated ([`AsidAllocator::activate`](crate::AsidAllocator::activate)).
    pub fn set_asid(&mut self, asid: Asid) {
        self.root.set_asid(asid);
    }

    /// The regions.
    pub fn regions(&self) -> &VmaTree<Shm> {
        &self.vmas
    }

    /// The counters.
    pub fn stats(&self) -> &SpaceStats {
        &self.stats
    }

    /// `mmap`: a new region of `len` bytes at `placement` with `prot`, backed by `kind`
    /// (`VmaKind::AnonPrivate`, or `VmaKind::Shared` / `VmaKind::FilePrivate` with a [`Shm`]
    /// object — anonymous or a file — and the offset of the region's first page in it),
    /// aligned to `align` ([`MapAlign::Size64K`] and above let faults use 64 KiB folios).
    /// Pages are populated on demand. A [`Placement::Fixed`] mapping first unmaps what it
    /// replaces. Returns the start address.
    ///
    /// A shared mapping of a read-only file with `WRITE` is refused with
    /// [`SpaceError::ReadOnly`] (checked first), changing nothing; a private one may be
    /// writable (writes make private copies). The object handle in `kind` is taken over
    /// either way: a refused mapping releases it ([`Shm::release`]).
    pub fn mmap<'m, M: Machine<'m> + ?Sized>(
        &mut self,
        m: &mut M,
        placement: Placement,
        len: u64,
        prot: VmProt,
        kind: VmaKind<Shm>,
        align: MapAlign,
    ) -> Result<VirtAddr, SpaceError> {
        let plan = if prot.contains(VmProt::WRITE) && read_only_shared(&kind) {
            Err(SpaceError::ReadOnly)
        } else {
            self.vmas
                .plan_mmap(placement, len, prot, &kind, align)
                .map_err(SpaceError::Vma)
        };
        let mapped = plan.and_then(|plan| self.carry_out(m, plan, false));
        // The plan held its own handle, now in the tree or dropped: releasing `kind`'s frees
        // the object of a refused mapping if it was the last handle.
        release_kind(m, kind);
        let mapped = mapped?;
        if !mapped.replaced.is_empty() {
            self.zap(m, mapped.addr.as_u64(), len);
            release_regions(m, mapped.replaced);
        }
        Ok(mapped.addr)
    }

    /// `munmap`: removes every mapped page of `[addr, addr + len)` (holes are fine; a range
    /// with nothing mapped is a no-op) and releases them once the TLB invalidation has
    /// completed. A zero `len` is refused ([`VmaError::ZeroLength`], Linux's `EINVAL`).
    pub fn munmap<'m, M: Machine<'m> + ?Sized>(
        &mut self,
        m: &mut M,
        addr: VirtAddr,
        len: u64,
    ) -> Result<(), SpaceError> {
        let plan = self.vmas.plan_munmap(addr, len)?;
        let pieces = self.carry_out(m, plan, false)?;
        if !pieces.is_empty() {
            self.zap(m, addr.as_u64(), len);
            release_regions(m, pieces);
        }
        Ok(())
    }

    /// `mprotect`: sets the permissions of `[addr, addr + len)`, which must be mapped
    /// entirely. Present pages are re-protected (see the module docs, "PROT_NONE": private
    /// pages become writable only if anon-exclusive).
    ///
    /// Adding `WRITE` to any part of a shared mapping of a read-only file is refused with
    /// [`SpaceError::ReadOnly`], changing nothing (checked after the alignment and range
    /// checks, before [`VmaError::NotMapped`]).
    pub fn mprotect<'m, M: Machine<'m> + ?Sized>(
        &mut self,
        m: &mut M,
        addr: VirtAddr,
        len: u64,
        prot: VmProt,
    ) -> Result<(), SpaceError> {
        if prot.contains(VmProt::WRITE) && addr.is_aligned(PAGE_SIZE) {
            let end = addr
                .as_u64()
                .checked_add(len)
                .filter(|&e| e <= USER_END && len.is_multiple_of(PAGE_SIZE));
            if let Some(end) = end {
                let mut regions = self.vmas.overlapping(addr, VirtAddr(end));
                if regions.any(|v| read_only_shared(&v.kind)) {
                    return Err(SpaceError::ReadOnly);
                }
            }
        }
        let plan = self.vmas.plan_mprotect(addr, len, prot)?;
        for c in self.carry_out(m, plan, true)? {
            self.reprotect(m, &c.piece);
        }
        Ok(())
    }

    /// `madvise(MADV_DONTNEED)`: drops the pages of `[addr, addr + len)`, which must be mapped
    /// entirely. Private anonymous pages read back as zero, private copies in a private
    /// object mapping as the object's page again; shared pages are re-read from their object.
    pub fn madvise_dontneed<'m, M: Machine<'m> + ?Sized>(
        &mut self,
        m: &mut M,
        addr: VirtAddr,
        len: u64,
    ) -> Result<(), SpaceError> {
        let plan = self.vmas.plan_madvise_dontneed(addr, len)?;
        let pieces = self.carry_out(m, plan, false)?;
        if !pieces.is_empty() {
            self.zap(m, addr.as_u64(), len);
        }
        Ok(())
    }

    /// Process exit: unmaps everything, releases every page and shared object, destroys the
    /// tables. Outstanding pins keep their frames until released.
    pub fn exit<'m, M: Machine<'m> + ?Sized>(mut self, m: &mut M) {
        self.zap(m, 0, USER_END);
        let regions = self.vmas.unmap_all();
        release_regions(m, regions);
        m.root_retiring(&self.root);
        self.root.destroy(m);
        m.mem().free_space_id(self.id);
        self.live.exited = true;
    }

    /// What an access to `va` would reach right now, without faulting in anything new: the
    /// mapped page (even a `PROT_NONE` one), or for an unmapped page of a shared region or a
    /// private object mapping the object's page ([`Peek::Page`]); else whether the page reads
    /// as zero ([`Peek::Zero`]), lies past the end of a file ([`Peek::PastEof`]) or in no
    /// region ([`Peek::Unmapped`]). For inspection (debuggers, core dumps, tests).
    pub fn peek<'m, M: Machine<'m> + ?Sized>(&self, m: &M, va: VirtAddr) -> Peek {
        if va.as_u64() >= USER_END {
            return Peek::Unmapped;
        }
        let off = va.as_u64() & (PAGE_SIZE - 1);
        let page = va.as_u64() - off;
        if let Some(d) = pt::get(&self.root, m, page) {
            return Peek::Page(PhysAddr(d.address().0 + off));
        }
        let Some(vma) = self.vmas.find(va) else {
            return Peek::Unmapped;
        };
        let (Some(obj), Some(offset)) = (vma.kind.object(), vma.object_offset(va)) else {
            return Peek::Zero;
        };
        if obj.past_eof(offset) {
            return Peek::PastEof;
        }
        match obj.lookup(offset) {
            Some((pa, _, _)) => Peek::Page(PhysAddr(pa.0 + off)),
            None => Peek::Zero,
        }
    }

    /// The live leaves accounted to this space, for [`crate::folio::check`]: every leaf,
    /// except those of shared level-3 tables accounted to another space (module docs,
    /// "Shared page tables").
    pub fn mapped_leaves<'m, M: Machine<'m> + ?Sized>(&self, m: &M) -> Vec<MappedLeaf> {
        self.accounted_leaves(m, &pt::leaves(&self.root, m))
            .map(|l| MappedLeaf::new(self.id, l))
            .collect()
    }

    /// Checks this space's own invariants: the region tree's; every leaf is a 4 KiB page
    /// inside a region; its permissions are the region's (private pages possibly read-only;
    /// `PROT_NONE` pages in their inaccessible form); a writable private page is
    /// anon-exclusive; private anonymous regions map anon folios, shared ones file folios,
    /// private object mappings either (file folios read-only only); a file page is the
    /// object's page at its offset.
    pub fn check<'m, M: Machine<'m> + ?Sized>(&self, m: &M) -> Result<(), SpaceCheckError> {
        self.check_leaves(m, &pt::leaves(&self.root, m))
    }

    /// [`Space::check`] over `leaves`, which must be every leaf of this space.
    fn check_leaves<'m, M: Machine<'m> + ?Sized>(
        &self,
        m: &M,
        leaves: &[crate::Leaf],
    ) -> Result<(), SpaceCheckError> {
        self.vmas.check().map_err(SpaceCheckError::Regions)?;
        let mem = m.mem();
        // Spans whose level-2 entry forbids writes: their entries are read-only whatever
        // their own permissions say.
        let limited: BTreeSet<u64> = self
            .root
            .pte_tables(m, 0, USER_END)
            .iter()
            .filter(|t| t.write_protected)
            .map(|t| t.va.as_u64())
            .collect();
        for leaf in leaves {
            let va = leaf.va;
            if leaf.level != Level::L3 || leaf.size != PAGE_SIZE {
                return Err(SpaceCheckError::StrayLeaf(va));
            }
            let vma = self.vmas.find(va).ok_or(SpaceCheckError::StrayLeaf(va))?;
            let d = leaf.desc;
            let attrs = pt::user_attrs(vma.prot.pte_prot());
            let ro = attrs.with_prot(attrs.prot.without(crate::Prot::WRITE));
            let got = leaf.attrs;
            let perms_ok = if vma.prot.is_none() {
                got == attrs && !d.young()
            } else {
                got == attrs || (got == ro)
            };
            if !perms_ok {
                return Err(SpaceCheckError::Permissions(va));
            }
            let (folio, idx) = mem.folio_page(leaf.pa).ok_or(SpaceCheckError::StrayLeaf(va))?;
            let object_page = |obj: &Shm| {
                vma.object_offset(va)
                    .and_then(|off| obj.lookup(off))
                    .is_some_and(|(pa, _, _)| pa == leaf.pa)
            };
            let backing_ok = match &vma.kind {
                VmaKind::AnonPrivate => folio.is_anon(),
                VmaKind::Shared { obj, .. } => !folio.is_anon() && object_page(obj),
                VmaKind::FilePrivate { obj, .. } => folio.is_anon() || (!d.writable() && object_page(obj)),
            };
            if !backing_ok {
                return Err(SpaceCheckError::Backing(va));
            }
            let writable = d.writable() && !limited.contains(&pt::span_of(va.as_u64()));
            if folio.is_anon() && writable && !folio.is_anon_exclusive(idx) {
                return Err(SpaceCheckError::Exclusive(va));
            }
        }
        Ok(())
    }

    // -------------------------------------------------------------------------------------
    // Internals shared by the operations.

    /// The region containing `va` if it allows `access` at `el`.
    fn region_for(&self, va: VirtAddr, access: Access, el: El) -> Result<Vma<Shm>, FaultError> {
        let segv = |cause| FaultError::Segv { va, cause };
        if va.as_u64() >= USER_END {
            return Err(segv(SegvCause::Unmapped));
        }
        let vma = self.vmas.find(va).ok_or(segv(SegvCause::Unmapped))?;
        let allowed = match access {
            Access::Read => !vma.prot.is_none(),
            Access::Write => vma.prot.contains(VmProt::WRITE),
            // The kernel never executes user memory (user pages are PXN).
            Access::Exec => el == El::El0 && vma.prot.contains(VmProt::EXEC),
        };
        if !allowed {
            return Err(segv(SegvCause::Access));
        }
        Ok(vma.clone())
    }

    /// The step `mmap`, `munmap`, `mprotect` and `madvise` share once the region tree has
    /// validated the call (`plan`: every argument error was reported before): the sharing of
    /// the level-3 tables whose entries the call changes is broken
    /// ([`Space::break_shares_in`], `whole` as there), which is the only step that can fail
    /// (for lack of memory, with the regions unchanged), then the tree changes. Returns the
    /// call's result for the caller to change the entries accordingly.
    fn carry_out<'m, M: Machine<'m> + ?Sized, T>(
        &mut self,
        m: &mut M,
        plan: Plan<Shm, T>,
        whole: bool,
    ) -> Result<T, SpaceError> {
        if let Some((start, end)) = plan.pages() {
            self.break_shares_in(m, start.as_u64(), end.as_u64(), whole)?;
        }
        Ok(self.vmas.apply(plan))
    }

    /// Unmaps `[start, start + len)` and releases every folio reference the removed mappings
    /// held, after the invalidation.
    fn zap<'m, M: Machine<'m> + ?Sized>(&mut self, m: &mut M, start: u64, len: u64) {
        let end = start.saturating_add(len).min(USER_END);
        if start >= end {
            return;
        }
        self.forget_pins_in(start, end);
        // Shared tables are unlinked, not unmapped. The rest goes in pieces of at most
        // `ZAP_BATCH` that hold level-3 tables: the references waiting for a piece's
        // invalidation stay bounded (16384 for 4 KiB folios, 512 KiB of heap), however large
        // the range; empty stretches cost nothing.
        let all = self.root.pte_tables(m, start, end);
        let tables = self.drop_shares(m, start, end, all);
        let mut i = 0;
        while i < tables.len() {
            let first = tables[i].va.as_u64();
            let mut j = i;
            while j + 1 < tables.len() && tables[j + 1].va.as_u64() < first + ZAP_BATCH {
                j += 1;
            }
            let piece_end = (tables[j].va.as_u64() + pt::TABLE_SPAN).min(end);
            self.zap_piece(m, first.max(start), piece_end);
            i = j + 1;
        }
    }

    /// [`Space::zap`] of `[start, end)` in one engine call.
    fn zap_piece<'m, M: Machine<'m> + ?Sized>(&mut self, m: &mut M, start: u64, end: u64) {
        let mem = m.mem();
        let id = self.id;
        let mut refs: Vec<Unmapped<'m>> = Vec::new();
        pt::unmap(&mut self.root, m, start, end - start, |leaf| {
            debug_assert_eq!(leaf.level, Level::L3, "user spaces map pages only");
            let (folio, idx) = mem
                .folio_page(leaf.pa)
                .expect("a user page maps an allocated folio");
            let nr = (leaf.size / PAGE_SIZE) as usize;
            let u = folio
                .remove_ptes(id, idx, nr)
                .expect("every user mapping is accounted");
            match refs.last_mut() {
                Some(last) if last.folio() == folio => last.merge(u),
                _ => refs.push(u),
            }
        });
        for u in refs {
            u.release(m);
        }
    }

    /// Rewrites the present pages of `piece` (whose permissions changed) for its new
    /// permissions: one clear of the whole piece (one invalidation), then one `set_ptes` per
    /// run. The folio accounting does not change (same pages, same space).
    fn reprotect<'m, M: Machine<'m> + ?Sized>(&mut self, m: &mut M, piece: &Vma<Shm>) {
        let mem = m.mem();
        let (start, end) = (piece.start.as_u64(), piece.end.as_u64());
        let shared = piece.kind.is_shared();
        let prot = piece.prot.pte_prot();
        let can_write = piece.prot.contains(VmProt::WRITE);
        let runs = pt::runs(&self.root, m, mem, start, end, |folio, idx, _| {
            can_write && (shared || folio.is_anon_exclusive(idx))
        });
        if runs.is_empty() {
            return;
        }
        pt::clear(&mut self.root, m, start, ((end - start) / PAGE_SIZE) as usize);
        for run in runs {
            let attrs = match prot {
                Some(p) if !run.key => pt::user_attrs(Some(p.without(crate::Prot::WRITE))),
                p => pt::user_attrs(p),
            };
            let young = prot.is_some() && run.desc.young();
            let desc = pt::page_desc(attrs, run.pa, run.desc.dirty()).with_young(young);
            pt::set(
                &mut self.root,
                m,
                run.va,
                desc,
                run.nr,
                pt::foldable(run.folio.order()),
            );
        }
    }
}

/// Most bytes [`Space::zap`] unmaps in one engine call (32 level-3 tables).
const ZAP_BATCH: u64 = 64 << 20;

/// Drops region pieces removed from a tree, releasing objects whose last region went.
fn release_regions<'m, M: Machine<'m> + ?Sized>(m: &mut M, pieces: Vec<Vma<Shm>>) {
    for piece in pieces {
        release_kind(m, piece.kind);
    }
}

/// Releases the object handle of `kind`, if any (freeing the object if it was the last).
fn release_kind<'m, M: Machine<'m> + ?Sized>(m: &mut M, kind: VmaKind<Shm>) {
    match kind {
        VmaKind::Shared { obj, .. } | VmaKind::FilePrivate { obj, .. } => {
            obj.release(m);
        }
        VmaKind::AnonPrivate => {}
    }
}

/// Whether `kind` is a shared mapping of a read-only file (which must never be writable).
fn read_only_shared(kind: &VmaKind<Shm>) -> bool {
    matches!(kind, VmaKind::Shared { obj, .. } if obj.is_read_only())
}

/// Runs every check over all the live address spaces at once: each space's
/// [`Space::check`], then the folio checker over all their leaves. `all_live` must be
/// exactly the live address spaces of `m.mem()`
/// ([`MemMap::live_space_ids`](crate::folio::MemMap::live_space_ids)), each once: the
/// folio counts cover the mappings of all of them. Anything else is reported as such
/// ([`SpaceCheckError::MissingSpace`], [`SpaceCheckError::UnknownSpace`]) before the rest is
/// checked, instead of as the counts that would not add up.
pub fn check_spaces<'m, M: Machine<'m> + ?Sized>(m: &M, all_live: &[&Space]) -> Result<(), SpaceCheckError> {
    let spaces = all_live;
    let live = m.mem().live_space_ids();
    let mut given: Vec<SpaceId> = spaces.iter().map(|s| s.id).collect();
    given.sort_unstable();
    for pair in given.windows(2) {
        if pair[0] == pair[1] {
            return Err(SpaceCheckError::UnknownSpace(pair[0]));
        }
    }
    if let Some(&id) = given.iter().find(|id| live.binary_search(id).is_err()) {
        return Err(SpaceCheckError::UnknownSpace(id));
    }
    if let Some(&id) = live.iter().find(|id| given.binary_search(id).is_err()) {
        return Err(SpaceCheckError::MissingSpace(id));
    }
    let mut all = Vec::new();
    for s in spaces {
        let leaves = pt::leaves(&s.root, m);
        s.check_leaves(m, &leaves)?;
        all.extend(s.accounted_leaves(m, &leaves).map(|l| MappedLeaf::new(s.id, l)));
    }
    share::check_sharing(m, spaces)?;
    crate::folio::check(m.mem(), all).map_err(SpaceCheckError::Folios)?;
    Ok(())
}
