//! Random operation sequences over folios of orders 0, 4 and 9, mapped in up to four
//! simulated address spaces, against a reference model.
//!
//! The model keeps the mappings as `(space, window, folio) → pages or entire`, and per
//! folio the references the test owns, pins, references held by unreleased `Unmapped`s,
//! and the expected anon-exclusive flags. Every operation's result (including the exact
//! error) is predicted by the model. After every step: the invariant checker runs on the
//! leaves the model implies, and every counter of every live folio is compared with the
//! model; "mapped shared" must be sound always, and exact while no three spaces mapped
//! the folio at once. At the end everything is unmapped and released, and every frame must
//! be back in the buddy allocator, coalesced.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;

const SPACES: u32 = 4;
const WINDOWS: u32 = 2;
/// Folios the `Alloc` op may have live at once (fork copies come on top).
const MAX_LIVE: usize = 6;
/// Live folios including fork copies.
const MAX_LIVE_WITH_COPIES: usize = 24;

#[derive(Clone, Debug)]
enum Op {
    Alloc {
        order: u8,
        anon: bool,
    },
    Get {
        f: u8,
    },
    Put {
        f: u8,
    },
    MapPtes {
        f: u8,
        s: u32,
        w: u32,
        first: u16,
        nr: u16,
        excl: bool,
    },
    MapEntire {
        f: u8,
        s: u32,
        w: u32,
        excl: bool,
    },
    /// `m` selects an existing PTE mapping; without one, unmapping an unmapped page of
    /// folio `f` must be refused.
    UnmapPtes {
        m: u16,
        f: u8,
        s: u32,
        sel: u16,
        nr: u16,
    },
    /// `m` selects an existing entire mapping; without one, the removal must be refused.
    UnmapEntire {
        m: u16,
        f: u8,
        s: u32,
    },
    Split {
        m: u16,
        first: u16,
        nr: u16,
    },
    /// `from` selects a space that has mappings.
    Fork {
        from: u8,
        to: u32,
    },
    /// With `excl`, an anon-exclusive page is chosen if there is one.
    Pin {
        f: u8,
        page: u16,
        excl: bool,
    },
    Unpin {
        f: u8,
    },
    /// `extra`: the references the caller declares: 0 → none, 1 → the ones it holds
    /// (own + pending), 2 → over-declared by the pins' references.
    Reuse {
        m: u16,
        sel: u16,
        extra: u8,
    },
    ReuseEntire {
        m: u16,
        extra: u8,
    },
    Clear {
        f: u8,
        first: u16,
        nr: u16,
    },
    Flush,
    Exit {
        s: u32,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let f = any::<u8>;
    let s = || 1..=SPACES;
    let w = || 0..WINDOWS;
    prop_oneof![
        3 => (0u8..3, any::<bool>()).prop_map(|(o, anon)| Op::Alloc { order: [0, 4, 9][o as usize], anon }),
        1 => f().prop_map(|f| Op::Get { f }),
        2 => f().prop_map(|f| Op::Put { f }),
        8 => (f(), s(), w(), any::<u16>(), 1u16..48, any::<bool>())
            .prop_map(|(f, s, w, first, nr, excl)| Op::MapPtes { f, s, w, first, nr, excl }),
        3 => (f(), s(), w(), any::<bool>()).prop_map(|(f, s, w, excl)| Op::MapEntire { f, s, w, excl }),
        5 => (any::<u16>(), f(), s(), any::<u16>(), 1u16..64)
            .prop_map(|(m, f, s, sel, nr)| Op::UnmapPtes { m, f, s, sel, nr }),
        2 => (any::<u16>(), f(), s()).prop_map(|(m, f, s)| Op::UnmapEntire { m, f, s }),
        3 => (any::<u16>(), any::<u16>(), any::<u16>()).prop_map(|(m, first, nr)| Op::Split { m, first, nr }),
        4 => (any::<u8>(), s()).prop_map(|(from, to)| Op::Fork { from, to }),
        3 => (f(), any::<u16>(), any::<bool>()).prop_map(|(f, page, excl)| Op::Pin { f, page, excl }),
        2 => f().prop_map(|f| Op::Unpin { f }),
        4 => (any::<u16>(), any::<u16>(), 0u8..3).prop_map(|(m, sel, extra)| Op::Reuse { m, sel, extra }),
        2 => (any::<u16>(), 0u8..3).prop_map(|(m, extra)| Op::ReuseEntire { m, extra }),
        1 => (f(), any::<u16>(), 1u16..40).prop_map(|(f, first, nr)| Op::Clear { f, first, nr }),
        2 => Just(Op::Flush),
        1 => s().prop_map(|s| Op::Exit { s }),
    ]
}

/// One folio in the model.
struct MF<'m> {
    h: Folio<'m>,
    /// References the test owns (allocation + gets).
    own: u32,
    pins: u32,
    /// References in unreleased `Unmapped`s.
    pending: u32,
    excl: Vec<bool>,
    /// Three or more spaces mapped it at once since it was last unmapped everywhere.
    overflow: bool,
    live: bool,
}

