//! Folios over real translation tables with CONTPTE (the combined property test):
//! random map / unmap / protect / access / fork-like dup / pin / put sequences over anon folios
//! of orders 0, 4 and 9 in two or three user address spaces (distinct ASIDs and [`SpaceId`]s)
//! sharing one hardware model, one [`MemMap`] and one frame source, with the model's checks and
//! the folio invariant checker after every step.
//!
//! # Set-up
//!
//! Folio frames come from a buddy allocator over simulated RAM at [`RAM`]; table frames come
//! from the model's own pool (at `model::FRAME_BASE`): the two are disjoint, so the folio
//! checker never sees a table frame, and each kind is counted back separately at the end.
//! Every root maps folios in the same 8 MiB window ([`WIN`], four 2 MiB slots straddling the
//! 1 GiB boundary, so two level-2 tables under two level-1 entries), so a fork-like dup copies
//! leaves to the same addresses in another root.
//!
//! # Steps
//!
//! Ranges are random, or anchored on a mapped page (or a 2 MiB block) of the root so that they
//! hit mappings: from its 64 KiB block, the head of its block, the whole block, its tail and
//! beyond.
//!
//! * **Map**: allocate an anon folio of order 0, 4 or 9 and map all or part of it, exclusively
//!   (`add_anon_*` with `exclusive`), at a VA congruent to its PA modulo its size (aligned), or
//!   deliberately skewed: by 64 KiB multiples (still foldable) or by odd page counts (never
//!   foldable); order 9 in a 2 MiB slot the root leaves empty, if there is one. Order 9 whole
//!   at a 2 MiB boundary: `Root::map(.., allow_blocks = true)` + a 2 MiB block +
//!   `add_anon_entire`; `Root::map` at a skewed VA maps (unfolded) pages and
//!   `add_anon_ptes`. Otherwise `set_ptes` with `fold_ok` exactly when the order is >= 4 (the
//!   caller's promise that each 64 KiB physical block the call touches is one folio: false for
//!   order-0 folios, whose neighbours are other folios) + `add_anon_ptes`. A VA conflict must be
//!   refused with `AlreadyMapped` and changes nothing; the folio is then put and freed.
//! * **MapRest**: map more pages of a large folio, pages no root maps, at the VAs congruent with
//!   the root's existing mapping of it (a fault filling in a folio): `set_ptes` with `fold_ok`
//!   then folds the 64 KiB blocks it completes (`contpte_try_fold`).
//! * **Unmap** a page range with `unmap_leaves`; the callback (which runs after the TLBI)
//!   turns each reported leaf into folio calls: runs of 4 KiB pages and whole 64 KiB folded
//!   blocks of one folio into one `remove_ptes`, a whole 2 MiB block into `remove_entire`, the
//!   removed piece of a 2 MiB block the engine split into `split_entire` keeping the pages
//!   still mapped (one side: `split_entire(first, nr)`; a hole in the middle: `split_entire`
//!   of all 512 and `remove_ptes` of the hole, as the folio docs say). The `Unmapped`s are
//!   released after `unmap_leaves` returns. The reports themselves are checked against the
//!   reference (a folded block once as 64 KiB, a block piece once, pages one by one).
//! * **Protect** (RW or RO) / **WrProtect** a range; a 2 MiB block the range covers in part is
//!   split by the engine: `split_entire(space, 0, 512)` after the call (its TLBI is done).
//! * **TestAndClearYoung**, **SetAccessFlags** (including granting write), **Access** (the
//!   model MMU through its TLB, with a fault handler for access-flag and dirty faults) and
//!   **HwTouch** (a FEAT_HAFDBS update of any entry of a folded block) on random mapped pages.
//!   The model's MMU does not update descriptors itself, so a write through a cached clean
//!   DBM entry whose descriptor HwTouch has since made dirty faults with nothing left to fix;
//!   the Access step accepts that (real hardware with dirty management would have let the
//!   write through), and nothing else.
//! * **Dup** a range from one root to another at the same VAs: 2 MiB blocks it covers whole
//!   with `try_dup_anon_entire` + a read-only block (blocks covered in part are skipped); runs
//!   of consecutive pages of one folio with `try_dup_anon_ptes` + `set_ptes` (read-only,
//!   `fold_ok` as for mapping); the parent's entries are write-protected. A refusal
//!   (`MaybePinned`: the folio is pinned and a page is anon-exclusive) skips that piece.
//!   Pieces whose child VAs are taken are skipped.
//! * **Pin** a mapped page (must succeed exactly when it is anon-exclusive), **Unpin**,
//!   **Put** the allocation reference (frees the folio iff nothing else holds it).
//!
//! Before every step the model MMU touches every mapping of every root (`fill_all`), so a
//! missing or insufficient TLBI leaves a stale TLB entry that the coherence check finds. Once
//! [`MAX_MAPPED`] pages are mapped, Map, MapRest and Dup do nothing (the checks cost time in
//! proportion to what is mapped).
//!
//! # After every step
//!
//! * `check_tlb_coherent`, `check_contiguous`, `check_no_orphans` (and break-before-make on
//!   every descriptor write, checked by the model as it happens);
//! * `folio::check(&memmap, leaves of every root)`, the leaves read straight from the model's
//!   table frames (and every 8th step compared with `Root::leaves`);
//! * the leaves of every root, expanded to pages, equal the reference
//!   `BTreeMap<(root, page VA), (pa, writable, mapped by a 2 MiB block)>`, and `translate` of
//!   every reference page agrees with it;
//! * every live folio: `mapcount` = the leaves the reference has on it, `pincount` = the pins
//!   taken, and `refcount` = exactly allocation reference (if not yet put) + pins + mapcount;
//!   frames handed out = frames of live folios;
//! * **the Contiguous bit**: on every level-3 leaf it is set **exactly** when the reference
//!   says the 64 KiB VA block is folded; 2 MiB blocks never carry it. The reference folds by
//!   the engine's documented rule (docs/mm.md, "CONTPTE"):
//!   - after a `set_ptes` with `fold_ok` (always on these user roots), every 64 KiB VA block
//!     the call touched is folded iff it *qualifies*: all 16 pages mapped by level-3 entries,
//!     consecutive PAs from a 64 KiB aligned base, equal write permission (the only attribute
//!     that varies here). In particular an order-4 folio, or a 64 KiB aligned part of an
//!     order-9 folio, mapped whole by one `set_ptes` at a VA congruent to its PA modulo 64 KiB
//!     is folded — and the mapping step also asserts that such blocks were written folded
//!     directly (`cont_blocks_mapped`);
//!   - a folded block lies in one folio of order >= 4 (the caller's `fold_ok` was honest);
//!   - a folded block stays folded through whole-block operations (protect, write-protect,
//!     A/D updates, set_access_flags that does not change the write permission) and is
//!     unfolded by an unmap / protect / write-protect covering it in part, or by a
//!     set_access_flags granting write to one of its pages; `Root::map`, the dup of a run
//!     that does not complete a block, and `set_ptes` without `fold_ok` never fold.
//!
//! # At the end
//!
//! Everything is unmapped (reports checked) and released, pins dropped, allocation references
//! put: every folio is freed (the frame source gets back every frame it handed out and the
//! free blocks coalesce: an order-9 block — indeed every order-10 block — is allocatable
//! again), the checker sees no folio, each root is down to its level-0 table, and destroying
//! the roots returns every table frame (counted: the model has none left, none orphaned).
//!
//! # Known bugs
//!
//! Two ignored tests at the end demonstrate bugs found here. One of them,
//! `clean_write_grant_leaves_a_stale_read_only_entry`, can be reached by the random sequences
//! (a clean write grant, a hardware dirty update, then a write through the stale entry); the
//! Access step tolerates exactly that case (the page is recorded in `Reference::stale_ro`),
//! and `write_faults_after_hardware_dirty_updates` replays it.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::super::folio::{
    self, Folio, FolioError, FolioKind, FolioOrder, MappedLeaf, MemMap, PageMeta, SpaceId, Unmapped,
};
use super::super::model::{Access, El, FaultKind, Model};
use super::super::{
    AccessUpdate, Asid, Attrs, Descriptor, DescriptorKind, Leaf, Level, MapError, PhysAddr, Root, VirtAddr,
};

const KB4: u64 = 4 << 10;
const KB64: u64 = 64 << 10;
const MB2: u64 = 2 << 20;
/// Simulated RAM for folio frames.
use crate::fixture::{memmap, quiet_model, storage, user_root, FRAMES, RAM};
/// The window of every root: four 2 MiB slots, two below and two above 1 GiB.
const WIN: u64 = (1 << 30) - 2 * MB2;
const WIN_PAGES: u64 = 4 * 512;
const WIN_END: u64 = WIN + WIN_PAGES * KB4;
/// Pages mapped (over all roots) above which nothing new is mapped: bounds the cost of the
/// checks after each step (debug builds).
const MAX_MAPPED: usize = 1536;

fn block_of(va: u64) -> u64 {
    va & !(KB64 - 1)
}

fn pmd_of(va: u64) -> u64 {
    va & !(MB2 - 1)
}

fn attrs(writable: bool) -> Attrs {
    if writable {
        Attrs::USER_RW
    } else {
        Attrs::USER_RO
    }
}

// Frame source: the folio tests' checking buddy over [RAM, RAM + RAM_SIZE).
use crate::fixture::Frames;

// -----------------------------------------------------------------------------------------
// Address spaces and the unmap callback.

struct Space {
    id: SpaceId,
    asid: Asid,
    root: Root,
}

