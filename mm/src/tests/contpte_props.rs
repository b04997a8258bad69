//! Property tests of CONTPTE: random sequences of PTE-level operations on a user root against
//! a reference `BTreeMap<page VA, Page { pa, attrs, young, dirty }>` plus the set of blocks
//! expected folded.
//!
//! Operations: `set_ptes` (runs of whole aligned blocks and of unaligned lengths, physical
//! addresses aligned or skewed, `fold_ok` true or false, any A/D state), `Root::map` of pages
//! (the legacy encoding), `clear_ptes`, `get_and_clear_ptes`, `unmap_leaves`,
//! `wrprotect_ptes`, `Root::protect`, `set_access_flags`, `test_and_clear_young`, hardware
//! A/D updates of one entry (for a folded block: of any entry of the block, as the hardware
//! may), and switching CONTPTE off and on. Two windows: one straddling a 2 MiB boundary (two
//! level-3 tables), one at the very top of the user half.
//!
//! The reference keeps each page's *own* A/D state ("raw", what its entry holds) and applies
//! the engine's documented rules: the state seen through `pte_get` is the OR over the block
//! when folded; folding and unfolding write that OR into all 16 entries; whole-block A/D
//! operations act on all 16. What it guarantees about the bit (docs/mm.md, "CONTPTE"):
//!
//! * after `set_ptes` with `fold_ok` (CONTPTE on), every block the call touched is folded
//!   exactly when it qualifies (16 pages, consecutive PAs from a 64 KiB aligned base, equal
//!   attributes);
//! * a folded block stays folded until an operation covers it in part (unmap, clear,
//!   write-protect, protect) or `set_access_flags` changes the write permission of a page of
//!   it; nothing else folds.
//!
//! Before every step the model MMU touches every mapping (so a missing TLBI leaves a stale
//! entry); after every step: the model's coherence, contiguous-group and leak checks (and its
//! break-before-make checks on every write), and for every page of the windows `translate`
//! and `pte_get` agree with the reference — mapping, attributes, gathered A/D, and the
//! Contiguous bit exactly on the blocks expected folded.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::super::*;
use super::Env;

const KB4: u64 = 4 << 10;
const KB64: u64 = 64 << 10;
const WINDOW_PAGES: u64 = 256;
const PA_BASE: u64 = 0x4000_0000;
/// Physical memory behind one "area" (see [`pa_of`]).
const AREA: u64 = 0x100_0000;

/// The physical address of window page `page` in area `area`, skewed by `skew` pages: maps of
/// the same area without skew are physically consistent with each other, so runs written by
/// separate calls can complete a qualifying block.
fn pa_of(area: u64, page: u64, skew: u64) -> u64 {
    PA_BASE + area * AREA + (page + skew) * KB4
}

fn window(w: usize) -> u64 {
    // 1 MiB straddling the 2 MiB boundary at 6 MiB; the last 1 MiB of the user half.
    [6 * (1 << 20) - (512 << 10), USER_END - (1 << 20)][w]
}

fn attrs(i: usize) -> Attrs {
    let (r, w, u, x) = (Prot::READ, Prot::WRITE, Prot::USER, Prot::EXEC_USER);
    [
        Attrs::USER_RW,
        Attrs::USER_RO,
        Attrs::USER_RX,
        Attrs::new(r | w | u, MemType::NonCacheable, false),
        Attrs::new(r | u | x, MemType::Normal, false),
    ][i]
}