enum Map {
    Ptes(BTreeSet<usize>),
    Entire,
}

/// What the model derives about one folio from the mappings.
struct Counts {
    pte: Vec<u32>,
    entire: u32,
    per_space: BTreeMap<u32, u32>,
}

impl Counts {
    fn total(&self) -> u32 {
        self.pte.iter().sum::<u32>() + self.entire
    }
    fn page(&self, p: usize) -> u32 {
        self.pte[p] + self.entire
    }
    fn only_space(&self) -> Option<u32> {
        (self.per_space.len() == 1).then(|| *self.per_space.keys().next().unwrap())
    }
}

struct St<'m> {
    fr: Frames,
    fs: Vec<MF<'m>>,
    maps: BTreeMap<(u32, u32, usize), Map>,
    tokens: Vec<(usize, Unmapped<'m>)>,
}

/// Consecutive runs `(first, nr)` of a page set.
fn runs(set: &BTreeSet<usize>) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    for &p in set {
        match out.last_mut() {
            Some((first, nr)) if *first + *nr == p => *nr += 1,
            _ => out.push((p, 1)),
        }
    }
    out
}

fn va(w: u32, k: usize, p: usize) -> u64 {
    ((w as u64 * 64 + k as u64) << 21) + ((p as u64) << 12)
}

impl<'m> St<'m> {
    fn live(&self) -> Vec<usize> {
        (0..self.fs.len()).filter(|&k| self.fs[k].live).collect()
    }

    fn pick(&self, f: u8) -> Option<usize> {
        let live = self.live();
        (!live.is_empty()).then(|| live[f as usize % live.len()])
    }

    /// The `m`-th existing mapping that is entire (`entire`) or PTEs.
    fn pick_map(&self, m: u16, entire: bool) -> Option<(u32, u32, usize)> {
        let keys: Vec<_> = self
            .maps
            .iter()
            .filter(|(_, v)| matches!(v, Map::Entire) == entire)
            .map(|(k, _)| *k)
            .collect();
        (!keys.is_empty()).then(|| keys[m as usize % keys.len()])
    }

    fn counts(&self, k: usize) -> Counts {
        let mut c = Counts {
            pte: vec![0; self.fs[k].h.nr_pages()],
            entire: 0,
            per_space: BTreeMap::new(),
        };
        for (&(s, _, kk), m) in &self.maps {
            if kk != k {
                continue;
            }
            match m {
                Map::Entire => {
                    c.entire += 1;
                    *c.per_space.entry(s).or_default() += 1;
                }
                Map::Ptes(set) => {
                    for &p in set {
                        c.pte[p] += 1;
                    }
                    *c.per_space.entry(s).or_default() += set.len() as u32;
                }
            }
        }
        c
    }

    fn refcount(&self, k: usize) -> u32 {
        let f = &self.fs[k];
        f.own + f.pins + f.pending + self.counts(k).total()
    }

    fn alloc(&mut self, mem: &MemMap<'m>, order: FolioOrder, anon: bool) -> Option<usize> {
        let kind = if anon { FolioKind::Anon } else { FolioKind::File };
        match mem.alloc_folio(&mut self.fr, order, kind) {
            Ok(h) => {
                self.fs.push(MF {
                    h,
                    own: 1,
                    pins: 0,
                    pending: 0,
                    excl: vec![false; h.nr_pages()],
                    overflow: false,
                    live: true,
                });
                Some(self.fs.len() - 1)
            }
            Err(FolioError::OutOfMemory) => {
                assert!(self.fr.buddy.free_frames() < 1024 + order.pages(), "spurious OOM");
                None
            }
            Err(e) => panic!("alloc: {e:?}"),
        }
    }