fn new_space(m: &mut Model, i: usize) -> Space {
    let asid = Asid(40 + i as u16);
    let root = user_root(m, asid);
    Space {
        id: SpaceId::new(1 + i as u32).unwrap(),
        asid,
        root,
    }
}

/// `(va, pa, size, level)` of a reported leaf.
type Report = (u64, u64, u64, Level);

/// What the unmap callback does with the leaves it is handed (after the TLBI): folio calls,
/// batching consecutive pages of one folio into one `remove_ptes`, and the `Unmapped`s kept
/// for release once `unmap_leaves` has returned.
struct Zap<'a, 'm> {
    mem: &'a MemMap<'m>,
    space: SpaceId,
    run: Option<(Folio<'m>, usize, usize)>,
    out: Vec<Unmapped<'m>>,
    seen: Vec<Report>,
}

impl<'a, 'm> Zap<'a, 'm> {
    fn new(mem: &'a MemMap<'m>, space: SpaceId) -> Self {
        Zap {
            mem,
            space,
            run: None,
            out: Vec::new(),
            seen: Vec::new(),
        }
    }

    fn leaf(&mut self, l: &Leaf) {
        self.seen.push((l.va.0, l.pa.0, l.size, l.level));
        let (f, idx) = self
            .mem
            .folio_page(l.pa)
            .unwrap_or_else(|| panic!("unmapped leaf {l:?} maps no folio"));
        let n = (l.size / KB4) as usize;
        let space = self.space;
        match l.level {
            Level::L3 => match &mut self.run {
                Some((rf, first, nr)) if *rf == f && *first + *nr == idx => *nr += n,
                _ => {
                    self.flush();
                    self.run = Some((f, idx, n));
                }
            },
            Level::L2 => {
                self.flush();
                // A whole block, or the removed piece of a block the engine split: keep the
                // pages that are still mapped.
                let u = if n == 512 {
                    f.remove_entire(space)
                } else if idx == 0 {
                    f.split_entire(space, n, 512 - n)
                } else if idx + n == 512 {
                    f.split_entire(space, 0, idx)
                } else {
                    f.split_entire(space, 0, 512).map(|mut u| {
                        u.merge(f.remove_ptes(space, idx, n).expect("remove the hole"));
                        u
                    })
                };
                self.push(u.unwrap_or_else(|e| panic!("folio call for {l:?}: {e}")));
            }
            _ => panic!("unexpected leaf {l:?}"),
        }
    }

    fn flush(&mut self) {
        if let Some((f, first, nr)) = self.run.take() {
            let u = f
                .remove_ptes(self.space, first, nr)
                .unwrap_or_else(|e| panic!("remove_ptes({first}, {nr}) of {f:?}: {e}"));
            self.push(u);
        }
    }

    fn push(&mut self, u: Unmapped<'m>) {
        match self.out.last_mut() {
            Some(last) if last.folio() == u.folio() => last.merge(u),
            _ => self.out.push(u),
        }
    }

    fn finish(mut self) -> (Vec<Unmapped<'m>>, Vec<Report>) {
        self.flush();
        (self.out, self.seen)
    }
}

// -----------------------------------------------------------------------------------------
// The reference.

/// One mapped page of one root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Pg {
    pa: u64,
    writable: bool,
    /// Mapped by a 2 MiB level-2 block (else by a level-3 entry).
    block: bool,
}

#[derive(Default)]
struct Reference {
    pages: BTreeMap<(usize, u64), Pg>,
    /// `(root, 64 KiB VA block)` expected folded.
    folded: BTreeSet<(usize, u64)>,
    /// `(root, page or 2 MiB block VA)` granted write while clean by `set_access_flags`, which
    /// invalidated nothing: a TLB may hold its read-only entry until it is unmapped.
    stale_ro: BTreeSet<(usize, u64)>,
}

impl Reference {
    fn range(&self, ri: usize, s: u64, e: u64) -> Vec<(u64, Pg)> {
        self.pages
            .range((ri, s)..(ri, e))
            .map(|(&(_, v), &p)| (v, p))
            .collect()
    }

    fn first_mapped(&self, ri: usize, s: u64, e: u64) -> Option<u64> {
        self.pages.range((ri, s)..(ri, e)).next().map(|(k, _)| k.1)
    }

    /// The `sel`-th mapped page of root `ri` (modulo their number).
    fn nth(&self, ri: usize, sel: u32) -> Option<(u64, Pg)> {
        let n = self.pages.range((ri, 0)..(ri + 1, 0)).count();
        if n == 0 {
            return None;
        }
        self.pages
            .range((ri, 0)..(ri + 1, 0))
            .nth(sel as usize % n)
            .map(|(&(_, v), &p)| (v, p))
    }

    fn insert(&mut self, ri: usize, va: u64, pa: u64, nr: u64, writable: bool, block: bool) {
        for i in 0..nr {
            let pg = Pg {
                pa: pa + i * KB4,
                writable,
                block,
            };
            let old = self.pages.insert((ri, va + i * KB4), pg);
            assert!(old.is_none(), "test bug: VA mapped twice");
        }
    }

    fn qualifies(&self, ri: usize, b: u64) -> bool {
        let Some(first) = self.pages.get(&(ri, b)) else {
            return false;
        };
        first.pa.is_multiple_of(KB64)
            && (0..16).all(|i| {
                self.pages
                    .get(&(ri, b + i * KB4))
                    .is_some_and(|p| !p.block && p.pa == first.pa + i * KB4 && p.writable == first.writable)
            })
    }

    /// After `set_ptes` with `fold_ok` of `[s, e)`: every block it touched is folded iff it
    /// qualifies.
    fn fold_touched(&mut self, ri: usize, s: u64, e: u64) {
        let mut b = block_of(s);
        while b < e {
            assert!(!self.folded.contains(&(ri, b)), "touched block was folded");
            if self.qualifies(ri, b) {
                self.folded.insert((ri, b));
            }
            b += KB64;
        }
    }

    /// A range operation on `[s, e)` unfolds the folded blocks it covers in part.
    fn unfold_partial(&mut self, ri: usize, s: u64, e: u64) {
        for b in [block_of(s), block_of(e - KB4)] {
            if !(b >= s && b + KB64 <= e) {
                self.folded.remove(&(ri, b));
            }
        }
    }

    /// The 2 MiB blocks `[s, e)` covers in part (the engine splits them).
    fn partial_pmds(&self, ri: usize, s: u64, e: u64) -> Vec<u64> {
        let mut out = Vec::new();
        for b in [pmd_of(s), pmd_of(e - KB4)] {
            let is_block = self.pages.get(&(ri, b)).is_some_and(|p| p.block);
            if is_block && !(b >= s && b + MB2 <= e) && !out.contains(&b) {
                out.push(b);
            }
        }
        out
    }

    fn split_pmd(&mut self, ri: usize, b: u64) {
        for i in 0..512 {
            self.pages.get_mut(&(ri, b + i * KB4)).unwrap().block = false;
        }
    }

    fn set_writable(&mut self, ri: usize, s: u64, e: u64, w: bool) {
        for (_, p) in self.pages.range_mut((ri, s)..(ri, e)) {
            p.writable = w;
        }
    }

    /// Unmaps `[s, e)`; returns the reports `unmap_leaves` must deliver, in order.
    fn unmap(&mut self, ri: usize, s: u64, e: u64) -> Vec<Report> {
        self.unfold_partial(ri, s, e);
        let items = self.range(ri, s, e);
        let mut want = Vec::new();
        for &(v, p) in &items {
            if p.block {
                let b = pmd_of(v);
                if v == b.max(s) {
                    let end = (b + MB2).min(e);
                    want.push((v, p.pa, end - v, Level::L2));
                }
            } else if self.folded.contains(&(ri, block_of(v))) {
                if v == block_of(v) {
                    want.push((v, p.pa, KB64, Level::L3));
                }
            } else {
                want.push((v, p.pa, KB4, Level::L3));
            }
        }
        for b in self.partial_pmds(ri, s, e) {
            self.split_pmd(ri, b);
        }
        for (v, _) in items {
            self.pages.remove(&(ri, v));
        }
        let stale: Vec<_> = self
            .stale_ro
            .range((ri, pmd_of(s))..(ri, e))
            .copied()
            .filter(|&(_, v)| !self.pages.contains_key(&(ri, v)))
            .collect();
        for k in stale {
            self.stale_ro.remove(&k);
        }
        let gone: Vec<_> = self.folded.range((ri, block_of(s))..(ri, e)).copied().collect();
        for k in gone {
            assert!(k.1 >= s && k.1 + KB64 <= e, "partial block left folded");
            self.folded.remove(&k);
        }
        want
    }
}

// -----------------------------------------------------------------------------------------
// Operations.

#[derive(Clone, Debug)]
enum Op {
    /// Allocate a folio of `order` and map pages of it in `root`, at the folio-size aligned
    /// window position `pos`; `how` chooses whole or part (`first`, `nr`), aligned or skewed
    /// (by `skew`), `Root::map` or `set_ptes` (see [`World::apply`]).
    Map {
        order: u8,
        root: usize,
        pos: u16,
        how: u8,
        first: u16,
        nr: u16,
        skew: u8,
        writable: bool,
        young: bool,
        dirty: bool,
    },
    /// Map more pages (the `run`-th run of pages no root maps) of the `sel`-th live large
    /// folio in `root`: at the VAs congruent with a mapping the root already has of it, else
    /// at the aligned window position `pos` — faults filling in a large folio.
    MapRest {
        root: usize,
        sel: u32,
        run: u32,
        pos: u16,
        writable: bool,
    },
    Unmap {
        root: usize,
        span: Span,
    },
    Protect {
        root: usize,
        span: Span,
        writable: bool,
    },
    WrProtect {
        root: usize,
        span: Span,
    },
    /// `sel` picks a mapped page (any page if none is).
    Young {
        root: usize,
        sel: u32,
    },
    SetAccess {
        root: usize,
        sel: u32,
        young: bool,
        dirty: bool,
        writable: bool,
    },
    Access {
        root: usize,
        sel: u32,
        write: bool,
    },
    HwTouch {
        root: usize,
        sel: u32,
        write: bool,
        which: u64,
    },
    Dup {
        from: usize,
        to: usize,
        span: Span,
    },
    Pin {
        root: usize,
        sel: u32,
    },
    Unpin {
        sel: u32,
    },
    Put {
        sel: u32,
    },
}

