//! Differential property test: random sequences of `mmap` / `munmap` / `mprotect` /
//! `madvise` / `fork` / write / read / exec (at EL0 and EL1) / pin / unpin / device writes
//! through pins / exit over up to five address spaces (three at the start), against a
//! reference that keeps plain bytes: per process, a map from page address to (permissions,
//! backing), the backing being private bytes, a page of a shared object, or a page of an
//! object mapped privately (its own bytes once written); the reference keeps the objects'
//! bytes per object. The objects are anonymous shared memory objects and read-only files
//! (mapped shared read-only — a writable shared mapping must be refused — or privately; pages
//! past the end of a file are bus errors). Some mappings are given a new file's only handle:
//! a refused one must free the file at once. Calls with invalid arguments, some with every
//! allocation failing, must report their argument error and change nothing — no shared
//! table is copied. The kernel never executes user memory: fetches at EL1 are refused.
//!
//! Reads, writes and fetches go through the model MMU (its TLB included); a fault calls
//! `handle_fault` and the access is retried. Before every step the model touches every
//! mapping of every root (speculative walks), so a missing invalidation leaves a stale entry.
//! After every step:
//!
//! * the model's TLB coherence and contiguous-group checks, each space's own checks, and the
//!   folio checker over the leaves of every live space;
//! * every page of the window, in every space, holds what the reference says (read without
//!   faulting: the mapped frame, the object's page, or zero);
//! * every attached pin still reaches the page its address space (or object) has at that
//!   address.
//!
//! At the end every space exits, pins and objects are released, and every folio frame and
//! table frame must be back.
//!
//! The window is 1 MiB straddling a level-0 boundary (512 GiB), so table allocation and
//! freeing at every level happen; the simulated RAM is 16 MiB, so memory can run out (an
//! operation failing for lack of memory must change nothing the reference can see).

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use proptest::prelude::*;

use super::*;
use crate::folio::MappedLeaf;
use crate::vma::{MapAlign, Placement, VmProt, VmaError, VmaKind, LARGE_FOLIO_SIZE};

const WINDOW: u64 = (512 << 30) - (512 << 10);
const PAGES: u64 = 256;
const MAX_SPACES: usize = 5;
/// Anonymous objects: pool indices `0..OBJECTS`.
const OBJECTS: usize = 3;
/// Read-only files: pool indices `OBJECTS..OBJECTS + FILE_SIZES.len()`, with these sizes (then
/// the files `Op::MmapLast` mapped).
const FILE_SIZES: [u64; 2] = [20 * KB4 as u64 + 777, 48 * KB4 as u64];
/// Pages per 64 KiB block.
const BLOCK: u64 = 16;

type Bytes = Rc<[u8; KB4]>;

#[derive(Clone, Debug)]
enum Back {
    /// Private bytes; `None` reads as zero.
    Private(Option<Bytes>),
    /// Page `off` (bytes) of shared object `obj` (index in the pool).
    Shared { obj: usize, off: u64 },
    /// Page `off` of object `obj` mapped privately: `own` bytes once written (or made
    /// private by a write pin), else the object's.
    FilePrivate {
        obj: usize,
        off: u64,
        own: Option<Bytes>,
    },
}

#[derive(Clone, Debug)]
struct RefPage {
    prot: VmProt,
    back: Back,
}

struct Proc {
    space: Space,
    pages: BTreeMap<u64, RefPage>,
}

/// What an access should do, by the reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// Succeed (or run out of memory).
    Ok,
    /// `Segv` (no region).
    Unmapped,
    /// `Segv` (the region's permissions forbid it).
    Denied,
    /// `Bus` (past the end of a file).
    Bus,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    /// The page of space `id` at `va`.
    Private { id: SpaceId, va: u64 },
    /// Byte offset `off` of object `obj`.
    Shared { obj: usize, off: u64 },
    /// Nothing observable any more.
    Detached,
}

struct Pin {
    handle: PinHandle,
    targets: Vec<Target>,
}

#[derive(Clone, Debug)]
enum Op {
    Mmap {
        s: usize,
        page: u64,
        n: u64,
        prot: usize,
        big: bool,
        noreplace: bool,
        /// `(object, offset in pages, shared)`.
        obj: Option<(usize, u64, bool)>,
    },
    Munmap {
        s: usize,
        page: u64,
        n: u64,
    },
    Mprotect {
        s: usize,
        page: Sel,
        n: u64,
        prot: usize,
    },
    Madvise {
        s: usize,
        page: Sel,
        n: u64,
    },
    Fork {
        s: usize,
        /// `ForkMode::ShareTables` (else `Copy`).
        share: bool,
    },
    Exit {
        s: usize,
    },
    Write {
        s: usize,
        page: Sel,
        off: u64,
        len: u64,
        byte: u8,
        el1: bool,
    },
    Read {
        s: usize,
        page: Sel,
        off: u64,
        len: u64,
        el1: bool,
    },
    Exec {
        s: usize,
        page: Sel,
        el1: bool,
    },
    /// `Mmap` of a new file of `size` bytes, whose only handle the call is given.
    MmapLast {
        s: usize,
        page: u64,
        n: u64,
        prot: usize,
        big: bool,
        noreplace: bool,
        size: u64,
        /// Offset in pages, and whether the mapping is shared.
        obj: (u64, bool),
    },
    /// Every call of [`Bad`], with invalid arguments on (or from) a selected page; with
    /// `no_memory`, every allocation fails meanwhile.
    Invalid {
        s: usize,
        page: Sel,
        no_memory: bool,
    },
    Pin {
        s: usize,
        page: Sel,
        n: u64,
        write: bool,
    },
    Unpin {
        i: usize,
    },
    Dma {
        i: usize,
        page: usize,
        off: u64,
        byte: u8,
    },
}