#[derive(Clone, Debug)]
enum Op {
    SetPtes {
        win: usize,
        page: u64,
        nr: u64,
        /// Physical area and skew in pages (see [`pa_of`]).
        area: u64,
        skew: u64,
        attrs: usize,
        young: bool,
        dirty: bool,
        fold_ok: bool,
    },
    /// Faults filling one block piece by piece: its holes, cut before every page whose bit
    /// is set in `cuts`, written by one `set_ptes` each, starting with piece `rotate` (mod the
    /// number of pieces) — the last write completes the block. With `like`, area and
    /// attributes are those of a page already in the block (when expressible), so that the
    /// block usually qualifies.
    FillBlock {
        win: usize,
        block: u64,
        area: u64,
        attrs: usize,
        young: bool,
        fold_ok: bool,
        like: bool,
        cuts: u16,
        rotate: usize,
    },
    MapLegacy {
        win: usize,
        page: u64,
        nr: u64,
        area: u64,
        attrs: usize,
    },
    Clear {
        win: usize,
        page: u64,
        nr: u64,
    },
    GetAndClear {
        win: usize,
        page: u64,
        nr: u64,
    },
    UnmapLeaves {
        win: usize,
        page: u64,
        nr: u64,
    },
    WrProtect {
        win: usize,
        page: u64,
        nr: u64,
    },
    Protect {
        win: usize,
        page: u64,
        nr: u64,
        attrs: usize,
    },
    SetAccessFlags {
        win: usize,
        page: u64,
        young: bool,
        dirty: bool,
        writable: bool,
    },
    TestAndClearYoung {
        win: usize,
        page: u64,
    },
    HwTouch {
        win: usize,
        page: u64,
        write: bool,
        which: u64,
    },
    SetContpte(bool),
}

/// A run: mostly whole aligned blocks, or any page and length.
fn run() -> impl Strategy<Value = (u64, u64)> {
    prop_oneof![
        3 => (0..WINDOW_PAGES / 16, 1..4u64).prop_map(|(b, n)| (b * 16, n * 16)),
        3 => (0..WINDOW_PAGES / 4, 1..6u64).prop_map(|(b, n)| (b * 4, n * 4)),
        2 => (0..WINDOW_PAGES, 1..40u64),
        1 => (0..WINDOW_PAGES, 1..3u64),
    ]
    .prop_map(|(page, n)| (page, n.min(WINDOW_PAGES - page)))
}

