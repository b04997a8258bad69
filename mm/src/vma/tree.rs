//! The region tree of one address space ([`VmaTree`]): mmap, munmap, mprotect, madvise and
//! fork, each a plan (every argument checked, nothing changed) and its application.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use super::args::{MapAlign, Placement, SearchDirection, VmaConfig};
use super::error::VmaError;
use super::region::{ObjectId, VmProt, Vma, VmaKind, MMAP_MIN_ADDR};
use crate::{VirtAddr, PAGE_SIZE, USER_END};

/// Result of [`VmaTree::mmap`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapped<H = ObjectId> {
    /// Start of the new mapping (`[addr, addr + len)`; it may have merged with neighbours).
    pub addr: VirtAddr,
    /// The pieces a [`Placement::Fixed`] mapping replaced, in address order: the caller
    /// unmaps and releases their pages as for `munmap`. Empty for the other placements.
    pub replaced: Vec<Vma<H>>,
}

/// One piece whose permissions [`VmaTree::mprotect`] changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtChange<H = ObjectId> {
    /// The piece, with its new permissions.
    pub piece: Vma<H>,
    /// Its permissions before the call.
    pub old: VmProt,
}

/// The regions of one address space. See docs/mm.md, "VMAs".
#[derive(Clone, Debug)]
pub struct VmaTree<H = ObjectId> {
    /// Regions keyed by start address.
    map: BTreeMap<u64, Vma<H>>,
    /// Sum of the region sizes.
    mapped: u64,
    config: VmaConfig,
    /// Edits committed so far: a [`Plan`] applies only to the version it was made for.
    version: u64,
}

/// A validated edit: the regions to remove and the (merged) ones replacing them.
#[derive(Debug)]
struct Edit<H> {
    remove: Vec<u64>,
    removed_bytes: u64,
    insert: Vec<Vma<H>>,
}

/// A call the tree validated completely and has not carried out yet (docs/mm.md,
/// "Validate, then change"): made by [`VmaTree::plan_mmap`], [`VmaTree::plan_munmap`],
/// [`VmaTree::plan_mprotect`] or [`VmaTree::plan_madvise_dontneed`], carried out by
/// [`VmaTree::apply`], which cannot fail and returns the call's result `T`. Dropping a plan
/// changes nothing.
#[derive(Debug)]
#[must_use = "a plan changes nothing until applied"]
pub struct Plan<H, T> {
    /// The range whose existing pages the call unmaps, re-protects or zaps, if any.
    pages: Option<(u64, u64)>,
    edit: Option<Edit<H>>,
    out: T,
    version: u64,
}

impl<H, T> Plan<H, T> {
    /// The range `[start, end)` whose existing pages the call changes once applied (pages it
    /// unmaps, re-protects or zaps), or `None` if it changes no existing page (an `mmap` that
    /// replaces nothing, an `munmap` of holes only, an `mprotect` to the same permissions).
    /// What the page tables must be ready to change before [`VmaTree::apply`].
    pub fn pages(&self) -> Option<(VirtAddr, VirtAddr)> {
        self.pages.map(|(s, e)| (VirtAddr::new(s), VirtAddr::new(e)))
    }

    /// What [`VmaTree::apply`] will return.
    pub fn output(&self) -> &T {
        &self.out
    }
}

/// Checks a user range: page aligned, non-empty, inside `[0, USER_END)`. Returns `(start, end)`.
fn user_range(addr: VirtAddr, len: u64) -> Result<(u64, u64), VmaError> {
    let a = addr.as_u64();
    if !a.is_multiple_of(PAGE_SIZE) || !len.is_multiple_of(PAGE_SIZE) {
        return Err(VmaError::Unaligned);
    }
    if len == 0 {
        return Err(VmaError::ZeroLength);
    }
    if a >= USER_END {
        return Err(VmaError::NotUser);
    }
    match a.checked_add(len) {
        Some(end) if end <= USER_END => Ok((a, end)),
        _ => Err(VmaError::Overflow),
    }
}

/// The highest multiple of `align` at which `len` bytes fit in `[gs, ge)`.
fn fit_top(gs: u64, ge: u64, len: u64, align: u64) -> Option<u64> {
    if ge <= gs || ge - gs < len {
        return None;
    }
    let a = (ge - len) & !(align - 1);
    (a >= gs).then_some(a)
}

