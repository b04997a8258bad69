//! A checking model of the machine the engine runs on (host tests only).
//!
//! [`Model`] implements [`Platform`] over simulated physical memory for table frames and
//! simulates what the engine must be correct against:
//!
//! * **the table walker** ([`Model::access`], [`Model::table_walk`]): walks from a root for an
//!   ASID and a VA as the MMU does, honouring table/block/page descriptors, AF (access flag
//!   fault), AP / PXN / UXN, the implicit PXN of EL0-writable memory, and the hierarchical
//!   APTable / PXNTable / UXNTable limits; faults are reported with kind and level;
//! * **a TLB and a walk cache** that keep returning what they cached until a TLBI that
//!   architecturally covers the entry: VA / ASID / global matching, last-level forms sparing
//!   the walk cache, the TTL hint (a wrong hint invalidates nothing), range operations. An
//!   access goes through the TLB first, then through the deepest matching walk-cache entry.
//!   [`Model::fill_all`] touches every mapping of every registered root, standing for the
//!   speculative walks a real MMU may do at any time;
//! * **contiguous groups** pessimistically: a walk that finds a leaf with the Contiguous bit
//!   caches *both* a per-entry TLB entry and a combined entry for the whole 16-entry group
//!   (what an implementation may do either way). The combined entry is removed by any TLBI
//!   that touches the group; the per-entry ones only by TLBIs of their own page — so the
//!   engine must invalidate every page of a group it changes, and a fold or unfold without a
//!   complete invalidation leaves a stale entry (or a pending break) that is caught. A cached
//!   entry with the bit may have been built from any entry of its group, so coherence compares
//!   its permissions with the union of the group's current entries (the hardware may have
//!   marked any one of them dirty);
//! * **hardware access/dirty updates** ([`Model::hw_update`]): tests simulate FEAT_HAFDBS
//!   by setting AF and clearing AP\[2\] of a DBM entry — of any one entry of a contiguous
//!   group, as the hardware may. The MMU itself does not update descriptors: an access to an
//!   entry with AF clear takes an Access flag fault, a write to a clean (read-only) entry a
//!   Permission fault;
//! * **a log** of every write, maintenance batch, barrier, allocation and free, plus counters.
//!
//! It panics (a test failure) with the VA, PA, level and descriptors involved when:
//!
//! * (a) a live valid descriptor is replaced by a different valid one without
//!   break-before-make where the architecture requires it (output address, memory type,
//!   shareability, NS, nG, Contiguous, block ↔ table, next-table address), either directly or
//!   by re-validating a broken entry before a covering TLBI completed;
//! * (b) [`Model::check_tlb_coherent`]: a cached leaf or walk-cache entry no longer matches the
//!   tables (except a cached leaf strictly *less* permissive than the current one, which only
//!   causes a spurious permission fault; AF is not compared: clearing it needs no TLBI);
//! * (c) [`Model::check_contiguous`]: a leaf with the Contiguous bit is not part of a correct
//!   16-entry aligned group (all valid leaves with the bit, consecutive output addresses, the
//!   first aligned to the group size, identical attributes but for AF, the dirty state AP\[2\]
//!   of DBM entries and the software bits, which the hardware ignores);
//! * (d) a table frame is freed while a live descriptor or a walk-cache entry references it,
//!   or freed twice; a table frame is linked twice (other than a shared level-3 table, below);
//!   a descriptor is written to or the MMU walks into a frame that is not an allocated table;
//! * (e) a table is linked into a live tree before a barrier (`publish` or a maintenance
//!   batch, both starting with `DSB ISHST`) has made its contents and its zeroing visible to
//!   the walker;
//! * (f) a descriptor is written into a level-3 table that is currently shared by several
//!   roots (below): shared tables are read-only, the sharing must be broken first;
//! * [`Model::check_shared_read_only`]: a shared level-3 table is reachable through a path
//!   whose table descriptors do not deny writes (APTable\[1\]);
//! * [`Model::check_no_orphans`]: an allocated table frame is not reachable from a root (leak);
//! * two live user roots are registered with the same ASID ([`Model::add_root`],
//!   [`Model::set_root_asid`]): their TLB entries would mix.
//!
//! "Live" means reachable from a registered root ([`Model::add_root`]); frames being filled
//! before they are linked are not live. A root is [`retire`](Model::retire_root)d before it
//! is destroyed (standing for "no TTBR points to it any more").
//!
//! # Shared level-3 tables
//!
//! Copy-on-write page tables make one level-3 table frame reachable from several user roots:
//! at fork the child's level-2 descriptor points at the parent's level-3 table for the same
//! VA range, both level-2 descriptors carrying APTable = NoWrite. The model keeps a *multiset*
//! of links per frame (root, level, VA base): a frame may be linked again only if it is a
//! level-3 table, from a root that does not link it yet, for the same VA base; anything else
//! is "linked twice". Walks, the walk cache and the TLB stay per root / ASID, each honouring
//! the hierarchical limits of its own root's table descriptors. While a table is shared:
//!
//! * any descriptor write into it panics (f) — the only exception is a simulated hardware
//!   access-flag update ([`Model::hw_update`]; the hardware never marks an entry dirty through
//!   APTable = NoWrite);
//! * it cannot be freed while any root links it (d);
//! * [`Model::check_shared_read_only`] (part of [`Model::check_all`]) requires every path to
//!   it to deny writes.
//!
//! Sharing is broken per root: replacing that root's level-2 descriptor (break-before-make
//! as for any next-table address change, (a)), or writing it invalid, removes that root's
//! link only (and, for a replacement, links the new table). Once a single root links the
//! table it is an ordinary table again: writes into it are checked as usual, and clearing
//! APTable on its level-2 descriptor in place (same next-table address) is a permission
//! change, not a break-before-make case — [`Model::check_tlb_coherent`] then tolerates
//! cached entries that are stricter than the tables, and catches cached entries that are
//! more permissive (a reduction of the hierarchical limits without a TLBI).

