//! The thin layer between address spaces and the translation-table engine: every page-table
//! call of `mm::space` goes through here, so that a change of the engine's PTE-level API is a
//! local change.
//!
//! User address spaces only ever hold level-3 (4 KiB page) leaves, possibly folded into
//! 64 KiB CONTPTE blocks; never level-1/2 blocks. Hence no engine operation on them ever has
//! to split a block, and the clears, unmaps and write-protections below cannot fail; the only
//! fallible step is allocating missing tables ([`ensure_table`]), which the callers do first.

use alloc::vec::Vec;

use crate::folio::{Folio, FolioOrder, MemMap};
use crate::{
    AccessUpdate, Attrs, Descriptor, DescriptorKind, Entry, Leaf, Level, MemType, Platform, Prot, PteTable,
    Root, VirtAddr, CONT_PTES, CONT_SIZE, ENTRIES, PAGE_SIZE,
};

/// Bytes mapped by one level-3 table.
pub(super) const TABLE_SPAN: u64 = crate::PTE_TABLE_SPAN;

/// First address of the level-3 table span containing `va`.
pub(super) fn span_of(va: u64) -> u64 {
    va & !(TABLE_SPAN - 1)
}

/// The descriptor for a page at `pa` with `attrs`, young, with the given dirty state.
pub(super) fn page_desc(attrs: Attrs, pa: u64, dirty: bool) -> Descriptor {
    attrs.leaf(Level::L3, crate::PhysAddr(pa)).with_dirty(dirty)
}

/// The attributes of a user page with permissions `prot` (from `VmProt::pte_prot`), or the
/// inaccessible form used for `PROT_NONE` pages when `None` (see docs/mm.md,
/// "PROT_NONE").
pub(super) fn user_attrs(prot: Option<Prot>) -> Attrs {
    match prot {
        Some(p) => Attrs::new(p, MemType::Normal, false),
        None => Attrs::new(Prot::READ, MemType::Normal, false),
    }
}

/// The leaf mapping `va`, with A/D gathered over its folded block.
pub(super) fn get<P: Platform + ?Sized>(root: &Root, p: &P, va: u64) -> Option<Descriptor> {
    root.pte_get(p, VirtAddr(va)).filter(|d| d.is_valid())
}

/// The level-3 slot of `va`, if its table exists (one walk).
pub(super) fn slot<P: Platform + ?Sized>(root: &Root, p: &P, va: u64) -> Option<Entry> {
    root.pte_entry(p, VirtAddr(va)).ok().flatten()
}

/// [`get`] of the level-3 `slot` (from [`slot`]), without a walk.
pub(super) fn get_at<P: Platform + ?Sized>(root: &Root, p: &P, slot: Entry) -> Option<Descriptor> {
    root.pte_get_at(p, slot).filter(|d| d.is_valid())
}

/// The level-3 slot of `va`, allocating the missing tables (all or nothing).
pub(super) fn alloc_slot<P: Platform + ?Sized>(root: &mut Root, p: &mut P, va: u64) -> Result<Entry, ()> {
    root.alloc_pte_entry(p, VirtAddr(va)).map_err(|_| ())
}

/// The slot of the first page of the 64 KiB block holding `slot`.
pub(super) fn block_slot(slot: Entry) -> Entry {
    slot.table().entry(slot.index() & !(CONT_PTES - 1))
}

/// Whether the 16 entries from the block-aligned `slot` on are all invalid (no walk).
pub(super) fn block_empty_at<P: Platform + ?Sized>(p: &P, slot: Entry) -> bool {
    let (t, first) = (slot.table().pa(), slot.index());
    (first..first + CONT_PTES).fold(0, |acc, i| acc | p.read(t, i).0) & 1 == 0
}

/// Whether the 64 KiB block from the block-aligned level-3 `slot` on maps the 64 KiB folio
/// at `folio_pa` page for page (no walk).
pub(super) fn block_maps_at<P: Platform + ?Sized>(p: &P, slot: Entry, folio_pa: u64) -> bool {
    let (t, first) = (slot.table().pa(), slot.index());
    (0..CONT_PTES).all(|i| {
        let d = p.read(t, first + i);
        d.is_valid() && d.address().0 == folio_pa + i as u64 * PAGE_SIZE
    })
}

