//! Copy-on-write page tables: level-3 tables shared between address spaces after a fork in
//! [`ForkMode::ShareTables`] (docs/mm.md, "Shared page tables").

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;

use spin::Mutex;

use super::machine::Machine;
use super::{ptes, FaultError, Space, SpaceError};
use crate::folio::{Folio, SpaceId};
use crate::{PhysAddr, PteTable, VirtAddr, PAGE_SIZE};

use super::ptes::{span_of, TABLE_SPAN};

/// How [`Space::fork`] gives the child its private memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ForkMode {
    /// Copy the level-3 entries, batched per folio run (Linux's fork).
    #[default]
    Copy,
    /// Share the level-3 tables, write-protected through the level-2 descriptors; the
    /// entries are copied later, a table at a time, by the first change under it.
    ShareTables,
}

/// One shared level-3 table: who links it, and under whose name its entries are accounted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct TableShare {
    /// The space the table's entries are attributed to in the folios' tracking slots (one of
    /// `holders`).
    pub owner: SpaceId,
    /// The spaces whose level-2 entry links the table; two or more.
    pub holders: Vec<SpaceId>,
}

/// The shared level-3 tables of a family of address spaces (a process and everything forked
/// from it), by table address. A table that one space alone links is not listed.
#[derive(Debug, Default)]
pub(crate) struct SharedTables {
    map: Mutex<BTreeMap<u64, TableShare>>,
}

impl SharedTables {
    pub(super) fn get(&self, table: PhysAddr) -> Option<TableShare> {
        self.map.lock().get(&table.0).cloned()
    }

    pub(super) fn is_shared(&self, table: PhysAddr) -> bool {
        self.map.lock().contains_key(&table.0)
    }

    /// `child` now links `table`, which `parent` links.
    fn add(&self, table: PhysAddr, parent: SpaceId, child: SpaceId) {
        let mut map = self.map.lock();
        let e = map.entry(table.0).or_insert_with(|| TableShare {
            owner: parent,
            holders: alloc::vec![parent],
        });
        debug_assert!(e.holders.contains(&parent) && !e.holders.contains(&child));
        e.holders.push(child);
    }

    /// `space` no longer links `table`. Returns the new accounting owner if `space` was the
    /// owner (the entries must be transferred to it).
    fn remove(&self, table: PhysAddr, space: SpaceId) -> Option<SpaceId> {
        let mut map = self.map.lock();
        let e = map.get_mut(&table.0).expect("the table is shared");
        let at = e
            .holders
            .iter()
            .position(|&h| h == space)
            .expect("the space links the table");
        e.holders.remove(at);
        let moved = (e.owner == space).then(|| e.holders[0]);
        if let Some(o) = moved {
            e.owner = o;
        }
        if e.holders.len() < 2 {
            map.remove(&table.0);
        }
        moved
    }

    /// How many shared tables `space` links.
    fn held_by(&self, space: SpaceId) -> usize {
        self.map
            .lock()
            .values()
            .filter(|s| s.holders.contains(&space))
            .count()
    }

    /// Every shared table (for checks).
    pub(super) fn all(&self) -> Vec<(PhysAddr, TableShare)> {
        self.map
            .lock()
            .iter()
            .map(|(&t, s)| (PhysAddr(t), s.clone()))
            .collect()
    }
}

/// Whether `[start, end)` covers the whole span at `span`.
fn covers(start: u64, end: u64, span: u64) -> bool {
    start <= span && span + TABLE_SPAN <= end
}

impl Space {
    /// The fork mode of this address space (inherited by its children).
    pub fn fork_mode(&self) -> ForkMode {
        self.fork_mode
    }

    /// Sets how [`Space::fork`] copies this space.
    pub fn set_fork_mode(&mut self, mode: ForkMode) {
        self.fork_mode = mode;
    }

    /// How many level-3 tables this space links that another space links too.
    pub fn shared_tables(&self) -> usize {
        self.tables.held_by(self.id)
    }

    /// Makes this space's level-3 table for `va`'s span (if any) its own and writable:
    /// breaks the sharing (a private copy) if another space links it, lifts a leftover
    /// write limit if this space is the last one linking it. Needed before any entry of the
    /// span changes. Fails (nothing changed) only when the copy's table cannot be allocated.
    pub(super) fn own_span<'m, M: Machine<'m> + ?Sized>(
        &mut self,
        m: &mut M,
        va: u64,
    ) -> Result<(), FaultError> {
        if !self.limited_tables {
            return Ok(());
        }
        let Some(t) = self.root.pte_table(m, VirtAddr(va)) else {
            return Ok(());
        };
        if !t.write_protected {
            return Ok(());
        }
        if self.tables.is_shared(t.pa) {
            self.break_share(m, t)
        } else {
            self.take_table(m, t);
            Ok(())
        }
    }

