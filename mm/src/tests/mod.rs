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
//!   access/dirty state and the expected fold state of every block.

mod asids;
mod contpte;
mod contpte_props;
mod folio_contpte;
mod model_semantics;
mod model_shared;
mod oom;
mod props;
mod units;

use super::model::{Model, ModelRoot};
use super::{Asid, Descriptor, DescriptorKind, Level, PhysAddr, Platform, Root, VirtAddr};

/// The ASID the test user root runs with.
pub(crate) const USER_ASID: Asid = Asid(7);

/// A model with a kernel and a user root registered.
pub(crate) struct Env {
    pub m: Model,
    pub k: Root,
    pub u: Root,
}

impl Env {
    pub fn new(tlbi_range: bool) -> Env {
        let mut m = Model::new().with_tlbi_range(tlbi_range);
        let k = Root::new_kernel(&mut m).unwrap();
        m.add_root(k.pa(), ModelRoot::Kernel);
        let u = Root::new_user(&mut m, USER_ASID).unwrap();
        m.add_root(u.pa(), ModelRoot::User { asid: USER_ASID });
        Env { m, k, u }
    }

    /// The root for `kernel`, with the model.
    pub fn split(&mut self, kernel: bool) -> (&mut Model, &mut Root) {
        if kernel {
            (&mut self.m, &mut self.k)
        } else {
            (&mut self.m, &mut self.u)
        }
    }

    pub fn check(&self) {
        self.m.check_all();
    }

    /// Retires and destroys both roots; asserts every frame came back.
    pub fn teardown(self) {
        let Env { mut m, k, u } = self;
        for r in [k, u] {
            let tables = m.tables_under(r.pa());
            m.retire_root(r.pa());
            assert_eq!(
                r.destroy(&mut m),
                tables,
                "destroy freed a different number of tables"
            );
        }
        m.check_all();
        assert_eq!(m.live_frames(), 0, "table frames leaked");
    }
}

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
