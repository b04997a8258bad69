//! The mutating operations, one file each, as visitors of the range walker: each runs a
//! read-only plan pass, then a writing pass in an operation context ([`crate::pt::ctx::Ctx`]).

mod alloc;
mod change;
mod map;
mod unmap;

pub(crate) use alloc::{PteAlloc, PtePlan};
pub(crate) use change::{ChangeOp, LeafChange};
pub(crate) use map::{MapGeom, MapOp, MapPlan};
pub(crate) use unmap::{SplitPlan, UnmapOp};
