//! The model's table walker, TLB, walk cache and TLBI semantics.

use super::{Hier, Model, ModelRoot, Tag, TlbLeaf, WalkEntry, Writer};
use crate::{
    bits, Access, AccessPerm, Descriptor, DescriptorKind, El, FaultKind, Level, PhysAddr, Platform, TlbOp,
    VirtAddr, KERNEL_BASE,
};

/// Entries in a contiguous group (4 KiB granule, every level).
pub(crate) const CONT_ENTRIES: u64 = 16;

/// A fault, with the level of the descriptor that caused it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    /// Class.
    pub kind: FaultKind,
    /// Level.
    pub level: Level,
}

/// Effective permissions of a translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Perms {
    /// EL1 read.
    pub el1_r: bool,
    /// EL1 write.
    pub el1_w: bool,
    /// EL1 execute.
    pub el1_x: bool,
    /// EL0 read.
    pub el0_r: bool,
    /// EL0 write.
    pub el0_w: bool,
    /// EL0 execute.
    pub el0_x: bool,
}

impl Perms {
    /// The effective permissions of leaf `d` under hierarchical limits `h`.
    pub fn of(d: Descriptor, h: Hier) -> Perms {
        let ap = d.ap();
        let el0_r = ap.el0_access() && !h.no_el0;
        let el1_w = ap.writable() && !h.no_write;
        let el0_w = el0_r && el1_w && ap == AccessPerm::El1RwEl0Rw;
        Perms {
            el1_r: true,
            el1_w,
            // EL0-writable memory is never executable at EL1.
            el1_x: !d.pxn() && !h.pxn && !el0_w,
            el0_r,
            el0_w,
            el0_x: !d.uxn() && !h.uxn,
        }
    }

    /// Whether the access is allowed.
    pub fn allows(self, el: El, kind: Access) -> bool {
        match (el, kind) {
            (El::El1, Access::Read) => self.el1_r,
            (El::El1, Access::Write) => self.el1_w,
            (El::El1, Access::Exec) => self.el1_x,
            (El::El0, Access::Read) => self.el0_r,
            (El::El0, Access::Write) => self.el0_w,
            (El::El0, Access::Exec) => self.el0_x,
        }
    }

    /// Everything either allows.
    pub fn union(self, o: Perms) -> Perms {
        Perms {
            el1_r: self.el1_r || o.el1_r,
            el1_w: self.el1_w || o.el1_w,
            el1_x: self.el1_x || o.el1_x,
            el0_r: self.el0_r || o.el0_r,
            el0_w: self.el0_w || o.el0_w,
            el0_x: self.el0_x || o.el0_x,
        }
    }

    /// Whether everything `self` allows, `other` allows too.
    pub fn within(self, other: Perms) -> bool {
        let le = |a: bool, b: bool| !a || b;
        le(self.el1_r, other.el1_r)
            && le(self.el1_w, other.el1_w)
            && le(self.el1_x, other.el1_x)
            && le(self.el0_r, other.el0_r)
            && le(self.el0_w, other.el0_w)
            && le(self.el0_x, other.el0_x)
    }
}

/// The result of a successful walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalkResult {
    /// The leaf.
    pub desc: Descriptor,
    /// Its level.
    pub level: Level,
    /// Limits from the table descriptors above it.
    pub hier: Hier,
}

impl WalkResult {
    /// The translated physical address of `va`.
    pub fn pa(&self, va: u64) -> PhysAddr {
        let size = self.level.entry_size();
        PhysAddr(self.desc.output_address(self.level).0 + (va & (size - 1)))
    }
}

/// What a TLBI may hit: a leaf entry or a walk-cache entry (or a broken entry that was one).
pub(crate) struct Target {
    pub tag: Tag,
    pub va: u64,
    pub size: u64,
    /// Leaf: level of the leaf. Walk entry: level of the table the descriptor was read from.
    pub level: Level,
    pub is_leaf: bool,
}

