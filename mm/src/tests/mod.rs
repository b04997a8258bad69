//! Host tests of the engine against the hardware model.
//!
//! * `units`: addresses, levels, descriptors, attributes, TLB policy, and the engine's
//!   operations one by one (blocks, splits, boundaries at the top of each half, errors,
//!   counters);
//! * `model_semantics`: the model itself — faults, TLB staleness, and negative tests that
//!   deliberately break the rules and must be caught;
//! * `oom`: allocation failure at every possible point leaves the tables untouched;
//! * `props`: random operation sequences on both roots against a reference map;
//! * `asids`: the ASID allocator, including rollover with tiny widths;
//! * `contpte`: the Contiguous bit and the PTE-level API operation by operation, the unmap
//!   callback's ordering, TLBI counts per batch, and negative model tests for contiguous
//!   misprogramming;
//! * `contpte_props`: random PTE-level sequences on a user root against a reference with
//!   access/dirty state and the expected fold state of every block;
//! * `copy`: fork's one-pass table copy (`Root::copy_pte_table`) against `set_ptes` and
//!   `wrprotect_ptes` of the same pages, the callback's answers and errors, and allocation
//!   failure of the child's table.

mod asids;
mod batch;
mod contpte;
mod contpte_props;
mod copy;
mod folio_contpte;
mod model_semantics;
mod model_shared;
mod oom;
mod props;
mod units;

use super::model::Model;
use super::{Descriptor, DescriptorKind, Level, PhysAddr, Platform, VirtAddr};

pub(crate) use crate::fixture::{Env, USER_ASID};

/// The slot holding the leaf (or the first invalid entry) for `va`, found by reading the
/// tables directly: `(table, index, level, descriptor)`.
pub(crate) fn slot_of(m: &Model, root: PhysAddr, va: VirtAddr) -> (PhysAddr, usize, Level, Descriptor) {
    let mut table = root;
    let mut level = Level::L0;
    loop {
        let i = level.index_of(va.0);
        let d = m.read(table, i);
        match d.kind(level) {
            DescriptorKind::Table { next } => {
                table = next;
                level = level.next().unwrap();
            }
            _ => return (table, i, level, d),
        }
    }
}