    /// Breaks the sharing of every shared table of `[start, end)` that the range covers only
    /// partly (`whole = false`) or at all (`whole = true`): before an operation that changes
    /// entries there. On failure the tables broken so far stay broken (invisible to the
    /// application) and nothing else changed.
    pub(super) fn break_shares_in<'m, M: Machine<'m> + ?Sized>(
        &mut self,
        m: &mut M,
        start: u64,
        end: u64,
        whole: bool,
    ) -> Result<(), SpaceError> {
        if start >= end || !self.limited_tables {
            return Ok(());
        }
        for t in self.root.pte_tables(m, start, end) {
            if !t.write_protected || !self.tables.is_shared(t.pa) {
                continue;
            }
            if whole || !covers(start, end, t.va.as_u64()) {
                self.break_share(m, t).map_err(|_| SpaceError::OutOfMemory)?;
            }
        }
        Ok(())
    }

    /// Drops this space's link to every shared table among `tables` (this space's level-3
    /// tables of `[start, end)`, which the caller unmaps next; partly covered shared tables
    /// were broken first, see [`Space::break_shares_in`]). Returns the others.
    pub(super) fn drop_shares<'m, M: Machine<'m> + ?Sized>(
        &mut self,
        m: &mut M,
        start: u64,
        end: u64,
        tables: Vec<PteTable>,
    ) -> Vec<PteTable> {
        if !self.limited_tables {
            return tables;
        }
        let mut kept = Vec::with_capacity(tables.len());
        for t in tables {
            if !t.write_protected || !self.tables.is_shared(t.pa) {
                kept.push(t);
                continue;
            }
            assert!(
                covers(start, end, t.va.as_u64()),
                "a shared table at {} would be unmapped in part: break it first",
                t.va
            );
            self.drop_share(m, t);
        }
        kept
    }

    /// The folio runs of the level-3 table `t` of this space, split further by
    /// `key(folio, page index)`.
    fn span_runs<'m, M: Machine<'m> + ?Sized>(
        &self,
        m: &M,
        t: PteTable,
        mut key: impl FnMut(Folio<'m>, usize) -> bool,
    ) -> Vec<ptes::Run<'m>> {
        let s = t.va.as_u64();
        ptes::table_runs(m, m.mem(), t, s, s + TABLE_SPAN, |f, i, _| key(f, i))
    }

    /// The private copy: a new table with this space's accounting of every entry, the shared
    /// one left to the others.
    fn break_share<'m, M: Machine<'m> + ?Sized>(&mut self, m: &mut M, t: PteTable) -> Result<(), FaultError> {
        let mem = m.mem();
        let new = self.root.alloc_pte_table(m).map_err(|_| FaultError::Oom)?;
        let share = self.tables.get(t.pa).expect("breaking a shared table");
        // The entries of the shared table stay accounted under its owner and this space's
        // copies become mappings of this space, unless this space is the owner: then the
        // copies take over its slot counts and the shared table's entries are accounted to
        // the next owner instead. Either way: one batched call per folio run.
        let dup_for = if share.owner == self.id {
            *share
                .holders
                .iter()
                .find(|&&h| h != self.id)
                .expect("two holders")
        } else {
            self.id
        };
        for run in &self.span_runs(m, t, |_, _| false) {
            if run.folio.is_anon() {
                run.folio
                    .try_dup_anon_ptes(dup_for, run.first, run.nr)
                    .unwrap_or_else(|e| {
                        panic!(
                            "copying shared table {:?} at {:#x}: {e:?} (tables holding \
                             maybe-pinned anon pages are never shared)",
                            t.pa, run.va
                        )
                    });
            } else {
                run.folio
                    .add_file_ptes(dup_for, run.first, run.nr)
                    .expect("file pages of a shared table are mapped");
            }
        }
        // If this space was the owner, the next one inherits the slot counts of the shared
        // entries (the dup above); this space keeps its counts, which stand for the copies.
        let next = self.tables.remove(t.pa, self.id);
        debug_assert!(share.owner != self.id || next == Some(dup_for));
        // Anon pages are no longer exclusive to anyone: the copies are read-only (write
        // faults on them are ordinary COW faults). File pages keep their entries.
        self.root
            .replace_pte_table(m, t.va, new, |_, d| match mem.folio_page(d.address()) {
                Some((f, _)) if f.is_anon() => d.with_writable(false),
                _ => d,
            });
        self.stats.table_breaks += 1;
        Ok(())
    }