/// Whether `op` (once complete) invalidates every cached copy of `t`.
pub(crate) fn op_hits(op: &TlbOp, t: &Target) -> bool {
    let last = t.va.wrapping_add(t.size - 1);
    let in_range = |va: VirtAddr| va.0 >= t.va && va.0 <= last;
    let level_ok = |leaf_only: bool, hint: Option<Level>| {
        if t.is_leaf {
            hint.is_none_or(|h| h == t.level)
        } else {
            // Walk-cache entries: only the non-last-level forms, and (strictly) only without a
            // TTL hint — a hint names the level of a leaf, and a wrong one may invalidate
            // nothing.
            !leaf_only && hint.is_none()
        }
    };
    let tag_ok = |asid: Option<crate::Asid>| match (t.tag, asid) {
        (_, None) | (Tag::Global, _) => true,
        (Tag::Asid(a), Some(b)) => a == b.0,
    };
    match *op {
        TlbOp::All => true,
        TlbOp::Asid(a) => t.tag == Tag::Asid(a.0),
        TlbOp::Va {
            va,
            asid,
            leaf_only,
            level,
        } => in_range(va) && tag_ok(Some(asid)) && level_ok(leaf_only, level),
        TlbOp::VaAllAsids { va, leaf_only, level } => in_range(va) && level_ok(leaf_only, level),
        TlbOp::Range(r) => {
            let r_last = r.base.0.wrapping_add(r.len() - 1);
            r.base.0 <= last && r_last >= t.va && tag_ok(r.asid) && level_ok(r.leaf_only, r.level)
        }
    }
}

fn tag_matches(tag: Tag, asid: u16) -> bool {
    match tag {
        Tag::Global => true,
        Tag::Asid(a) => a == asid,
    }
}

impl Model {
    /// Walks the tables from `root` for `va`, ignoring every cache.
    pub fn table_walk(&self, root: PhysAddr, va: VirtAddr) -> Result<WalkResult, super::Fault> {
        self.walk_from(root.0, Level::L0, Hier::default(), va.0, None, true)
    }

    /// [`Self::table_walk`] that returns a leaf whatever its AF (for coherence checks: a
    /// cached entry stays usable when software clears AF).
    pub(crate) fn table_walk_any_af(&self, root: PhysAddr, va: u64) -> Result<WalkResult, Fault> {
        self.walk_from(root.0, Level::L0, Hier::default(), va, None, false)
    }

    /// The walk proper; with `fill` it collects the table descriptors it used (walk cache);
    /// with `check_af` a leaf with AF clear is an Access flag fault.
    fn walk_from(
        &self,
        mut table: u64,
        mut level: Level,
        mut hier: Hier,
        va: u64,
        mut fill: Option<&mut Vec<WalkEntry>>,
        check_af: bool,
    ) -> Result<WalkResult, Fault> {
        loop {
            let Some(frame) = self.frame(table) else {
                panic!(
                    "MMU walk for VA {va:#x} read {level} table {table:#x}, which is not an allocated \
                     table frame (freed too early?)"
                );
            };
            let d = Descriptor(frame[level.index_of(va)]);
            match d.kind(level) {
                DescriptorKind::Invalid => {
                    return Err(Fault {
                        kind: FaultKind::Translation,
                        level,
                    })
                }
                DescriptorKind::Table { next } => {
                    hier = hier.with(d);
                    if let Some(f) = fill.as_deref_mut() {
                        f.push(WalkEntry {
                            root: 0,
                            tag: Tag::Global,
                            va: va & !(level.entry_size() - 1),
                            level,
                            desc: d,
                            hier,
                        });
                    }
                    table = next.0;
                    level = level.next().expect("table descriptor above level 3");
                }
                _ => {
                    if check_af && !d.af() {
                        return Err(Fault {
                            kind: FaultKind::AccessFlag,
                            level,
                        });
                    }
                    return Ok(WalkResult { desc: d, level, hier });
                }
            }
        }
    }

    fn tlb_lookup(&self, asid: u16, va: u64) -> Option<&TlbLeaf> {
        for level in [Level::L3, Level::L2, Level::L1] {
            for span in [level.entry_size(), CONT_ENTRIES * level.entry_size()] {
                for tag in [Tag::Asid(asid), Tag::Global] {
                    if let Some(e) = self.tlb.get(&(tag, va & !(span - 1), span)) {
                        debug_assert!(tag_matches(e.tag, asid) && e.level == level);
                        return Some(e);
                    }
                }
            }
        }
        None
    }

    /// Caches `e` unless an entry with the same tag, address and span is there already (a
    /// real TLB would have hit it rather than walk: a stale entry is kept, not refreshed).
    fn tlb_insert(&mut self, e: TlbLeaf) {
        self.tlb.entry((e.tag, e.va, e.span)).or_insert(e);
    }

