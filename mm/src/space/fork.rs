//! `fork`: the child's regions and copy-on-write entries, batched per folio (docs/mm.md,
//! "Fork").

use alloc::vec::Vec;

use super::machine::Machine;
use super::{ptes, ForkMode, Space, SpaceError};
use crate::folio::{FolioError, FolioKind, FolioOrder};
use crate::vma::VmProt;
use crate::{Descriptor, PteRun, PteTable, VirtAddr};
use crate::{PAGE_SIZE, USER_END};

/// What a `Copy` fork carries from one piece to the next.
struct CopyState {
    /// The span whose table exists in the child already (pieces of one table come in a row).
    ensured: Option<u64>,
    /// The parent's ranges to write-protect at the end, merged.
    protect: Vec<(u64, u64)>,
    /// The child's entries for the current table, installed with one engine call.
    child_runs: Vec<PteRun>,
}

/// The fork of one region failed for lack of memory (the child is then discarded).
struct NoMemory;

impl Space {
    /// Forks the address space: returns the child (with its own id and first ASID, as
    /// [`Space::new`]), whose private memory is copy-on-write with this one and whose shared
    /// regions map the same objects.
    ///
    /// On [`SpaceError::OutOfMemory`] no child exists (everything it took is released) and
    /// this space's contents and regions are unchanged (docs/mm.md, "Out of memory").
    pub fn fork<'m, M: Machine<'m> + ?Sized>(&mut self, m: &mut M) -> Result<Space, SpaceError> {
        let mut child = Space::with_regions(m, self.vmas.fork(), self.tables.clone())?;
        child.fork_mode = self.fork_mode;
        let result = match self.fork_mode {
            ForkMode::Copy => self.fork_copy(m, &mut child, 0, USER_END),
            ForkMode::ShareTables => self.fork_share_tables(m, &mut child),
        };
        if result.is_err() {
            child.exit(m);
            return Err(SpaceError::OutOfMemory);
        }
        Ok(child)
    }

