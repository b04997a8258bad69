//! Memory objects: the backing of [`VmaKind::Shared`](crate::vma::VmaKind) and
//! [`VmaKind::FilePrivate`](crate::vma::VmaKind) regions — shared anonymous memory
//! (`MAP_SHARED | MAP_ANONYMOUS`, or an object mapped into several address spaces) and
//! read-only files held in RAM (an in-image blob or a RAM region acting as a DAX device) —,
//! and the fault handler that fills a private copy of an object page (docs/mm.md,
//! "Files").

use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

use spin::Mutex;

use super::file_fault::{FileFault, Installed};
use super::machine::Machine;
use super::{FaultError, SpaceError};
use crate::folio::{FolioError, FolioKind, FolioOrder, MemMap};
use crate::{PhysAddr, CONT_SIZE, PAGE_SIZE};

/// A handle to a memory object: an array of file folios indexed by byte offset, shared by
/// every region (in any address space) that maps it. Two flavours:
///
/// * **anonymous** ([`Shm::new`]): sparse, each folio allocated zero-filled on the first
///   fault that needs it; writable;
/// * **file** ([`Shm::file`], [`Shm::from_frames`]): a read-only file of
///   [`size`](Shm::size) bytes held in RAM, every folio in place when the object is made —
///   allocated and filled by `file`, or adopted where the bytes already lie by `from_frames`.
///   A fault never allocates for it; an offset at or past the size rounded up to a page is
///   past the end of the file (an access there is a bus error). It cannot be mapped shared
///   and writable.
///
/// Cloning the handle is cheap (a reference count); `==` means "same object", which is what
/// the region merge rule needs. The object owns one reference on each of its folios (the
/// "page cache" reference); mappings add their own.
///
/// # Lifetime
/// The object lives as long as some handle does. Releasing its folios needs the machine, so
/// the last handle must go through [`Shm::release`] (the address-space code does this for
/// every region piece it drops, and for the object of a refused `mmap`). Dropping the last
/// handle any other way leaks the folios: it is reported as an error and, in debug builds,
/// panics — even for an object that holds no folio yet, so that the mistake shows before it
/// leaks memory. Other handles may be dropped freely.
#[derive(Clone)]
pub struct Shm(Arc<ShmInner>);