/// The invalid calls of [`Op::Invalid`].
#[derive(Clone, Copy, Debug)]
enum Bad {
    MunmapUnaligned,
    MunmapEmpty,
    MadviseUnaligned,
    MadviseHole,
    MprotectUnaligned,
    MprotectHole,
    MmapUnaligned,
    MmapMisaligned,
}

impl Bad {
    const ALL: [Bad; 8] = [
        Bad::MunmapUnaligned,
        Bad::MunmapEmpty,
        Bad::MadviseUnaligned,
        Bad::MadviseHole,
        Bad::MprotectUnaligned,
        Bad::MprotectHole,
        Bad::MmapUnaligned,
        Bad::MmapMisaligned,
    ];
}

const PROTS: [VmProt; 6] = [
    VmProt::NONE,
    VmProt::READ,
    VmProt::RW,
    VmProt::RX,
    VmProt::from_bits_truncate(7),
    VmProt::RW,
];

/// A page of the window: mostly one of the space's mapped pages (the `n`-th, modulo their
/// number), sometimes any page.
#[derive(Clone, Copy, Debug)]
struct Sel {
    any: bool,
    n: u64,
}

fn sel() -> impl Strategy<Value = Sel> {
    (prop::bool::weighted(0.1), 0..PAGES).prop_map(|(any, n)| Sel { any, n })
}

fn range() -> impl Strategy<Value = (u64, u64)> {
    prop_oneof![
        3 => (0..PAGES, 1..40u64),
        2 => (0..PAGES / BLOCK, 1..5u64).prop_map(|(b, n)| (b * BLOCK, n * BLOCK)),
        1 => (0..PAGES, 1..PAGES),
    ]
    .prop_map(|(p, n)| (p, n.min(PAGES - p)))
}

/// A range starting at a selected page (for calls that need it mapped).
fn sel_range() -> impl Strategy<Value = (Sel, u64)> {
    (sel(), prop_oneof![3 => 1..8u64, 1 => 1..40u64])
}

fn op() -> impl Strategy<Value = Op> {
    let s = 0..MAX_SPACES;
    prop_oneof![
        3 => (s.clone(), range(), 0..PROTS.len(), prop::bool::weighted(0.6), prop::bool::weighted(0.15),
              prop::option::weighted(0.4, (0..OBJECTS + FILE_SIZES.len(), prop_oneof![0..64u64, (0..4u64).prop_map(|b| b * BLOCK)], any::<bool>())))
            .prop_map(|(s, (page, n), prot, big, noreplace, obj)| Op::Mmap { s, page, n, prot, big, noreplace, obj }),
        1 => (s.clone(), range()).prop_map(|(s, (page, n))| Op::Munmap { s, page, n }),
        2 => (s.clone(), sel_range(), 0..PROTS.len()).prop_map(|(s, (page, n), prot)| Op::Mprotect { s, page, n, prot }),
        1 => (s.clone(), sel_range()).prop_map(|(s, (page, n))| Op::Madvise { s, page, n }),
        3 => (s.clone(), any::<bool>()).prop_map(|(s, share)| Op::Fork { s, share }),
        2 => s.clone().prop_map(|s| Op::Exit { s }),
        14 => (s.clone(), sel(), 0..KB4 as u64, 1..48u64, any::<u8>(), any::<bool>())
            .prop_map(|(s, page, off, len, byte, el1)| Op::Write { s, page, off, len, byte, el1 }),
        5 => (s.clone(), sel(), 0..KB4 as u64, 1..48u64, any::<bool>())
            .prop_map(|(s, page, off, len, el1)| Op::Read { s, page, off, len, el1 }),
        2 => (s.clone(), sel(), any::<bool>()).prop_map(|(s, page, el1)| Op::Exec { s, page, el1 }),
        1 => (s.clone(), range(), 0..PROTS.len(), any::<bool>(), prop::bool::weighted(0.15), 0..4 * KB4 as u64,
              (0..8u64, any::<bool>()))
            .prop_map(|(s, (page, n), prot, big, noreplace, size, obj)| Op::MmapLast { s, page, n, prot, big, noreplace, size, obj }),
        2 => (s.clone(), sel(), any::<bool>()).prop_map(|(s, page, no_memory)| Op::Invalid { s, page, no_memory }),
        2 => (s.clone(), sel(), 1..20u64, any::<bool>()).prop_map(|(s, page, n, write)| Op::Pin { s, page, n, write }),
        1 => (0..8usize).prop_map(|i| Op::Unpin { i }),
        2 => (0..8usize, 0..20usize, 0..KB4 as u64, any::<u8>()).prop_map(|(i, page, off, byte)| Op::Dma { i, page, off, byte }),
    ]
}

fn va_of(page: u64) -> u64 {
    WINDOW + page * PAGE_SIZE
}

static ZERO: [u8; KB4] = [0; KB4];

