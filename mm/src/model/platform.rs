//! The model as the engine's [`Platform`]: descriptor writes checked against
//! break-before-make and shared tables, table allocation and freeing, TLB maintenance and
//! barriers.

use std::fmt::Write as _;

use super::show::show;
use super::{AllocFailure, Event, Link, Model, ModelRoot, PendingBreak};
use crate::{
    Descriptor, DescriptorKind, Level, OutOfMemory, PhysAddr, Platform, TlbOp, ENTRIES, KERNEL_BASE,
    PAGE_SIZE,
};

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
    pub(super) fn describe_sharers(&self, links: &[Link]) -> String {
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