mod checks;
mod mmu;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;

use crate::{
    Asid, Descriptor, DescriptorKind, Level, OutOfMemory, PhysAddr, Platform, TlbOp, ENTRIES, KERNEL_BASE,
    PAGE_SIZE,
};

pub use crate::{Access, El, FaultKind};
pub use mmu::{Fault, Perms};

/// First simulated physical address handed out for table frames.
pub const FRAME_BASE: u64 = 0x8_0000_0000;

/// Tag of a TLB or walk-cache entry: global, or the ASID it was cached under.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tag {
    /// Matches every ASID.
    Global,
    /// Matches one ASID.
    Asid(u16),
}

/// What a registered root is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelRoot {
    /// TTBR1 tree. Non-global kernel leaves are cached under ASID 0.
    Kernel,
    /// TTBR0 tree running with `asid`.
    User {
        /// Current ASID.
        asid: Asid,
    },
}

/// When `alloc_table` fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllocFailure {
    /// Never.
    Never,
    /// The n-th call (1-based) after this policy was set, once.
    Nth(u64),
    /// Every n-th call after this policy was set.
    Every(u64),
}

/// One logged event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A descriptor write; `live` if the frame was reachable from a root.
    Write {
        /// Table frame.
        table: PhysAddr,
        /// Slot.
        index: usize,
        /// Previous value.
        old: Descriptor,
        /// New value.
        new: Descriptor,
        /// Whether the frame was live.
        live: bool,
    },
    /// A barrier-bracketed maintenance batch.
    Maintenance(Vec<TlbOp>),
    /// `DSB ISHST; ISB`.
    Publish,
    /// A frame was allocated.
    Alloc(PhysAddr),
    /// An allocation was refused.
    AllocFailed,
    /// A frame was freed.
    Free(PhysAddr),
}

/// Event counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// All descriptor writes.
    pub writes: u64,
    /// Writes into live tables.
    pub live_writes: u64,
    /// `VAE1IS`/`VALE1IS`.
    pub tlbi_va: u64,
    /// `VAAE1IS`/`VAALE1IS`.
    pub tlbi_va_all_asids: u64,
    /// Range TLBIs.
    pub tlbi_range: u64,
    /// `ASIDE1IS`.
    pub tlbi_asid: u64,
    /// `VMALLE1IS`.
    pub tlbi_all: u64,
    /// Maintenance batches.
    pub batches: u64,
    /// Publishes.
    pub publishes: u64,
    /// Successful allocations.
    pub allocs: u64,
    /// Refused allocations.
    pub alloc_failures: u64,
    /// Frees.
    pub frees: u64,
}