struct World<'a, 'm> {
    m: &'a mut TestMachine<'m>,
    procs: Vec<Proc>,
    objs: Vec<Shm>,
    /// The size of each object of `objs` that is a file.
    sizes: Vec<Option<u64>>,
    /// Object bytes by (object, page offset).
    obj_pages: HashMap<(usize, u64), Bytes>,
    pins: Vec<Pin>,
    /// Counters of the spaces that exited.
    totals: Vec<SpaceStats>,
}

/// Field-by-field sum (for the statistics printed with `SPACE_STATS=1`).
fn sum(a: SpaceStats, b: &SpaceStats) -> SpaceStats {
    SpaceStats {
        faults_translation: a.faults_translation + b.faults_translation,
        faults_permission: a.faults_permission + b.faults_permission,
        faults_access_flag: a.faults_access_flag + b.faults_access_flag,
        segv: a.segv + b.segv,
        bus: a.bus + b.bus,
        spurious: a.spurious + b.spurious,
        young_set: a.young_set + b.young_set,
        anon_4k: a.anon_4k + b.anon_4k,
        anon_64k: a.anon_64k + b.anon_64k,
        shm_4k: a.shm_4k + b.shm_4k,
        shm_64k: a.shm_64k + b.shm_64k,
        shm_pages_mapped: a.shm_pages_mapped + b.shm_pages_mapped,
        file_cow: a.file_cow + b.file_cow,
        cow_reuse_4k: a.cow_reuse_4k + b.cow_reuse_4k,
        cow_reuse_64k: a.cow_reuse_64k + b.cow_reuse_64k,
        cow_copy_4k: a.cow_copy_4k + b.cow_copy_4k,
        cow_copy_64k: a.cow_copy_64k + b.cow_copy_64k,
        unshares: a.unshares + b.unshares,
        fork_dup_batches: a.fork_dup_batches + b.fork_dup_batches,
        fork_dup_pages: a.fork_dup_pages + b.fork_dup_pages,
        fork_copies: a.fork_copies + b.fork_copies,
        fork_file_batches: a.fork_file_batches + b.fork_file_batches,
        fork_wrprotects: a.fork_wrprotects + b.fork_wrprotects,
        pins: a.pins + b.pins,
        fork_tables_shared: a.fork_tables_shared + b.fork_tables_shared,
        fork_tables_copied: a.fork_tables_copied + b.fork_tables_copied,
        table_breaks: a.table_breaks + b.table_breaks,
        table_takeovers: a.table_takeovers + b.table_takeovers,
        table_drops: a.table_drops + b.table_drops,
    }
}

impl World<'_, '_> {
    /// A new process with a few regions of every kind.
    fn spawn(&mut self) {
        let space = new_space(self.m);
        self.procs.push(Proc {
            space,
            pages: BTreeMap::new(),
        });
        let s = self.procs.len() - 1;
        let layout = [
            (0, 64, 2, true, None),
            (64, 32, 2, false, None),
            (96, 32, 2, true, Some((0, 0, true))),
            (128, 24, 1, false, None),
            (160, 32, 4, true, None),
            (192, 16, 1, true, Some((OBJECTS + 1, 32, true))),
            (208, 16, 2, false, Some((1, 8, true))),
            (224, 24, 2, true, Some((OBJECTS, 0, false))),
            (248, 8, 2, false, Some((2, 4, false))),
        ];
        for (page, n, prot, big, obj) in layout {
            self.step(&Op::Mmap {
                s,
                page,
                n,
                prot,
                big,
                noreplace: false,
                obj,
            });
        }
    }

    fn proc(&mut self, s: usize) -> usize {
        s % self.procs.len()
    }

    /// The page index `sel` designates in process `p`.
    fn pick(&self, p: usize, sel: Sel) -> u64 {
        let pages = &self.procs[p].pages;
        if sel.any || pages.is_empty() {
            return sel.n;
        }
        let va = *pages.keys().nth((sel.n as usize) % pages.len()).unwrap();
        (va - WINDOW) / PAGE_SIZE
    }

    /// Detaches the private pins of space `id` on `[start, end)`.
    fn detach(&mut self, id: SpaceId, start: u64, end: u64) {
        for p in &mut self.pins {
            for t in &mut p.targets {
                if let Target::Private { id: i, va } = *t {
                    if i == id && va >= start && va < end {
                        *t = Target::Detached;
                    }
                }
            }
        }
    }

    /// The reference bytes of a page.
    fn expected<'b>(&'b self, page: &'b RefPage) -> &'b [u8; KB4] {
        match &page.back {
            Back::Private(b) => b.as_deref().unwrap_or(&ZERO),
            Back::FilePrivate { own: Some(b), .. } => b,
            Back::Shared { obj, off } | Back::FilePrivate { obj, off, .. } => self.obj_bytes(*obj, *off),
        }
    }

    /// The reference bytes of page `off` of object `obj`.
    fn obj_bytes(&self, obj: usize, off: u64) -> &[u8; KB4] {
        self.obj_pages.get(&(obj, off)).map_or(&ZERO, |b| &**b)
    }

    /// Whether `obj` is a read-only file.
    fn is_file(&self, obj: usize) -> bool {
        self.sizes[obj].is_some()
    }

    /// Whether a page is past the end of the file it maps (an access is a bus error).
    fn past_eof(&self, back: &Back) -> bool {
        match *back {
            Back::Shared { obj, off } | Back::FilePrivate { obj, off, .. } => {
                self.sizes[obj].is_some_and(|size| off >= size.next_multiple_of(PAGE_SIZE))
            }
            Back::Private(_) => false,
        }
    }