    /// Releases a freed folio in the model if the real put said so, checking the prediction.
    fn after_put(&mut self, k: usize, freed: bool) {
        assert_eq!(freed, self.refcount(k) == 0, "freed at the wrong time");
        if freed {
            self.fs[k].live = false;
        }
    }

    fn push_token(&mut self, k: usize, u: Unmapped<'m>) {
        self.fs[k].pending += u.refs();
        self.tokens.push((k, u));
    }

    /// Removes PTE mappings of the run in `(s, w, k)` through the API and the model.
    fn unmap_run(&mut self, s: u32, w: u32, k: usize, first: usize, nr: usize) {
        let u = self.fs[k]
            .h
            .remove_ptes(sp(s), first, nr)
            .expect("unmap of mapped pages");
        let Some(Map::Ptes(set)) = self.maps.get_mut(&(s, w, k)) else {
            unreachable!()
        };
        for p in first..first + nr {
            assert!(set.remove(&p));
            self.fs[k].excl[p] = false;
        }
        if set.is_empty() {
            self.maps.remove(&(s, w, k));
        }
        self.push_token(k, u);
    }

    fn unmap_entire(&mut self, s: u32, w: u32, k: usize) {
        let u = self.fs[k]
            .h
            .remove_entire(sp(s))
            .expect("unmap of an entire mapping");
        self.maps.remove(&(s, w, k));
        self.fs[k].excl.iter_mut().for_each(|e| *e = false);
        self.push_token(k, u);
    }

    fn flush(&mut self) {
        for (k, u) in std::mem::take(&mut self.tokens) {
            self.fs[k].pending -= u.refs();
            let freed = u.release(&mut self.fr);
            self.after_put(k, freed);
        }
    }

    fn exit(&mut self, s: u32) {
        let keys: Vec<_> = self.maps.keys().copied().filter(|&(ss, _, _)| ss == s).collect();
        for (s, w, k) in keys {
            match &self.maps[&(s, w, k)] {
                Map::Entire => self.unmap_entire(s, w, k),
                Map::Ptes(set) => {
                    for (first, nr) in runs(set) {
                        self.unmap_run(s, w, k, first, nr);
                    }
                }
            }
        }
    }

    /// Fork's copy path for one refused anon page: a new order-0 folio, mapped exclusively
    /// in the child (the allocation reference then goes to the mapping).
    fn copy_page(&mut self, mem: &MemMap<'m>, to: u32, w: u32) {
        if self.live().len() >= MAX_LIVE_WITH_COPIES {
            return;
        }
        let Some(k) = self.alloc(mem, FolioOrder::SMALL, true) else {
            return;
        };
        let h = self.fs[k].h;
        h.add_anon_ptes(sp(to), 0, 1, true).unwrap();
        self.maps.insert((to, w, k), Map::Ptes([0].into()));
        self.fs[k].excl[0] = true;
        assert!(!h.put(&mut self.fr));
        self.fs[k].own = 0;
    }