/// The lowest multiple of `align` at which `len` bytes fit in `[gs, ge)`.
fn fit_bottom(gs: u64, ge: u64, len: u64, align: u64) -> Option<u64> {
    let a = gs.checked_add(align - 1)? & !(align - 1);
    (a < ge && ge - a >= len).then_some(a)
}

/// Merges the mergeable neighbours of an address-ordered run of regions.
fn merge_run<H: Clone + Eq>(seq: Vec<Vma<H>>) -> Vec<Vma<H>> {
    let mut out: Vec<Vma<H>> = Vec::with_capacity(seq.len());
    for v in seq {
        if let Some(last) = out.last_mut() {
            if last.mergeable(&v) {
                last.end = v.end;
                continue;
            }
        }
        out.push(v);
    }
    out
}

/// `NotMapped` unless the address-ordered pieces tile `[s, e)` exactly.
fn check_covered<H>(pieces: &[Vma<H>], s: u64, e: u64) -> Result<(), VmaError> {
    let mut at = s;
    for p in pieces {
        if p.start.as_u64() != at {
            return Err(VmaError::NotMapped);
        }
        at = p.end.as_u64();
    }
    if at == e {
        Ok(())
    } else {
        Err(VmaError::NotMapped)
    }
}

impl<H: Clone + Eq> Default for VmaTree<H> {
    fn default() -> Self {
        Self::new()
    }
}

impl<H: Clone + Eq> VmaTree<H> {
    /// An empty address space with the default [`VmaConfig`].
    pub fn new() -> Self {
        Self::with_config(VmaConfig::default())
    }

    /// An empty address space with `config`.
    ///
    /// # Panics
    /// If the search window is not page aligned, not inside `[MMAP_MIN_ADDR, USER_END]`, or
    /// empty (a configuration bug).
    pub fn with_config(config: VmaConfig) -> Self {
        let (lo, hi) = (config.search_low.as_u64(), config.search_high.as_u64());
        assert!(
            lo.is_multiple_of(PAGE_SIZE) && hi.is_multiple_of(PAGE_SIZE),
            "vma: search window not page aligned"
        );
        assert!(
            MMAP_MIN_ADDR <= lo && lo < hi && hi <= USER_END,
            "vma: search window outside [MMAP_MIN_ADDR, USER_END]"
        );
        VmaTree {
            map: BTreeMap::new(),
            mapped: 0,
            config,
            version: 0,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &VmaConfig {
        &self.config
    }

    /// Number of regions.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether nothing is mapped.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Total bytes mapped.
    pub fn mapped_bytes(&self) -> u64 {
        self.mapped
    }

    /// The regions in address order.
    pub fn iter(&self) -> impl Iterator<Item = &Vma<H>> + '_ {
        self.map.values()
    }

    /// The region containing `va` (the fault lookup).
    pub fn find(&self, va: VirtAddr) -> Option<&Vma<H>> {
        self.map
            .range(..=va.as_u64())
            .next_back()
            .map(|(_, v)| v)
            .filter(|v| va < v.end)
    }

    /// The regions intersecting `[start, end)`, in address order, unclipped. Empty if
    /// `end <= start`.
    pub fn overlapping(&self, start: VirtAddr, end: VirtAddr) -> impl Iterator<Item = &Vma<H>> + '_ {
        self.overlap_iter(start.as_u64(), end.as_u64())
    }

    /// Maps `len` bytes: see docs/mm.md ("VMAs") for the placements and the order of the checks.
    /// Returns the start address and, for [`Placement::Fixed`], the replaced pieces.
    /// [`plan_mmap`](Self::plan_mmap) then [`apply`](Self::apply).
    pub fn mmap(
        &mut self,
        placement: Placement,
        len: u64,
        prot: VmProt,
        kind: VmaKind<H>,
        align: MapAlign,
    ) -> Result<Mapped<H>, VmaError> {
        let plan = self.plan_mmap(placement, len, prot, &kind, align)?;
        Ok(self.apply(plan))
    }