    /// Adds the reference bytes of file `obj`.
    fn add_file(&mut self, obj: usize, data: &[u8]) {
        for (n, chunk) in data.chunks(KB4).enumerate() {
            let mut page = [0; KB4];
            page[..chunk.len()].copy_from_slice(chunk);
            self.obj_pages.insert((obj, n as u64 * PAGE_SIZE), Rc::new(page));
        }
    }

    /// Gives a privately mapped object page of process `p` its own bytes (a copy of the
    /// object's), as a write or a write pin does.
    fn make_own(&mut self, p: usize, va: u64) {
        let pg = &self.procs[p].pages[&va];
        if let Back::FilePrivate { obj, off, own: None } = pg.back {
            let bytes = Rc::new(*self.obj_bytes(obj, off));
            let pg = self.procs[p].pages.get_mut(&va).unwrap();
            pg.back = Back::FilePrivate {
                obj,
                off,
                own: Some(bytes),
            };
        }
    }

    fn bytes_mut(&mut self, p: usize, va: u64) -> &mut [u8; KB4] {
        self.make_own(p, va);
        let page = self.procs[p].pages.get_mut(&va).expect("mapped");
        match &mut page.back {
            Back::Private(b) => Rc::make_mut(b.get_or_insert_with(|| Rc::new([0; KB4]))),
            Back::FilePrivate { own, .. } => Rc::make_mut(own.as_mut().expect("made own")),
            Back::Shared { obj, off } => Rc::make_mut(
                self.obj_pages
                    .entry((*obj, *off))
                    .or_insert_with(|| Rc::new([0; KB4])),
            ),
        }
    }

    /// `mmap` of `n` pages at `page` backed by `obj` (object, offset in pages, shared), with
    /// a clone of the pool's handle, or `last`, the object's only handle; checked against the
    /// reference, which it updates.
    #[allow(clippy::too_many_arguments)]
    fn mmap(
        &mut self,
        s: usize,
        page: u64,
        n: u64,
        prot: usize,
        big: bool,
        noreplace: bool,
        obj: Option<(usize, u64, bool)>,
        last: Option<Shm>,
    ) -> Result<VirtAddr, SpaceError> {
        let p = self.proc(s);
        let (va, len, prot) = (va_of(page), n * PAGE_SIZE, PROTS[prot]);
        let placement = if noreplace {
            Placement::FixedNoReplace(VirtAddr(va))
        } else {
            Placement::Fixed(VirtAddr(va))
        };
        let align = if big { MapAlign::Size64K } else { MapAlign::Page };
        let mut last = last;
        let mut handle = |obj: usize| last.take().unwrap_or_else(|| self.objs[obj].clone());
        let kind = match obj {
            None => VmaKind::AnonPrivate,
            Some((obj, off, true)) => VmaKind::Shared {
                obj: handle(obj),
                offset: off * PAGE_SIZE,
            },
            Some((obj, off, false)) => VmaKind::FilePrivate {
                obj: handle(obj),
                offset: off * PAGE_SIZE,
            },
        };
        let read_only = matches!(obj, Some((o, _, true)) if self.is_file(o));
        let expect = if read_only && prot.contains(VmProt::WRITE) {
            Err(SpaceError::ReadOnly)
        } else if big && !page.is_multiple_of(BLOCK) {
            Err(SpaceError::Vma(VmaError::FixedMisaligned))
        } else if noreplace && self.procs[p].pages.range(va..va + len).next().is_some() {
            Err(SpaceError::Vma(VmaError::Exists))
        } else {
            Ok(VirtAddr(va))
        };
        let r = self.procs[p]
            .space
            .mmap(self.m, placement, len, prot, kind, align);
        assert_eq!(r, expect);
        if r.is_ok() {
            let id = self.procs[p].space.id();
            self.detach(id, va, va + len);
            for i in 0..n {
                let back = match obj {
                    None => Back::Private(None),
                    Some((obj, off, true)) => Back::Shared {
                        obj,
                        off: (off + i) * PAGE_SIZE,
                    },
                    Some((obj, off, false)) => Back::FilePrivate {
                        obj,
                        off: (off + i) * PAGE_SIZE,
                        own: None,
                    },
                };
                self.procs[p]
                    .pages
                    .insert(va + i * PAGE_SIZE, RefPage { prot, back });
            }
        }
        r
    }

