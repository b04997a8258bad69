//! Whole-machine invariant checks the tests run after every operation.

use super::mmu::{Perms, CONT_ENTRIES};
use super::{show, Hier, Model, ModelRoot, Tag};
use crate::{bits, Descriptor, DescriptorKind, Level, PhysAddr, ENTRIES};

impl Model {
    /// Whether entries cached under `tag` by a root that is no longer registered can still be
    /// hit: global ones always; ASID-tagged ones if a registered root now uses the ASID.
    fn retired_entry_reachable(&self, tag: Tag) -> bool {
        match tag {
            Tag::Global => true,
            Tag::Asid(a) => self
                .roots
                .values()
                .any(|k| matches!(k, ModelRoot::User { asid } if asid.0 == a)),
        }
    }

    /// The descriptor in the `level` table on `va`'s path from `root`, with the hierarchical
    /// limits of the table descriptors above it; `None` if the path is cut above `level`.
    fn slot_on_path(&self, root: u64, va: u64, level: Level) -> Option<(Descriptor, Hier)> {
        let mut table = root;
        let mut l = Level::L0;
        let mut hier = Hier::default();
        loop {
            let d = Descriptor(self.frame(table)?[l.index_of(va)]);
            if l == level {
                return Some((d, hier));
            }
            match d.kind(l) {
                DescriptorKind::Table { next } => {
                    hier = hier.with(d);
                    table = next.0;
                    l = l.next()?;
                }
                _ => return None,
            }
        }
    }

    /// The union of the current permissions of the contiguous group of `level` entries
    /// holding `va` (the pages that still translate): what a TLB entry built from any one of
    /// them may allow.
    fn group_perms(&self, root: u64, va: u64, level: Level) -> Option<Perms> {
        let size = level.entry_size();
        let base = va & !(CONT_ENTRIES * size - 1);
        (0..CONT_ENTRIES)
            .filter_map(|j| self.table_walk_any_af(PhysAddr(root), base + j * size).ok())
            .map(|w| Perms::of(w.desc, w.hier))
            .reduce(Perms::union)
    }