    /// Validates [`mmap`](Self::mmap) and plans it, changing nothing. The plan holds its own
    /// clone of `kind`'s handle.
    pub fn plan_mmap(
        &self,
        placement: Placement,
        len: u64,
        prot: VmProt,
        kind: &VmaKind<H>,
        align: MapAlign,
    ) -> Result<Plan<H, Mapped<H>>, VmaError> {
        let a = align.bytes();
        let start = match placement {
            Placement::Fixed(addr) | Placement::FixedNoReplace(addr) => {
                let (s, e) = user_range(addr, len)?;
                if s < MMAP_MIN_ADDR {
                    return Err(VmaError::Reserved);
                }
                if !s.is_multiple_of(a) {
                    return Err(VmaError::FixedMisaligned);
                }
                kind.check_offset(len)?;
                if matches!(placement, Placement::FixedNoReplace(_))
                    && self.overlap_iter(s, e).next().is_some()
                {
                    return Err(VmaError::Exists);
                }
                s
            }
            Placement::Any | Placement::Hint(_) => {
                if !len.is_multiple_of(PAGE_SIZE) {
                    return Err(VmaError::Unaligned);
                }
                if len == 0 {
                    return Err(VmaError::ZeroLength);
                }
                kind.check_offset(len)?;
                let hinted = match placement {
                    Placement::Hint(h) => self.try_hint(h.as_u64(), len, a),
                    _ => None,
                };
                match hinted {
                    Some(s) => s,
                    None => self.find_gap(len, a).ok_or(VmaError::NoSpace)?,
                }
            }
        };
        let end = start + len;
        let replaced = self.clipped(start, end);
        let new = Vma {
            start: VirtAddr::new(start),
            end: VirtAddr::new(end),
            prot,
            kind: kind.clone(),
            flags: align.flags(),
        };
        let edit = self.prepare(start, end, alloc::vec![new])?;
        let pages = (!replaced.is_empty()).then_some((start, end));
        let out = Mapped {
            addr: VirtAddr::new(start),
            replaced,
        };
        Ok(self.plan(pages, Some(edit), out))
    }

    /// Unmaps every mapped page of `[addr, addr + len)`, splitting partially covered regions.
    /// Returns the removed pieces in address order (empty if nothing was mapped). A zero
    /// `len` is [`VmaError::ZeroLength`].
    /// [`plan_munmap`](Self::plan_munmap) then [`apply`](Self::apply).
    pub fn munmap(&mut self, addr: VirtAddr, len: u64) -> Result<Vec<Vma<H>>, VmaError> {
        let plan = self.plan_munmap(addr, len)?;
        Ok(self.apply(plan))
    }

    /// Validates [`munmap`](Self::munmap) and plans it, changing nothing.
    pub fn plan_munmap(&self, addr: VirtAddr, len: u64) -> Result<Plan<H, Vec<Vma<H>>>, VmaError> {
        let (s, e) = user_range(addr, len)?;
        let removed = self.clipped(s, e);
        if removed.is_empty() {
            return Ok(self.plan(None, None, removed));
        }
        let edit = self.prepare(s, e, Vec::new())?;
        Ok(self.plan(Some((s, e)), Some(edit), removed))
    }

    /// Sets the permissions of `[addr, addr + len)`, which must be entirely mapped. Returns
    /// the pieces whose permissions changed, in address order, with their old permissions.
    /// [`plan_mprotect`](Self::plan_mprotect) then [`apply`](Self::apply).
    pub fn mprotect(
        &mut self,
        addr: VirtAddr,
        len: u64,
        prot: VmProt,
    ) -> Result<Vec<ProtChange<H>>, VmaError> {
        let plan = self.plan_mprotect(addr, len, prot)?;
        Ok(self.apply(plan))
    }

    /// Validates [`mprotect`](Self::mprotect) and plans it, changing nothing.
    pub fn plan_mprotect(
        &self,
        addr: VirtAddr,
        len: u64,
        prot: VmProt,
    ) -> Result<Plan<H, Vec<ProtChange<H>>>, VmaError> {
        let (s, e) = user_range(addr, len)?;
        let pieces = self.clipped(s, e);
        check_covered(&pieces, s, e)?;
        if pieces.iter().all(|p| p.prot == prot) {
            return Ok(self.plan(None, None, Vec::new()));
        }
        let middle: Vec<Vma<H>> = pieces.iter().map(|p| Vma { prot, ..p.clone() }).collect();
        let edit = self.prepare(s, e, middle)?;
        let changes = pieces
            .into_iter()
            .filter(|p| p.prot != prot)
            .map(|p| ProtChange {
                old: p.prot,
                piece: Vma { prot, ..p },
            })
            .collect();
        Ok(self.plan(Some((s, e)), Some(edit), changes))
    }