    fn step(&mut self, mem: &MemMap<'m>, op: &Op) {
        match *op {
            Op::Alloc { order, anon } => {
                if self.live().len() < MAX_LIVE {
                    self.alloc(mem, FolioOrder::new(order as u32).unwrap(), anon);
                }
            }
            Op::Get { f } => {
                let Some(k) = self.pick(f) else { return };
                self.fs[k].h.get();
                self.fs[k].own += 1;
            }
            Op::Put { f } => {
                let Some(k) = self.pick(f) else { return };
                if self.fs[k].own == 0 {
                    return;
                }
                self.fs[k].own -= 1;
                let freed = self.fs[k].h.put(&mut self.fr);
                self.after_put(k, freed);
            }
            Op::MapPtes {
                f,
                s,
                w,
                first,
                nr,
                excl,
            } => {
                let Some(k) = self.pick(f) else { return };
                let h = self.fs[k].h;
                let n = h.nr_pages();
                let first = first as usize % n;
                let nr = (nr as usize).min(n - first);
                let range = first..first + nr;
                match self.maps.get(&(s, w, k)) {
                    Some(Map::Entire) => return,
                    Some(Map::Ptes(set)) if range.clone().any(|p| set.contains(&p)) => return,
                    _ => {}
                }
                let c = self.counts(k);
                let anon = h.is_anon();
                let expected = if !anon {
                    Ok(())
                } else if excl {
                    match range.clone().find(|&p| c.page(p) != 0) {
                        Some(page) => Err(FolioError::AlreadyMapped { page }),
                        None => Ok(()),
                    }
                } else {
                    match range.clone().find(|&p| self.fs[k].excl[p]) {
                        Some(page) => Err(FolioError::AnonExclusive { page }),
                        None => Ok(()),
                    }
                };
                let got = if anon {
                    h.add_anon_ptes(sp(s), first, nr, excl)
                } else {
                    h.add_file_ptes(sp(s), first, nr)
                };
                assert_eq!(got, expected);
                if got.is_ok() {
                    let e = self
                        .maps
                        .entry((s, w, k))
                        .or_insert_with(|| Map::Ptes(BTreeSet::new()));
                    let Map::Ptes(set) = e else { unreachable!() };
                    set.extend(range.clone());
                    if anon && excl {
                        range.for_each(|p| self.fs[k].excl[p] = true);
                    }
                }
            }
            Op::MapEntire { f, s, w, excl } => {
                let Some(k) = self.pick(f) else { return };
                let h = self.fs[k].h;
                let anon = h.is_anon();
                let call = || {
                    if anon {
                        h.add_anon_entire(sp(s), excl)
                    } else {
                        h.add_file_entire(sp(s))
                    }
                };
                if h.order() != FolioOrder::PMD {
                    assert_eq!(call(), Err(FolioError::NotPmdMappable));
                    return;
                }
                if self.maps.contains_key(&(s, w, k)) {
                    return;
                }
                let c = self.counts(k);
                let expected = if !anon {
                    Ok(())
                } else if excl {
                    match (0..512).find(|&p| c.page(p) != 0) {
                        Some(page) => Err(FolioError::AlreadyMapped { page }),
                        None => Ok(()),
                    }
                } else {
                    match (0..512).find(|&p| self.fs[k].excl[p]) {
                        Some(page) => Err(FolioError::AnonExclusive { page }),
                        None => Ok(()),
                    }
                };
                let got = call();
                assert_eq!(got, expected);
                if got.is_ok() {
                    self.maps.insert((s, w, k), Map::Entire);
                    if anon && excl {
                        self.fs[k].excl.iter_mut().for_each(|e| *e = true);
                    }
                }
            }
            Op::UnmapPtes { m, f, s, sel, nr } => match self.pick_map(m, false) {
                Some((s, w, k)) => {
                    let Some(Map::Ptes(set)) = self.maps.get(&(s, w, k)) else {
                        unreachable!()
                    };
                    let start = *set.iter().nth(sel as usize % set.len()).unwrap();
                    let mut len = 1;
                    while len < nr as usize && set.contains(&(start + len)) {
                        len += 1;
                    }
                    self.unmap_run(s, w, k, start, len);
                }
                None => {
                    let Some(k) = self.pick(f) else { return };
                    let p = sel as usize % self.fs[k].h.nr_pages();
                    if self.counts(k).pte[p] == 0 {
                        let got = self.fs[k].h.remove_ptes(sp(s), p, 1).map(|_| ());
                        assert_eq!(got, Err(FolioError::NotMapped { page: p }));
                    }
                }
            },
            Op::UnmapEntire { m, f, s } => match self.pick_map(m, true) {
                Some((s, w, k)) => self.unmap_entire(s, w, k),
                None => {
                    let Some(k) = self.pick(f) else { return };
                    let h = self.fs[k].h;
                    let want = if h.order() == FolioOrder::PMD {
                        FolioError::NoEntireMapping
                    } else {
                        FolioError::NotPmdMappable
                    };
                    assert_eq!(h.remove_entire(sp(s)).map(|_| ()), Err(want));
                    assert_eq!(h.split_entire(sp(s), 0, 1).map(|_| ()), Err(want));
                }
            },
            Op::Split { m, first, nr } => {
                let Some((s, w, k)) = self.pick_map(m, true) else {
                    return;
                };
                let first = first as usize % 512;
                let nr = 1 + nr as usize % (512 - first);
                let u = self.fs[k].h.split_entire(sp(s), first, nr).unwrap();
                self.maps
                    .insert((s, w, k), Map::Ptes((first..first + nr).collect()));
                for p in (0..512).filter(|p| !(first..first + nr).contains(p)) {
                    self.fs[k].excl[p] = false;
                }
                self.push_token(k, u);
            }
            Op::Fork { from, to } => {
                let spaces: BTreeSet<u32> = self.maps.keys().map(|&(s, _, _)| s).collect();
                let Some(&from) = spaces.iter().nth(from as usize % spaces.len().max(1)) else {
                    return;
                };
                if from == to {
                    return;
                }
                let keys: Vec<_> = self
                    .maps
                    .keys()
                    .copied()
                    .filter(|&(s, w, k)| s == from && !self.maps.contains_key(&(to, w, k)))
                    .collect();
                for (_, w, k) in keys {
                    let h = self.fs[k].h;
                    let anon = h.is_anon();
                    let pinned = self.fs[k].pins > 0;
                    let first_excl = |range: core::ops::Range<usize>, fs: &[MF<'_>]| {
                        range.clone().find(|&p| fs[k].excl[p])
                    };
                    match &self.maps[&(from, w, k)] {
                        Map::Entire => {
                            if !anon {
                                h.add_file_entire(sp(to)).unwrap();
                            } else {
                                let refused = first_excl(0..512, &self.fs).filter(|_| pinned);
                                let got = h.try_dup_anon_entire(sp(to));
                                if let Some(page) = refused {
                                    assert_eq!(got, Err(FolioError::MaybePinned { page }));
                                    continue; // a 2 MiB copy is not modelled: the child goes without
                                }
                                assert_eq!(got, Ok(()));
                                self.fs[k].excl.iter_mut().for_each(|e| *e = false);
                            }
                            self.maps.insert((to, w, k), Map::Entire);
                        }
                        Map::Ptes(set) => {
                            let mut child = BTreeSet::new();
                            let mut copies = 0;
                            for (first, nr) in runs(set) {
                                if !anon {
                                    h.add_file_ptes(sp(to), first, nr).unwrap();
                                    child.extend(first..first + nr);
                                    continue;
                                }
                                let refused = first_excl(first..first + nr, &self.fs).filter(|_| pinned);
                                let got = h.try_dup_anon_ptes(sp(to), first, nr);
                                if let Some(page) = refused {
                                    assert_eq!(got, Err(FolioError::MaybePinned { page }));
                                    copies += nr;
                                    continue;
                                }
                                assert_eq!(got, Ok(()));
                                (first..first + nr).for_each(|p| self.fs[k].excl[p] = false);
                                child.extend(first..first + nr);
                            }
                            if !child.is_empty() {
                                self.maps.insert((to, w, k), Map::Ptes(child));
                            }
                            for _ in 0..copies.min(4) {
                                self.copy_page(mem, to, w);
                            }
                        }
                    }
                }
            }
            Op::Pin { f, page, excl } => {
                let Some(k) = self.pick(f) else { return };
                let h = self.fs[k].h;
                let excl_pages: Vec<usize> = (0..h.nr_pages()).filter(|&p| self.fs[k].excl[p]).collect();
                let p = if excl && !excl_pages.is_empty() {
                    excl_pages[page as usize % excl_pages.len()]
                } else {
                    page as usize % h.nr_pages()
                };
                let expected = if h.is_anon() && !self.fs[k].excl[p] {
                    Err(FolioError::NotExclusive { page: p })
                } else {
                    Ok(())
                };
                assert_eq!(h.pin(p), expected);
                if expected.is_ok() {
                    self.fs[k].pins += 1;
                }
            }
            Op::Unpin { f } => {
                let Some(k) = self.pick(f) else { return };
                let h = self.fs[k].h;
                if self.fs[k].pins == 0 {
                    assert_eq!(h.unpin(&mut self.fr), Err(FolioError::NotPinned));
                    return;
                }
                self.fs[k].pins -= 1;
                let freed = h.unpin(&mut self.fr).unwrap();
                self.after_put(k, freed);
            }
            Op::Reuse { m, sel, extra } => {
                let Some((s, w, k)) = self.pick_map(m, false) else {
                    return;
                };
                let Some(Map::Ptes(set)) = self.maps.get(&(s, w, k)) else {
                    unreachable!()
                };
                let page = *set.iter().nth(sel as usize % set.len()).unwrap();
                let mf = &self.fs[k];
                let extra_refs = match extra {
                    0 => 0,
                    1 => mf.own + mf.pending,
                    _ => mf.own + mf.pending + mf.pins,
                };
                let c = self.counts(k);
                let exact = mf.h.is_anon()
                    && c.page(page) == 1
                    && (mf.excl[page]
                        || (c.only_space() == Some(s)
                            && mf.pins == 0
                            && self.refcount(k) == c.total() + extra_refs));
                let got = mf.h.try_reuse_anon(sp(s), page, extra_refs);
                self.compare_reuse(k, got, exact);
                if got {
                    self.fs[k].excl[page] = true;
                }
            }
            Op::ReuseEntire { m, extra } => {
                let Some((s, _, k)) = self.pick_map(m, true) else {
                    return;
                };
                let mf = &self.fs[k];
                let extra_refs = match extra {
                    0 => 0,
                    1 => mf.own + mf.pending,
                    _ => mf.own + mf.pending + mf.pins,
                };
                let c = self.counts(k);
                let exact = mf.h.is_anon()
                    && c.entire == 1
                    && c.total() == 1
                    && (mf.excl.iter().all(|&e| e)
                        || (c.only_space() == Some(s) && mf.pins == 0 && self.refcount(k) == 1 + extra_refs));
                let got = mf.h.try_reuse_anon_entire(sp(s), extra_refs);
                self.compare_reuse(k, got, exact);
                if got {
                    self.fs[k].excl.iter_mut().for_each(|e| *e = true);
                }
            }
            Op::Clear { f, first, nr } => {
                let Some(k) = self.pick(f) else { return };
                let h = self.fs[k].h;
                let n = h.nr_pages();
                let first = first as usize % n;
                let nr = (nr as usize).min(n - first);
                let range = first..first + nr;
                let expected = if !h.is_anon() {
                    Err(FolioError::NotAnon)
                } else {
                    match range
                        .clone()
                        .find(|&p| self.fs[k].excl[p])
                        .filter(|_| self.fs[k].pins > 0)
                    {
                        Some(page) => Err(FolioError::MaybePinned { page }),
                        None => Ok(()),
                    }
                };
                assert_eq!(h.try_clear_anon_exclusive(first, nr), expected);
                if expected.is_ok() {
                    range.for_each(|p| self.fs[k].excl[p] = false);
                }
            }
            Op::Flush => self.flush(),
            Op::Exit { s } => self.exit(s),
        }
    }

