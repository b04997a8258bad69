//! Per-frame metadata for all RAM, and folios: naturally aligned blocks of 2^order frames
//! (orders 0, 4 and 9 in practice: 4 KiB, 64 KiB = one CONTPTE run, 2 MiB = one level-2
//! block) with reference counts, pin counts and exact mapcounts, per page and folio-wide.
//!
//! Portable: no assembly, no `std`; the checker needs `alloc`.
//!
//! # Pieces
//!
//! * [`PageMeta`]: 32 bytes per 4 KiB frame (Tessera's `struct page`). **All-zero bytes are
//!   the state of a free frame**: the array is initialised by zeroing it, nothing else.
//! * [`MemMap`]: the `PageMeta` array covering `[base, base + frames * 4 KiB)`, over storage
//!   the caller provides (`&mut [PageMeta]`, or raw bytes with [`MemMap::from_bytes`]).
//!   Lookup: physical address → page metadata → folio head ([`MemMap::folio_page`]), by
//!   alignment (every frame records its folio's order).
//!   It also names the address spaces mapping its folios ([`MemMap::new_space_id`]: a
//!   [`SpaceId`] no live one has; [`MemMap::live_space_ids`]).
//! * [`Folio`]: a `Copy` handle (a pointer, not an owned reference) with every operation.
//! * [`FrameSource`]: where folios get their frames (the buddy allocator). A folio's frames
//!   return to it exactly when its reference count drops to zero, after its metadata has
//!   been reset to zero.
//! * [`Unmapped`]: references detached from removed mappings, released after the TLB
//!   invalidation.
//! * [`check`]: the invariant checker, against the live leaf mappings of every address space.
//!
//! # Counters
//!
//! | counter | where | meaning |
//! |---------|-------|---------|
//! | refcount | head | references of any kind; the folio is freed when it reaches 0 |
//! | PTE mapcount | every page | level-3 (4 KiB) leaves mapping this page, in all address spaces |
//! | entire mapcount | second page | level-2 (2 MiB) block leaves mapping the whole folio |
//! | total mapcount | second page (order 0: the PTE mapcount) | Σ PTE mapcounts + entire mapcount: every leaf mapping any part of the folio counts once (Linux's large mapcount) |
//! | page mapcount | computed | PTE mapcount + entire mapcount: the leaves through which this page is reachable |
//! | pincount | head | pins (DMA, long-term access); each also holds a reference |
//! | two (space, count) slots + SHARED flag | head | which address spaces map the folio ("Mapped shared") |
//! | ANON | head | anonymous memory (fixed at allocation, [`FolioKind`]) |
//! | ANON-EXCLUSIVE | every page | see "Anon-exclusive" |
//!
//! All counters are exact at every instant at which the folio's mapping lock is free (see
//! "Concurrency"); [`check`] recomputes them from the page tables.
//!
//! # What a mapping is
//!
//! A mapping is **one valid leaf descriptor** in one address space's translation tables
//! whose output lies in the folio:
//!
//! * a **PTE mapping**: a level-3 (4 KiB page) descriptor. It counts one in that page's PTE
//!   mapcount and one in the total, and holds one reference;
//! * an **entire mapping**: a level-2 (2 MiB block) descriptor. Blocks are naturally aligned
//!   and so are folios, so a level-2 block maps exactly one order-9 folio, all of it; only
//!   order-9 ([`FolioOrder::PMD`]) folios can be entirely mapped. It counts one in the
//!   entire mapcount and one in the total (not 512), and holds one reference.
//!
//! Level-1 (1 GiB) blocks never map folios. The kernel's linear map is not a mapping in
//! this sense (it maps all RAM, allocated or not) and is never counted.
//!
//! ## CONTPTE runs are PTE mappings
//!
//! A folio of order ≥ 4 may be mapped by runs of 16 level-3 entries carrying the Contiguous
//! bit. **Such a run is 16 PTE mappings, counted per page, exactly like the same entries
//! without the bit** — even when one run maps a whole order-4 folio in one address space.
//! This is mainline Linux's choice; Barry Song's proposal to count a fully CONTPTE-mapped
//! folio as an entire mapping is not adopted, because:
//!
//! * the Contiguous bit is a TLB hint managed by the CONTPTE layer, which folds and
//!   unfolds runs on its own (a partial unmap, `mprotect` or access-flag change of one page
//!   of a run unfolds it). If a folded run were an entire mapping, every unfold would need
//!   a mapcount conversion under the folio lock, coupling two layers that are independent
//!   today, and a folio could change from "entire" to "PTE" mapped without any mapping
//!   being added or removed;
//! * COW decisions need the exact number of mappings of *the faulting page*; per-page counts
//!   give it directly, and the folio-wide questions ("is the whole folio mapped by this
//!   address space only?") are answered in O(1) by the total mapcount and the slots below,
//!   so an entire count for CONTPTE would buy nothing;
//! * "entire" keeps a definition the checker can verify from leaves alone (a level-2
//!   block), whatever the Contiguous bits say.
//!
//! ## Splitting an entire mapping
//!
//! Replacing a 2 MiB block by a table of 4 KiB entries (a partial `munmap`/`mprotect`) is
//! one call, [`Folio::split_entire`]`(space, first, nr)`: it first adds one PTE mapping of
//! each kept page `first..first + nr` (taking `nr` references), then removes the entire
//! mapping (whose reference comes back in an [`Unmapped`]). Kept pages' page mapcounts do
//! not change, so their anon-exclusive flags stay. A hole in the middle is a split keeping
//! all 512 pages followed by [`Folio::remove_ptes`] of the hole.
//!
//! # The reference rule
//!
//! `refcount = total mapcount + pincount + other references` (the allocation's reference,
//! [`Folio::get`]s, unreleased [`Unmapped`]s, caches, I/O), so **`refcount >= total
//! mapcount + pincount` holds at every instant**. The API enforces the order that keeps it:
//!
//! * every `add_*` and `try_dup_*` call takes its references *before* raising any mapcount;
//!   [`Folio::pin`] takes its reference before raising the pin count;
//! * every `remove_*` / [`Folio::split_entire`] call lowers the mapcounts and returns the
//!   mapping's references as an [`Unmapped`], which the caller releases *after* the TLB
//!   invalidation for the removed entries has completed — a stale TLB entry may still reach
//!   the frames until then, so they must not be freed earlier (Linux's `mmu_gather`);
//!   [`Folio::unpin`] drops the pin before its reference.
//!
//! Debug builds assert the rule after every mapping operation, and [`Folio::put`] asserts
//! (always) that a folio reaching refcount 0 is neither mapped nor pinned.
//!
//! # Mapped shared
//!
//! "Mapped shared" means: **more than one address space has a mapping (PTE or entire) of
//! some page of the folio**. Address spaces are named by [`SpaceId`]s, which every mapping
//! operation takes. The folio tracks them like Linux's MM_ID scheme, with two slots of
//! (space, count):
//!
//! * adding `d` mappings in space `s`: if a slot holds `s`, its count grows by `d`; else if
//!   a slot is free, `s` takes it with count `d`; else nothing is recorded for `s`;
//! * removing `d` mappings in `s`: if a slot holds `s`, its count shrinks by `d`, and the
//!   slot is freed when that reaches zero or less;
//! * the **SHARED** flag is recomputed after each change: set iff the folio is mapped and no
//!   slot's count equals the total mapcount.
//!
//! A slot's count never exceeds the number of mappings its space really has (it can only
//! be smaller, when the space had untracked mappings when it took the slot). Hence:
//!
//! * **Exact**: [`Folio::maybe_mapped_shared`] `== false` ⇒ every mapping of the folio
//!   belongs to one address space (or there is none); [`Folio::mapped_exclusively_by`]`(s)
//!   == true` ⇒ every mapping belongs to `s`. COW reuse relies only on these directions.
//!   Likewise, two or more spaces mapping ⇒ `maybe_mapped_shared() == true`.
//! * **Exact as long as at most two address spaces map the folio at the same time** (since
//!   it was last unmapped everywhere): then every mapping space holds a slot with its exact
//!   count, so `maybe_mapped_shared()` is exactly "two spaces map it". This covers the
//!   common cases (a private folio; a parent and one child after fork).
//! * **Conservative otherwise**: after three or more spaces mapped it at once, a space may
//!   be left with untracked (or under-counted) mappings, and the folio then reads as
//!   "maybe shared" (and not "mapped exclusively by" that space) even when that space is
//!   the only one left — until that space's mappings are all gone, or the folio is unmapped
//!   everywhere. The cost is a COW copy that was not strictly needed, never a wrong reuse.
//!
//! The checker verifies the slot bounds and the flag formula against the page tables.
//!
//! # Anon-exclusive
//!
//! A page of an anon folio is **anon-exclusive** when it is mapped by exactly one leaf, in
//! one address space, and that mapping may be made writable without COW. Invariant
//! (checked): anon-exclusive ⇒ anon folio and page mapcount == 1. Maintained by:
//!
//! * set by [`Folio::add_anon_ptes`] / [`Folio::add_anon_entire`] with `exclusive` (refused
//!   unless the pages are unmapped), and by a successful COW reuse
//!   ([`Folio::try_reuse_anon`], [`Folio::try_reuse_anon_entire`]);
//! * a second mapping of an exclusive page can only be added by fork's
//!   [`Folio::try_dup_anon_ptes`] / [`Folio::try_dup_anon_entire`], which clears the flag
//!   (non-exclusive `add_anon_*` refuses exclusive pages);
//! * cleared when the page's mapping is removed ([`Folio::remove_ptes`],
//!   [`Folio::remove_entire`], and the dropped pages of [`Folio::split_entire`]), and by
//!   [`Folio::try_clear_anon_exclusive`] (e.g. before swap-out or migration).
//!
//! For an entire mapping the flag is kept on all 512 pages.
//!
//! # Pins
//!
//! A pin ([`Folio::pin`]) is a reference that promises that the memory seen by the pinner
//! (DMA, long-term GUP) stays the memory the owning address space sees. Rules:
//!
//! * **"maybe pinned" is exact here** (`pincount != 0`, kept for every order — Linux
//!   approximates it for small folios); it is folio-granular: a pin of one page makes the
//!   whole folio "maybe pinned";
//! * an anon page can only be pinned while anon-exclusive ([`FolioError::NotExclusive`]:
//!   the caller unshares it by COW first, as Linux's GUP does);
//! * an anon-exclusive page of a maybe-pinned folio is never made shared: fork's dup
//!   and `try_clear_anon_exclusive` refuse ([`FolioError::MaybePinned`], nothing changed),
//!   and the caller copies the page for the child instead. Pin and dup/clear both run under
//!   the folio lock, so they cannot race past each other.
//!
//! # Fork
//!
//! For each run of `nr` consecutive anon pages of one folio mapped by PTEs in the parent,
//! the fork path calls [`Folio::try_dup_anon_ptes`]`(child, first, nr)`: one call takes `nr`
//! references, adds one PTE mapping per page in the child and clears the pages'
//! anon-exclusive flags; or, if the folio may be pinned and any of the pages is
//! anon-exclusive, it fails with nothing changed and the caller copies. The caller
//! write-protects the parent's entries (and maps the child's read-only). Entire mappings:
//! [`Folio::try_dup_anon_entire`]. File mappings are simply added for the child
//! ([`Folio::add_file_ptes`], [`Folio::add_file_entire`]).
//!
//! # COW reuse
//!
//! On a write fault on a read-only PTE mapping of page `p` of an anon folio in space `s`,
//! [`Folio::try_reuse_anon`]`(s, p, extra_refs)` decides whether the page may be reused in
//! place (made writable) instead of copied. It answers yes, and marks `p` anon-exclusive,
//! iff the page has exactly one mapping (the faulting one) and
//!
//! * `p` is already anon-exclusive (no fork shared it since it was last exclusive), or
//! * all of: every mapping of the folio is in `s` ([`Folio::mapped_exclusively_by`], exact
//!   in this direction); the folio is not pinned; and `refcount == total mapcount +
//!   extra_refs`, where `extra_refs` are the references the caller itself holds — so every
//!   reference is a mapping in `s` or the caller's, and nothing else (another address
//!   space, a pin, I/O, a cache, a concurrent lookup) can reach the page.
//!
//! For a whole-block fault, [`Folio::try_reuse_anon_entire`] additionally requires the
//! entire mapping to be the folio's only mapping.
//!
//! References held by unreleased [`Unmapped`]s count as "something else": a mapping that
//! was removed (in any address space) but whose TLB entries may not be invalidated yet can
//! still reach the page, so it blocks reuse until it is released.
//!
//! # Concurrency
//!
//! Counters are atomics. Reference operations ([`Folio::get`], [`Folio::try_get`],
//! [`Folio::put`]) are lock-free. Every operation that changes mapcounts, slots, pins or
//! anon-exclusive flags runs under the folio's mapping lock (a bit spin lock in the head's
//! flags), so multi-counter updates are atomic with respect to each other; single-counter
//! queries are lock-free loads. Never call folio operations from interrupt context. The
//! callers still serialise changes of one page table themselves (the page table lock).
//!
//! # Failures
//!
//! Every fallible operation validates everything before changing anything: **a refused
//! operation changed nothing**. Misuse that cannot be refused cleanly (a reference taken
//! on a freed folio, refcount underflow or overflow, freeing a mapped folio, a page index
//! outside the folio in a query) panics.

mod check;
mod handle;
mod meta;
mod rmap;
mod types;

#[cfg(test)]
pub(crate) mod tests;

pub use check::{check, CheckError, CheckSummary, MappedLeaf};
pub use handle::{Folio, Unmapped};
pub use meta::{MemMap, MemMapError, PageMeta};
pub use types::{FolioError, FolioKind, FolioOrder, FrameSource, SpaceId};

impl<'a> MemMap<'a> {
    /// Allocates a folio of `order` and `kind` from `source`: initialises the head and tail
    /// metadata; the caller holds the one reference.
    pub fn alloc_folio<S: FrameSource + ?Sized>(
        &self,
        source: &mut S,
        order: FolioOrder,
        kind: FolioKind,
    ) -> Result<Folio<'a>, FolioError> {
        let pa = source.alloc(order)?;
        match self.init_folio(pa, order, kind == FolioKind::Anon) {
            Some(folio) => Ok(folio),
            None => {
                source.free(pa, order);
                Err(FolioError::BadFrame(pa))
            }
        }
    }
}