    /// (b) Fails if any cached TLB or walk-cache entry no longer matches the tables: a missing
    /// (or insufficient) TLBI. A cached leaf strictly less permissive than the current one is
    /// tolerated (spurious permission fault); so is a stricter cached walk-cache limit. AF is
    /// not compared (software may clear it without a TLBI). A cached entry with the Contiguous
    /// bit is checked page by page over its span, against the union of its group's current
    /// permissions (it may have been built from any entry of the group).
    pub fn check_tlb_coherent(&self) {
        let mut errors = Vec::new();
        let mut groups = std::collections::HashMap::new();
        for e in self.tlb.values() {
            if !self.roots.contains_key(&e.root) {
                if self.retired_entry_reachable(e.tag) {
                    errors.push(format!(
                        "TLB entry for VA {:#x} ({:?}, {}) of retired root {:#x} can still be hit",
                        e.va, e.tag, e.level, e.root
                    ));
                }
                continue;
            }
            let cached = show(e.level, e.desc);
            let size = e.level.entry_size();
            let kind = if e.span == size {
                ""
            } else {
                " (combined contiguous entry)"
            };
            let allowed = if e.desc.contiguous() {
                let base = e.va & !(CONT_ENTRIES * size - 1);
                *groups
                    .entry((e.root, base, e.level))
                    .or_insert_with(|| self.group_perms(e.root, base, e.level))
            } else {
                None
            };
            for j in 0..e.span / size {
                let va = e.va + j * size;
                match self.table_walk_any_af(PhysAddr(e.root), va) {
                    Ok(cur) => {
                        let same_shape = cur.level == e.level
                            && cur.desc.output_address(cur.level).0 == e.base() + j * size;
                        let mask = bits::ATTR_INDX | bits::SH | bits::NS | bits::NG | bits::CONTIGUOUS;
                        let same_attrs = (cur.desc.0 ^ e.desc.0) & mask == 0;
                        let now = allowed.unwrap_or_else(|| Perms::of(cur.desc, cur.hier));
                        let perms_ok = Perms::of(e.desc, e.hier).within(now);
                        if !(same_shape && same_attrs && perms_ok) {
                            errors.push(format!(
                                "stale TLB entry{kind} for VA {va:#x} ({:?}): cached {} leaf {cached}, \
                                 tables now give {} leaf {}{}",
                                e.tag,
                                e.level,
                                cur.level,
                                show(cur.level, cur.desc),
                                if same_shape && same_attrs {
                                    " (cached entry more permissive)"
                                } else {
                                    ""
                                }
                            ));
                        }
                    }
                    Err(f) => errors.push(format!(
                        "stale TLB entry{kind} for VA {va:#x} ({:?}): cached {} leaf {cached}, \
                         tables now give a {:?} fault at {}",
                        e.tag, e.level, f.kind, f.level
                    )),
                }
            }
        }
        for w in &self.walk_cache {
            if !self.roots.contains_key(&w.root) {
                if self.retired_entry_reachable(w.tag) {
                    errors.push(format!(
                        "walk-cache entry for VA {:#x} ({:?}, {}) of retired root {:#x} can still be hit",
                        w.va, w.tag, w.level, w.root
                    ));
                }
                continue;
            }
            let ok = match self.slot_on_path(w.root, w.va, w.level) {
                Some((d, above)) => {
                    d.is_table(w.level)
                        && d.next_table() == w.desc.next_table()
                        && above.with(d).within(w.hier)
                }
                None => false,
            };
            if !ok {
                let now = self
                    .slot_on_path(w.root, w.va, w.level)
                    .map(|(d, _)| show(w.level, d))
                    .unwrap_or_else(|| "no such table on the path".into());
                errors.push(format!(
                    "stale walk-cache entry for VA {:#x} ({:?}) at {}: cached {}, tables now hold {now}",
                    w.va,
                    w.tag,
                    w.level,
                    show(w.level, w.desc)
                ));
            }
        }
        if !errors.is_empty() {
            panic!(
                "TLB incoherent, missing TLBI ({} stale entries):\n  {}",
                errors.len(),
                errors.join("\n  ")
            );
        }
    }

    /// (c) Fails if a leaf with the Contiguous bit is not in a correct group: 16 adjacent
    /// entries (aligned in the table, so the VA range is aligned to 16 entries), all valid
    /// leaves with the bit, consecutive output addresses starting at a multiple of the group
    /// size, identical attributes. May differ: AF and the dirty state (AP\[2\] between two
    /// entries that both have DBM set), which the hardware updates in one entry of a group;
    /// DBM; the software bits 58:55, which the hardware ignores.
    pub fn check_contiguous(&self) {
        // A shared level-3 table is checked once: its links all have the same level and VA.
        for (&frame, links) in &self.links {
            let link = links[0];
            let level = link.level;
            if level == Level::L0 {
                continue;
            }
            let f = self.frame(frame).expect("linked frame allocated");
            let size = level.entry_size();
            for g in (0..ENTRIES).step_by(16) {
                let group: Vec<Descriptor> = f[g..g + 16].iter().map(|&d| Descriptor(d)).collect();
                let any = group.iter().any(|d| d.is_leaf(level) && d.contiguous());
                if !any {
                    continue;
                }
                let va = link.va_base.wrapping_add((g as u64) << level.shift());
                let first = group[0];
                let fail = |j: usize, why: &str| -> ! {
                    panic!(
                        "contiguous misprogramming: group at VA {va:#x} ({level}, table {frame:#x}[{g}..{}]), \
                         entry {j} ({}): {why}",
                        g + 16,
                        show(level, group[j])
                    )
                };
                if !first.is_leaf(level) {
                    fail(0, "group contains an entry that is not a valid leaf");
                }
                let base = first.output_address(level).0;
                if !base.is_multiple_of(16 * size) {
                    fail(0, "first output address not aligned to the group size");
                }
                let attr_mask = !(bits::ADDR | bits::AF | bits::DBM | bits::SW);
                for (j, d) in group.iter().enumerate() {
                    if !d.is_leaf(level) {
                        fail(j, "group contains an entry that is not a valid leaf");
                    }
                    if !d.contiguous() {
                        fail(j, "entry without the Contiguous bit in a contiguous group");
                    }
                    if d.output_address(level).0 != base + j as u64 * size {
                        fail(j, "output addresses not consecutive");
                    }
                    let mut diff = (d.0 ^ first.0) & attr_mask;
                    if d.dbm() && first.dbm() {
                        diff &= !bits::AP_RO;
                    }
                    if diff != 0 {
                        fail(j, "attributes differ within the group");
                    }
                }
            }
        }
    }