    /// Validates `madvise(addr, len, MADV_DONTNEED)`: the range must be entirely mapped.
    /// Returns its pieces in address order; the caller zaps their pages. The tree does not
    /// change.
    pub fn madvise_dontneed(&self, addr: VirtAddr, len: u64) -> Result<Vec<Vma<H>>, VmaError> {
        Ok(self.plan_madvise_dontneed(addr, len)?.out)
    }

    /// [`madvise_dontneed`](Self::madvise_dontneed) as a plan (whose application changes no
    /// region, only returns the pieces), for callers that handle every call as a plan.
    pub fn plan_madvise_dontneed(&self, addr: VirtAddr, len: u64) -> Result<Plan<H, Vec<Vma<H>>>, VmaError> {
        let (s, e) = user_range(addr, len)?;
        let pieces = self.clipped(s, e);
        check_covered(&pieces, s, e)?;
        Ok(self.plan(Some((s, e)), None, pieces))
    }

    /// Carries out a plan of this tree. Cannot fail.
    ///
    /// # Panics
    /// If the tree changed since the plan was made (a plan is only valid for the tree it
    /// was made from, as it was then).
    pub fn apply<T>(&mut self, plan: Plan<H, T>) -> T {
        assert_eq!(plan.version, self.version, "vma: plan applied to a changed tree");
        if let Some(edit) = plan.edit {
            self.commit(edit);
        }
        plan.out
    }

    /// The child's copy of the tree (same regions, same objects, same configuration). The
    /// caller copies the pages region by region according to [`Vma::fork_policy`].
    pub fn fork(&self) -> Self {
        self.clone()
    }

    /// Removes every region (process exit), returning them in address order.
    pub fn unmap_all(&mut self) -> Vec<Vma<H>> {
        self.version += 1;
        self.mapped = 0;
        core::mem::take(&mut self.map).into_values().collect()
    }