/// [`set`] from the level-3 `slot` on (from [`slot`] or [`alloc_slot`], no table freed
/// since), without a walk.
pub(super) fn set_at<P: Platform + ?Sized>(
    root: &mut Root,
    p: &mut P,
    slot: Entry,
    pte: Descriptor,
    nr: usize,
    fold: bool,
) {
    root.set_ptes_at(p, slot, pte, nr, fold)
        .expect("set_ptes_at into an existing table cannot fail");
}

/// Makes sure the level-3 table for `va` exists (allocating the missing tables, all or
/// nothing). After this, mapping pages of that table cannot fail.
pub(super) fn ensure_table<P: Platform + ?Sized>(root: &mut Root, p: &mut P, va: u64) -> Result<(), ()> {
    root.alloc_pte_entry(p, VirtAddr(va)).map(|_| ()).map_err(|_| ())
}

/// Maps `nr` pages from `va` (inside one level-3 table that exists) after the template `pte`;
/// `fold` when the physical 64 KiB blocks touched lie in one folio.
pub(super) fn set<P: Platform + ?Sized>(
    root: &mut Root,
    p: &mut P,
    va: u64,
    pte: Descriptor,
    nr: usize,
    fold: bool,
) {
    // The table exists (the common case): its slot is found without the range walker.
    if let Some(s) = slot(root, p, va) {
        return set_at(root, p, s, pte, nr, fold);
    }
    root.set_ptes(p, VirtAddr(va), pte, nr, fold)
        .expect("set_ptes into an existing table cannot fail");
}

/// Whether a folio of `order` may be mapped with `fold_ok` (each 64 KiB physical block it
/// touches is inside the folio).
pub(super) fn foldable(order: FolioOrder) -> bool {
    order >= FolioOrder::CONT
}

/// Clears `nr` pages from `va` (holes fine, tables kept); the invalidation has completed on
/// return. Returns the first old descriptor with A/D gathered over all, if any was mapped.
pub(super) fn clear<P: Platform + ?Sized>(
    root: &mut Root,
    p: &mut P,
    va: u64,
    nr: usize,
) -> Option<Descriptor> {
    root.get_and_clear_ptes(p, VirtAddr(va), nr)
        .expect("clearing pages never splits")
}

/// [`clear`] of the 64 KiB block holding the level-3 `slot` (from [`slot`], no table freed
/// since), without a walk: one break of the whole block, one invalidation batch.
pub(super) fn clear_block_at<P: Platform + ?Sized>(
    root: &mut Root,
    p: &mut P,
    slot: Entry,
) -> Option<Descriptor> {
    root.get_and_clear_block_at(p, slot)
}

/// Write-protects `nr` pages from `va`, keeping whole folded blocks folded; one invalidation.
pub(super) fn wrprotect<P: Platform + ?Sized>(root: &mut Root, p: &mut P, va: u64, nr: usize) {
    root.wrprotect_ptes(p, VirtAddr(va), nr)
        .expect("write-protecting pages never splits");
}

/// Applies `upd` to the entry of `va`. Returns whether anything changed.
pub(super) fn update<P: Platform + ?Sized>(root: &mut Root, p: &mut P, va: u64, upd: AccessUpdate) -> bool {
    root.set_access_flags(p, VirtAddr(va), upd)
        .expect("the entry is mapped and the attributes are valid")
}

/// Applies `upd` to the 16 entries of the 64 KiB block at `block`, in place, keeping (or,
/// with `fold`, making) it folded. Returns whether anything changed.
pub(super) fn update_block<P: Platform + ?Sized>(
    root: &mut Root,
    p: &mut P,
    block: u64,
    upd: AccessUpdate,
    fold: bool,
) -> bool {
    root.set_access_flags_block(p, VirtAddr(block), upd, fold)
        .expect("the block is mapped and the attributes are valid")
}

/// Unmaps `[va, va + len)` in one pass with one invalidation, freeing emptied tables; `f`
/// sees every removed leaf as it is cleared, before the invalidation: the references it
/// collects must be released only after this returns.
pub(super) fn zap<P: Platform + ?Sized>(root: &mut Root, p: &mut P, va: u64, len: u64, f: impl FnMut(&Leaf)) {
    root.zap_ptes(p, VirtAddr(va), len, f)
        .expect("user spaces map pages only");
}