fn op() -> impl Strategy<Value = Op> {
    let win = || prop::sample::select(vec![0usize, 0, 0, 1]);
    let area = || prop::sample::select(vec![0u64, 0, 0, 0, 1]);
    let attrs = || prop_oneof![5 => Just(0usize), 2 => 1..5usize];
    prop_oneof![
        8 => (win(), run(), area(), prop::bool::weighted(0.15), attrs(), any::<bool>(),
              any::<bool>(), prop::bool::weighted(0.85), 1..16u64)
            .prop_map(|(win, (page, nr), area, skewed, attrs, young, dirty, fold_ok, s)| {
                Op::SetPtes {
                    win, page, nr, area, skew: if skewed { s } else { 0 }, attrs, young,
                    dirty, fold_ok,
                }
            }),
        4 => (win(), 0..WINDOW_PAGES / 16, area(), attrs(), any::<bool>(),
              prop::bool::weighted(0.85), prop::bool::weighted(0.8), any::<u16>(), 0..8usize)
            .prop_map(|(win, block, area, attrs, young, fold_ok, like, cuts, rotate)| {
                Op::FillBlock { win, block, area, attrs, young, fold_ok, like, cuts, rotate }
            }),
        1 => (win(), run(), area(), attrs()).prop_map(|(win, (page, nr), area, attrs)| {
            Op::MapLegacy { win, page, nr, area, attrs }
        }),
        2 => (win(), run()).prop_map(|(win, (page, nr))| Op::Clear { win, page, nr }),
        2 => (win(), run()).prop_map(|(win, (page, nr))| Op::GetAndClear { win, page, nr }),
        2 => (win(), run()).prop_map(|(win, (page, nr))| Op::UnmapLeaves { win, page, nr }),
        2 => (win(), run()).prop_map(|(win, (page, nr))| Op::WrProtect { win, page, nr }),
        2 => (win(), run(), attrs())
            .prop_map(|(win, (page, nr), attrs)| Op::Protect { win, page, nr, attrs }),
        4 => (win(), 0..WINDOW_PAGES, any::<bool>(), any::<bool>(), prop::bool::weighted(0.3))
            .prop_map(|(win, page, young, dirty, writable)| {
                Op::SetAccessFlags { win, page, young, dirty, writable }
            }),
        2 => (win(), 0..WINDOW_PAGES).prop_map(|(win, page)| Op::TestAndClearYoung { win, page }),
        4 => (win(), 0..WINDOW_PAGES, any::<bool>(), 0..16u64)
            .prop_map(|(win, page, write, which)| Op::HwTouch { win, page, write, which }),
        1 => any::<bool>().prop_map(Op::SetContpte),
    ]
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Page {
    pa: u64,
    attrs: Attrs,
    young: bool,
    dirty: bool,
}

fn block_of(va: u64) -> u64 {
    va & !(KB64 - 1)
}

#[derive(Default)]
struct Reference {
    pages: BTreeMap<u64, Page>,
    folded: BTreeSet<u64>,
}

impl Reference {
    fn block_pages(&self, block: u64) -> Vec<Option<Page>> {
        (0..16)
            .map(|i| self.pages.get(&(block + i * KB4)).copied())
            .collect()
    }

    /// OR of the raw A/D state over the block's present pages.
    fn gathered(&self, block: u64) -> (bool, bool) {
        self.block_pages(block)
            .iter()
            .flatten()
            .fold((false, false), |(y, d), p| (y || p.young, d || p.dirty))
    }

    /// The A/D state `pte_get` must report for `va`.
    fn effective(&self, va: u64) -> (bool, bool) {
        let p = self.pages[&va];
        if self.folded.contains(&block_of(va)) {
            self.gathered(block_of(va))
        } else {
            (p.young, p.dirty)
        }
    }

    /// Writes the gathered state into all 16 pages (what fold and unfold do).
    fn spread(&mut self, block: u64) {
        let (y, d) = self.gathered(block);
        for i in 0..16 {
            if let Some(p) = self.pages.get_mut(&(block + i * KB4)) {
                p.young = y;
                p.dirty = d;
            }
        }
    }

    fn qualifies(&self, block: u64) -> bool {
        let ps = self.block_pages(block);
        let Some(first) = ps[0] else {
            return false;
        };
        first.pa.is_multiple_of(KB64)
            && ps
                .iter()
                .enumerate()
                .all(|(i, p)| p.is_some_and(|p| p.pa == first.pa + i as u64 * KB4 && p.attrs == first.attrs))
    }

    /// Unfolds the folded blocks `[start, end)` covers only in part.
    fn unfold_partial(&mut self, start: u64, end: u64) {
        for block in [block_of(start), block_of(end - KB4)] {
            let whole = block >= start && block + KB64 <= end;
            if !whole && self.folded.remove(&block) {
                self.spread(block);
            }
        }
    }
}

struct Harness {
    e: Env,
    r: Reference,
    contpte: bool,
    steps: u64,
}

impl Harness {
    fn range(win: usize, page: u64, nr: u64) -> (u64, u64) {
        let start = window(win) + page * KB4;
        (start, start + nr * KB4)
    }

    fn apply(&mut self, op: &Op) {
        self.e.m.fill_all();
        let (m, u) = (&mut self.e.m, &mut self.e.u);
        let r = &mut self.r;
        match *op {
            Op::SetPtes {
                win,
                page,
                nr,
                area,
                skew,
                attrs: ai,
                young,
                dirty,
                fold_ok,
            } => {
                let (start, end) = Self::range(win, page, nr);
                let pa = pa_of(area, page, skew);
                let a = attrs(ai);
                let pte = a
                    .leaf(Level::L3, PhysAddr(pa))
                    .with_young(young)
                    .with_dirty(dirty);
                let res = u.set_ptes(m, VirtAddr(start), pte, nr as usize, fold_ok);
                let conflict = (start..end)
                    .step_by(KB4 as usize)
                    .find(|v| r.pages.contains_key(v));
                if let Some(v) = conflict {
                    assert_eq!(res, Err(MapError::AlreadyMapped(VirtAddr(v))), "{op:?}");
                    return self.check();
                }
                assert_eq!(res, Ok(()), "{op:?}");
                for (i, v) in (start..end).step_by(KB4 as usize).enumerate() {
                    let p = Page {
                        pa: pa + i as u64 * KB4,
                        attrs: a,
                        young,
                        dirty,
                    };
                    r.pages.insert(v, p);
                }
                if fold_ok && self.contpte {
                    let mut block = block_of(start);
                    while block < end {
                        if r.qualifies(block) {
                            r.folded.insert(block);
                            r.spread(block);
                        }
                        block += KB64;
                    }
                }
            }
            Op::FillBlock {
                win,
                block,
                mut area,
                mut attrs,
                young,
                fold_ok,
                like,
                cuts,
                rotate,
            } => {
                let first = block * 16;
                let base = window(win) + first * KB4;
                if let Some((_, p)) = r.pages.range(base..base + KB64).next().filter(|_| like) {
                    area = (p.pa - PA_BASE) / AREA;
                    attrs = (0..5).find(|&i| self::attrs(i) == p.attrs).unwrap_or(attrs);
                }
                let mut holes = Vec::new();
                for i in first..first + 16 {
                    if r.pages.contains_key(&(window(win) + i * KB4)) {
                        continue;
                    }
                    match holes.last_mut() {
                        Some((s, n)) if *s + *n == i && cuts & (1 << (i - first)) == 0 => *n += 1,
                        _ => holes.push((i, 1)),
                    }
                }
                if !holes.is_empty() {
                    let k = rotate % holes.len();
                    holes.rotate_left(k);
                }
                for (page, nr) in holes {
                    let op = Op::SetPtes {
                        win,
                        page,
                        nr,
                        area,
                        skew: 0,
                        attrs,
                        young,
                        dirty: false,
                        fold_ok,
                    };
                    self.apply(&op);
                }
                return;
            }
            Op::MapLegacy {
                win,
                page,
                nr,
                area,
                attrs: ai,
            } => {
                let (start, end) = Self::range(win, page, nr);
                let pa = pa_of(area, page, 0);
                let a = attrs(ai);
                let res = u.map(m, VirtAddr(start), PhysAddr(pa), nr * KB4, a, false);
                let conflict = (start..end)
                    .step_by(KB4 as usize)
                    .find(|v| r.pages.contains_key(v));
                if let Some(v) = conflict {
                    assert_eq!(res, Err(MapError::AlreadyMapped(VirtAddr(v))), "{op:?}");
                    return self.check();
                }
                assert_eq!(res, Ok(()), "{op:?}");
                for (i, v) in (start..end).step_by(KB4 as usize).enumerate() {
                    let dirty = a.prot.contains(Prot::WRITE);
                    let p = Page {
                        pa: pa + i as u64 * KB4,
                        attrs: a,
                        young: true,
                        dirty,
                    };
                    r.pages.insert(v, p);
                }
            }
            Op::Clear { win, page, nr }
            | Op::GetAndClear { win, page, nr }
            | Op::UnmapLeaves { win, page, nr } => {
                let (start, end) = Self::range(win, page, nr);
                r.unfold_partial(start, end);
                // What must be reported: folded blocks once (gathered), other pages one by one.
                let mut want = Vec::new();
                let mut gathered: Option<(u64, bool, bool)> = None;
                for (&v, p) in r.pages.range(start..end) {
                    let (y, d) = r.effective(v);
                    gathered = Some(match gathered {
                        None => (p.pa, y, d),
                        Some((pa, gy, gd)) => (pa, gy || y, gd || d),
                    });
                    if r.folded.contains(&block_of(v)) {
                        if v == block_of(v) {
                            want.push((v, p.pa, KB64, y, d, true));
                        }
                    } else {
                        want.push((v, p.pa, KB4, y, d, false));
                    }
                }
                match op {
                    Op::Clear { .. } => u.clear_ptes(m, VirtAddr(start), nr as usize).unwrap(),
                    Op::GetAndClear { .. } => {
                        let got = u.get_and_clear_ptes(m, VirtAddr(start), nr as usize).unwrap();
                        let got = got.map(|d| (d.address().0, d.young(), d.dirty()));
                        assert_eq!(got, gathered, "{op:?}");
                    }
                    _ => {
                        let mut got = Vec::new();
                        u.unmap_leaves(m, VirtAddr(start), end - start, |l| {
                            assert_eq!(l.level, Level::L3);
                            got.push((
                                l.va.0,
                                l.pa.0,
                                l.size,
                                l.desc.young(),
                                l.desc.dirty(),
                                l.desc.contiguous(),
                            ));
                        })
                        .unwrap();
                        assert_eq!(got, want, "{op:?}");
                    }
                }
                let gone: Vec<u64> = r.pages.range(start..end).map(|(v, _)| *v).collect();
                for v in gone {
                    r.pages.remove(&v);
                }
                let mut block = block_of(start);
                while block < end {
                    if block >= start && block + KB64 <= end {
                        r.folded.remove(&block);
                    }
                    block += KB64;
                }
            }
            Op::WrProtect { win, page, nr } => {
                let (start, end) = Self::range(win, page, nr);
                u.wrprotect_ptes(m, VirtAddr(start), nr as usize).unwrap();
                r.unfold_partial(start, end);
                for (_, p) in r.pages.range_mut(start..end) {
                    p.attrs.prot = p.attrs.prot.without(Prot::WRITE);
                }
            }
            Op::Protect {
                win,
                page,
                nr,
                attrs: ai,
            } => {
                let (start, end) = Self::range(win, page, nr);
                let a = attrs(ai);
                u.protect(m, VirtAddr(start), nr * KB4, a).unwrap();
                r.unfold_partial(start, end);
                for (_, p) in r.pages.range_mut(start..end) {
                    p.attrs = a;
                    // A writable result is writable by the hardware: dirty.
                    p.dirty |= a.prot.contains(Prot::WRITE);
                }
            }
            Op::SetAccessFlags {
                win,
                page,
                young,
                dirty,
                writable,
            } => {
                let v = window(win) + page * KB4;
                let upd = AccessUpdate {
                    young,
                    dirty,
                    writable,
                };
                let res = u.set_access_flags(m, VirtAddr(v), upd);
                let Some(&p) = r.pages.get(&v) else {
                    assert_eq!(res, Err(MapError::NotMapped(VirtAddr(v))), "{op:?}");
                    return self.check();
                };
                let relax = |q: Page| {
                    let mut n = q;
                    n.young |= young;
                    n.dirty |= dirty;
                    if writable {
                        n.attrs.prot = n.attrs.prot | Prot::WRITE;
                    }
                    n
                };
                let block = block_of(v);
                let expect = if r.folded.contains(&block) {
                    let all: Vec<u64> = (0..16).map(|i| block + i * KB4).collect();
                    let changed = all.iter().any(|a| relax(r.pages[a]) != r.pages[a]);
                    if changed && relax(p).attrs != p.attrs {
                        r.folded.remove(&block);
                        r.spread(block);
                        let q = r.pages[&v];
                        r.pages.insert(v, relax(q));
                    } else if changed {
                        for a in all {
                            let q = r.pages[&a];
                            r.pages.insert(a, relax(q));
                        }
                    }
                    changed
                } else {
                    r.pages.insert(v, relax(p));
                    relax(p) != p
                };
                assert_eq!(res, Ok(expect), "{op:?}");
            }
            Op::TestAndClearYoung { win, page } => {
                let v = window(win) + page * KB4;
                let got = u.test_and_clear_young(m, VirtAddr(v));
                let want = match r.pages.get(&v) {
                    None => false,
                    Some(_) if r.folded.contains(&block_of(v)) => {
                        let block = block_of(v);
                        let y = r.gathered(block).0;
                        for i in 0..16 {
                            r.pages.get_mut(&(block + i * KB4)).unwrap().young = false;
                        }
                        y
                    }
                    Some(p) => {
                        let y = p.young;
                        r.pages.get_mut(&v).unwrap().young = false;
                        y
                    }
                };
                assert_eq!(got, want, "{op:?}");
            }
            Op::HwTouch {
                win,
                page,
                write,
                which,
            } => {
                let v = window(win) + page * KB4;
                if !r.pages.contains_key(&v) {
                    return self.check();
                }
                let entry = if r.folded.contains(&block_of(v)) {
                    block_of(v) + which * KB4
                } else {
                    v
                };
                m.hw_update(u.pa(), VirtAddr(entry), write).unwrap();
                let p = r.pages.get_mut(&entry).unwrap();
                p.young = true;
                if write && p.attrs.prot.contains(Prot::WRITE) {
                    p.dirty = true;
                }
            }
            Op::SetContpte(on) => {
                u.set_contpte(on);
                self.contpte = on;
            }
        }
        self.check();
    }

    /// The model's checks, then every page of both windows against the reference: mapping,
    /// attributes, raw A/D state and Contiguous bit through `translate`; the gathered state
    /// through `pte_get` (on every page outside folded blocks, and on the first, the last and
    /// one rotating page of each folded block — reading a folded page costs 16 entries).
    fn check(&mut self) {
        self.steps += 1;
        let (m, u, r) = (&self.e.m, &self.e.u, &self.r);
        m.check_all();
        for w in 0..2 {
            for i in 0..WINDOW_PAGES {
                let v = window(w) + i * KB4;
                let t = u.translate(m, VirtAddr(v));
                match r.pages.get(&v) {
                    None => {
                        assert_eq!(t, None, "{v:#x} mapped");
                        if i % 8 == self.steps % 8 {
                            assert_eq!(u.pte_get(m, VirtAddr(v)), None, "{v:#x} mapped");
                        }
                    }
                    Some(p) => {
                        let t = t.unwrap_or_else(|| panic!("{v:#x} not mapped"));
                        assert_eq!((t.pa.0, t.attrs), (p.pa, p.attrs), "{v:#x}");
                        assert_eq!(t.level, Level::L3);
                        let in_block = i % 16;
                        let sample = [0, 15, self.steps % 16].contains(&in_block);
                        if sample || !r.folded.contains(&block_of(v)) {
                            let g = u.pte_get(m, VirtAddr(v)).unwrap();
                            assert_eq!(g.address().0, p.pa);
                            let ad = (g.young(), g.dirty());
                            assert_eq!(ad, r.effective(v), "A/D of {v:#x}");
                        }
                        assert_eq!(
                            t.desc.contiguous(),
                            r.folded.contains(&block_of(v)),
                            "Contiguous bit of {v:#x}"
                        );
                        assert_eq!(t.desc.young(), p.young, "raw AF of {v:#x}");
                        assert_eq!(t.desc.dirty(), p.dirty, "raw dirty of {v:#x}");
                    }
                }
            }
        }
    }
}

fn run_ops(ops: &[Op], tlbi_range: bool) {
    let mut h = Harness {
        e: Env::new(tlbi_range),
        r: Reference::default(),
        contpte: true,
        steps: 0,
    };
    h.e.m.set_logging(false);
    for op in ops {
        h.apply(op);
    }
    h.e.teardown();
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_pte_operations_match_the_reference(
        ops in prop::collection::vec(op(), 1..48),
        tlbi_range in any::<bool>(),
    ) {
        run_ops(&ops, tlbi_range);
    }
}

/// A fixed sequence that always exercises fold by single writes, whole-block A/D operations,
/// hardware updates of other entries, partial unfolds and the top of the user half.
#[test]
fn scripted_pte_sequence() {
    let mut ops = Vec::new();
    for win in [0, 1] {
        // Block 1 page by page (the last write folds), blocks 2..4 at once.
        for i in 0..16 {
            ops.push(Op::SetPtes {
                win,
                page: 16 + i,
                nr: 1,
                area: 1,
                skew: 0,
                attrs: 0,
                young: i == 2,
                dirty: false,
                fold_ok: true,
            });
        }
        ops.push(Op::SetPtes {
            win,
            page: 32,
            nr: 48,
            area: 2,
            skew: 0,
            attrs: 0,
            young: false,
            dirty: false,
            fold_ok: true,
        });
        ops.push(Op::HwTouch {
            win,
            page: 40,
            write: true,
            which: 9,
        });
        ops.push(Op::SetAccessFlags {
            win,
            page: 33,
            young: true,
            dirty: false,
            writable: false,
        });
        ops.push(Op::TestAndClearYoung { win, page: 20 });
        ops.push(Op::WrProtect {
            win,
            page: 16,
            nr: 24,
        });
        ops.push(Op::SetAccessFlags {
            win,
            page: 17,
            young: true,
            dirty: true,
            writable: true,
        });
        ops.push(Op::Protect {
            win,
            page: 48,
            nr: 16,
            attrs: 3,
        });
        ops.push(Op::UnmapLeaves {
            win,
            page: 20,
            nr: 40,
        });
        ops.push(Op::GetAndClear {
            win,
            page: 0,
            nr: 256,
        });
    }
    run_ops(&ops, false);
    run_ops(&ops, true);
}
