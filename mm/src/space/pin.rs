//! Pins: the GUP `FOLL_PIN` analogue (docs/mm.md, "Pins").

use alloc::vec::Vec;
use core::fmt;

use super::fault::Need;
use super::machine::Machine;
use super::{ptes, Access, El, FaultError, SegvCause, Space};
use crate::folio::{FolioError, SpaceId};
use crate::{PhysAddr, VirtAddr, PAGE_SIZE, USER_END};

/// Pinned user pages: one folio pin (and reference) per page, in address order.
///
/// The frames stay allocated, and stay the pages the address space sees at those addresses
/// (docs/mm.md, "Pins"), until the handle is released with [`PinHandle::release`] or
/// [`Space::unpin`]. Dropping it unreleased leaks the pins: it is reported as an error and,
/// in debug builds, panics (even for a handle of no page, so that the mistake shows before
/// it leaks memory).
#[must_use = "release the pins with PinHandle::release or Space::unpin"]
pub struct PinHandle {
    space: SpaceId,
    va: VirtAddr,
    write: bool,
    pages: Vec<PhysAddr>,
    released: bool,
}

impl PinHandle {
    /// The address space the pages were pinned in.
    pub fn space(&self) -> SpaceId {
        self.space
    }
    /// The first pinned page's address.
    pub fn va(&self) -> VirtAddr {
        self.va
    }
    /// Whether the pin allows writing (the pages were made writable).
    pub fn write(&self) -> bool {
        self.write
    }
    /// The physical address of each pinned page, in address order: what a device accesses.
    pub fn pages(&self) -> &[PhysAddr] {
        &self.pages
    }
    /// Number of pages.
    pub fn len(&self) -> usize {
        self.pages.len()
    }
    /// Whether no page is pinned.
    pub fn is_empty(&self) -> bool {
        self.pages.is_empty()
    }
    /// Drops every pin and its reference (freeing frames nothing else holds).
    pub fn release<'m, M: Machine<'m> + ?Sized>(mut self, m: &mut M) {
        self.released = true;
        let mem = m.mem();
        for pa in core::mem::take(&mut self.pages) {
            let folio = mem.folio(pa).expect("pinned folio is allocated");
            folio.unpin(m).expect("the folio is pinned");
        }
    }
}

impl fmt::Debug for PinHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PinHandle")
            .field("space", &self.space)
            .field("va", &self.va)
            .field("write", &self.write)
            .field("pages", &self.pages.len())
            .finish()
    }
}

impl Drop for PinHandle {
    fn drop(&mut self) {
        if !self.released {
            super::report_leak(format_args!(
                "{} pins of {} at {} dropped without release: they leak",
                self.pages.len(),
                self.space,
                self.va
            ));
        }
    }
}

impl Space {
    /// Pins the pages covering `[va, va + len)` for device-style access (`write`: the device
    /// may write them). Faults missing pages in, breaks copy-on-write for a write pin and
    /// unshares a shared anon page for a read pin, so that every pinned anon page is
    /// anon-exclusive. Fails like a fault (`Segv` if the range is not entirely accessible,
    /// `Oom`), releasing the pins taken so far. `len == 0` pins nothing.
    pub fn pin<'m, M: Machine<'m> + ?Sized>(
        &mut self,
        m: &mut M,
        va: VirtAddr,
        len: u64,
        write: bool,
    ) -> Result<PinHandle, FaultError> {
        let first = va.align_down(PAGE_SIZE);
        let mut h = PinHandle {
            space: self.id,
            va: first,
            write,
            pages: Vec::new(),
            released: false,
        };
        if len == 0 {
            return Ok(h);
        }
        let last = va
            .as_u64()
            .checked_add(len - 1)
            .filter(|&l| l < USER_END)
            .ok_or(FaultError::Segv {
                va,
                cause: SegvCause::Unmapped,
            })?;
        let mut page = first.as_u64();
        while page <= last {
            match self.pin_page(m, page, write) {
                Ok(pa) => h.pages.push(pa),
                Err(e) => {
                    h.release(m);
                    return Err(e);
                }
            }
            page += PAGE_SIZE;
        }
        Ok(h)
    }

    /// Releases a pin of this space (same as [`PinHandle::release`]).
    pub fn unpin<'m, M: Machine<'m> + ?Sized>(&mut self, m: &mut M, h: PinHandle) {
        debug_assert_eq!(h.space, self.id, "pin of another address space");
        h.release(m);
    }

    /// Pins the page at `page`, faulting (or unsharing) until it is present, writable if
    /// asked, and pinnable.
    fn pin_page<'m, M: Machine<'m> + ?Sized>(
        &mut self,
        m: &mut M,
        page: u64,
        write: bool,
    ) -> Result<PhysAddr, FaultError> {
        let access = if write { Access::Write } else { Access::Read };
        let vma = self.region_for(VirtAddr(page), access, El::El1)?;
        // Never pin through a shared table (the other holders would see the pinned page), and
        // never share this span's table at a later fork.
        self.own_span(m, page)?;
        self.note_pinned(page);
        let mem = m.mem();
        // Each round makes progress (maps, copies or marks exclusive); three suffice.
        for _ in 0..4 {
            let Some(d) = ptes::get(&self.root, m, page) else {
                self.fault_in(m, &vma, page, Need::of(access))?;
                continue;
            };
            if write && !d.writable() {
                self.fault_in(m, &vma, page, Need::of(access))?;
                continue;
            }
            let (folio, idx) = mem.folio_page(d.address()).expect("mapped folio");
            match folio.pin(idx) {
                Ok(()) => {
                    self.stats.pins += 1;
                    return Ok(d.address());
                }
                Err(FolioError::NotExclusive { .. }) => {
                    let need = Need { write, unshare: true };
                    self.fault_in(m, &vma, page, need)?;
                }
                Err(e) => panic!("pin of a mapped page refused: {e:?}"),
            }
        }
        panic!("pinning {page:#x} made no progress");
    }
}
