//! Shared memory objects: the backing of [`VmaKind::Shared`](crate::mm::vma::VmaKind)
//! regions (`MAP_SHARED | MAP_ANONYMOUS`, or an object mapped into several address spaces).

use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

use spin::Mutex;

use super::machine::Machine;
use crate::mm::folio::{FolioOrder, MemMap};
use crate::mm::PhysAddr;

/// A handle to a shared memory object: a sparse array of file folios indexed by byte offset,
/// zero-filled on first touch, shared by every region (in any address space) that maps it.
///
/// Cloning the handle is cheap (a reference count); `==` means "same object", which is what
/// the region merge rule needs. The object owns one reference on each of its folios (the
/// "page cache" reference); mappings add their own.
///
/// # Lifetime
/// The object lives as long as some handle does. Releasing its folios needs the machine, so
/// the last handle must go through [`Shm::release`] (the address-space code does this for
/// every region piece it drops); dropping the last handle any other way leaks the folios (and
/// logs an error).
#[derive(Clone)]
pub struct Shm(Arc<ShmInner>);

struct ShmInner {
    id: u64,
    /// Folio offset → (folio address, order). Folios are naturally aligned in the object:
    /// a 64 KiB folio sits at a 64 KiB aligned offset.
    folios: Mutex<BTreeMap<u64, (PhysAddr, FolioOrder)>>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl Shm {
    /// A new, empty object.
    pub fn new() -> Shm {
        Shm(Arc::new(ShmInner {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            folios: Mutex::new(BTreeMap::new()),
        }))
    }

    /// A number identifying the object (unique for the life of the system).
    pub fn id(&self) -> u64 {
        self.0.id
    }

    /// Number of folios the object holds.
    pub fn folios(&self) -> usize {
        self.0.folios.lock().len()
    }

    /// The folio page holding byte `offset`: `(physical address of that page, folio address,
    /// folio order)`, if the object has one.
    pub fn lookup(&self, offset: u64) -> Option<(PhysAddr, PhysAddr, FolioOrder)> {
        let folios = self.0.folios.lock();
        let (&at, &(pa, order)) = folios.range(..=offset).next_back()?;
        let within = offset - at;
        (within < order.bytes()).then(|| {
            let page = within & !(crate::mm::PAGE_SIZE - 1);
            (PhysAddr(pa.0 + page), pa, order)
        })
    }

    /// Whether any folio overlaps `[offset, offset + len)`.
    pub(crate) fn any_in(&self, offset: u64, len: u64) -> bool {
        let folios = self.0.folios.lock();
        if folios.range(offset..offset + len).next().is_some() {
            return true;
        }
        folios
            .range(..offset)
            .next_back()
            .is_some_and(|(&at, &(_, order))| at + order.bytes() > offset)
    }

    /// Records a new folio at `offset` (aligned to its size, overlapping nothing). The
    /// object takes over the caller's reference.
    pub(crate) fn insert(&self, offset: u64, pa: PhysAddr, order: FolioOrder) {
        debug_assert!(offset.is_multiple_of(order.bytes()));
        debug_assert!(!self.any_in(offset, order.bytes()));
        self.0.folios.lock().insert(offset, (pa, order));
    }

    /// Drops this handle; if it was the last one, the object's references on its folios are
    /// released (folios still mapped or pinned somewhere live on until those go). Returns
    /// whether the object died.
    pub fn release<'m, M: Machine<'m> + ?Sized>(self, m: &mut M) -> bool {
        let Some(inner) = Arc::into_inner(self.0) else {
            return false;
        };
        let folios = core::mem::take(&mut *inner.folios.lock());
        let mem: &MemMap<'m> = m.mem();
        for (_, (pa, _)) in folios {
            let folio = mem.folio(pa).expect("shared object folio is allocated");
            folio.put(m);
        }
        true
    }
}

impl Default for Shm {
    fn default() -> Self {
        Shm::new()
    }
}

impl PartialEq for Shm {
    fn eq(&self, other: &Shm) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Shm {}

impl fmt::Debug for Shm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Shm({})", self.0.id)
    }
}

impl Drop for ShmInner {
    fn drop(&mut self) {
        let n = self.folios.get_mut().len();
        if n != 0 {
            log::error!(
                "shared object {} dropped with {n} folios (leaked): release it",
                self.id
            );
        }
    }
}