    /// A reuse answer must be sound always, and exact when the space tracking is.
    fn compare_reuse(&self, k: usize, got: bool, exact: bool) {
        if self.fs[k].overflow {
            assert!(!got || exact, "reuse allowed where it must not be");
        } else {
            assert_eq!(got, exact, "reuse decision");
        }
    }

    fn leaves(&self) -> Vec<MappedLeaf> {
        let mut out = Vec::new();
        for (&(s, w, k), m) in &self.maps {
            let h = &self.fs[k].h;
            let mut push = |p: usize, level: Level| {
                out.push(MappedLeaf {
                    space: sp(s),
                    va: VirtAddr(va(w, k, p)),
                    pa: h.page_pa(p),
                    size: level.entry_size(),
                    level,
                })
            };
            match m {
                Map::Entire => push(0, Level::L2),
                Map::Ptes(set) => set.iter().for_each(|&p| push(p, Level::L3)),
            }
        }
        out
    }

    fn verify(&mut self, mem: &MemMap<'m>) {
        check(mem, self.leaves()).unwrap_or_else(|e| panic!("checker: {e}"));
        let live: BTreeSet<u64> = self.live().iter().map(|&k| self.fs[k].h.pa().0).collect();
        assert_eq!(
            self.fr.out.keys().copied().collect::<BTreeSet<_>>(),
            live,
            "frames out"
        );
        for k in self.live() {
            let c = self.counts(k);
            let refs = self.refcount(k);
            let f = &mut self.fs[k];
            if c.total() == 0 {
                f.overflow = false;
            }
            if c.per_space.len() >= 3 {
                f.overflow = true;
            }
            let h = f.h;
            assert_eq!(h.refcount(), refs, "refcount of {h:?}");
            assert_eq!(h.pincount(), f.pins);
            assert_eq!(h.mapcount(), c.total());
            assert_eq!(h.entire_mapcount(), c.entire);
            for p in 0..h.nr_pages() {
                assert_eq!(h.pte_mapcount(p), c.pte[p], "page {p} of {h:?}");
                assert_eq!(h.is_anon_exclusive(p), f.excl[p], "exclusive {p} of {h:?}");
            }
            let shared = c.per_space.len() >= 2;
            if shared {
                assert!(
                    h.maybe_mapped_shared(),
                    "unsound: {h:?} mapped by {:?}",
                    c.per_space
                );
            }
            if !f.overflow {
                assert_eq!(
                    h.maybe_mapped_shared(),
                    shared,
                    "imprecise: {h:?} {:?}",
                    c.per_space
                );
            }
            for s in 1..=SPACES {
                let only = c.only_space() == Some(s);
                let got = h.mapped_exclusively_by(sp(s));
                assert!(!got || only, "unsound exclusivity for space {s}");
                if !f.overflow {
                    assert_eq!(got, only);
                }
            }
        }
    }

