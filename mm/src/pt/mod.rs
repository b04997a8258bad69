//! The translation-table engine: descriptors and attributes, tables and the range walker, the
//! operations on a tree (map, unmap, protect, the PTE-level operations and CONTPTE), shared
//! level-3 tables, TLB maintenance and ASIDs. Layers, bottom up: descriptors and the machine
//! interface; tables, the walker and the TLB policy; the operation context; the operations;
//! [`Root`] and the PTE-level API on top. See docs/mm.md.

pub mod asid;
mod attrs;
mod batch;
pub mod contpte;
mod copy;
mod ctx;
mod desc;
mod error;
mod fold;
mod leaf;
mod ops;
mod platform;
mod pte_table;
mod query;
mod root;
mod stats;
mod table;
pub mod tlb;
mod walk;
mod zap;

pub use asid::{Activation, Asid, AsidAllocator, AsidContext};
pub use attrs::{Attrs, AttrsError, MemType, Prot, MAIR_EL1_VALUE};
pub use contpte::AccessUpdate;
pub use copy::{CopyPolicy, CopyPte, CopyUnit};
pub use desc::{bits, AccessPerm, ApTable, Descriptor, DescriptorKind, Shareability};
pub use error::MapError;
pub use leaf::{Leaf, Translation};
pub use platform::{Platform, TlbOp, TlbRange};
pub use pte_table::{NewPteTable, PteTable, PTE_TABLE_SPAN};
pub use root::{Leaves, Root, RootKind};
pub use stats::Stats;
pub use table::{Entry, Table};
pub use tlb::{FlushRequest, TlbScope, MAX_TLBI_OPS, MAX_TLBI_RANGE_PAGES};
pub(crate) use walk::{read_block, Reader};