    /// The last space linking a formerly shared table takes it: entries of anon pages that are
    /// writable but no longer exclusive (another space copied the table meanwhile) become
    /// read-only, then the write limit is lifted.
    fn take_table<'m, M: Machine<'m> + ?Sized>(&mut self, m: &mut M, t: PteTable) {
        let runs = self.span_runs(m, t, |f, i| f.is_anon() && !f.is_anon_exclusive(i));
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for r in runs.iter().filter(|r| r.key && r.writable) {
            match ranges.last_mut() {
                Some(last) if last.1 == r.va => last.1 = r.end(),
                _ => ranges.push((r.va, r.end())),
            }
        }
        for (a, b) in ranges {
            ptes::wrprotect(&mut self.root, m, a, ((b - a) / PAGE_SIZE) as usize);
        }
        self.root.unprotect_pte_table(m, t.va);
        self.stats.table_takeovers += 1;
    }

    /// Unlinks a shared table from this space without touching its entries; if this space
    /// was their accounting owner, the next holder becomes it (slot transfer per folio run).
    fn drop_share<'m, M: Machine<'m> + ?Sized>(&mut self, m: &mut M, t: PteTable) {
        // Only the owner's leaving moves accounting; the others just unlink.
        let owner = self.tables.get(t.pa).is_some_and(|sh| sh.owner == self.id);
        let runs = if owner {
            self.span_runs(m, t, |_, _| false)
        } else {
            Vec::new()
        };
        let detached = self.root.detach_pte_table(m, t.va);
        debug_assert_eq!(detached, Some(t.pa));
        if let Some(next) = self.tables.remove(t.pa, self.id) {
            for run in &runs {
                run.folio.transfer_mappings(self.id, next, run.nr as u32);
            }
        }
        self.stats.table_drops += 1;
    }

    /// Fork, `ShareTables` mode: links every level-3 table of this space into `child`,
    /// write-protected in both, except the spans where this space pinned pages, which are
    /// copied as in `Copy` mode. One gathered invalidation for this space at the end.
    pub(super) fn fork_share_tables<'m, M: Machine<'m> + ?Sized>(
        &mut self,
        m: &mut M,
        child: &mut Space,
    ) -> Result<(), SpaceError> {
        // The tables of the regions' spans, each once (two regions may share a span): a
        // walk of the regions' ranges, not of the whole user range.
        let mut tables: Vec<PteTable> = Vec::new();
        for v in self.vmas.iter() {
            for t in self.root.pte_tables(m, v.start.as_u64(), v.end.as_u64()) {
                if tables.last().is_none_or(|l| l.va != t.va) {
                    tables.push(t);
                }
            }
        }
        let mut protect: Vec<VirtAddr> = Vec::new();
        let mut result = Ok(());
        for t in tables {
            let s = t.va.as_u64();
            if self.pinned_spans.contains(&s) {
                if let Err(e) = self.fork_span_copy(m, child, s) {
                    result = Err(e);
                    break;
                }
                continue;
            }
            if child.root.link_shared_pte_table(m, t.va, t.pa).is_err() {
                result = Err(SpaceError::OutOfMemory);
                break;
            }
            self.tables.add(t.pa, self.id, child.id);
            self.limited_tables = true;
            child.limited_tables = true;
            if !t.write_protected {
                protect.push(t.va);
            }
            self.stats.fork_tables_shared += 1;
        }
        // Even on failure: the tables linked so far are shared until the child is torn down.
        if !protect.is_empty() {
            self.root.wrprotect_pte_tables(m, protect);
        }
        result
    }

    /// Records that a page of `va`'s span was pinned: the span's table is never shared at
    /// fork (its pinned pages must be copied for the child).
    pub(super) fn note_pinned(&mut self, va: u64) {
        self.pinned_spans.insert(span_of(va));
    }