    /// Translates through the TLB, then the walk cache, then the tables, filling the caches
    /// as the hardware may (for a leaf with the Contiguous bit: a per-entry and a combined
    /// entry). Does not check permissions.
    pub fn translate_cached(&mut self, root: PhysAddr, asid: u16, va: VirtAddr) -> Result<WalkResult, Fault> {
        if let Some(e) = self.tlb_lookup(asid, va.0) {
            let size = e.level.entry_size();
            let at = e.base() + ((va.0 & !(size - 1)) - e.va);
            return Ok(WalkResult {
                desc: e.desc.with_address(PhysAddr(at)),
                level: e.level,
                hier: e.hier,
            });
        }
        self.walk_and_fill(root, asid, va)
    }

    /// The walk part of [`Self::translate_cached`]: walks (from the walk cache) and caches
    /// what it found.
    fn walk_and_fill(&mut self, root: PhysAddr, asid: u16, va: VirtAddr) -> Result<WalkResult, Fault> {
        let kernel = va.0 >= KERNEL_BASE;
        let walk_tag = if kernel { Tag::Global } else { Tag::Asid(asid) };
        // Deepest walk-cache entry for this VA and ASID.
        let start = self
            .walk_cache
            .iter()
            .filter(|w| {
                tag_matches(w.tag, asid)
                    && va.0 >= w.va
                    && va.0 <= w.va.wrapping_add(w.level.entry_size() - 1)
            })
            .max_by_key(|w| w.level)
            .map(|w| (w.desc.next_table().0, w.level.next().unwrap(), w.hier));
        let (table, level, hier) = start.unwrap_or((root.0, Level::L0, Hier::default()));
        let mut fill = Vec::new();
        let r = self.walk_from(table, level, hier, va.0, Some(&mut fill), true);
        for mut w in fill {
            w.root = root.0;
            w.tag = walk_tag;
            let dup = self
                .walk_cache
                .iter()
                .any(|x| x.tag == w.tag && x.va == w.va && x.level == w.level);
            if !dup {
                self.walk_cache.push(w);
            }
        }
        let r = r?;
        let tag = if !r.desc.ng() {
            Tag::Global
        } else {
            Tag::Asid(asid)
        };
        let size = r.level.entry_size();
        let mut spans = vec![size];
        if r.desc.contiguous() {
            spans.push(CONT_ENTRIES * size);
        }
        for span in spans {
            self.tlb_insert(TlbLeaf {
                root: root.0,
                tag,
                va: va.0 & !(span - 1),
                level: r.level,
                span,
                desc: r.desc,
                hier: r.hier,
            });
        }
        Ok(r)
    }

    /// An access by `el` of `kind` to `va` with TTBR pointing at `root` and the current ASID
    /// `asid`: the physical address, or the fault the hardware would take.
    pub fn access(
        &mut self,
        root: PhysAddr,
        asid: u16,
        va: VirtAddr,
        el: El,
        kind: Access,
    ) -> Result<PhysAddr, Fault> {
        let r = self.translate_cached(root, asid, va)?;
        if Perms::of(r.desc, r.hier).allows(el, kind) {
            Ok(r.pa(va.0))
        } else {
            Err(Fault {
                kind: FaultKind::Permission,
                level: r.level,
            })
        }
    }

    /// Every leaf of the tree under `root`: `(va, level)`.
    pub(crate) fn leaf_vas(&self, root: u64, base: u64) -> Vec<(u64, Level)> {
        let mut out = Vec::new();
        self.collect_leaves(root, Level::L0, base, &mut out);
        out
    }

    fn collect_leaves(&self, table: u64, level: Level, base: u64, out: &mut Vec<(u64, Level)>) {
        let frame = self.frame(table).expect("linked table allocated");
        for (i, &raw) in frame.iter().enumerate() {
            let d = Descriptor(raw);
            let va = base.wrapping_add((i as u64) << level.shift());
            match d.kind(level) {
                DescriptorKind::Invalid => {}
                DescriptorKind::Table { next } => self.collect_leaves(next.0, level.next().unwrap(), va, out),
                _ => out.push((va, level)),
            }
        }
    }