/// A page range of the window: `nr` pages from window page `page`; or, with an `anchor` and if
/// the root has mappings, around the `anchor`-th mapped page (or, for the modes about 2 MiB
/// slots, a page of the `anchor`-th 2 MiB block if the root has one): see
/// [`World::resolve`].
#[derive(Clone, Copy, Debug)]
struct Span {
    anchor: Option<u32>,
    page: u64,
    nr: u64,
}

/// Whole 64 KiB blocks, short runs anywhere, whole 2 MiB slots, long runs crossing slot
/// boundaries; anchored on a mapped page with probability `anchored`.
fn span(anchored: f64) -> impl Strategy<Value = Span> {
    let run = prop_oneof![
        3 => (0..WIN_PAGES / 16, 1..5u64).prop_map(|(b, n)| (b * 16, n * 16)),
        3 => (0..WIN_PAGES, 1..24u64),
        1 => (0..4u64, 1..3u64).prop_map(|(s, n)| (s * 512, n * 512)),
        2 => (0..WIN_PAGES, 1..700u64),
    ];
    (prop::option::weighted(anchored, any::<u32>()), run).prop_map(|(anchor, (page, nr))| Span {
        anchor,
        page,
        nr,
    })
}

fn op() -> impl Strategy<Value = Op> {
    let root = || 0..3usize;
    let map = (
        prop::sample::select(vec![0u8, 4, 4, 9, 9, 9]),
        root(),
        any::<u16>(),
        any::<u8>(),
        any::<u16>(),
        any::<u16>(),
        any::<u8>(),
        prop::bool::weighted(0.8),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(order, root, pos, how, first, nr, skew, writable, young, dirty)| Op::Map {
                order,
                root,
                pos,
                how,
                first,
                nr,
                skew,
                writable,
                young,
                dirty,
            },
        );
    prop_oneof![
        7 => map,
        3 => (root(), any::<u32>(), any::<u32>(), any::<u16>(), prop::bool::weighted(0.8))
            .prop_map(|(root, sel, run, pos, writable)| {
                Op::MapRest { root, sel, run, pos, writable }
            }),
        5 => (root(), span(0.6)).prop_map(|(root, span)| Op::Unmap { root, span }),
        2 => (root(), span(0.6), any::<bool>())
            .prop_map(|(root, span, writable)| Op::Protect { root, span, writable }),
        2 => (root(), span(0.6)).prop_map(|(root, span)| Op::WrProtect { root, span }),
        1 => (root(), any::<u32>()).prop_map(|(root, sel)| Op::Young { root, sel }),
        2 => (root(), any::<u32>(), any::<bool>(), any::<bool>(), prop::bool::weighted(0.4))
            .prop_map(|(root, sel, young, dirty, writable)| {
                Op::SetAccess { root, sel, young, dirty, writable }
            }),
        2 => (root(), any::<u32>(), any::<bool>())
            .prop_map(|(root, sel, write)| Op::Access { root, sel, write }),
        1 => (root(), any::<u32>(), any::<bool>(), 0..16u64)
            .prop_map(|(root, sel, write, which)| Op::HwTouch { root, sel, write, which }),
        4 => (root(), root(), span(0.85)).prop_map(|(from, to, span)| Op::Dup { from, to, span }),
        2 => (root(), any::<u32>()).prop_map(|(root, sel)| Op::Pin { root, sel }),
        1 => any::<u32>().prop_map(|sel| Op::Unpin { sel }),
        2 => any::<u32>().prop_map(|sel| Op::Put { sel }),
    ]
}

// -----------------------------------------------------------------------------------------
// The harness.

/// A folio the test allocated.
struct Rec<'m> {
    f: Folio<'m>,
    /// The allocation reference, until put.
    own: u32,
    pins: u32,
}

struct World<'m> {
    mem: MemMap<'m>,
    fr: Frames,
    m: Model,
    sp: Vec<Space>,
    r: Reference,
    recs: Vec<Rec<'m>>,
    /// Folio PA → index in `recs`, for live folios.
    live: BTreeMap<u64, usize>,
    steps: u64,
    tally: Tally,
    /// See [`MAX_MAPPED`].
    max_mapped: usize,
}

/// What happened, for the scripted test to assert its coverage.
#[derive(Default, Debug)]
struct Tally {
    conflicts: u32,
    dup_entire: u32,
    dup_runs: u32,
    dup_refused: u32,
    pins: u32,
    pin_refused: u32,
    cow_faults: u32,
    pmd_splits: u32,
    /// Write faults left unresolved by the known stale read-only entry bug.
    stale_ro_faults: u32,
    /// Write faults on a clean entry the simulated hardware had meanwhile made dirty.
    hw_dirty_races: u32,
}