    /// Forgets the pin marks of the spans `[start, end)` covers whole (their entries are
    /// being unmapped).
    pub(super) fn forget_pins_in(&mut self, start: u64, end: u64) {
        let first = start.next_multiple_of(TABLE_SPAN);
        let spans: Vec<u64> = self
            .pinned_spans
            .range(first..)
            .take_while(|&&s| s + TABLE_SPAN <= end)
            .copied()
            .collect();
        for s in spans {
            self.pinned_spans.remove(&s);
        }
    }
}

impl Space {
    /// The leaves of `leaves` (all of this space's) that are accounted to this space: all but
    /// those of shared tables whose accounting owner is another space.
    pub(super) fn accounted_leaves<'a, 'm, M: Machine<'m> + ?Sized>(
        &self,
        m: &M,
        leaves: &'a [crate::Leaf],
    ) -> impl Iterator<Item = &'a crate::Leaf> + 'a {
        let others: BTreeSet<u64> = self
            .root
            .pte_tables(m, 0, crate::USER_END)
            .iter()
            .filter(|t| t.write_protected && self.tables.get(t.pa).is_some_and(|s| s.owner != self.id))
            .map(|t| t.va.as_u64())
            .collect();
        leaves
            .iter()
            .filter(move |l| !others.contains(&span_of(l.va.as_u64())))
    }
}

/// The shared-table invariants over `spaces` (every live space of their families):
///
/// * a level-3 table linked by two or more of the spaces is recorded as shared, with exactly
///   those spaces as holders, and each links it at the same span with the write limit;
/// * a recorded table has two or more distinct holders, its owner among them, and each holder
///   links it;
/// * no shared table maps an anon-exclusive page of a maybe-pinned folio (tables holding
///   pinned pages are never shared, and nothing is pinned through a shared table).
pub(super) fn check_sharing<'m, M: Machine<'m> + ?Sized>(
    m: &M,
    spaces: &[&Space],
) -> Result<(), super::SpaceCheckError> {
    use super::SpaceCheckError::SharedTable;
    let mem = m.mem();
    // Table → (span, linking spaces, all limited?).
    let mut links: BTreeMap<u64, (u64, Vec<SpaceId>, bool)> = BTreeMap::new();
    for s in spaces {
        for t in s.root.pte_tables(m, 0, crate::USER_END) {
            let e = links.entry(t.pa.0).or_insert((t.va.as_u64(), Vec::new(), true));
            if e.0 != t.va.as_u64() {
                return Err(SharedTable(t.va, "one table linked at two spans"));
            }
            if e.1.contains(&s.id) {
                return Err(SharedTable(t.va, "one table linked twice by one space"));
            }
            e.1.push(s.id);
            e.2 &= t.write_protected;
        }
    }
    for s in spaces {
        for (table, share) in s.tables.all() {
            let va = VirtAddr(links.get(&table.0).map_or(0, |l| l.0));
            if share.holders.len() < 2 {
                return Err(SharedTable(va, "recorded shared with fewer than two holders"));
            }
            if !share.holders.contains(&share.owner) {
                return Err(SharedTable(va, "accounting owner does not link the table"));
            }
            let Some((_, linkers, limited)) = links.get(&table.0) else {
                return Err(SharedTable(va, "recorded shared table linked by no space"));
            };
            let mut a = linkers.clone();
            let mut b = share.holders.clone();
            a.sort_by_key(|i| i.get());
            b.sort_by_key(|i| i.get());
            if a != b {
                return Err(SharedTable(
                    va,
                    "holders differ from the spaces linking the table",
                ));
            }
            if !limited {
                return Err(SharedTable(va, "shared table linked without the write limit"));
            }
        }
    }
    for (&table, (span, linkers, _)) in &links {
        if linkers.len() < 2 {
            continue;
        }
        let recorded = spaces.iter().any(|s| s.tables.is_shared(PhysAddr(table)));
        if !recorded {
            return Err(SharedTable(
                VirtAddr(*span),
                "table linked by two spaces, not recorded",
            ));
        }
        for i in 0..crate::ENTRIES {
            let d = m.read(PhysAddr(table), i);
            if !d.is_valid() {
                continue;
            }
            if let Some((f, idx)) = mem.folio_page(d.address()) {
                if f.is_anon() && f.maybe_pinned() && f.is_anon_exclusive(idx) {
                    return Err(SharedTable(
                        VirtAddr(*span + i as u64 * PAGE_SIZE),
                        "shared table maps an exclusive page of a pinned folio",
                    ));
                }
            }
        }
    }
    Ok(())
}
