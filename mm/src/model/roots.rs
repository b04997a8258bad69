//! Setting the model up (allocation failures, logging, FEAT_TLBIRANGE), the registry of roots
//! and their ASIDs, and the links of table frames into them.

use std::collections::{HashMap, HashSet};

use super::show::describe_parent;
use super::{AllocFailure, Counters, Event, Link, Model, ModelRoot, Snapshot, Tag, FRAME_BASE};
use crate::{Asid, Descriptor, DescriptorKind, Level, PhysAddr, ENTRIES, KERNEL_BASE};

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

    pub(super) fn event(&mut self, e: Event) {
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
    pub(super) fn link(
        &mut self,
        frame: u64,
        root: u64,
        level: Level,
        va_base: u64,
        parent: Option<(u64, usize)>,
    ) {
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
    pub(super) fn unlink(&mut self, frame: u64, root: u64) {
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
