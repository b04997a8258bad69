//! The contract between an address space and an object's fault handler ([`Shm::fault`](super::Shm::fault)):
//! the context of a write fault on a private mapping of the object ([`FileFault`]) and the
//! proof that the handler installed its page ([`Installed`]).

use core::fmt;

use super::machine::Machine;
use super::{ptes, Space};
use crate::folio::Folio;
use crate::{Attrs, Descriptor, PhysAddr, VirtAddr};

/// The context of a write fault on a private mapping of an object, handed to the object's
/// fault handler ([`Shm::fault`](super::Shm::fault)) with a destination page the address space allocated
/// before the call. The handler fills the destination from the object's page at
/// [`offset`](Self::offset) — one copy, straight from the source — and installs it with
/// [`install`](Self::install). If the handler returns an error without installing, the
/// address space frees the destination: nothing changed (docs/mm.md,
/// "Files").
pub struct FileFault<'a, 'm> {
    pub(super) space: &'a mut Space,
    /// The faulting page.
    pub(super) va: u64,
    /// Its byte offset in the object.
    pub(super) offset: u64,
    /// The attributes of the new, writable entry.
    pub(super) attrs: Attrs,
    /// The entry being replaced (a read-only mapping of the object's page), if any.
    pub(super) old: Option<Descriptor>,
    /// The destination: a fresh 4 KiB anon folio holding the allocation's reference, until
    /// installed.
    pub(super) dest: Option<Folio<'m>>,
}

/// Proof that [`FileFault::install`] ran: what a fault handler returns on success.
#[derive(Debug)]
pub struct Installed(pub(super) ());

impl<'m> FileFault<'_, 'm> {
    /// The faulting page.
    pub fn va(&self) -> VirtAddr {
        VirtAddr(self.va)
    }

    /// The byte offset of the faulting page in the object.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The physical address of the destination page (4 KiB, not mapped anywhere, contents
    /// undefined until the handler fills them).
    ///
    /// # Panics
    /// After [`install`](Self::install).
    pub fn dest(&self) -> PhysAddr {
        self.dest.as_ref().expect("destination already installed").pa()
    }

    /// The page currently mapped at [`va`](Self::va) (a read-only mapping of the object's
    /// page) that the new page replaces, if any.
    pub fn replaces(&self) -> Option<PhysAddr> {
        self.old.map(|d| d.address())
    }

    /// Installs the filled destination at [`va`](Self::va): clears the old entry if any
    /// (break-before-make through the engine: the invalidation has completed when the new
    /// entry is written), removes the old mapping's accounting, maps the destination
    /// writable, young and dirty as an anon-exclusive page, and releases the old mapping's
    /// reference (after the invalidation). Cannot fail: the address space allocated the
    /// destination and the level-3 table before calling the handler, and holds its lock.
    ///
    /// # Panics
    /// If called twice.
    pub fn install<M: Machine<'m> + ?Sized>(&mut self, m: &mut M) -> Installed {
        let dest = self.dest.take().expect("destination already installed");
        let id = self.space.id;
        let root = &mut self.space.root;
        let va = self.va;
        debug_assert_eq!(
            ptes::get(root, m, va).map(|d| d.address()),
            self.old.map(|d| d.address()),
            "the entry changed under the fault handler"
        );
        let old = self.old.map(|d| {
            let (folio, idx) = m
                .mem()
                .folio_page(d.address())
                .expect("a user page maps an allocated folio");
            debug_assert!(!folio.is_anon(), "the old entry maps the object's page");
            ptes::clear(root, m, va, 1);
            folio.remove_ptes(id, idx, 1).expect("the entry mapped the page")
        });
        dest.add_anon_ptes(id, 0, 1, true).expect("fresh folio");
        let desc = ptes::page_desc(self.attrs, dest.pa().0, true);
        ptes::set(root, m, va, desc, 1, false);
        dest.put(m);
        if let Some(u) = old {
            u.release(m);
        }
        self.space.stats.file_cow += 1;
        Installed(())
    }
}

impl fmt::Debug for FileFault<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileFault")
            .field("space", &self.space.id)
            .field("va", &VirtAddr(self.va))
            .field("offset", &self.offset)
            .field("replaces", &self.replaces())
            .field("dest", &self.dest.as_ref().map(|d| d.pa()))
            .finish()
    }
}
