//! Per-frame metadata for all RAM ([`MemMap`], [`PageMeta`]), and folios: naturally aligned
//! blocks of 2^order frames (orders 0, 4 and 9 in practice: 4 KiB, 64 KiB = one CONTPTE run,
//! 2 MiB = one level-2 block) with reference counts, pin counts and exact mapcounts, per page
//! and folio-wide; and the invariant checker. Portable: no assembly, no `std`. The counters,
//! the reference rule, mapped-shared and anon-exclusive tracking, pins, fork, COW reuse,
//! concurrency and failures are described in docs/mm.md ("Folios").

mod check;
mod handle;
mod meta;
mod rmap;
mod types;

#[cfg(test)]
pub(crate) mod tests;

pub use check::{check, CheckError, CheckSummary, MappedLeaf};
pub use handle::{Folio, Retired, Unmapped};
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

    /// Allocates an anon folio of `order` from `source` already accounted as mapped whole by
    /// PTEs in `space`, every page anon-exclusive: the state [`alloc_folio`](Self::alloc_folio)
    /// followed by [`Folio::add_anon_ptes`]`(space, 0, pages, true)` leaves, written in one
    /// pass over the metadata. For a fault that maps a fresh folio whole (the caller's tables
    /// are ready, so the mapping cannot fail); the caller holds one reference besides the
    /// mappings' ones.
    pub fn alloc_anon_mapped<S: FrameSource + ?Sized>(
        &self,
        source: &mut S,
        order: FolioOrder,
        space: SpaceId,
    ) -> Result<Folio<'a>, FolioError> {
        let pa = source.alloc(order)?;
        match self.init_anon_mapped(pa, order, space) {
            Some(folio) => Ok(folio),
            None => {
                source.free(pa, order);
                Err(FolioError::BadFrame(pa))
            }
        }
    }
}