    /// Unmaps and releases everything; every frame must come back.
    fn teardown(mut self, mem: &MemMap<'m>) {
        self.flush();
        for s in 1..=SPACES {
            self.exit(s);
        }
        self.flush();
        self.verify(mem);
        for k in self.live() {
            while self.fs[k].pins > 0 {
                self.fs[k].pins -= 1;
                let freed = self.fs[k].h.unpin(&mut self.fr).unwrap();
                self.after_put(k, freed);
            }
            while self.fs[k].own > 0 {
                self.fs[k].own -= 1;
                let freed = self.fs[k].h.put(&mut self.fr);
                self.after_put(k, freed);
            }
        }
        assert!(self.live().is_empty());
        let sum = check(mem, []).unwrap();
        assert_eq!((sum.folios, sum.free_frames), (0, FRAMES));
        self.fr.assert_all_back();
    }
}

fn run(ops: &[Op]) {
    let mut st = storage(FRAMES);
    let mem = memmap(&mut st);
    let mut s = St {
        fr: Frames::new(),
        fs: Vec::new(),
        maps: BTreeMap::new(),
        tokens: Vec::new(),
    };
    for op in ops {
        s.step(&mem, op);
        s.verify(&mem);
    }
    s.teardown(&mem);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 160, ..ProptestConfig::default() })]

    /// Random sequences against the reference model.
    #[test]
    fn random_sequences_match_the_model(ops in proptest::collection::vec(op(), 1..70)) {
        run(&ops);
    }
}