/// Where a live table frame sits, as seen from one root (a shared level-3 table has one link
/// per root that reaches it, all at the same level and VA base).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Link {
    pub root: u64,
    pub level: Level,
    pub va_base: u64,
}

/// Accumulated hierarchical limits from table descriptors.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Hier {
    /// APTable\[0\] seen.
    pub no_el0: bool,
    /// APTable\[1\] seen.
    pub no_write: bool,
    /// PXNTable seen.
    pub pxn: bool,
    /// UXNTable seen.
    pub uxn: bool,
}

impl Hier {
    pub(crate) fn with(self, d: Descriptor) -> Hier {
        let ap = d.ap_table();
        Hier {
            no_el0: self.no_el0 || ap.denies_el0(),
            no_write: self.no_write || ap.denies_write(),
            pxn: self.pxn || d.pxn_table(),
            uxn: self.uxn || d.uxn_table(),
        }
    }
    /// Whether every limit of `self` is also in `other` (other is at least as strict).
    pub(crate) fn within(self, other: Hier) -> bool {
        (!self.no_el0 || other.no_el0)
            && (!self.no_write || other.no_write)
            && (!self.pxn || other.pxn)
            && (!self.uxn || other.uxn)
    }
}

/// A cached leaf translation.
///
/// `span` is what it translates: the leaf's own size, or — for a leaf with the Contiguous
/// bit — 16 times that, the *combined* entry an implementation may build for the whole
/// aligned group (the model caches both kinds, see [`Model::translate_cached`]). `desc` is the
/// descriptor the entry was built from; a combined entry translates `e.va + off` to the
/// group's base output address + `off`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TlbLeaf {
    pub root: u64,
    pub tag: Tag,
    pub va: u64,
    pub level: Level,
    pub span: u64,
    pub desc: Descriptor,
    pub hier: Hier,
}

impl TlbLeaf {
    /// Output address of the first byte of the entry.
    pub(crate) fn base(&self) -> u64 {
        self.desc.output_address(self.level).0 & !(self.span - 1)
    }
}

/// Key of a TLB entry: tag, first address, span.
pub(crate) type TlbKey = (Tag, u64, u64);

/// A cached table descriptor (walk cache): `desc` was read at `level` for `[va, va + size)`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WalkEntry {
    pub root: u64,
    pub tag: Tag,
    pub va: u64,
    pub level: Level,
    pub desc: Descriptor,
    pub hier: Hier,
}

/// A live entry written invalid, waiting for its covering TLBI.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PendingBreak {
    pub old: Descriptor,
    pub level: Level,
    pub va: u64,
    pub tag: Tag,
    pub covered: bool,
}

/// The simulated machine. See the module docs.
pub struct Model {
    frames: HashMap<u64, Box<[u64; ENTRIES]>>,
    free_list: Vec<u64>,
    next_frame: u64,
    alloc_calls: u64,
    failure: AllocFailure,
    has_range: bool,
    pub(crate) roots: HashMap<u64, ModelRoot>,
    /// The links of every live frame: exactly one, except for a level-3 table shared by
    /// several roots (one per root, same level and VA base). Never an empty `Vec`.
    pub(crate) links: HashMap<u64, Vec<Link>>,
    pub(crate) tlb: HashMap<TlbKey, TlbLeaf>,
    pub(crate) walk_cache: Vec<WalkEntry>,
    pub(crate) breaks: HashMap<(u64, usize), PendingBreak>,
    /// Frames allocated or written since the last barrier (`publish` or a maintenance
    /// batch, both of which start with `DSB ISHST`).
    unpublished: HashSet<u64>,
    /// Everything that happened, in order (if logging is on).
    pub log: Vec<Event>,
    logging: bool,
    /// Event counters.
    pub counters: Counters,
}