impl<'m> World<'m> {
    fn new(storage: &'m mut [PageMeta], nroots: usize, tlbi_range: bool) -> World<'m> {
        let mem = memmap(storage);
        let mut m = Model::new().with_tlbi_range(tlbi_range);
        m.set_logging(false);
        let sp = (0..nroots).map(|i| new_space(&mut m, i)).collect();
        World {
            mem,
            fr: Frames::new(),
            m,
            sp,
            r: Reference::default(),
            recs: Vec::new(),
            live: BTreeMap::new(),
            steps: 0,
            tally: Tally::default(),
            max_mapped: MAX_MAPPED,
        }
    }

    fn n(&self) -> usize {
        self.sp.len()
    }

    fn rec(&mut self, f: Folio<'_>) -> &mut Rec<'m> {
        let i = self.live[&f.pa().0];
        &mut self.recs[i]
    }

    /// The leaves the reference has on the folio at `pa` of `pages` pages.
    fn ref_mapcount(&self, pa: u64, pages: usize) -> u32 {
        let end = pa + pages as u64 * KB4;
        self.r
            .pages
            .iter()
            .filter(|(&(_, v), p)| p.pa >= pa && p.pa < end && (!p.block || v == pmd_of(v)))
            .count() as u32
    }

    /// Records that the folio at `pa` was freed, which must be what the reference expects.
    fn freed(&mut self, pa: u64) {
        let i = self
            .live
            .remove(&pa)
            .unwrap_or_else(|| panic!("folio {pa:#x} freed but not live"));
        let rec = &self.recs[i];
        assert_eq!(
            (rec.own, rec.pins),
            (0, 0),
            "folio {pa:#x} freed while the test holds references"
        );
        let pages = rec.f.nr_pages();
        assert_eq!(
            self.ref_mapcount(pa, pages),
            0,
            "folio {pa:#x} freed while mapped"
        );
    }

    fn release(&mut self, pending: Vec<Unmapped<'m>>) {
        for u in pending {
            let pa = u.folio().pa().0;
            if u.release(&mut self.fr) {
                self.freed(pa);
            }
        }
    }

    fn apply(&mut self, op: &Op) {
        self.m.fill_all();
        let n = self.n();
        let full = self.r.pages.len() >= self.max_mapped;
        match *op {
            Op::Map { .. } | Op::MapRest { .. } | Op::Dup { .. } if full => {}
            Op::Map {
                order,
                root,
                pos,
                how,
                first,
                nr,
                skew,
                writable,
                young,
                dirty,
            } => {
                let order = FolioOrder::new(order as u32).unwrap();
                let pages = order.pages() as u64;
                // (whole, skew in pages, by Root::map). Skews of 16 pages keep 64 KiB blocks
                // congruent (foldable); odd skews never fold.
                let (whole, skew, by_map) = match (order.get(), how % 8) {
                    (0, _) => (true, 0, false),
                    (4, 0..=2) => (true, 0, false),
                    (4, 3 | 4) => (true, 1 + skew as u64 % 15, false),
                    (4, _) => (false, 0, false),
                    (_, 0..=3) => (true, 0, true),
                    (_, 4) => (true, 0, false),
                    (_, 5) => (true, 16, false),
                    (_, 6) if skew % 2 == 0 => (true, [1, 7, 272][skew as usize / 2 % 3], false),
                    (_, 6) => (true, 16, true),
                    (_, _) => (false, 0, false),
                };
                let (first, nr) = if whole {
                    (0, pages)
                } else {
                    let f = first as u64 % pages;
                    (f, 1 + nr as u64 % (pages - f))
                };
                // The folio-size aligned base — for order 9 a slot the root leaves empty if
                // there is one, as mmap would find — then the skew (WIN_PAGES is a multiple of
                // 512, so the wrap keeps the congruence).
                let ri = root % n;
                let free: Vec<u64> = (0..4)
                    .filter(|&k| {
                        let b = WIN + k * MB2;
                        self.r.first_mapped(ri, b, b + MB2).is_none()
                    })
                    .collect();
                let base = match free.len() {
                    f if f > 0 && pages == 512 => free[pos as usize % f] * 512,
                    _ => (pos as u64 * pages) % WIN_PAGES,
                };
                let page = (base + first + skew) % WIN_PAGES;
                let nr = nr.min(WIN_PAGES - page);
                self.map(ri, order, page, first, nr, by_map, writable, young, dirty);
            }
            Op::MapRest {
                root,
                sel,
                run,
                pos,
                writable,
            } => self.map_rest(root, sel, run, pos, writable),
            Op::Unmap { root, span } => {
                let (s, e) = self.resolve(root % n, span);
                self.unmap(root % n, s, e);
            }
            Op::Protect { root, span, writable } => {
                let (s, e) = self.resolve(root % n, span);
                self.change(root % n, s, e, Some(writable));
            }
            Op::WrProtect { root, span } => {
                let (s, e) = self.resolve(root % n, span);
                self.change(root % n, s, e, None);
            }
            Op::Young { root, sel } => {
                let ri = root % n;
                let (v, mapped) = self.pick(ri, sel);
                let (m, sp) = (&mut self.m, &mut self.sp[ri]);
                let a = sp.root.test_and_clear_young(m, VirtAddr(v));
                let b = sp.root.test_and_clear_young(m, VirtAddr(v));
                assert!(!b, "AF still set after test_and_clear_young at {v:#x}");
                assert!(mapped || !a, "unmapped {v:#x} young");
            }
            Op::SetAccess {
                root,
                sel,
                young,
                dirty,
                writable,
            } => self.set_access(root % n, sel, young, dirty, writable),
            Op::Access { root, sel, write } => self.access(root % n, sel, write),
            Op::HwTouch {
                root,
                sel,
                write,
                which,
            } => {
                let ri = root % n;
                let Some((v, p)) = self.r.nth(ri, sel) else {
                    return self.check();
                };
                let entry = if !p.block && self.r.folded.contains(&(ri, block_of(v))) {
                    block_of(v) + which * KB4
                } else {
                    v
                };
                let root_pa = self.sp[ri].root.pa();
                self.m.hw_update(root_pa, VirtAddr(entry), write).expect("mapped");
            }
            Op::Dup { from, to, span } => {
                let from = from % n;
                let to = (from + 1 + to % (n - 1)) % n;
                let (s, e) = self.resolve(from, span);
                self.dup(from, to, s, e);
            }
            Op::Pin { root, sel } => {
                let ri = root % n;
                if let Some((_, p)) = self.r.nth(ri, sel) {
                    let (f, idx) = self.mem.folio_page(PhysAddr(p.pa)).unwrap();
                    let excl = f.is_anon_exclusive(idx);
                    let res = f.pin(idx);
                    if excl {
                        res.unwrap();
                        self.rec(f).pins += 1;
                        self.tally.pins += 1;
                    } else {
                        assert_eq!(res, Err(FolioError::NotExclusive { page: idx }));
                        self.tally.pin_refused += 1;
                    }
                }
            }
            Op::Unpin { sel } => {
                let pinned: Vec<usize> = self
                    .live
                    .values()
                    .copied()
                    .filter(|&i| self.recs[i].pins > 0)
                    .collect();
                if !pinned.is_empty() {
                    let i = pinned[sel as usize % pinned.len()];
                    let f = self.recs[i].f;
                    let last = f.refcount() == 1;
                    self.recs[i].pins -= 1;
                    let freed = f.unpin(&mut self.fr).unwrap();
                    assert_eq!(freed, last);
                    if freed {
                        self.freed(f.pa().0);
                    }
                }
            }
            Op::Put { sel } => {
                let owned: Vec<usize> = self
                    .live
                    .values()
                    .copied()
                    .filter(|&i| self.recs[i].own > 0)
                    .collect();
                if !owned.is_empty() {
                    let i = owned[sel as usize % owned.len()];
                    let f = self.recs[i].f;
                    let last = f.refcount() == 1;
                    self.recs[i].own -= 1;
                    let freed = f.put(&mut self.fr);
                    assert_eq!(freed, last);
                    if freed {
                        self.freed(f.pa().0);
                    }
                }
            }
        }
        self.check();
    }

    /// The range `span` denotes in root `ri`: `[start, end)`.
    fn resolve(&self, ri: usize, span: Span) -> (u64, u64) {
        // The slot modes (1..=3) anchor on a 2 MiB block when the root has one.
        let blocks: Vec<u64> = match span.page % 6 {
            1..=3 => (0..4)
                .map(|k| WIN + k * MB2)
                .filter(|&b| self.r.pages.get(&(ri, b)).is_some_and(|p| p.block))
                .collect(),
            _ => Vec::new(),
        };
        let anchor = span.anchor.and_then(|a| match blocks.len() {
            0 => self.r.nth(ri, a).map(|(v, _)| v),
            n => Some(blocks[a as usize % n] + (a as u64 >> 8) % 512 * KB4),
        });
        let (page, nr) = match anchor {
            Some(v) => {
                let p = (v - WIN) / KB4;
                let slot = p & !511;
                match span.page % 6 {
                    // From the anchor's 64 KiB block; from its 2 MiB slot (the head of a
                    // block); its whole slot (or two); the tail of its slot and beyond.
                    0 => (p & !15, span.nr),
                    1 => (slot, span.nr),
                    2 => (slot, 512 * (1 + span.nr % 2)),
                    3 => {
                        let k = 1 + span.nr % 511;
                        (slot + 512 - k, k + span.nr % 40)
                    }
                    _ => (p, span.nr),
                }
            }
            None => (span.page % WIN_PAGES, span.nr),
        };
        let nr = nr.min(WIN_PAGES - page);
        (WIN + page * KB4, WIN + (page + nr) * KB4)
    }

    /// A mapped page of root `ri` chosen by `sel`, or any page of the window if none is
    /// mapped; with whether it is mapped.
    fn pick(&self, ri: usize, sel: u32) -> (u64, bool) {
        match self.r.nth(ri, sel) {
            Some((v, _)) => (v, true),
            None => (WIN + (sel as u64 % WIN_PAGES) * KB4, false),
        }
    }

    /// Allocates a folio of `order` and maps its pages `first..first + nr` at window page
    /// `page` of root `ri`: with `Root::map` (blocks allowed) if `by_map`, else with
    /// `set_ptes` (`fold_ok` for orders >= 4).
    #[allow(clippy::too_many_arguments)]
    fn map(
        &mut self,
        ri: usize,
        order: FolioOrder,
        page: u64,
        first: u64,
        nr: u64,
        by_map: bool,
        writable: bool,
        young: bool,
        dirty: bool,
    ) {
        let f = match self.mem.alloc_folio(&mut self.fr, order, FolioKind::Anon) {
            Ok(f) => f,
            Err(FolioError::OutOfMemory) => {
                assert!(self.fr.buddy.free_frames() < 1024 + order.pages(), "spurious OOM");
                return;
            }
            Err(e) => panic!("alloc_folio: {e}"),
        };
        self.live.insert(f.pa().0, self.recs.len());
        self.recs.push(Rec { f, own: 1, pins: 0 });
        let va = WIN + page * KB4;
        let end = va + nr * KB4;
        let pa = f.page_pa(first as usize).0;
        let conflict = self.r.first_mapped(ri, va, end);
        let (m, sp) = (&mut self.m, &mut self.sp[ri]);
        if by_map {
            let res = sp
                .root
                .map(m, VirtAddr(va), PhysAddr(pa), nr * KB4, attrs(writable), true);
            if conflict.is_some() {
                assert!(matches!(res, Err(MapError::AlreadyMapped(_))), "{res:?}");
                self.tally.conflicts += 1;
                return self.drop_unmapped(f);
            }
            res.unwrap();
            let as_block = va.is_multiple_of(MB2) && nr == 512;
            let t = sp.root.translate(m, VirtAddr(va)).unwrap();
            assert_eq!(t.level, if as_block { Level::L2 } else { Level::L3 });
            if as_block {
                f.add_anon_entire(sp.id, true).unwrap();
            } else {
                // `Root::map` never folds, even where the pages would qualify.
                f.add_anon_ptes(sp.id, first as usize, nr as usize, true).unwrap();
            }
            self.r.insert(ri, va, pa, nr, writable, as_block);
        } else {
            let pte = attrs(writable)
                .leaf(Level::L3, PhysAddr(pa))
                .with_young(young)
                .with_dirty(dirty);
            let fold_ok = order >= FolioOrder::CONT;
            let before = sp.root.stats().cont_blocks_mapped;
            let res = sp.root.set_ptes(m, VirtAddr(va), pte, nr as usize, fold_ok);
            if let Some(c) = conflict {
                assert_eq!(res, Err(MapError::AlreadyMapped(VirtAddr(c))));
                self.tally.conflicts += 1;
                return self.drop_unmapped(f);
            }
            res.unwrap();
            f.add_anon_ptes(sp.id, first as usize, nr as usize, true).unwrap();
            // Blocks covered whole at a 64 KiB aligned PA are written folded directly.
            let direct = (0..nr)
                .map(|i| va + i * KB4)
                .filter(|&v| v == block_of(v) && v + KB64 <= end && (pa + (v - va)).is_multiple_of(KB64))
                .count() as u64;
            let mapped = sp.root.stats().cont_blocks_mapped - before;
            assert_eq!(mapped, if fold_ok { direct } else { 0 }, "blocks written folded");
            self.r.insert(ri, va, pa, nr, writable, false);
            if fold_ok {
                self.r.fold_touched(ri, va, end);
            }
        }
    }

    /// Maps the `run`-th run of pages no root maps of the `sel`-th live large folio that has
    /// some (a fault filling in more of a large folio): `set_ptes` with `fold_ok`, which folds
    /// a block it completes.
    fn map_rest(&mut self, root: usize, sel: u32, run: u32, pos: u16, writable: bool) {
        let large: Vec<Folio<'m>> = self
            .live
            .values()
            .map(|&i| self.recs[i].f)
            .filter(|f| f.order() >= FolioOrder::CONT && (0..f.nr_pages()).any(|i| f.page_mapcount(i) == 0))
            .collect();
        if large.is_empty() {
            return;
        }
        let f = large[sel as usize % large.len()];
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for i in 0..f.nr_pages() as u64 {
            if f.page_mapcount(i as usize) != 0 {
                continue;
            }
            match runs.last_mut() {
                Some((first, nr)) if *first + *nr == i => *nr += 1,
                _ => runs.push((i, 1)),
            }
        }
        let (first, nr) = runs[run as usize % runs.len()];
        let (fpa, pages) = (f.pa().0, f.nr_pages() as u64);
        // The `root`-th root mapping the folio, the VA of its page 0 there and the write
        // permission of that mapping (so that a block the new pages complete usually
        // qualifies); else root `root`, an aligned VA and `writable`.
        let mut at: Vec<(usize, i64, bool)> = Vec::new();
        for (&(i, v), p) in &self.r.pages {
            if p.pa >= fpa && p.pa < fpa + pages * KB4 && at.last().is_none_or(|l| l.0 != i) {
                at.push((i, v as i64 - (p.pa - fpa) as i64, p.writable));
            }
        }
        let (ri, base, writable) = match at.len() {
            0 => (
                root % self.n(),
                (WIN + (pos as u64 * pages) % WIN_PAGES * KB4) as i64,
                writable,
            ),
            k => at[root % k],
        };
        let va = base + (first * KB4) as i64;
        if va < WIN as i64 || va as u64 >= WIN_END {
            return;
        }
        let va = va as u64;
        let nr = nr.min((WIN_END - va) / KB4);
        let end = va + nr * KB4;
        let pa = fpa + first * KB4;
        let conflict = self.r.first_mapped(ri, va, end);
        let (m, sp) = (&mut self.m, &mut self.sp[ri]);
        let pte = attrs(writable).leaf(Level::L3, PhysAddr(pa));
        let res = sp.root.set_ptes(m, VirtAddr(va), pte, nr as usize, true);
        if let Some(c) = conflict {
            assert_eq!(res, Err(MapError::AlreadyMapped(VirtAddr(c))));
            self.tally.conflicts += 1;
            return;
        }
        res.unwrap();
        f.add_anon_ptes(sp.id, first as usize, nr as usize, true).unwrap();
        self.r.insert(ri, va, pa, nr, writable, false);
        self.r.fold_touched(ri, va, end);
    }

    /// Puts the allocation reference of a folio that could not be mapped: frees it.
    fn drop_unmapped(&mut self, f: Folio<'m>) {
        self.rec(f).own = 0;
        assert!(f.put(&mut self.fr), "unmapped folio not freed");
        self.freed(f.pa().0);
    }

    fn unmap(&mut self, ri: usize, s: u64, e: u64) {
        self.tally.pmd_splits += self.r.partial_pmds(ri, s, e).len() as u32;
        let want = self.r.unmap(ri, s, e);
        let (mem, m, sp) = (&self.mem, &mut self.m, &mut self.sp[ri]);
        let mut zap = Zap::new(mem, sp.id);
        sp.root
            .unmap_leaves(m, VirtAddr(s), e - s, |l| zap.leaf(l))
            .unwrap();
        let (pending, seen) = zap.finish();
        assert_eq!(
            seen, want,
            "reports of the unmap of [{s:#x}, {e:#x}) in root {ri}"
        );
        self.release(pending);
    }

    /// `Root::protect` to RW / RO (`Some`) or `wrprotect_ptes` (`None`) of `[s, e)`.
    fn change(&mut self, ri: usize, s: u64, e: u64, protect: Option<bool>) {
        let splits: Vec<(u64, u64)> = self
            .r
            .partial_pmds(ri, s, e)
            .into_iter()
            .map(|b| (b, self.r.pages[&(ri, b)].pa))
            .collect();
        self.tally.pmd_splits += splits.len() as u32;
        let (m, sp) = (&mut self.m, &mut self.sp[ri]);
        match protect {
            Some(w) => sp.root.protect(m, VirtAddr(s), e - s, attrs(w)),
            None => sp.root.wrprotect_ptes(m, VirtAddr(s), ((e - s) / KB4) as usize),
        }
        .unwrap();
        self.r.unfold_partial(ri, s, e);
        for &(b, _) in &splits {
            self.r.split_pmd(ri, b);
        }
        self.r.set_writable(ri, s, e, protect.unwrap_or(false));
        // The engine split those blocks (its invalidation has completed): the entire
        // mappings become 512 PTE mappings each.
        let id = self.sp[ri].id;
        let pending: Vec<Unmapped<'m>> = splits
            .iter()
            .map(|&(_, pa)| {
                let f = self.mem.folio(PhysAddr(pa)).unwrap();
                f.split_entire(id, 0, 512).unwrap()
            })
            .collect();
        self.release(pending);
    }

    fn set_access(&mut self, ri: usize, sel: u32, young: bool, dirty: bool, writable: bool) {
        let upd = AccessUpdate {
            young,
            dirty,
            writable,
        };
        let (m, sp) = (&mut self.m, &mut self.sp[ri]);
        let Some((v, p)) = self.r.nth(ri, sel) else {
            let v = VirtAddr(WIN + (sel as u64 % WIN_PAGES) * KB4);
            assert_eq!(sp.root.set_access_flags(m, v, upd), Err(MapError::NotMapped(v)));
            return;
        };
        let res = sp.root.set_access_flags(m, VirtAddr(v), upd);
        if writable && !p.writable {
            assert_eq!(res, Ok(true), "granting write at {v:#x}");
            // A clean grant sets only DBM, without a TLBI (unless an unfold invalidated the
            // block first): see `clean_write_grant_leaves_a_stale_read_only_entry`.
            let unfolds = !p.block && self.r.folded.contains(&(ri, block_of(v)));
            if !dirty && !unfolds {
                let key = if p.block { pmd_of(v) } else { v };
                self.r.stale_ro.insert((ri, key));
            }
            if p.block {
                self.r.set_writable(ri, pmd_of(v), pmd_of(v) + MB2, true);
            } else {
                // Changing the write permission of one page of a folded block unfolds it.
                self.r.folded.remove(&(ri, block_of(v)));
                self.r.pages.get_mut(&(ri, v)).unwrap().writable = true;
            }
        } else {
            res.unwrap();
        }
    }

    /// An access by EL0 through the model MMU (TLB first), with a fault handler: an access
    /// flag fault sets AF, a write to a writable clean entry marks it dirty, and the access
    /// is retried; a write to a read-only page is a copy-on-write fault, not handled here.
    fn access(&mut self, ri: usize, sel: u32, write: bool) {
        let (v, _) = self.pick(ri, sel);
        let want = self.r.pages.get(&(ri, v)).copied();
        let kind = if write { Access::Write } else { Access::Read };
        let (m, sp) = (&mut self.m, &mut self.sp[ri]);
        for _ in 0..3 {
            let res = m.access(sp.root.pa(), sp.asid.0, VirtAddr(v), El::El0, kind);
            let fix = match (res, want) {
                (Ok(pa), Some(p)) => {
                    assert_eq!(pa.0, p.pa, "access to {v:#x}");
                    assert!(!write || p.writable, "write through a read-only page {v:#x}");
                    return;
                }
                (Err(f), None) => {
                    assert_eq!(f.kind, FaultKind::Translation, "{v:#x}");
                    return;
                }
                (Err(f), Some(_)) if f.kind == FaultKind::AccessFlag => AccessUpdate::ACCESSED,
                (Err(f), Some(p)) if f.kind == FaultKind::Permission && write => {
                    if !p.writable {
                        self.tally.cow_faults += 1;
                        return;
                    }
                    AccessUpdate::WRITTEN
                }
                (res, want) => panic!("access to {v:#x}: {res:?}, reference {want:?}"),
            };
            let fixed = sp.root.set_access_flags(m, VirtAddr(v), fix);
            if fixed == Ok(false) && write {
                // Nothing to fix: the access used a stale TLB entry, the tables being already
                // dirty. If that entry has DBM (writable-clean), it is HwTouch's doing: the
                // hardware dirty update it simulates would also have let this write through
                // (the model's MMU does not update descriptors); not an engine problem.
                let used = m.translate_cached(sp.root.pa(), sp.asid.0, VirtAddr(v));
                if used.is_ok_and(|w| w.desc.dbm()) {
                    self.tally.hw_dirty_races += 1;
                    return;
                }
            }
            let stale_key = if want.is_some_and(|p| p.block) {
                pmd_of(v)
            } else {
                v
            };
            if fixed == Ok(false) && self.r.stale_ro.contains(&(ri, stale_key)) {
                // The known bug (`clean_write_grant_leaves_a_stale_read_only_entry`): a
                // stale read-only entry from before a clean write grant, the descriptor
                // since made dirty by a hardware update: the fault cannot be resolved.
                self.tally.stale_ro_faults += 1;
                return;
            }
            assert_eq!(fixed, Ok(true), "fault at {v:#x} fixed");
        }
        panic!("access to {v:#x} still faulting after the handler");
    }

    /// Fork-like copy of the leaves of `from` in `[s, e)` to `to` at the same addresses.
    fn dup(&mut self, from: usize, to: usize, s: u64, e: u64) {
        enum Unit {
            Entire { va: u64, pa: u64 },
            Ptes { va: u64, pa: u64, nr: u64 },
        }
        let items = self.r.range(from, s, e);
        let free_in_child = |r: &Reference, v: u64| !r.pages.contains_key(&(to, v));
        let mut units = Vec::new();
        let mut i = 0;
        while i < items.len() {
            let (v, p) = items[i];
            if p.block {
                let b = pmd_of(v);
                if b >= s && b + MB2 <= e && self.r.first_mapped(to, b, b + MB2).is_none() {
                    units.push(Unit::Entire { va: b, pa: p.pa });
                }
                while i < items.len() && items[i].1.block && pmd_of(items[i].0) == b {
                    i += 1;
                }
                continue;
            }
            if !free_in_child(&self.r, v) {
                i += 1;
                continue;
            }
            let (f, idx) = self.mem.folio_page(PhysAddr(p.pa)).unwrap();
            let mut nr = 1;
            while let Some(&(v2, p2)) = items.get(i + nr) {
                let k = nr as u64;
                let next = v2 == v + k * KB4 && !p2.block && p2.pa == p.pa + k * KB4;
                if !next || idx + nr >= f.nr_pages() || !free_in_child(&self.r, v2) {
                    break;
                }
                nr += 1;
            }
            units.push(Unit::Ptes {
                va: v,
                pa: p.pa,
                nr: nr as u64,
            });
            i += nr;
        }
        let cid = self.sp[to].id;
        for u in units {
            match u {
                Unit::Entire { va, pa } => {
                    let f = self.mem.folio(PhysAddr(pa)).unwrap();
                    match f.try_dup_anon_entire(cid) {
                        Ok(()) => {}
                        Err(FolioError::MaybePinned { .. }) => {
                            assert!(f.maybe_pinned());
                            self.tally.dup_refused += 1;
                            continue;
                        }
                        Err(e) => panic!("try_dup_anon_entire: {e}"),
                    }
                    let m = &mut self.m;
                    let child = &mut self.sp[to].root;
                    child
                        .map(m, VirtAddr(va), PhysAddr(pa), MB2, Attrs::USER_RO, true)
                        .unwrap();
                    assert_eq!(child.translate(m, VirtAddr(va)).unwrap().level, Level::L2);
                    self.sp[from].root.wrprotect_ptes(m, VirtAddr(va), 512).unwrap();
                    self.r.insert(to, va, pa, 512, false, true);
                    self.tally.dup_entire += 1;
                    self.r.set_writable(from, va, va + MB2, false);
                }
                Unit::Ptes { va, pa, nr } => {
                    let (f, idx) = self.mem.folio_page(PhysAddr(pa)).unwrap();
                    match f.try_dup_anon_ptes(cid, idx, nr as usize) {
                        Ok(()) => {}
                        Err(FolioError::MaybePinned { .. }) => {
                            assert!(f.maybe_pinned());
                            self.tally.dup_refused += 1;
                            continue;
                        }
                        Err(e) => panic!("try_dup_anon_ptes: {e}"),
                    }
                    let end = va + nr * KB4;
                    let m = &mut self.m;
                    let parent = &mut self.sp[from].root;
                    parent.wrprotect_ptes(m, VirtAddr(va), nr as usize).unwrap();
                    self.r.unfold_partial(from, va, end);
                    self.r.set_writable(from, va, end, false);
                    let pte = parent
                        .pte_get(m, VirtAddr(va))
                        .unwrap()
                        .with_writable(false)
                        .with_address(PhysAddr(pa));
                    let fold_ok = f.order() >= FolioOrder::CONT;
                    self.sp[to]
                        .root
                        .set_ptes(m, VirtAddr(va), pte, nr as usize, fold_ok)
                        .unwrap();
                    self.r.insert(to, va, pa, nr, false, false);
                    self.tally.dup_runs += 1;
                    if fold_ok {
                        self.r.fold_touched(to, va, end);
                    }
                }
            }
        }
    }

    /// Everything the module docs list under "After every step".
    fn check(&mut self) {
        self.steps += 1;
        let m = &self.m;
        m.check_all();
        let mut leaves = Vec::new();
        let mut seen = Vec::with_capacity(self.r.pages.len());
        for (i, s) in self.sp.iter().enumerate() {
            let ls = table_leaves(m, s.root.pa());
            // The engine's own iterator agrees (not every step: it walks from the root for
            // each leaf, which is slow in debug builds).
            if self.steps.is_multiple_of(8) {
                let engine: Vec<Leaf> = s.root.leaves(m).collect();
                assert_eq!(engine, ls, "Root::leaves of root {i}");
            }
            for l in ls {
                leaves.push(MappedLeaf::new(s.id, &l));
                assert!(
                    l.va.0 >= WIN && l.va.0 + l.size <= WIN_END,
                    "leaf outside the window: {l:?}"
                );
                match l.level {
                    Level::L2 => {
                        assert_eq!(l.size, MB2);
                        assert!(!l.desc.contiguous(), "block with the Contiguous bit");
                        self.expect_pages(&mut seen, i, &l, 512, true);
                    }
                    Level::L3 => {
                        let want = self.r.folded.contains(&(i, block_of(l.va.0)));
                        assert_eq!(
                            l.desc.contiguous(),
                            want,
                            "Contiguous bit of {:#x} in root {i}",
                            l.va.0
                        );
                        // A folded block lies inside one folio (`fold_ok` was honest).
                        if want {
                            let f = self.mem.folio(l.pa).expect("mapped frame in a folio");
                            assert!(f.order() >= FolioOrder::CONT, "folded over {f:?}");
                        }
                        self.expect_pages(&mut seen, i, &l, 1, false);
                    }
                    _ => panic!("unexpected leaf {l:?}"),
                }
            }
        }
        if let Err(e) = folio::check(&self.mem, leaves) {
            panic!("folio checker: {e}");
        }
        // Both in (root, va) order: the first difference, if any.
        let mut want = self.r.pages.iter();
        for (k, p) in &seen {
            match want.next() {
                Some((wk, wp)) if wk == k && wp == p => {}
                w => panic!("tables map {k:x?} as {p:x?}, the reference has {w:x?} next"),
            }
        }
        if let Some(w) = want.next() {
            panic!("the reference has {w:x?} (and maybe more), the tables do not");
        }
        for (&(i, v), p) in &self.r.pages {
            let t = self.sp[i]
                .root
                .translate(m, VirtAddr(v))
                .unwrap_or_else(|| panic!("{v:#x} of root {i} not mapped"));
            let level = if p.block { Level::L2 } else { Level::L3 };
            assert_eq!(
                (t.pa.0, t.desc.writable(), t.level),
                (p.pa, p.writable, level),
                "translate {v:#x} in root {i}"
            );
        }
        for &(i, b) in &self.r.folded {
            assert!(self.r.qualifies(i, b), "reference folded a non-qualifying block");
        }
        // Exact reference counts.
        let mut mapcounts: BTreeMap<u64, u32> = BTreeMap::new();
        for (&(_, v), p) in &self.r.pages {
            if !p.block || v == pmd_of(v) {
                let f = self.mem.folio(PhysAddr(p.pa)).expect("mapped frame in a folio");
                *mapcounts.entry(f.pa().0).or_default() += 1;
            }
        }
        let mut frames = 0;
        for &i in self.live.values() {
            let Rec { f, own, pins, .. } = self.recs[i];
            let mc = mapcounts.get(&f.pa().0).copied().unwrap_or(0);
            assert_eq!(
                (f.mapcount(), f.pincount(), f.refcount()),
                (mc, pins, own + pins + mc),
                "counts of {f:?} (own {own})"
            );
            frames += f.nr_pages();
        }
        for pa in mapcounts.keys() {
            assert!(self.live.contains_key(pa), "mapped folio {pa:#x} not live");
        }
        assert_eq!(self.fr.frames_out(), frames, "frames handed out");
    }

    fn expect_pages(&self, seen: &mut Vec<((usize, u64), Pg)>, i: usize, l: &Leaf, n: u64, block: bool) {
        for p in 0..n {
            let pg = Pg {
                pa: l.pa.0 + p * KB4,
                writable: l.desc.writable(),
                block,
            };
            seen.push(((i, l.va.0 + p * KB4), pg));
        }
    }

    /// Unmaps everything, drops every reference, destroys the roots, and checks that every
    /// folio frame and every table frame came back.
    fn teardown(mut self) {
        for ri in 0..self.n() {
            self.m.fill_all();
            self.unmap(ri, WIN, WIN_END);
            self.check();
            let root = &self.sp[ri].root;
            assert_eq!(
                self.m.tables_under(root.pa()),
                1,
                "root {ri}: tables left after unmapping everything"
            );
        }
        let live: Vec<usize> = self.live.values().copied().collect();
        for i in live {
            let f = self.recs[i].f;
            let mut freed = false;
            while self.recs[i].pins > 0 {
                self.recs[i].pins -= 1;
                freed = f.unpin(&mut self.fr).unwrap();
            }
            if self.recs[i].own > 0 {
                self.recs[i].own = 0;
                freed = f.put(&mut self.fr);
            }
            assert!(freed, "{f:?} not freed by its last reference");
            self.freed(f.pa().0);
        }
        self.check();
        let sum = folio::check(&self.mem, []).unwrap();
        assert_eq!((sum.folios, sum.free_frames), (0, FRAMES));
        self.fr.assert_all_back();
        let live_tables = self.m.live_frames();
        let mut destroyed = 0;
        for s in std::mem::take(&mut self.sp) {
            let tables = self.m.tables_under(s.root.pa());
            let st = *s.root.stats();
            assert_eq!(
                st.tables_allocated - st.tables_freed,
                tables as u64,
                "root's own count of its tables"
            );
            self.m.retire_root(s.root.pa());
            assert_eq!(s.root.destroy(&mut self.m), tables);
            destroyed += tables;
        }
        assert_eq!(destroyed, live_tables, "table frames not reachable from a root");
        self.m.check_all();
        assert_eq!(self.m.live_frames(), 0, "table frames leaked");
        assert_eq!(self.m.counters.allocs, self.m.counters.frees);
    }
}

/// Every leaf under `root`, read straight from the model's table frames (independently of
/// the engine's walker), in address order.
fn table_leaves(m: &Model, root: PhysAddr) -> Vec<Leaf> {
    fn walk(m: &Model, table: u64, level: Level, base: u64, out: &mut Vec<Leaf>) {
        let frame = m.frame(table).expect("table frame");
        for (i, &raw) in frame.iter().enumerate() {
            let desc = Descriptor(raw);
            let va = base + ((i as u64) << level.shift());
            match desc.kind(level) {
                DescriptorKind::Invalid => {}
                DescriptorKind::Table { next } => walk(m, next.0, level.next().unwrap(), va, out),
                DescriptorKind::Block { oa } | DescriptorKind::Page { oa } => out.push(Leaf {
                    va: VirtAddr(va),
                    pa: oa,
                    size: level.entry_size(),
                    level,
                    attrs: Attrs::from_descriptor(desc),
                    desc,
                }),
            }
        }
    }
    let mut out = Vec::new();
    walk(m, root.0, Level::L0, 0, &mut out);
    out
}

fn run(nroots: usize, tlbi_range: bool, ops: &[Op]) {
    let mut st = storage(FRAMES);
    let mut w = World::new(&mut st, nroots, tlbi_range);
    w.check();
    for op in ops {
        w.apply(op);
    }
    w.teardown();
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 48,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_folio_sequences_over_contpte(
        nroots in 2..=3usize,
        tlbi_range in any::<bool>(),
        ops in prop::collection::vec(op(), 1..=32),
    ) {
        run(nroots, tlbi_range, &ops);
    }
}

/// One 64 KiB folio mapped folded; two pages in the middle unmapped (the block unfolds, the
/// other 14 pages stay mapped with their counts, the removed pages' counts drop to 0 and the
/// refcount falls by exactly 2 on release); one page reprotected read-only; the rest unmapped:
/// every count back to 0, and the folio freed by its last reference.
#[test]
fn folded_folio_partially_unmapped_then_reprotected() {
    let mut st = storage(FRAMES);
    let mem = MemMap::new(PhysAddr(RAM), &mut st).unwrap();
    let mut fr = Frames::new();
    let mut m = quiet_model();
    let mut s = new_space(&mut m, 0);
    let f = mem
        .alloc_folio(&mut fr, FolioOrder::CONT, FolioKind::Anon)
        .unwrap();
    let va = WIN + 5 * KB64;
    let page_va = |i: usize| VirtAddr(va + i as u64 * KB4);
    let check = |m: &Model, root: &Root, mapped: &[bool; 16], writable: &[bool; 16], folded| {
        m.check_all();
        let leaves = table_leaves(m, root.pa());
        assert_eq!(root.leaves(m).collect::<Vec<_>>(), leaves);
        let leaves = leaves.iter().map(|l| MappedLeaf::new(s.id, l));
        if let Err(e) = folio::check(&mem, leaves) {
            panic!("folio checker: {e}");
        }
        for i in 0..16 {
            let t = root.translate(m, page_va(i));
            assert_eq!(t.is_some(), mapped[i], "page {i} mapped");
            if let Some(t) = t {
                assert_eq!(t.pa, f.page_pa(i), "page {i}");
                assert_eq!(t.desc.writable(), writable[i], "page {i} writable");
                assert_eq!(t.desc.contiguous(), folded, "Contiguous bit of page {i}");
            }
            assert_eq!(f.pte_mapcount(i), mapped[i] as u32, "mapcount of page {i}");
            assert_eq!(f.is_anon_exclusive(i), mapped[i], "page {i} anon-exclusive");
        }
        let n = mapped.iter().filter(|&&b| b).count() as u32;
        assert_eq!(f.mapcount(), n);
    };

    // Mapped whole at a 64 KiB aligned VA, PA aligned by construction: written folded.
    let pte = Attrs::USER_RW.leaf(Level::L3, f.pa());
    s.root.set_ptes(&mut m, VirtAddr(va), pte, 16, true).unwrap();
    f.add_anon_ptes(s.id, 0, 16, true).unwrap();
    assert_eq!(s.root.stats().cont_blocks_mapped, 1);
    let mut mapped = [true; 16];
    let mut writable = [true; 16];
    check(&m, &s.root, &mapped, &writable, true);
    assert_eq!(f.refcount(), 1 + 16);

    // Unmap pages 7 and 8: the block is unfolded first (one break-before-make), then the
    // two pages are removed and reported one by one, after the TLBI.
    m.fill_all();
    let mut zap = Zap::new(&mem, s.id);
    s.root
        .unmap_leaves(&mut m, page_va(7), 2 * KB4, |l| zap.leaf(l))
        .unwrap();
    let (pending, seen) = zap.finish();
    let want: Vec<Report> = [7, 8]
        .iter()
        .map(|&i| (page_va(i).0, f.page_pa(i).0, KB4, Level::L3))
        .collect();
    assert_eq!(seen, want);
    assert_eq!(s.root.stats().unfolds, 1);
    mapped[7] = false;
    mapped[8] = false;
    // The counts dropped at once; the references stay until the release.
    check(&m, &s.root, &mapped, &writable, false);
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].refs(), 2);
    assert_eq!(f.refcount(), 1 + 16);
    for u in pending {
        assert!(!u.release(&mut fr));
    }
    assert_eq!(f.refcount(), 1 + 14, "refcount falls by exactly 2 on release");
    check(&m, &s.root, &mapped, &writable, false);