struct ShmInner {
    id: u64,
    /// The size of a file object in bytes; `None` for an anonymous object.
    size: Option<u64>,
    /// Folio offset → (folio address, order). Folios are naturally aligned in the object:
    /// a 64 KiB folio sits at a 64 KiB aligned offset.
    folios: Mutex<BTreeMap<u64, (PhysAddr, FolioOrder)>>,
    /// Set by [`Shm::release`] of the last handle.
    released: bool,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl Shm {
    /// A new, empty anonymous object.
    pub fn new() -> Shm {
        Shm::with_size(None, BTreeMap::new())
    }

    fn with_size(size: Option<u64>, folios: BTreeMap<u64, (PhysAddr, FolioOrder)>) -> Shm {
        Shm(Arc::new(ShmInner {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            size,
            folios: Mutex::new(folios),
            released: false,
        }))
    }

    /// A read-only file of `data.len()` bytes in RAM (a DAX-like device): allocates its
    /// folios from `m` — 64 KiB where the offset is 64 KiB aligned and the whole folio lies
    /// before the end of the last page, else (or if the 64 KiB allocation fails) 4 KiB —,
    /// fills them with `data` and zeroes the tail of the last page. The object keeps one
    /// reference on each folio. On [`SpaceError::OutOfMemory`] every folio taken so far is
    /// freed.
    pub fn file<'m, M: Machine<'m> + ?Sized>(m: &mut M, data: &[u8]) -> Result<Shm, SpaceError> {
        let mem: &MemMap<'m> = m.mem();
        let size = data.len() as u64;
        let end = size.next_multiple_of(PAGE_SIZE);
        let mut folios = BTreeMap::new();
        let mut off = 0;
        while off < end {
            let big = off.is_multiple_of(CONT_SIZE) && off + CONT_SIZE <= end;
            let folio = match big
                .then(|| mem.alloc_folio(m, FolioOrder::CONT, FolioKind::File).ok())
                .flatten()
            {
                Some(f) => f,
                None => match mem.alloc_folio(m, FolioOrder::SMALL, FolioKind::File) {
                    Ok(f) => f,
                    Err(_) => {
                        for (_, (pa, _)) in folios {
                            mem.folio(pa).expect("folio just allocated").put(m);
                        }
                        return Err(SpaceError::OutOfMemory);
                    }
                },
            };
            let len = folio.size();
            let from = off as usize;
            let to = (off + len).min(size) as usize;
            m.write_bytes(folio.pa(), &data[from..to]);
            let tail = (off + len - to as u64) as usize;
            if tail != 0 {
                // Only the last page of the file can be partial (64 KiB folios end at or
                // before `end`).
                debug_assert!(tail < PAGE_SIZE as usize);
                m.write_bytes(PhysAddr(folio.pa().0 + len - tail as u64), &ZEROES[..tail]);
            }
            folios.insert(off, (folio.pa(), folio.order()));
            off += len;
        }
        Ok(Shm::with_size(Some(size), folios))
    }

    /// A read-only file of `size` bytes made of the frames that already hold it — bytes in
    /// the kernel image, or any RAM whose owner gives it up for the object's life —, without
    /// copying: the frames are adopted as file folios
    /// ([`MemMap::adopt_folio`]), 64 KiB where the offset in the file and the physical
    /// address are both 64 KiB aligned and the whole folio lies in `body`, else 4 KiB. No
    /// frame is taken from the frame source, and none is ever given to it: when the object
    /// and every mapping and pin of its folios are gone, the metadata returns to the free
    /// state and the frames stay with their owner.
    ///
    /// * `body`: the page-aligned physical address of the file's first byte; the whole pages
    ///   `[body, body + size rounded down to a page)` hold the file's bytes in order;
    /// * `tail`: when `size` is not a multiple of the page, the page holding the file's last
    ///   `size % PAGE_SIZE` bytes **followed by zeroes** (a mapping of the last page shows the
    ///   whole page, and past the end of a file it must read zero); `None` otherwise. The
    ///   bytes after the file in the body's own pages are never mapped, so they may be
    ///   anything (the next file of an archive).
    ///
    /// Refused with [`FolioError::BadFrame`] — everything adopted so far given back — if a
    /// frame is unaligned, not covered by the page metadata, or in a folio already.
    ///
    /// # Panics
    /// If `tail` is given for a whole number of pages or missing for a partial last page.
    ///
    /// # Safety
    /// For as long as the object or any mapping or pin of its folios lives, the frames of
    /// `body` and `tail`:
    /// * hold the file's bytes as described (and the zeroes after them in `tail`), and
    ///   nothing writes them: every address space mapping the object sees them, read-only;
    /// * belong to no one who could free, reuse or hand them out: they are not the frame
    ///   source's, and not in any other object.
    pub unsafe fn from_frames<'m, M: Machine<'m> + ?Sized>(
        m: &mut M,
        size: u64,
        body: PhysAddr,
        tail: Option<PhysAddr>,
    ) -> Result<Shm, FolioError> {
        let mem: &MemMap<'m> = m.mem();
        let whole = size & !(PAGE_SIZE - 1);
        assert_eq!(
            tail.is_some(),
            whole != size,
            "a tail page is given exactly for a partial last page"
        );
        let mut folios = BTreeMap::new();
        let mut adopt = |off: u64, pa: PhysAddr, order: FolioOrder| match mem.adopt_folio(pa, order) {
            Ok(f) => {
                folios.insert(off, (f.pa(), f.order()));
                Ok(())
            }
            Err(e) => Err(e),
        };
        let mut result = Ok(());
        let mut off = 0;
        while off < whole && result.is_ok() {
            let pa = PhysAddr(body.0 + off);
            let big = off.is_multiple_of(CONT_SIZE) && pa.is_aligned(CONT_SIZE) && off + CONT_SIZE <= whole;
            let order = if big { FolioOrder::CONT } else { FolioOrder::SMALL };
            result = adopt(off, pa, order);
            off += order.bytes();
        }
        if let (Some(pa), Ok(())) = (tail, &result) {
            result = adopt(whole, pa, FolioOrder::SMALL);
        }
        if let Err(e) = result {
            for (_, (pa, _)) in folios {
                mem.folio(pa).expect("folio just adopted").put(m);
            }
            return Err(e);
        }
        Ok(Shm::with_size(Some(size), folios))
    }

    /// A number identifying the object (unique for the life of the system).
    pub fn id(&self) -> u64 {
        self.0.id
    }

    /// Whether the object is a read-only file (made by [`Shm::file`] or [`Shm::from_frames`]).
    pub fn is_read_only(&self) -> bool {
        self.0.size.is_some()
    }

    /// The size in bytes of a file object; `None` for an anonymous object.
    pub fn size(&self) -> Option<u64> {
        self.0.size
    }

    /// Whether byte `offset` is past the end of a file object: at or past its size rounded
    /// up to a page (never for an anonymous object).
    pub fn past_eof(&self, offset: u64) -> bool {
        self.0
            .size
            .is_some_and(|s| offset >= s.next_multiple_of(PAGE_SIZE))
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
            let page = within & !(crate::PAGE_SIZE - 1);
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

    /// Records a new folio at `offset` (aligned to its size, overlapping nothing) of an
    /// anonymous object. The object takes over the caller's reference.
    pub(crate) fn insert(&self, offset: u64, pa: PhysAddr, order: FolioOrder) {
        debug_assert!(!self.is_read_only(), "a file object never allocates");
        debug_assert!(offset.is_multiple_of(order.bytes()));
        debug_assert!(!self.any_in(offset, order.bytes()));
        self.0.folios.lock().insert(offset, (pa, order));
    }

    /// The fault handler of a write fault on a private mapping of the object (docs/mm.md,
    /// "Files"): copies the object's page at [`FileFault::offset`] straight
    /// into the destination page the address space allocated ([`FileFault::dest`]) — zeroes
    /// it if an anonymous object has no page there yet — and installs it with
    /// [`FileFault::install`]. Past the end of a file it fails with [`FaultError::Bus`]
    /// without touching anything (the caller frees the destination).
    pub fn fault<'m, M: Machine<'m> + ?Sized>(
        &self,
        m: &mut M,
        vmf: &mut FileFault<'_, 'm>,
    ) -> Result<Installed, FaultError> {
        let off = vmf.offset();
        if self.past_eof(off) {
            return Err(FaultError::Bus { va: vmf.va() });
        }
        match self.lookup(off) {
            Some((src, _, _)) => m.copy(vmf.dest(), src, PAGE_SIZE),
            None => {
                debug_assert!(!self.is_read_only(), "a file has every page before its end");
                m.zero(vmf.dest(), PAGE_SIZE);
            }
        }
        Ok(vmf.install(m))
    }

    /// Drops this handle; if it was the last one, the object's references on its folios are
    /// released (folios still mapped or pinned somewhere live on until those go). Returns
    /// whether the object died.
    pub fn release<'m, M: Machine<'m> + ?Sized>(self, m: &mut M) -> bool {
        let Some(mut inner) = Arc::into_inner(self.0) else {
            return false;
        };
        inner.released = true;
        let folios = core::mem::take(inner.folios.get_mut());
        let mem: &MemMap<'m> = m.mem();
        for (_, (pa, _)) in folios {
            let folio = mem.folio(pa).expect("shared object folio is allocated");
            folio.put(m);
        }
        true
    }
}

/// Zeroes for the tail of a file's last page.
static ZEROES: [u8; PAGE_SIZE as usize] = [0; PAGE_SIZE as usize];

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
        match self.0.size {
            Some(size) => write!(f, "Shm({}, file of {size} bytes)", self.0.id),
            None => write!(f, "Shm({})", self.0.id),
        }
    }
}

impl Drop for ShmInner {
    fn drop(&mut self) {
        if !self.released {
            let n = self.folios.get_mut().len();
            super::report_leak(format_args!(
                "the last handle of shared object {} dropped without release: its {n} folios leak",
                self.id
            ));
        }
    }
}