impl Default for Model {
    fn default() -> Self {
        Model::new()
    }
}

/// A copy of every allocated frame's contents, to check "nothing changed".
pub type Snapshot = BTreeMap<u64, Vec<u64>>;

impl Model {
    /// A machine without FEAT_TLBIRANGE, logging on, allocations never failing.
    pub fn new() -> Model {
        Model {
            frames: HashMap::new(),
            free_list: Vec::new(),
            next_frame: FRAME_BASE,
            alloc_calls: 0,
            failure: AllocFailure::Never,
            has_range: false,
            roots: HashMap::new(),
            links: HashMap::new(),
            tlb: HashMap::new(),
            walk_cache: Vec::new(),
            breaks: HashMap::new(),
            unpublished: HashSet::new(),
            log: Vec::new(),
            logging: true,
            counters: Counters::default(),
        }
    }

    /// Sets whether FEAT_TLBIRANGE is present.
    pub fn with_tlbi_range(mut self, on: bool) -> Model {
        self.has_range = on;
        self
    }

    /// Turns the event log on or off (counters are always kept).
    pub fn set_logging(&mut self, on: bool) {
        self.logging = on;
    }

    /// Empties the event log.
    pub fn clear_log(&mut self) {
        self.log.clear();
    }

    /// Sets when allocations fail; call counting restarts.
    pub fn set_alloc_failure(&mut self, f: AllocFailure) {
        self.failure = f;
        self.alloc_calls = 0;
    }

    /// Allocated table frames.
    pub fn live_frames(&self) -> usize {
        self.frames.len()
    }

    /// Cached leaf entries.
    pub fn tlb_len(&self) -> usize {
        self.tlb.len()
    }

    /// Cached walk-cache entries.
    pub fn walk_cache_len(&self) -> usize {
        self.walk_cache.len()
    }

    /// The contents of every allocated frame.
    pub fn snapshot(&self) -> Snapshot {
        self.frames.iter().map(|(pa, f)| (*pa, f.to_vec())).collect()
    }

    fn event(&mut self, e: Event) {
        if self.logging {
            self.log.push(e);
        }
    }

    pub(crate) fn frame(&self, pa: u64) -> Option<&[u64; ENTRIES]> {
        self.frames.get(&pa).map(|b| &**b)
    }

    /// Registers `pa` as a root the MMU may walk.
    pub fn add_root(&mut self, pa: PhysAddr, kind: ModelRoot) {
        assert!(
            self.frames.contains_key(&pa.0),
            "root {pa:?} is not an allocated frame"
        );
        assert!(!self.roots.contains_key(&pa.0), "root {pa:?} registered twice");
        if let ModelRoot::User { asid } = kind {
            self.check_asid_free(asid);
        }
        self.roots.insert(pa.0, kind);
        let va_base = match kind {
            ModelRoot::Kernel => KERNEL_BASE,
            ModelRoot::User { .. } => 0,
        };
        self.link(pa.0, pa.0, Level::L0, va_base, None);
    }

    /// Unregisters a root: no TTBR points to it any more. Its tables become unreachable
    /// (cached entries remain until invalidated).
    pub fn retire_root(&mut self, pa: PhysAddr) {
        assert!(self.roots.remove(&pa.0).is_some(), "retiring unknown root {pa:?}");
        self.unlink(pa.0, pa.0);
    }

    /// Whether a registered user root runs with `asid`.
    pub fn asid_in_use(&self, asid: Asid) -> bool {
        self.roots
            .values()
            .any(|r| matches!(r, ModelRoot::User { asid: a } if *a == asid))
    }

    /// Two live user roots with one ASID would share TLB entries: refused.
    fn check_asid_free(&self, asid: Asid) {
        assert!(
            !self.asid_in_use(asid),
            "two live user roots with {asid:?}: their TLB entries would mix"
        );
    }