    /// Touches every mapping of every registered root through the caches, as speculative
    /// walks may: afterwards the TLB and walk cache hold everything currently reachable (and
    /// still whatever stale entries they held).
    pub fn fill_all(&mut self) {
        let roots: Vec<(u64, ModelRoot)> = self.roots.iter().map(|(a, b)| (*a, *b)).collect();
        for (root, kind) in roots {
            let (asid, base) = match kind {
                ModelRoot::Kernel => (0, KERNEL_BASE),
                ModelRoot::User { asid } => (asid.0, 0),
            };
            for (va, _) in self.leaf_vas(root, base) {
                let _ = self.walk_and_fill(PhysAddr(root), asid, VirtAddr(va));
            }
        }
    }

    /// Applies one completed TLBI to the caches and to the pending breaks.
    pub(crate) fn invalidate(&mut self, op: &TlbOp) {
        self.tlb.retain(|_, e| {
            !op_hits(
                op,
                &Target {
                    tag: e.tag,
                    va: e.va,
                    size: e.span,
                    level: e.level,
                    is_leaf: true,
                },
            )
        });
        self.walk_cache.retain(|w| {
            !op_hits(
                op,
                &Target {
                    tag: w.tag,
                    va: w.va,
                    size: w.level.entry_size(),
                    level: w.level,
                    is_leaf: false,
                },
            )
        });
        for b in self.breaks.values_mut() {
            if !b.covered {
                let t = Target {
                    tag: b.tag,
                    va: b.va,
                    size: b.level.entry_size(),
                    level: b.level,
                    is_leaf: b.old.is_leaf(b.level),
                };
                b.covered = op_hits(op, &t);
            }
        }
    }
}

impl Model {
    /// Simulates a hardware update of the access flag and dirty state (FEAT_HAFDBS) of the
    /// leaf for `entry_va` in the tree under `root`: sets AF, and for a `write` clears AP\[2\]
    /// of an entry with DBM set (writable clean → writable dirty). For an address in a
    /// contiguous group the hardware may update any one entry of the group: the caller picks
    /// it with `entry_va`. The hardware does not mark an entry dirty when the hierarchical limits
    /// of the table descriptors on `root`'s path deny writes (APTable = NoWrite: the write takes
    /// a Permission fault instead), so only AF can change under such a limit — in particular in
    /// a shared level-3 table, the one write into it the model accepts. The write is checked
    /// like the engine's [`Platform::write`] (AF and AP may change in place). Returns the
    /// updated descriptor, or `None` if nothing maps `entry_va`.
    pub fn hw_update(&mut self, root: PhysAddr, entry_va: VirtAddr, write: bool) -> Option<Descriptor> {
        let mut table = root.0;
        let mut level = Level::L0;
        let mut hier = Hier::default();
        loop {
            let index = level.index_of(entry_va.0);
            let d = self.read(PhysAddr(table), index);
            match d.kind(level) {
                DescriptorKind::Invalid => return None,
                DescriptorKind::Table { next } => {
                    hier = hier.with(d);
                    table = next.0;
                    level = level.next()?;
                }
                _ => {
                    let mut n = d.with_af(true);
                    if write && n.dbm() && !hier.no_write {
                        n = Descriptor(n.0 & !bits::AP_RO);
                    }
                    if n != d {
                        self.write_desc(PhysAddr(table), index, n, Writer::Hardware);
                    }
                    return Some(n);
                }
            }
        }
    }
}

impl Model {
    /// Whether a TLB entry usable by `asid` translates `va`.
    #[cfg(test)]
    pub(crate) fn tlb_covers(&self, asid: u16, va: u64) -> bool {
        self.tlb_lookup(asid, va).is_some()
    }

    /// Whether an entry mapping `va` was broken (written invalid) and no TLBI covering it has
    /// completed yet.
    #[cfg(test)]
    pub(crate) fn break_pending(&self, va: u64) -> bool {
        self.breaks
            .values()
            .any(|b| !b.covered && va >= b.va && va <= b.va.wrapping_add(b.level.entry_size() - 1))
    }

    /// The number of cached combined (contiguous-group) TLB entries.
    #[cfg(test)]
    pub(crate) fn tlb_combined(&self) -> usize {
        self.tlb
            .values()
            .filter(|e| e.span != e.level.entry_size())
            .count()
    }
}