/// A fixed sequence that exercises the interesting paths deterministically: a fork that
/// dups an entire mapping and refuses a pinned exclusive run (copying instead), a PMD split
/// in the child, a folio mapped by three spaces of which only the untracked one stays
/// (conservatively "maybe shared"), and the teardown.
#[test]
fn scripted_sequence_matches_the_model() {
    use Op::*;
    run(&[
        Alloc { order: 9, anon: true },
        Alloc { order: 4, anon: true },
        Alloc {
            order: 0,
            anon: false,
        },
        Alloc {
            order: 9,
            anon: false,
        },
        MapEntire {
            f: 0,
            s: 1,
            w: 0,
            excl: true,
        },
        MapPtes {
            f: 1,
            s: 1,
            w: 0,
            first: 0,
            nr: 16,
            excl: true,
        },
        MapPtes {
            f: 2,
            s: 1,
            w: 0,
            first: 0,
            nr: 1,
            excl: false,
        },
        MapPtes {
            f: 2,
            s: 1,
            w: 1,
            first: 0,
            nr: 1,
            excl: false,
        },
        MapEntire {
            f: 3,
            s: 2,
            w: 0,
            excl: false,
        },
        MapEntire {
            f: 3,
            s: 3,
            w: 0,
            excl: false,
        },
        MapPtes {
            f: 3,
            s: 4,
            w: 0,
            first: 10,
            nr: 20,
            excl: false,
        },
        Pin {
            f: 1,
            page: 3,
            excl: true,
        },
        // Space 1 into space 2: folio 0's block is dup'ed, folio 1's run is refused.
        Fork { from: 0, to: 2 },
        // Entire mappings now: (1,0,0), (2,0,0), (2,0,3), (3,0,3).
        ReuseEntire { m: 0, extra: 1 },
        Split {
            m: 1,
            first: 100,
            nr: 300,
        },
        UnmapEntire { m: 0, f: 0, s: 1 },
        Reuse {
            m: 0,
            sel: 3,
            extra: 1,
        },
        Reuse {
            m: 3,
            sel: 5,
            extra: 1,
        },
        Flush,
        Exit { s: 2 },
        Exit { s: 3 },
        Unpin { f: 1 },
        Put { f: 1 },
        Clear {
            f: 1,
            first: 0,
            nr: 16,
        },
        Flush,
        Put { f: 0 },
        Flush,
    ]);
}