    /// Records that a user root now runs with `asid`.
    pub fn set_root_asid(&mut self, pa: PhysAddr, asid: Asid) {
        if self.roots.get(&pa.0) != Some(&ModelRoot::User { asid }) {
            self.check_asid_free(asid);
        }
        match self.roots.get_mut(&pa.0) {
            Some(ModelRoot::User { asid: a }) => *a = asid,
            other => panic!("set_root_asid on {pa:?}: {other:?}"),
        }
    }

    /// The tag a live entry of `root` holding `d` at `level` is cached under.
    pub(crate) fn tag_for(&self, root: u64, level: Level, d: Descriptor) -> Tag {
        let leaf = d.is_leaf(level);
        match self.roots.get(&root) {
            Some(ModelRoot::User { asid }) => {
                if leaf && !d.ng() {
                    Tag::Global
                } else {
                    Tag::Asid(asid.0)
                }
            }
            _ => {
                if leaf && d.ng() {
                    Tag::Asid(0)
                } else {
                    Tag::Global
                }
            }
        }
    }

    /// Marks the tree under `frame` live for `root`, `frame` being the `level` table for the
    /// VA range from `va_base`. A level-3 table already linked from other roots at the same
    /// VA base gets one more link (a shared table); any other second link panics.
    fn link(&mut self, frame: u64, root: u64, level: Level, va_base: u64, parent: Option<(u64, usize)>) {
        let Some(contents) = self.frames.get(&frame) else {
            panic!(
                "table descriptor {} points to {frame:#x}, which is not an allocated table frame",
                describe_parent(parent)
            );
        };
        if let Some(existing) = self.links.get(&frame) {
            let first = existing[0];
            let why = if level != Level::L3 || first.level != Level::L3 {
                Some("only level-3 tables may be shared between roots")
            } else if existing.iter().any(|l| l.root == root) {
                Some("twice in the same root")
            } else if first.va_base != va_base {
                Some("a shared table must translate the same VA range in every root")
            } else {
                None
            };
            if let Some(why) = why {
                let new = Link { root, level, va_base };
                panic!(
                    "table frame {frame:#x} linked twice: {} points to it as the {level} table for VA \
                     {va_base:#x} of {}, but it is already the {} table for VA {:#x} of {} ({why})",
                    describe_parent(parent),
                    self.describe_sharers(&[new]),
                    first.level,
                    first.va_base,
                    self.describe_sharers(existing)
                );
            }
        }
        if parent.is_some() && self.unpublished.contains(&frame) {
            panic!(
                "table frame {frame:#x} linked into a live tree ({}) before its contents (or its \
                 zeroing) were published: missing DSB ISHST between filling and linking",
                describe_parent(parent)
            );
        }
        let children: Vec<(usize, u64)> = match level.next() {
            Some(_) => contents
                .iter()
                .enumerate()
                .filter_map(|(i, &d)| match Descriptor(d).kind(level) {
                    DescriptorKind::Table { next } => Some((i, next.0)),
                    _ => None,
                })
                .collect(),
            None => Vec::new(),
        };
        self.links
            .entry(frame)
            .or_default()
            .push(Link { root, level, va_base });
        if let Some(child_level) = level.next() {
            for (i, next) in children {
                let va = va_base.wrapping_add((i as u64) << level.shift());
                self.link(next, root, child_level, va, Some((frame, i)));
            }
        }
    }

    /// Marks the tree under `frame` not live for `root`: removes `root`'s link of `frame` and,
    /// recursively, of the tables under it. Other roots' links (of a shared level-3 table)
    /// stay.
    fn unlink(&mut self, frame: u64, root: u64) {
        let Some(links) = self.links.get_mut(&frame) else {
            return;
        };
        let Some(pos) = links.iter().position(|l| l.root == root) else {
            return;
        };
        let link = links.swap_remove(pos);
        if links.is_empty() {
            self.links.remove(&frame);
        }
        if link.level.next().is_some() {
            let contents = self.frames.get(&frame).expect("linked frame allocated");
            let children: Vec<u64> = contents
                .iter()
                .filter_map(|&d| match Descriptor(d).kind(link.level) {
                    DescriptorKind::Table { next } => Some(next.0),
                    _ => None,
                })
                .collect();
            for c in children {
                self.unlink(c, root);
            }
        }
    }
}