/// Calls `f(va, raw descriptor)` for every valid level-3 leaf in `[start, end)`, in address
/// order, reading the level-3 tables directly (one walk per table).
pub(super) fn scan<P: Platform + ?Sized>(
    root: &Root,
    p: &P,
    start: u64,
    end: u64,
    mut f: impl FnMut(u64, Descriptor),
) {
    let mut va = start;
    while va < end {
        let chunk_end = (span_of(va) + TABLE_SPAN).min(end);
        if let Ok(Some(e)) = root.pte_entry(p, VirtAddr(va)) {
            let table = e.table();
            let first = Level::L3.index_of(va);
            let n = ((chunk_end - va) / PAGE_SIZE) as usize;
            for i in first..first + n {
                let d = table.entry(i).read(p);
                if d.is_valid() {
                    f(va + (i - first) as u64 * PAGE_SIZE, d);
                }
            }
        }
        va = chunk_end;
    }
}

/// The 16 raw entries of the 64 KiB block at `block` (all invalid if its table is missing).
pub(super) fn block_entries<P: Platform + ?Sized>(root: &Root, p: &P, block: u64) -> [Descriptor; CONT_PTES] {
    let mut out = [Descriptor::INVALID; CONT_PTES];
    if let Ok(Some(e)) = root.pte_entry(p, VirtAddr(block)) {
        let first = e.index();
        for (i, d) in out.iter_mut().enumerate() {
            *d = e.table().entry(first + i).read(p);
        }
    }
    out
}

/// Whether nothing is mapped in the 64 KiB block at `block`.
pub(super) fn block_empty<P: Platform + ?Sized>(root: &Root, p: &P, block: u64) -> bool {
    block_entries(root, p, block).iter().all(|d| !d.is_valid())
}

/// A batch of entries mapping consecutive pages of one folio (Linux's `folio_pte_batch`):
/// consecutive VAs inside one level-3 table, consecutive PAs, one folio, equal attributes
/// (ignoring AF, the dirty state and the write permission) and equal caller key.
pub(super) struct Run<'m> {
    /// First VA.
    pub va: u64,
    /// PA of the first page.
    pub pa: u64,
    /// Number of pages.
    pub nr: usize,
    /// The folio.
    pub folio: Folio<'m>,
    /// Index of the first page in the folio.
    pub first: usize,
    /// Descriptor of the first page with AF and dirty ORed over the run.
    pub desc: Descriptor,
    /// Whether any entry of the run is writable.
    pub writable: bool,
    /// The caller's key (equal over the run).
    pub key: bool,
}

impl Run<'_> {
    /// One past the last VA.
    pub fn end(&self) -> u64 {
        self.va + self.nr as u64 * PAGE_SIZE
    }
}

/// The runs of `[start, end)`. `key(folio, page index, descriptor)` splits runs further.
///
/// # Panics
/// If a leaf maps memory without a folio: user address spaces map folios only.
pub(super) fn runs<'m, P: Platform + ?Sized>(
    root: &Root,
    p: &P,
    mem: &MemMap<'m>,
    start: u64,
    end: u64,
    key: impl FnMut(Folio<'m>, usize, Descriptor) -> bool,
) -> Vec<Run<'m>> {
    let mut b = RunBuilder::new(mem, key);
    scan(root, p, start, end, |va, d| b.push(va, d));
    b.out
}

/// [`runs`] of `[start, end)` inside the span of the level-3 table `t`, reading it directly
/// (no walk); a folded block inside the range is taken as one unit.
pub(super) fn table_runs<'m, P: Platform + ?Sized>(
    p: &P,
    mem: &MemMap<'m>,
    t: PteTable,
    start: u64,
    end: u64,
    key: impl FnMut(Folio<'m>, usize, Descriptor) -> bool,
) -> Vec<Run<'m>> {
    let mut b = RunBuilder::new(mem, key);
    // At most one run per page: no growth on the way.
    b.out.reserve(((end - start) / PAGE_SIZE) as usize);
    let base = t.va.as_u64();
    debug_assert!(base <= start && start < end && end <= base + TABLE_SPAN);
    let (first, last) = (Level::L3.index_of(start), Level::L3.index_of(end - PAGE_SIZE));
    let mut i = first;
    while i <= last {
        let d = p.read(t.pa, i);
        let va = base + i as u64 * PAGE_SIZE;
        if d.contiguous() && i.is_multiple_of(CONT_PTES) && i + CONT_PTES - 1 <= last {
            // A folded block inside the range: 16 pages of one folio with equal attributes.
            let (_, g) = crate::pt::read_block(&crate::pt::Reader(p), t.pa, i);
            b.push_block(va, g);
            i += CONT_PTES;
            continue;
        }
        if d.is_valid() {
            b.push(va, d);
        }
        i += 1;
    }
    b.out
}