    // Reprotect page 3 read-only: a permission change in place, counts unchanged.
    m.fill_all();
    s.root.protect(&mut m, page_va(3), KB4, Attrs::USER_RO).unwrap();
    writable[3] = false;
    check(&m, &s.root, &mapped, &writable, false);
    assert_eq!(f.refcount(), 1 + 14);

    // Unmap the rest (the hole included): 14 pages, in two runs around the hole.
    m.fill_all();
    let mut zap = Zap::new(&mem, s.id);
    s.root
        .unmap_leaves(&mut m, VirtAddr(va), KB64, |l| zap.leaf(l))
        .unwrap();
    let (pending, seen) = zap.finish();
    assert_eq!(seen.len(), 14);
    assert!(seen.iter().all(|r| r.2 == KB4 && r.3 == Level::L3));
    mapped = [false; 16];
    check(&m, &s.root, &mapped, &writable, false);
    assert_eq!(pending.iter().map(|u| u.refs()).sum::<u32>(), 14);
    for u in pending {
        assert!(!u.release(&mut fr));
    }
    assert_eq!((f.refcount(), f.mapcount(), f.pincount()), (1, 0, 0));
    assert!((0..16).all(|i| f.page_mapcount(i) == 0));
    assert_eq!(fr.frames_out(), 16);