fn describe_parent(parent: Option<(u64, usize)>) -> String {
    match parent {
        Some((t, i)) => format!("at {t:#x}[{i}]"),
        None => "(root)".to_string(),
    }
}

/// Why replacing valid `old` by valid `new` at `level` needs break-before-make, if it does.
pub(crate) fn bbm_reason(level: Level, old: Descriptor, new: Descriptor) -> Option<&'static str> {
    use crate::bits;
    let (ok, nk) = (old.kind(level), new.kind(level));
    match (ok, nk) {
        (DescriptorKind::Table { next: a }, DescriptorKind::Table { next: b }) => {
            (a != b).then_some("next-level table address changed")
        }
        (DescriptorKind::Table { .. }, _) => Some("table replaced by a block"),
        (_, DescriptorKind::Table { .. }) => Some("block replaced by a table"),
        _ => {
            let diff = old.0 ^ new.0;
            if old.output_address(level) != new.output_address(level) {
                Some("output address changed")
            } else if diff & bits::ATTR_INDX != 0 {
                Some("memory type (AttrIndx) changed")
            } else if diff & bits::SH != 0 {
                Some("shareability changed")
            } else if diff & bits::NS != 0 {
                Some("NS changed")
            } else if diff & bits::NG != 0 {
                Some("nG changed")
            } else if diff & bits::CONTIGUOUS != 0 {
                Some("Contiguous bit changed")
            } else {
                None
            }
        }
    }
}

fn kind_str(level: Level, d: Descriptor) -> String {
    match d.kind(level) {
        DescriptorKind::Invalid => "invalid".into(),
        DescriptorKind::Table { next } => format!("table -> {next:?}"),
        DescriptorKind::Block { oa } => format!("block {oa:?}"),
        DescriptorKind::Page { oa } => format!("page {oa:?}"),
    }
}

/// `0x… (kind)` for messages.
pub(crate) fn show(level: Level, d: Descriptor) -> String {
    format!("{:#018x} ({})", d.0, kind_str(level, d))
}

// SAFETY: the model keeps descriptors in its own simulated memory and checks every step
// against the architecture; it writes no real physical memory.
unsafe impl Platform for Model {
    fn read(&self, table: PhysAddr, index: usize) -> Descriptor {
        let f = self.frames.get(&table.0).unwrap_or_else(|| {
            panic!("descriptor read from {table:?}[{index}], which is not an allocated table frame")
        });
        Descriptor(f[index])
    }

    fn write(&mut self, table: PhysAddr, index: usize, new: Descriptor) {
        self.write_desc(table, index, new, Writer::Software);
    }

    fn alloc_table(&mut self) -> Result<PhysAddr, OutOfMemory> {
        self.alloc_calls += 1;
        let fail = match self.failure {
            AllocFailure::Never => false,
            AllocFailure::Nth(n) => self.alloc_calls == n,
            AllocFailure::Every(n) => self.alloc_calls.is_multiple_of(n),
        };
        if fail {
            self.counters.alloc_failures += 1;
            self.event(Event::AllocFailed);
            return Err(OutOfMemory);
        }
        let pa = self.free_list.pop().unwrap_or_else(|| {
            let pa = self.next_frame;
            self.next_frame += PAGE_SIZE;
            pa
        });
        self.frames.insert(pa, Box::new([0; ENTRIES]));
        self.unpublished.insert(pa);
        self.counters.allocs += 1;
        self.event(Event::Alloc(PhysAddr(pa)));
        Ok(PhysAddr(pa))
    }

