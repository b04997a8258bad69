//! A checking model of the machine the engine runs on (host tests, and crates built on this
//! one with the `model` feature): simulated table memory, an MMU walker, a TLB and walk cache
//! that stay stale until the right TLBI, and checks that panic with the VA, PA, level and
//! descriptors involved when the engine breaks an architectural rule (break-before-make,
//! TLB coherence, the Contiguous bit, table lifetimes and publication, shared level-3
//! tables, ASIDs). The list of checks is in docs/mm.md ("The hardware model").
//!
//! This file holds the model's state; `roots.rs` its setup and the registry of roots and
//! table links; `platform.rs` the [`Platform`](crate::Platform) implementation (descriptor writes and TLB
//! maintenance, checked); `mmu.rs` the walker, TLB and walk cache; `checks.rs` the whole-state
//! checks; `show.rs` how descriptors are described in panic messages.

mod checks;
mod mmu;
mod platform;
mod roots;
mod show;

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::{Asid, Descriptor, Level, PhysAddr, TlbOp, ENTRIES};

pub use crate::{Access, El, FaultKind};
pub use mmu::{Fault, Perms};
pub(crate) use platform::Writer;
pub(crate) use show::show;

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

/// The simulated machine. See docs/mm.md, "The hardware model".
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