    /// `Copy` mode over `[start, end)`: the entries of every private region there, one
    /// present level-3 table of this space at a time (spans without a table cost nothing,
    /// and only the tables of the regions' spans are looked up).
    /// The parent's runs that were writable are write-protected at the end, merged into
    /// maximal ranges, even when failing half-way (so that the parent's writable private
    /// pages stay anon-exclusive).
    fn fork_copy<'m, M: Machine<'m> + ?Sized>(
        &mut self,
        m: &mut M,
        child: &mut Space,
        start: u64,
        end: u64,
    ) -> Result<(), SpaceError> {
        // The private regions as plain ranges: no region (nor object handle) is cloned.
        let private: Vec<(u64, u64, VmProt)> = self
            .vmas
            .iter()
            .filter(|v| !v.kind.is_shared() && v.end.as_u64() > start && v.start.as_u64() < end)
            .map(|v| (v.start.as_u64().max(start), v.end.as_u64().min(end), v.prot))
            .collect();
        if private.is_empty() {
            return Ok(());
        }
        let mut state = CopyState {
            ensured: None,
            protect: Vec::new(),
            child_runs: Vec::new(),
        };
        let mut result = Ok(());
        'regions: for &(s, e, prot) in &private {
            // Only the tables of the region's own spans are read.
            for t in self.root.pte_tables(m, s, e) {
                let span = t.va.as_u64();
                let piece = (s.max(span), e.min(span + ptes::TABLE_SPAN));
                if self.fork_private(m, child, t, prot, piece, &mut state).is_err() {
                    result = Err(SpaceError::OutOfMemory);
                    break 'regions;
                }
            }
        }
        // One engine call for every range: each table looked up once, one invalidation.
        let ranges: Vec<(VirtAddr, usize)> = state
            .protect
            .iter()
            .map(|&(s, e)| (VirtAddr(s), ((e - s) / PAGE_SIZE) as usize))
            .collect();
        self.stats.fork_wrprotects += ranges.len() as u64;
        ptes::wrprotect_ranges(&mut self.root, m, &ranges);
        result
    }

    /// `Copy` mode for the 2 MiB span at `span` (a span `ShareTables` does not share).
    pub(super) fn fork_span_copy<'m, M: Machine<'m> + ?Sized>(
        &mut self,
        m: &mut M,
        child: &mut Space,
        span: u64,
    ) -> Result<(), SpaceError> {
        self.stats.fork_tables_copied += 1;
        self.fork_copy(m, child, span, span + ptes::TABLE_SPAN)
    }

    /// Copies the entries of `[start, end)` (part of a private region with permissions `prot`,
    /// inside the span of this space's level-3 table `t`) into `child`, adding the parent's
    /// runs to write-protect to `state` (merged). Runs of object pages (private object
    /// mappings) are mapped read-only in the child too. The child's table is allocated
    /// before the first run is accounted, once per span.
    fn fork_private<'m, M: Machine<'m> + ?Sized>(
        &mut self,
        m: &mut M,
        child: &mut Space,
        t: PteTable,
        prot: VmProt,
        (start, end): (u64, u64),
        state: &mut CopyState,
    ) -> Result<(), NoMemory> {
        let mem = m.mem();
        let mut add_protect = |s: u64, e: u64| match state.protect.last_mut() {
            Some(last) if last.1 == s => last.1 = e,
            _ => state.protect.push((s, e)),
        };
        let runs = ptes::table_runs(m, mem, t, start, end, |_, _, _| false);
        if runs.is_empty() {
            return Ok(());
        }
        let span = t.va.as_u64();
        if state.ensured != Some(span) {
            if ptes::ensure_table(&mut child.root, m, span).is_err() {
                return Err(NoMemory);
            }
            state.ensured = Some(span);
        }
        // A table under a write limit (shared, or left so by sharing) is not written: the
        // limit already keeps its entries read-only, and its last holder write-protects what
        // is no longer exclusive when it takes it (docs/mm.md, "Shared page tables").
        let limited = t.write_protected;
        let mut out = core::mem::take(&mut state.child_runs);
        out.clear();
        let r = self.fork_runs(m, child, &runs, prot, limited, &mut out, &mut add_protect);
        // Installed even after a failure half-way: the accounting done so far matches the
        // child's entries, and the child is then discarded by its teardown.
        if !out.is_empty() {
            ptes::set_runs(&mut child.root, m, &out);
        }
        state.child_runs = out;
        r
    }

    /// The accounting of the runs of one table: the child's entries are appended to `out`,
    /// the parent's ranges to write-protect go to `add_protect`.
    #[allow(clippy::too_many_arguments)]
    fn fork_runs<'m, M: Machine<'m> + ?Sized>(
        &mut self,
        m: &mut M,
        child: &Space,
        runs: &[ptes::Run<'m>],
        prot: VmProt,
        limited: bool,
        out: &mut Vec<PteRun>,
        add_protect: &mut impl FnMut(u64, u64),
    ) -> Result<(), NoMemory> {
        let mem = m.mem();
        let mut set = |va: u64, pte: Descriptor, nr: usize, fold_ok: bool| {
            out.push(PteRun {
                va: VirtAddr(va),
                pte,
                nr,
                fold_ok,
            })
        };
        for run in runs {
            let child_desc = run.desc.with_writable(false).with_young(false);
            let fold = ptes::foldable(run.folio.order());
            if !run.folio.is_anon() {
                // Object pages of a private object mapping: read-only in the parent, the same
                // (read-only) entries in the child.
                debug_assert!(!run.writable, "object pages are mapped read-only");
                run.folio
                    .add_file_ptes(child.id, run.first, run.nr)
                    .expect("file folio, pages inside it");
                self.stats.fork_file_batches += 1;
                set(run.va, child_desc, run.nr, fold);
                continue;
            }
            match run.folio.try_dup_anon_ptes(child.id, run.first, run.nr) {
                Ok(()) => {
                    self.stats.fork_dup_batches += 1;
                    self.stats.fork_dup_pages += run.nr as u64;
                    set(run.va, child_desc, run.nr, fold);
                    if run.writable && !limited {
                        add_protect(run.va, run.end());
                    }
                }
                Err(FolioError::MaybePinned { .. }) => {
                    // Page by page: share what can be shared, copy the exclusive pages of the
                    // pinned folio for the child.
                    let attrs = ptes::user_attrs(prot.pte_prot());
                    for i in 0..run.nr {
                        let va = run.va + i as u64 * PAGE_SIZE;
                        let idx = run.first + i;
                        let pa = run.pa + i as u64 * PAGE_SIZE;
                        match run.folio.try_dup_anon_ptes(child.id, idx, 1) {
                            Ok(()) => {
                                self.stats.fork_dup_batches += 1;
                                self.stats.fork_dup_pages += 1;
                                let d = child_desc.with_address(crate::PhysAddr(pa));
                                set(va, d, 1, fold);
                                if run.writable && !limited {
                                    add_protect(va, va + PAGE_SIZE);
                                }
                            }
                            Err(FolioError::MaybePinned { .. }) => {
                                let Ok(new) = mem.alloc_folio(m, FolioOrder::SMALL, FolioKind::Anon) else {
                                    return Err(NoMemory);
                                };
                                m.copy(new.pa(), crate::PhysAddr(pa), PAGE_SIZE);
                                new.add_anon_ptes(child.id, 0, 1, true).expect("fresh folio");
                                let d = ptes::page_desc(attrs, new.pa().0, true).with_young(!prot.is_none());
                                set(va, d, 1, false);
                                new.put(m);
                                self.stats.fork_copies += 1;
                            }
                            Err(e) => panic!("fork of a mapped anon page refused: {e:?}"),
                        }
                    }
                }
                Err(e) => panic!("fork of mapped anon pages refused: {e:?}"),
            }
        }
        Ok(())
    }
}