    /// A call with invalid arguments at page `sel` of process `s` (module docs), with every
    /// allocation failing if `no_memory`: it reports its argument error and changes nothing,
    /// in particular copies no shared table.
    fn invalid(&mut self, s: usize, sel: Sel, call: Bad, no_memory: bool) {
        let p = self.proc(s);
        let va = va_of(self.pick(p, sel));
        // From `va` to one page past the window, where nothing is ever mapped.
        let to_hole = va_of(PAGES) + PAGE_SIZE - va;
        let shared = |w: &World<'_, '_>| {
            w.procs
                .iter()
                .map(|p| p.space.shared_tables())
                .collect::<Vec<_>>()
        };
        let before = (shared(self), self.m.frames_out(), self.m.model.live_frames());
        if no_memory {
            self.m.arm(1, true);
        }
        let (m, space) = (&mut *self.m, &mut self.procs[p].space);
        let fixed = |a: u64| Placement::Fixed(VirtAddr(a));
        let (got, want) = match call {
            Bad::MunmapUnaligned => (space.munmap(m, VirtAddr(va + 1), PAGE_SIZE), VmaError::Unaligned),
            Bad::MunmapEmpty => (space.munmap(m, VirtAddr(va), 0), VmaError::ZeroLength),
            Bad::MadviseUnaligned => (
                space.madvise_dontneed(m, VirtAddr(va), PAGE_SIZE + 1),
                VmaError::Unaligned,
            ),
            Bad::MadviseHole => (
                space.madvise_dontneed(m, VirtAddr(va), to_hole),
                VmaError::NotMapped,
            ),
            Bad::MprotectUnaligned => (
                space.mprotect(m, VirtAddr(va + 1), PAGE_SIZE, VmProt::READ),
                VmaError::Unaligned,
            ),
            Bad::MprotectHole => (
                space.mprotect(m, VirtAddr(va), to_hole, VmProt::READ),
                VmaError::NotMapped,
            ),
            Bad::MmapUnaligned => {
                let r = space.mmap(
                    m,
                    fixed(va + 1),
                    PAGE_SIZE,
                    VmProt::RW,
                    VmaKind::AnonPrivate,
                    MapAlign::Page,
                );
                (r.map(|_| ()), VmaError::Unaligned)
            }
            Bad::MmapMisaligned => {
                let at = if va.is_multiple_of(LARGE_FOLIO_SIZE) {
                    va + PAGE_SIZE
                } else {
                    va
                };
                let r = space.mmap(
                    m,
                    fixed(at),
                    LARGE_FOLIO_SIZE,
                    VmProt::RW,
                    VmaKind::AnonPrivate,
                    MapAlign::Size64K,
                );
                (r.map(|_| ()), VmaError::FixedMisaligned)
            }
        };
        let injected = self.m.failed;
        self.m.fail_nth(None);
        assert_eq!(got, Err(SpaceError::Vma(want)), "{call:?} at {va:#x}");
        assert!(!injected, "{call:?} at {va:#x} allocated");
        let after = (shared(self), self.m.frames_out(), self.m.model.live_frames());
        assert_eq!(after, before, "{call:?} at {va:#x} changed the tables");
    }