    // The allocation reference is the last one: the folio is freed.
    assert!(f.put(&mut fr));
    let sum = folio::check(&mem, []).unwrap();
    assert_eq!((sum.folios, sum.free_frames), (0, FRAMES));
    fr.assert_all_back();
    assert_eq!(m.tables_under(s.root.pa()), 1, "empty tables freed by the unmap");
    m.retire_root(s.root.pa());
    assert_eq!(s.root.destroy(&mut m), 1);
    m.check_all();
    assert_eq!(m.live_frames(), 0);
}

/// A fixed sequence through the harness that always reaches the paths the random one finds
/// only sometimes: a 2 MiB block split by a hole and by a partial protect, blocks folded by a
/// later fill-in (`contpte_try_fold`), a dup refused for a pinned exclusive page and then
/// allowed, unfolds by write-protect and by granting write, a copy-on-write fault.
#[test]
fn scripted_folio_sequence() {
    let at = |page, nr| Span {
        anchor: None,
        page,
        nr,
    };
    let map = |root, order, pos, how, first, nr| Op::Map {
        order,
        root,
        pos,
        how,
        first,
        nr,
        skew: 0,
        writable: true,
        young: true,
        dirty: false,
    };
    let ops = [
        // Root 0: an order-9 block in slot 0, an order-4 folio folded at slot 1, and pages
        // 5..305 of an order-9 folio in slot 2, whose two holes are then filled in.
        map(0, 9, 0, 0, 0, 0),
        map(0, 4, 32, 0, 0, 0),
        map(0, 9, 2, 7, 5, 299),
        Op::MapRest {
            root: 0,
            sel: 2,
            run: 1,
            pos: 0,
            writable: true,
        },
        Op::MapRest {
            root: 0,
            sel: 2,
            run: 0,
            pos: 0,
            writable: true,
        },
        // Pin page 0 of the block: the dup of the block is refused, the rest is copied.
        Op::Pin { root: 0, sel: 0 },
        Op::Dup {
            from: 0,
            to: 0,
            span: at(0, WIN_PAGES),
        },
        Op::Unpin { sel: 0 },
        Op::Dup {
            from: 0,
            to: 0,
            span: at(0, 512),
        },
        // A hole in the parent's block, a partial protect of the child's.
        Op::Unmap {
            root: 0,
            span: at(100, 16),
        },
        Op::Protect {
            root: 1,
            span: at(1, 3),
            writable: true,
        },
        // Grant write on a page of the child's folded order-4 folio; write to its order-9
        // copy (copy-on-write fault); hardware and software A/D.
        Op::SetAccess {
            root: 1,
            sel: 512,
            young: true,
            dirty: true,
            writable: true,
        },
        Op::Access {
            root: 1,
            sel: 1030,
            write: true,
        },
        Op::HwTouch {
            root: 1,
            sel: 1100,
            write: true,
            which: 3,
        },
        Op::Young { root: 0, sel: 600 },
        Op::WrProtect {
            root: 0,
            span: at(1024 + 8, 40),
        },
        // Root 2: blocks in its slots 0 and 2; unmap the head of one, the tail of the other
        // (and beyond).
        map(2, 9, 0, 0, 0, 0),
        map(2, 9, 1, 0, 0, 0),
        Op::Unmap {
            root: 2,
            span: at(0, 100),
        },
        Op::Unmap {
            root: 2,
            span: at(2 * 512 + 400, 200),
        },
        Op::Put { sel: 0 },
        Op::Put { sel: 0 },
        Op::Put { sel: 0 },
        Op::Put { sel: 0 },
        Op::Put { sel: 0 },
        Op::Unmap {
            root: 1,
            span: at(0, 1024),
        },
    ];
    let mut st = storage(FRAMES);
    let mut w = World::new(&mut st, 3, false);
    w.max_mapped = usize::MAX;
    w.check();
    for op in &ops {
        w.apply(op);
    }
    let total = |f: fn(&super::super::Stats) -> u64| -> u64 { w.sp.iter().map(|s| f(s.root.stats())).sum() };
    let (folds, unfolds, splits) = (total(|s| s.folds), total(|s| s.unfolds), total(|s| s.splits));
    let t = &w.tally;
    assert!(folds >= 2, "folds {folds}");
    assert!(unfolds >= 2, "unfolds {unfolds}");
    assert!(splits >= 4 && t.pmd_splits >= 4, "splits {splits}, {t:?}");
    assert!(
        t.dup_refused >= 1 && t.dup_entire == 1 && t.dup_runs >= 2,
        "{t:?}"
    );
    assert!(t.pins == 1 && t.cow_faults == 1, "{t:?}");
    assert_eq!(w.live.len(), 5, "all five folios still mapped after the puts");
    assert!(w.live.values().all(|&i| w.recs[i].own == 0));
    w.teardown();
}