    /// Checks the structural invariants: each region page aligned, non-empty, inside
    /// `[MMAP_MIN_ADDR, USER_END)` with a valid object range; regions sorted and disjoint; no
    /// two neighbours mergeable; the byte count and the region limit respected.
    pub fn check(&self) -> Result<(), &'static str> {
        let mut prev: Option<&Vma<H>> = None;
        let mut total = 0u64;
        for (&key, v) in &self.map {
            let (s, e) = (v.start.as_u64(), v.end.as_u64());
            if key != s {
                return Err("key differs from region start");
            }
            if !s.is_multiple_of(PAGE_SIZE) || !e.is_multiple_of(PAGE_SIZE) {
                return Err("region not page aligned");
            }
            if s >= e {
                return Err("empty region");
            }
            if s < MMAP_MIN_ADDR || e > USER_END {
                return Err("region outside the mappable range");
            }
            if v.kind.check_offset(e - s).is_err() {
                return Err("invalid object offset");
            }
            if let Some(p) = prev {
                if p.end > v.start {
                    return Err("overlapping regions");
                }
                if p.mergeable(v) {
                    return Err("mergeable neighbours");
                }
            }
            total += e - s;
            prev = Some(v);
        }
        if total != self.mapped {
            return Err("mapped byte count out of date");
        }
        if self.map.len() > self.config.max_mappings {
            return Err("more regions than max_mappings");
        }
        Ok(())
    }

    fn overlap_iter(&self, s: u64, e: u64) -> impl Iterator<Item = &Vma<H>> + '_ {
        let e = e.max(s);
        let head = if s < e {
            self.map
                .range(..s)
                .next_back()
                .map(|(_, v)| v)
                .filter(|v| v.end.as_u64() > s)
        } else {
            None
        };
        head.into_iter().chain(self.map.range(s..e).map(|(_, v)| v))
    }

    /// The mapped pieces of `[s, e)`, clipped, in address order.
    fn clipped(&self, s: u64, e: u64) -> Vec<Vma<H>> {
        self.overlap_iter(s, e)
            .map(|v| v.clip(v.start.as_u64().max(s), v.end.as_u64().min(e)))
            .collect()
    }

    /// `h` rounded up to `align`, if `len` bytes there are mappable and free.
    fn try_hint(&self, h: u64, len: u64, align: u64) -> Option<u64> {
        let s = h.checked_add(align - 1)? & !(align - 1);
        let e = s.checked_add(len)?;
        (s >= MMAP_MIN_ADDR && e <= USER_END && self.overlap_iter(s, e).next().is_none()).then_some(s)
    }

    /// First fit in the search window, in the configured direction.
    fn find_gap(&self, len: u64, align: u64) -> Option<u64> {
        let (low, high) = (self.config.search_low.as_u64(), self.config.search_high.as_u64());
        if len > high - low {
            return None;
        }
        match self.config.direction {
            SearchDirection::TopDown => {
                let mut gap_end = high;
                for v in self.map.range(..high).rev().map(|(_, v)| v) {
                    let gap_start = v.end.as_u64().max(low);
                    if let Some(a) = fit_top(gap_start, gap_end, len, align) {
                        return Some(a);
                    }
                    gap_end = gap_end.min(v.start.as_u64());
                    if gap_end <= low {
                        return None;
                    }
                }
                fit_top(low, gap_end, len, align)
            }
            SearchDirection::BottomUp => {
                let mut gap_start = self
                    .map
                    .range(..low)
                    .next_back()
                    .map_or(low, |(_, v)| v.end.as_u64().max(low));
                for v in self.map.range(low..high).map(|(_, v)| v) {
                    if let Some(a) = fit_bottom(gap_start, v.start.as_u64(), len, align) {
                        return Some(a);
                    }
                    gap_start = gap_start.max(v.end.as_u64());
                    if gap_start >= high {
                        return None;
                    }
                }
                fit_bottom(gap_start, high, len, align)
            }
        }
    }

    /// Plans replacing the contents of `[s, e)` by `middle` (address-ordered regions inside
    /// it, possibly with holes): the regions touching the range (overlapping it or adjacent
    /// to it) are removed and replaced by their parts outside the range, `middle`, all merged.
    /// Fails with `TooManyMappings` if that would exceed the limit. Changes nothing.
    fn prepare(&self, s: u64, e: u64, middle: Vec<Vma<H>>) -> Result<Edit<H>, VmaError> {
        let head = self
            .map
            .range(..s)
            .next_back()
            .map(|(_, v)| v)
            .filter(|v| v.end.as_u64() >= s);
        let window: Vec<&Vma<H>> = head
            .into_iter()
            .chain(self.map.range(s..=e).map(|(_, v)| v))
            .collect();
        let mut seq = Vec::with_capacity(middle.len() + 2);
        if let Some(first) = window.first() {
            if first.start.as_u64() < s {
                seq.push(first.clip(first.start.as_u64(), first.end.as_u64().min(s)));
            }
        }
        seq.extend(middle);
        if let Some(last) = window.last() {
            if last.end.as_u64() > e {
                seq.push(last.clip(last.start.as_u64().max(e), last.end.as_u64()));
            }
        }
        let insert = merge_run(seq);
        let after = self.map.len() - window.len() + insert.len();
        if after > self.config.max_mappings && after > self.map.len() {
            return Err(VmaError::TooManyMappings);
        }
        Ok(Edit {
            remove: window.iter().map(|v| v.start.as_u64()).collect(),
            removed_bytes: window.iter().map(|v| v.len()).sum(),
            insert,
        })
    }

    fn plan<T>(&self, pages: Option<(u64, u64)>, edit: Option<Edit<H>>, out: T) -> Plan<H, T> {
        Plan {
            pages,
            edit,
            out,
            version: self.version,
        }
    }

    fn commit(&mut self, edit: Edit<H>) {
        self.version += 1;
        for k in edit.remove {
            self.map.remove(&k);
        }
        self.mapped -= edit.removed_bytes;
        for v in edit.insert {
            self.mapped += v.len();
            self.map.insert(v.start.as_u64(), v);
        }
    }
}