    fn step(&mut self, op: &Op) {
        match *op {
            Op::Mmap {
                s,
                page,
                n,
                prot,
                big,
                noreplace,
                obj,
            } => {
                // Checked against the reference inside.
                let _ = self.mmap(s, page, n, prot, big, noreplace, obj, None);
            }
            Op::MmapLast {
                s,
                page,
                n,
                prot,
                big,
                noreplace,
                size,
                obj: (off, shared),
            } => {
                let frames = self.m.frames_out();
                let data: Vec<u8> = (0..size).map(|b| (b as u8).wrapping_mul(11) ^ 0x3c).collect();
                let Ok(file) = Shm::file(self.m, &data) else {
                    return;
                };
                let obj = self.objs.len();
                self.sizes.push(Some(size));
                self.add_file(obj, &data);
                let r = self.mmap(
                    s,
                    page,
                    n,
                    prot,
                    big,
                    noreplace,
                    Some((obj, off, shared)),
                    Some(file),
                );
                match r {
                    Ok(va) => {
                        // The reference looks the object's pages up through a handle of its own.
                        let p = self.proc(s);
                        let vma = self.procs[p].space.regions().find(va).expect("mapped");
                        let handle = vma.kind.object().expect("the file").clone();
                        self.objs.push(handle);
                    }
                    Err(_) => {
                        self.sizes.pop();
                        self.obj_pages.retain(|&(o, _), _| o != obj);
                        assert_eq!(self.m.frames_out(), frames, "a refused mapping released the file");
                    }
                }
            }
            Op::Invalid { s, page, no_memory } => {
                for call in Bad::ALL {
                    self.invalid(s, page, call, no_memory);
                }
            }
            Op::Munmap { s, page, n } => {
                let p = self.proc(s);
                let (va, len) = (va_of(page), n * PAGE_SIZE);
                match self.procs[p].space.munmap(self.m, VirtAddr(va), len) {
                    Ok(()) => {}
                    // Breaking a shared table found no memory: nothing changed.
                    Err(SpaceError::OutOfMemory) => return,
                    Err(e) => panic!("munmap: {e:?}"),
                }
                let id = self.procs[p].space.id();
                self.detach(id, va, va + len);
                self.procs[p].pages.retain(|&a, _| a < va || a >= va + len);
            }
            Op::Mprotect { s, page, n, prot } => {
                let p = self.proc(s);
                let page = self.pick(p, page);
                let n = n.min(PAGES - page);
                let (va, len, prot) = (va_of(page), n * PAGE_SIZE, PROTS[prot]);
                let mapped = self.procs[p].pages.range(va..va + len).count() as u64 == n;
                let read_only = prot.contains(VmProt::WRITE)
                    && self.procs[p]
                        .pages
                        .range(va..va + len)
                        .any(|(_, pg)| matches!(pg.back, Back::Shared { obj, .. } if self.is_file(obj)));
                let r = self.procs[p].space.mprotect(self.m, VirtAddr(va), len, prot);
                if read_only {
                    assert_eq!(r, Err(SpaceError::ReadOnly));
                } else if r == Err(SpaceError::OutOfMemory) {
                    // Breaking a shared table found no memory: nothing changed.
                } else if mapped {
                    r.unwrap();
                    for (_, pg) in self.procs[p].pages.range_mut(va..va + len) {
                        pg.prot = prot;
                    }
                } else {
                    assert_eq!(r, Err(SpaceError::Vma(VmaError::NotMapped)));
                }
            }
            Op::Madvise { s, page, n } => {
                let p = self.proc(s);
                let page = self.pick(p, page);
                let n = n.min(PAGES - page);
                let (va, len) = (va_of(page), n * PAGE_SIZE);
                let mapped = self.procs[p].pages.range(va..va + len).count() as u64 == n;
                let r = self.procs[p].space.madvise_dontneed(self.m, VirtAddr(va), len);
                if r == Err(SpaceError::OutOfMemory) {
                    return;
                }
                if mapped {
                    r.unwrap();
                    let id = self.procs[p].space.id();
                    self.detach(id, va, va + len);
                    for (_, pg) in self.procs[p].pages.range_mut(va..va + len) {
                        match &mut pg.back {
                            Back::Private(b) | Back::FilePrivate { own: b, .. } => *b = None,
                            Back::Shared { .. } => {}
                        }
                    }
                } else {
                    assert_eq!(r, Err(SpaceError::Vma(VmaError::NotMapped)));
                }
            }
            Op::Fork { s, share } => {
                if self.procs.len() >= MAX_SPACES {
                    return;
                }
                let p = self.proc(s);
                let mode = if share {
                    ForkMode::ShareTables
                } else {
                    ForkMode::Copy
                };
                self.procs[p].space.set_fork_mode(mode);
                match fork(self.m, &mut self.procs[p].space) {
                    Ok(child) => {
                        let pages = self.procs[p].pages.clone();
                        self.procs.push(Proc { space: child, pages });
                    }
                    Err(e) => assert_eq!(e, SpaceError::OutOfMemory),
                }
            }
            Op::Exit { s } => {
                if self.procs.len() <= 2 {
                    return;
                }
                let p = self.proc(s);
                let proc = self.procs.remove(p);
                self.detach(proc.space.id(), 0, u64::MAX);
                self.totals.push(*proc.space.stats());
                proc.space.exit(self.m);
            }
            Op::Write {
                s,
                page,
                off,
                len,
                byte,
                el1,
            } => {
                self.m.el = if el1 { El::El1 } else { El::El0 };
                let p = self.proc(s);
                let page = self.pick(p, page);
                let va = va_of(page);
                let len = len.min(PAGE_SIZE - off) as usize;
                let expect = self.expect(p, va, |prot| prot.contains(VmProt::WRITE));
                let data: Vec<u8> = (0..len).map(|i| byte.wrapping_add(i as u8)).collect();
                let r = write(self.m, &mut self.procs[p].space, va + off, &data);
                self.outcome(r.map(|_| ()), expect, va + off);
                if r.is_ok() {
                    let b = self.bytes_mut(p, va);
                    b[off as usize..off as usize + len].copy_from_slice(&data);
                }
            }
            Op::Read {
                s,
                page,
                off,
                len,
                el1,
            } => {
                self.m.el = if el1 { El::El1 } else { El::El0 };
                let p = self.proc(s);
                let page = self.pick(p, page);
                let va = va_of(page);
                let len = len.min(PAGE_SIZE - off) as usize;
                let expect = self.expect(p, va, |prot| !prot.is_none());
                let r = read(self.m, &mut self.procs[p].space, va + off, len);
                match r {
                    Ok(got) => {
                        self.outcome(Ok(()), expect, va + off);
                        let pg = &self.procs[p].pages[&va];
                        let want = &self.expected(pg)[off as usize..off as usize + len];
                        assert_eq!(got, want, "read at {:#x}", va + off);
                    }
                    Err(e) => self.outcome(Err(e), expect, va + off),
                }
            }
            Op::Exec { s, page, el1 } => {
                self.m.el = if el1 { El::El1 } else { El::El0 };
                let p = self.proc(s);
                let page = self.pick(p, page);
                let va = va_of(page);
                // The kernel never executes user memory: an EL1 fetch is refused in any region.
                let expect = self.expect(p, va, |prot| !el1 && prot.contains(VmProt::EXEC));
                let mut f = Faults::default();
                let r = translate(self.m, &mut self.procs[p].space, va, Access::Exec, &mut f);
                self.outcome(r.map(|_| ()), expect, va);
            }
            Op::Pin { s, page, n, write } => {
                let p = self.proc(s);
                let page = self.pick(p, page);
                let (va, n) = (va_of(page), n.min(PAGES - page));
                let perm = |prot: VmProt| {
                    if write {
                        prot.contains(VmProt::WRITE)
                    } else {
                        !prot.is_none()
                    }
                };
                // The first page that cannot be pinned decides the error (pages are pinned
                // in order).
                let bad = (0..n)
                    .map(|i| (i, self.expect(p, va + i * PAGE_SIZE, perm)))
                    .find(|(_, e)| *e != Expect::Ok);
                let r = self.procs[p]
                    .space
                    .pin(self.m, VirtAddr(va), n * PAGE_SIZE, write);
                match r {
                    Ok(handle) => {
                        assert_eq!(bad, None, "pin of {va:#x}+{n} pages succeeded");
                        let id = self.procs[p].space.id();
                        let targets = (0..n)
                            .map(|i| {
                                let a = va + i * PAGE_SIZE;
                                if write {
                                    // A write pin made every page private.
                                    self.make_own(p, a);
                                }
                                match self.procs[p].pages[&a].back {
                                    Back::Private(_) | Back::FilePrivate { own: Some(_), .. } => {
                                        Target::Private { id, va: a }
                                    }
                                    Back::Shared { obj, off } | Back::FilePrivate { obj, off, own: None } => {
                                        Target::Shared { obj, off }
                                    }
                                }
                            })
                            .collect();
                        self.pins.push(Pin { handle, targets });
                    }
                    Err(e) => {
                        let at = |i: u64| VirtAddr(va + i * PAGE_SIZE);
                        match (e, bad) {
                            (
                                FaultError::Segv {
                                    va: a,
                                    cause: SegvCause::Unmapped,
                                },
                                Some((i, Expect::Unmapped)),
                            )
                            | (
                                FaultError::Segv {
                                    va: a,
                                    cause: SegvCause::Access,
                                },
                                Some((i, Expect::Denied)),
                            )
                            | (FaultError::Bus { va: a }, Some((i, Expect::Bus))) => {
                                assert_eq!(a, at(i), "pin failed at the wrong page")
                            }
                            // Memory can run out on any page up to the first bad one (a write
                            // pin allocates before it finds a page past the end of a file).
                            (FaultError::Oom, None | Some((_, Expect::Bus))) => {}
                            (FaultError::Oom, Some((i, _))) if i > 0 => {}
                            (e, bad) => panic!("pin of {va:#x}+{n}: {e:?}, reference {bad:?}"),
                        }
                        if write {
                            // The pages before the failure were made private (and stay so).
                            for i in 0..n {
                                let a = va + i * PAGE_SIZE;
                                let Some(RefPage {
                                    back: Back::FilePrivate { obj, off, own: None },
                                    ..
                                }) = self.procs[p].pages.get(&a)
                                else {
                                    continue;
                                };
                                let object = self.objs[*obj].lookup(*off).map(|(pa, _, _)| pa);
                                let now = self.procs[p].space.peek(self.m, VirtAddr(a)).pa();
                                if now.is_some() && now != object {
                                    self.make_own(p, a);
                                }
                            }
                        }
                    }
                }
            }
            Op::Unpin { i } => {
                if self.pins.is_empty() {
                    return;
                }
                let pin = self.pins.remove(i % self.pins.len());
                pin.handle.release(self.m);
            }
            Op::Dma { i, page, off, byte } => {
                if self.pins.is_empty() {
                    return;
                }
                let i = i % self.pins.len();
                let page = page % self.pins[i].targets.len();
                if let Target::Shared { obj, .. } = self.pins[i].targets[page] {
                    if self.is_file(obj) {
                        // A read pin of a read-only file's page: the device only reads it.
                        return;
                    }
                }
                let pa = self.pins[i].handle.pages()[page];
                self.m.write_bytes(PhysAddr(pa.0 + off), &[byte]);
                match self.pins[i].targets[page] {
                    Target::Private { id, va } => {
                        let p = self
                            .procs
                            .iter()
                            .position(|pr| pr.space.id() == id)
                            .expect("attached pins belong to live spaces");
                        self.bytes_mut(p, va)[off as usize] = byte;
                    }
                    Target::Shared { obj, off: o } => {
                        let b = self
                            .obj_pages
                            .entry((obj, o))
                            .or_insert_with(|| Rc::new([0; KB4]));
                        Rc::make_mut(b)[off as usize] = byte;
                    }
                    Target::Detached => {}
                }
            }
        }
    }