/// `Root::map` documents that with `allow_blocks` "every 2 MiB stretch whose VA and PA are
/// both aligned is mapped with a single block descriptor". A level-3 table left empty by the
/// PTE-level clears (which by design never free tables) breaks that: the map descends into the
/// empty table and writes 512 pages. A caller that trusts the docs and accounts the folio with
/// `add_anon_entire` then disagrees with the tables (the checker reports the first page's PTE
/// mapcount).
#[test]
#[ignore = "bug: Root::map(allow_blocks) writes 512 pages instead of the documented 2 MiB block \
            where clear_ptes left an empty level-3 table"]
fn block_map_over_an_empty_pte_table() {
    let mut st = storage(FRAMES);
    let mem = MemMap::new(PhysAddr(RAM), &mut st).unwrap();
    let mut fr = Frames::new();
    let mut m = quiet_model();
    let mut s = new_space(&mut m, 0);
    // A page faulted in and cleared again (e.g. a fault handler retrying): the level-3 table
    // covering [WIN, WIN + 2 MiB) stays, empty.
    let small = mem
        .alloc_folio(&mut fr, FolioOrder::SMALL, FolioKind::Anon)
        .unwrap();
    let pte = Attrs::USER_RW.leaf(Level::L3, small.pa());
    s.root.set_ptes(&mut m, VirtAddr(WIN), pte, 1, false).unwrap();
    s.root.clear_ptes(&mut m, VirtAddr(WIN), 1).unwrap();
    assert!(s.root.translate(&m, VirtAddr(WIN)).is_none());
    assert!(small.put(&mut fr));
    // A 2 MiB folio mapped there, VA and PA aligned, blocks allowed.
    let f = mem
        .alloc_folio(&mut fr, FolioOrder::PMD, FolioKind::Anon)
        .unwrap();
    s.root
        .map(&mut m, VirtAddr(WIN), f.pa(), MB2, Attrs::USER_RW, true)
        .unwrap();
    f.add_anon_entire(s.id, true).unwrap();
    m.check_all();
    let leaves: Vec<MappedLeaf> = table_leaves(&m, s.root.pa())
        .iter()
        .map(|l| MappedLeaf::new(s.id, l))
        .collect();
    let level = s.root.translate(&m, VirtAddr(WIN)).unwrap().level;
    let checked = folio::check(&mem, leaves);
    assert_eq!(level, Level::L2, "a 2 MiB block, as documented");
    checked.unwrap();
}