    fn free_table(&mut self, table: PhysAddr) {
        let t = table.0;
        if !self.frames.contains_key(&t) {
            panic!("free of {table:?}, which is not an allocated table frame (double free?)");
        }
        if self.roots.contains_key(&t) {
            panic!("root table {table:?} freed while still registered (retire it first)");
        }
        if let Some(links) = self.links.get(&t) {
            let l = links[0];
            panic!(
                "table frame {table:?} freed while a live descriptor references it: it is the {} \
                 table for VA {:#x} of {}{}",
                l.level,
                l.va_base,
                self.describe_sharers(links),
                if links.len() > 1 {
                    format!(" (shared by {} roots)", links.len())
                } else {
                    String::new()
                }
            );
        }
        if let Some(w) = self.walk_cache.iter().find(|w| w.desc.next_table() == table) {
            panic!(
                "table frame {table:?} freed while a walk-cache entry still references it: {} \
                 descriptor {} for VA {:#x} ({:?}) — missing non-leaf TLBI",
                w.level,
                show(w.level, w.desc),
                w.va,
                w.tag
            );
        }
        self.frames.remove(&t);
        self.unpublished.remove(&t);
        self.breaks.retain(|(f, _), _| *f != t);
        self.free_list.push(t);
        self.counters.frees += 1;
        self.event(Event::Free(table));
    }

    fn tlb_maintenance(&mut self, ops: &[TlbOp]) {
        self.counters.batches += 1;
        self.unpublished.clear();
        for op in ops {
            self.check_op(op);
            match op {
                TlbOp::Va { .. } => self.counters.tlbi_va += 1,
                TlbOp::VaAllAsids { .. } => self.counters.tlbi_va_all_asids += 1,
                TlbOp::Range(_) => self.counters.tlbi_range += 1,
                TlbOp::Asid(_) => self.counters.tlbi_asid += 1,
                TlbOp::All => self.counters.tlbi_all += 1,
            }
            self.invalidate(op);
        }
        self.event(Event::Maintenance(ops.to_vec()));
    }

    fn publish(&mut self) {
        self.unpublished.clear();
        self.counters.publishes += 1;
        self.event(Event::Publish);
    }

    fn has_tlbi_range(&self) -> bool {
        self.has_range
    }
}

/// Who writes a descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Writer {
    /// The engine, through [`Platform::write`].
    Software,
    /// The simulated hardware access-flag / dirty-state update ([`Model::hw_update`]).
    Hardware,
}

impl Model {
    /// [`Platform::write`], also used by the simulated hardware updates (which may set AF in
    /// a shared table, where software may not write).
    pub(crate) fn write_desc(&mut self, table: PhysAddr, index: usize, new: Descriptor, writer: Writer) {
        let t = table.0;
        let Some(frame) = self.frames.get(&t) else {
            panic!(
                "descriptor write of {new:?} to {table:?}[{index}], which is not an allocated table frame"
            );
        };
        let old = Descriptor(frame[index]);
        let link = match self.links.get(&t).map(Vec::as_slice) {
            None => None,
            Some([l]) => Some(*l),
            Some(shared) => {
                self.check_shared_write(table, index, old, new, shared, writer);
                Some(shared[0])
            }
        };
        self.frames.get_mut(&t).expect("checked above")[index] = new.0;
        self.counters.writes += 1;
        self.unpublished.insert(t);
        self.event(Event::Write {
            table,
            index,
            old,
            new,
            live: link.is_some(),
        });
        let Some(link) = link else {
            return;
        };
        self.counters.live_writes += 1;
        let level = link.level;
        let va = link.va_base.wrapping_add((index as u64) << level.shift());
        let old_k = old.kind(level);
        let new_k = new.kind(level);
        let old_valid = old_k != DescriptorKind::Invalid;
        let new_valid = new_k != DescriptorKind::Invalid;

        // (a) break-before-make.
        if old_valid && new_valid && old != new {
            if let Some(reason) = bbm_reason(level, old, new) {
                panic!(
                    "break-before-make violation at VA {va:#x}, {level} (table {table:?}[{index}]): \
                     live entry {} replaced in place by {}: {reason}",
                    show(level, old),
                    show(level, new)
                );
            }
        }
        if !old_valid && new_valid {
            if let Some(b) = self.breaks.remove(&(t, index)) {
                if !b.covered {
                    if let Some(reason) = bbm_reason(level, b.old, new) {
                        panic!(
                            "break-before-make violation at VA {va:#x}, {level} (table {table:?}[{index}]): \
                             entry {} was broken but no TLBI covering it completed before {} was \
                             written ({reason})",
                            show(level, b.old),
                            show(level, new)
                        );
                    }
                }
            }
        }
        if old_valid && !new_valid {
            let tag = self.tag_for(link.root, level, old);
            self.breaks.insert(
                (t, index),
                PendingBreak {
                    old,
                    level,
                    va,
                    tag,
                    covered: false,
                },
            );
        }

        // Structure (a change of hierarchical attributes keeps the same child).
        let same_child = matches!((old_k, new_k),
            (DescriptorKind::Table { next: a }, DescriptorKind::Table { next: b }) if a == b);
        if !same_child {
            if let DescriptorKind::Table { next } = old_k {
                self.unlink(next.0, link.root);
            }
            if let DescriptorKind::Table { next } = new_k {
                let child = level.next().expect("tables only above level 3");
                self.link(next.0, link.root, child, va, Some((t, index)));
            }
        }
    }