    /// What the reference expects of an access to page `va` of process `p` that needs
    /// `perm` of the region's permissions.
    fn expect(&self, p: usize, va: u64, perm: impl Fn(VmProt) -> bool) -> Expect {
        match self.procs[p].pages.get(&va) {
            None => Expect::Unmapped,
            Some(pg) if !perm(pg.prot) => Expect::Denied,
            Some(pg) if self.past_eof(&pg.back) => Expect::Bus,
            Some(_) => Expect::Ok,
        }
    }

    /// Checks an access's outcome (at `va`) against the reference.
    fn outcome(&self, r: Result<(), FaultError>, expect: Expect, va: u64) {
        match (r, expect) {
            (Ok(()), Expect::Ok) | (Err(FaultError::Oom), Expect::Ok) => {}
            // A write past the end of a private file mapping allocates its destination page
            // before the file's handler finds the end.
            (Err(FaultError::Oom), Expect::Bus) => {}
            (Err(FaultError::Bus { va: a }), Expect::Bus) if a.0 == va => {}
            (
                Err(FaultError::Segv {
                    cause: SegvCause::Unmapped,
                    ..
                }),
                Expect::Unmapped,
            ) => {}
            (
                Err(FaultError::Segv {
                    cause: SegvCause::Access,
                    ..
                }),
                Expect::Denied,
            ) => {}
            (r, e) => panic!("access at {va:#x}: got {r:?}, reference says {e:?}"),
        }
    }