/// Granting write permission without dirtying (`set_access_flags` with `writable` and not
/// `dirty`) sets only DBM on a clean entry, and the engine issues no TLBI for it (it
/// invalidates only when AP / PXN / UXN change), although its docs promise to invalidate
/// relaxations "rather than rely on spurious-fault handling" and to be correct with hardware
/// A/D management. With FEAT_HAFDBS, DBM *is* a write permission: a CPU still holding the old
/// read-only entry (DBM clear) takes a permission fault on write while another CPU's write has
/// already made the descriptor dirty through the new one; the fault handler's
/// `set_access_flags(WRITTEN)` then finds nothing to change, returns `false` and invalidates
/// nothing, and the access faults again, for ever (there is no spurious-fault flush to call).
#[test]
#[ignore = "bug: set_access_flags granting write without dirty (DBM only) issues no TLBI; \
            with hardware dirty updates the stale read-only TLB entry makes the write fault \
            unresolvable"]
fn clean_write_grant_leaves_a_stale_read_only_entry() {
    let mut m = quiet_model();
    let mut s = new_space(&mut m, 0);
    let va = VirtAddr(WIN);
    let pte = Attrs::USER_RO.leaf(Level::L3, PhysAddr(RAM));
    s.root.set_ptes(&mut m, va, pte, 1, false).unwrap();
    // The CPU caches the read-only entry.
    let (root, asid) = (s.root.pa(), s.asid.0);
    assert_eq!(m.access(root, asid, va, El::El0, Access::Read), Ok(PhysAddr(RAM)));
    // Write granted, clean: DBM set, AP[2] still set.
    let grant = AccessUpdate {
        young: false,
        dirty: false,
        writable: true,
    };
    assert_eq!(s.root.set_access_flags(&mut m, va, grant), Ok(true));
    // Another CPU writes through the new entry: the hardware marks it dirty (AP[2] cleared).
    m.hw_update(root, va, true).unwrap();
    m.check_all();
    // This CPU writes: its stale entry faults; the handler marks the page written (which
    // changes nothing) and the write is retried. It must succeed.
    let mut res = m.access(root, asid, va, El::El0, Access::Write);
    if let Err(f) = res {
        assert_eq!(f.kind, FaultKind::Permission);
        let fixed = s
            .root
            .set_access_flags(&mut m, va, AccessUpdate::WRITTEN)
            .unwrap();
        res = m.access(root, asid, va, El::El0, Access::Write);
        assert_eq!(
            res,
            Ok(PhysAddr(RAM)),
            "write still faulting after the handler (set_access_flags returned {fixed})"
        );
    }
    assert_eq!(res, Ok(PhysAddr(RAM)));
}

/// The two shrunk cases in which the Access step meets a write fault with nothing to fix
/// (found by long runs of the property test): a clean writable entry cached, then dirtied by
/// the simulated hardware (accepted: dirty management would have let the write through); and
/// the stale read-only entry of `clean_write_grant_leaves_a_stale_read_only_entry`.
#[test]
fn write_faults_after_hardware_dirty_updates() {
    let map = |root, writable| Op::Map {
        order: 0,
        root,
        pos: 0,
        how: 0,
        first: 0,
        nr: 0,
        skew: 0,
        writable,
        young: true,
        dirty: false,
    };
    let touch = |root| Op::HwTouch {
        root,
        sel: 0,
        write: true,
        which: 0,
    };
    let write = |root| Op::Access {
        root,
        sel: 0,
        write: true,
    };
    let cases = [
        vec![map(1, true), touch(1), write(1)],
        vec![
            map(0, false),
            Op::Dup {
                from: 0,
                to: 0,
                span: Span {
                    anchor: Some(0),
                    page: 0,
                    nr: 16,
                },
            },
            Op::SetAccess {
                root: 1,
                sel: 0,
                young: false,
                dirty: false,
                writable: true,
            },
            touch(1),
            write(1),
        ],
    ];
    for (k, ops) in cases.iter().enumerate() {
        let mut st = storage(FRAMES);
        let mut w = World::new(&mut st, 2, false);
        w.check();
        for op in ops {
            w.apply(op);
        }
        // Case 1 meets the stale entry while the bug stands (and nothing once it is fixed).
        let t = &w.tally;
        let ok = match k {
            0 => (t.hw_dirty_races, t.stale_ro_faults) == (1, 0),
            _ => t.hw_dirty_races == 0 && t.stale_ro_faults <= 1,
        };
        assert!(ok, "case {k}: {t:?}");
        w.teardown();
    }
}