    /// Fails if an allocated table frame is not reachable from a registered root (a leak).
    pub fn check_no_orphans(&self) {
        let mut orphans: Vec<u64> = self
            .frames
            .keys()
            .filter(|f| !self.links.contains_key(f))
            .copied()
            .collect();
        orphans.sort_unstable();
        assert!(
            orphans.is_empty(),
            "{} allocated table frame(s) unreachable from any root (leak): {:x?}",
            orphans.len(),
            orphans
        );
    }

    /// Fails if a level-3 table shared by several roots is reachable through a path whose
    /// table descriptors do not deny writes (APTable\[1\]): through it, one address space
    /// could write what the others map.
    pub fn check_shared_read_only(&self) {
        let mut errors = Vec::new();
        for (&frame, links) in &self.links {
            if links.len() < 2 {
                continue;
            }
            for l in links {
                debug_assert_eq!(l.level, Level::L3, "only level-3 tables are shared");
                let parent = Level::L2;
                match self.slot_on_path(l.root, l.va_base, parent) {
                    Some((d, above)) if d.is_table(parent) && d.next_table().0 == frame => {
                        if !above.with(d).no_write {
                            errors.push(format!(
                                "level-3 table {frame:#x} (VA {:#x}) shared by {} roots is writable \
                                 from root {:#x}: {parent} descriptor {} (limits above it {above:?}) \
                                 does not deny writes (APTable NoWrite)",
                                l.va_base,
                                links.len(),
                                l.root,
                                show(parent, d)
                            ));
                        }
                    }
                    other => errors.push(format!(
                        "model bookkeeping: level-3 table {frame:#x} is linked from root {:#x} \
                         for VA {:#x}, but that root's {parent} slot holds {}",
                        l.root,
                        l.va_base,
                        other.map_or("nothing (path cut)".into(), |(d, _)| show(parent, d))
                    )),
                }
            }
        }
        if !errors.is_empty() {
            errors.sort();
            panic!(
                "shared table writable ({}):\n  {}",
                errors.len(),
                errors.join("\n  ")
            );
        }
    }

    /// All of [`Self::check_tlb_coherent`], [`Self::check_contiguous`],
    /// [`Self::check_shared_read_only`], [`Self::check_no_orphans`].
    pub fn check_all(&self) {
        self.check_tlb_coherent();
        self.check_contiguous();
        self.check_shared_read_only();
        self.check_no_orphans();
    }

    /// Number of table frames reachable from `root` (root included; a shared level-3 table
    /// counts for every root that reaches it).
    pub fn tables_under(&self, root: PhysAddr) -> usize {
        self.links
            .values()
            .filter(|ls| ls.iter().any(|l| l.root == root.0))
            .count()
    }

    /// Number of the table frames reachable from `root` that other roots reach too (shared
    /// level-3 tables): destroying `root` must not free them.
    pub fn shared_tables_under(&self, root: PhysAddr) -> usize {
        self.links
            .values()
            .filter(|ls| ls.len() > 1 && ls.iter().any(|l| l.root == root.0))
            .count()
    }
}