/// Cuts the valid entries it is given, in address order, into [`Run`]s.
struct RunBuilder<'a, 'm, K> {
    mem: &'a MemMap<'m>,
    key: K,
    out: Vec<Run<'m>>,
    /// The comparison key of the last run's attributes.
    last_cmp: u64,
}

impl<'a, 'm, K: FnMut(Folio<'m>, usize, Descriptor) -> bool> RunBuilder<'a, 'm, K> {
    fn new(mem: &'a MemMap<'m>, key: K) -> Self {
        RunBuilder {
            mem,
            key,
            out: Vec::new(),
            last_cmp: 0,
        }
    }

    /// The 16 pages of the folded block at `va`, whose state gathered over the block is `g`
    /// (the address of its first page): the key sees `g` for every page.
    fn push_block(&mut self, va: u64, g: Descriptor) {
        self.push(va, g);
        for k in 1..CONT_PTES {
            let r = self.out.last_mut().expect("pushed");
            let idx = r.first + r.nr;
            if (self.key)(r.folio, idx, g) == r.key {
                r.nr += 1;
            } else {
                let off = k as u64 * PAGE_SIZE;
                self.push(va + off, g.with_address(crate::PhysAddr(g.address().0 + off)));
            }
        }
    }

    fn push(&mut self, va: u64, d: Descriptor) {
        let cmp = d.with_writable(false).fold_key();
        let pa = d.address().0;
        if let Some(r) = self.out.last_mut() {
            let same_folio = pa >= r.folio.pa().0 && pa < r.folio.pa().0 + r.folio.size();
            let continues = va == r.end()
                && !va.is_multiple_of(TABLE_SPAN)
                && pa == r.pa + r.nr as u64 * PAGE_SIZE
                && same_folio
                && cmp == self.last_cmp;
            if continues {
                let idx = r.first + r.nr;
                if (self.key)(r.folio, idx, d) == r.key {
                    r.nr += 1;
                    r.desc = r.desc.gather_young_dirty(d);
                    r.writable |= d.writable();
                    return;
                }
            }
        }
        let (folio, idx) = self
            .mem
            .folio_page(d.address())
            .expect("a user page maps an allocated folio");
        let k = (self.key)(folio, idx, d);
        self.last_cmp = cmp;
        self.out.push(Run {
            va,
            pa,
            nr: 1,
            folio,
            first: idx,
            desc: d,
            writable: d.writable(),
            key: k,
        });
    }
}

/// Whether `va` is the first page of a 64 KiB block.
pub(super) fn block_of(va: u64) -> u64 {
    va & !(CONT_SIZE - 1)
}

/// Every leaf of the tree in address order, reading each table once (the engine's
/// [`Root::leaves`] walks from the root for every leaf). For checks and statistics.
pub(super) fn leaves<P: Platform + ?Sized>(root: &Root, p: &P) -> Vec<Leaf> {
    fn visit<P: Platform + ?Sized>(p: &P, table: crate::Table, out: &mut Vec<Leaf>) {
        let level = table.level();
        for i in 0..ENTRIES {
            let e = table.entry(i);
            let d = e.read(p);
            match d.kind(level) {
                DescriptorKind::Invalid => {}
                DescriptorKind::Table { next } => visit(p, e.child(next), out),
                _ => out.push(Leaf {
                    va: e.va(),
                    pa: d.output_address(level),
                    size: e.size(),
                    level,
                    attrs: Attrs::from_descriptor(d),
                    desc: d,
                }),
            }
        }
    }
    let mut out = Vec::new();
    visit(p, root.table(), &mut out);
    out
}

/// The leaves in `[start, end)` (through [`scan`]: one walk per level-3 table).
#[cfg(test)]
pub(super) fn leaves_in<P: Platform + ?Sized>(root: &Root, p: &P, start: u64, end: u64) -> Vec<Leaf> {
    let mut out = Vec::new();
    scan(root, p, start, end, |va, d| {
        out.push(Leaf {
            va: VirtAddr(va),
            pa: d.address(),
            size: PAGE_SIZE,
            level: Level::L3,
            attrs: Attrs::from_descriptor(d),
            desc: d,
        })
    });
    out
}