    /// (f) A write into a table linked by several roots: refused for software; for the
    /// hardware only an access-flag update is possible (no dirty update through
    /// APTable = NoWrite).
    fn check_shared_write(
        &self,
        table: PhysAddr,
        index: usize,
        old: Descriptor,
        new: Descriptor,
        shared: &[Link],
        writer: Writer,
    ) {
        let level = shared[0].level;
        if writer == Writer::Hardware && (old.0 ^ new.0) & !crate::bits::AF == 0 {
            return;
        }
        let va = shared[0].va_base.wrapping_add((index as u64) << level.shift());
        panic!(
            "{} write into a level-3 table shared by {} roots ({}; table {table:?}[{index}], VA \
             {va:#x}): {} replaced by {}: shared tables are read-only; break the sharing first",
            match writer {
                Writer::Software => "descriptor",
                Writer::Hardware => "hardware (other than AF)",
            },
            shared.len(),
            self.describe_sharers(shared),
            show(level, old),
            show(level, new)
        );
    }

    /// `root 0x… (ASID 7), root 0x… (ASID 8)` for messages.
    fn describe_sharers(&self, links: &[Link]) -> String {
        let mut roots: Vec<u64> = links.iter().map(|l| l.root).collect();
        roots.sort_unstable();
        roots
            .iter()
            .map(|r| match self.roots.get(r) {
                Some(ModelRoot::User { asid }) => format!("root {r:#x} (ASID {})", asid.0),
                Some(ModelRoot::Kernel) => format!("kernel root {r:#x}"),
                None => format!("root {r:#x} (not registered)"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The roots that currently link `table` (several for a shared level-3 table), sorted;
    /// empty if it is not live.
    pub fn table_sharers(&self, table: PhysAddr) -> Vec<PhysAddr> {
        let mut roots: Vec<PhysAddr> = self
            .links
            .get(&table.0)
            .into_iter()
            .flatten()
            .map(|l| PhysAddr(l.root))
            .collect();
        roots.sort_unstable_by_key(|r| r.0);
        roots
    }
}

impl Model {
    fn check_op(&self, op: &TlbOp) {
        let mut msg = String::new();
        match *op {
            TlbOp::Va { va, level, .. } | TlbOp::VaAllAsids { va, level, .. } => {
                if level == Some(Level::L0) {
                    let _ = write!(msg, "TTL hint level 0 is reserved for 4K pages: {op:?}");
                }
                let _ = va;
            }
            TlbOp::Range(r) => {
                if !self.has_range {
                    let _ = write!(msg, "range TLBI without FEAT_TLBIRANGE: {op:?}");
                } else if r.scale > 3 || r.num > 31 || !r.base.is_aligned(PAGE_SIZE) {
                    let _ = write!(msg, "unencodable range TLBI: {op:?}");
                } else if r.level == Some(Level::L0) {
                    let _ = write!(msg, "range TLBI TTL cannot name level 0: {op:?}");
                } else if (r.base.0 >= KERNEL_BASE) != (r.base.0.wrapping_add(r.len() - 1) >= KERNEL_BASE) {
                    let _ = write!(msg, "range TLBI crosses a half of the address space: {op:?}");
                }
            }
            TlbOp::Asid(_) | TlbOp::All => {}
        }
        assert!(msg.is_empty(), "{msg}");
    }
}