    /// The checks of the module docs. The leaves are those of the window (one walk per
    /// level-3 table); with `full`, the whole trees (which reads every table entry: slower).
    fn check(&self, full: bool) {
        self.m.model.check_tlb_coherent();
        self.m.model.check_contiguous();
        let mut all = Vec::new();
        for proc in &self.procs {
            let s = &proc.space;
            let leaves = if full {
                ptes::leaves(s.root(), self.m)
            } else {
                ptes::leaves_in(s.root(), self.m, WINDOW, va_of(PAGES))
            };
            if let Err(e) = s.check_leaves(self.m, &leaves) {
                panic!("{:?}: {e:?}", s.id());
            }
            let mapped: HashMap<u64, u64> = leaves.iter().map(|l| (l.va.0, l.pa.0)).collect();
            for page in 0..PAGES {
                let va = va_of(page);
                let pg = proc.pages.get(&va);
                // What a read would reach: the mapped frame, else an unmapped shared page's
                // object page (what `peek` computes, without the walk).
                let got = match (mapped.get(&va), pg.map(|p| &p.back)) {
                    (Some(&pa), _) => Some(pa),
                    (None, Some(Back::Shared { obj, off }))
                    | (None, Some(Back::FilePrivate { obj, off, .. })) => {
                        self.objs[*obj].lookup(*off).map(|(pa, _, _)| pa.0)
                    }
                    (None, _) => None,
                };
                match pg {
                    None => assert_eq!(got, None, "{:?} maps unmapped {va:#x}", s.id()),
                    Some(pg) => {
                        let want = self.expected(pg);
                        let ok = match got {
                            Some(pa) => self.m.page_data(pa) == Some(want),
                            None => want == &ZERO,
                        };
                        assert!(ok, "{:?} page {va:#x} ({pg:?}) differs", s.id());
                    }
                }
            }
            all.extend(
                s.accounted_leaves(self.m, &leaves)
                    .map(|l| MappedLeaf::new(s.id(), l)),
            );
        }
        let mut ids: Vec<SpaceId> = self.procs.iter().map(|p| p.space.id()).collect();
        ids.sort_unstable();
        assert_eq!(
            self.m.mem().live_space_ids(),
            ids,
            "the folio check covers every live space"
        );
        if let Err(e) = crate::folio::check(self.m.mem(), all) {
            panic!("folio check: {e}");
        }
        let spaces: Vec<&Space> = self.procs.iter().map(|p| &p.space).collect();
        if let Err(e) = super::super::share::check_sharing(self.m, &spaces) {
            panic!("shared tables: {e:?}");
        }
        for pin in &self.pins {
            for (t, pa) in pin.targets.iter().zip(pin.handle.pages()) {
                match *t {
                    Target::Private { id, va } => {
                        let proc = self.procs.iter().find(|p| p.space.id() == id).unwrap();
                        assert_eq!(
                            proc.space.peek(self.m, VirtAddr(va)).pa(),
                            Some(*pa),
                            "pin of {va:#x} in {id:?} no longer reaches the page"
                        );
                    }
                    Target::Shared { obj, off } => {
                        let (page, _, _) = self.objs[obj].lookup(off).expect("pinned page");
                        assert_eq!(page, *pa, "pin of object page {off:#x}");
                    }
                    Target::Detached => {}
                }
            }
        }
    }

    fn finish(mut self) {
        for pin in core::mem::take(&mut self.pins) {
            pin.handle.release(self.m);
        }
        let procs = core::mem::take(&mut self.procs);
        if std::env::var("SPACE_STATS").is_ok() {
            self.totals.extend(procs.iter().map(|p| *p.space.stats()));
            eprintln!("{:?}", self.totals.iter().fold(SpaceStats::default(), sum));
        }
        for obj in core::mem::take(&mut self.objs) {
            obj.release(self.m);
        }
        teardown(self.m, procs.into_iter().map(|p| p.space).collect());
    }
}

/// The contents of file `i`: a pattern that differs per byte, page and file.
fn file_data(i: usize) -> Vec<u8> {
    (0..FILE_SIZES[i])
        .map(|b| (b as u8).wrapping_mul(7) ^ (b >> 12) as u8 ^ (0x40 + i as u8))
        .collect()
}

fn run(ops: &[Op]) {
    with_machine(|m| {
        let objs: Vec<Shm> = (0..OBJECTS).map(|_| Shm::new()).collect();
        let mut w = World {
            m,
            procs: Vec::new(),
            objs,
            sizes: vec![None; OBJECTS],
            obj_pages: HashMap::new(),
            pins: Vec::new(),
            totals: Vec::new(),
        };
        for (i, size) in FILE_SIZES.into_iter().enumerate() {
            let data = file_data(i);
            let file = Shm::file(w.m, &data).unwrap();
            w.objs.push(file);
            w.sizes.push(Some(size));
            w.add_file(OBJECTS + i, &data);
        }
        for _ in 0..3 {
            w.spawn();
        }
        let t = std::time::Instant::now();
        for (i, op) in ops.iter().enumerate() {
            w.m.model.fill_all();
            w.step(op);
            w.check(i % 16 == 15);
        }
        w.check(true);
        if std::env::var("SPACE_STATS").is_ok() {
            eprintln!("{} ops in {:?}", ops.len(), t.elapsed());
        }
        w.finish();
    });
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 20,
        max_shrink_iters: 2000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_sequences_match_the_reference(ops in prop::collection::vec(op(), 40..110)) {
        run(&ops);
    }
}
