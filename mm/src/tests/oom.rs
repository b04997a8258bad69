//! Allocation failure: for every operation that allocates, make the n-th allocation fail for
//! n = 1, 2, … until the operation succeeds, and check each failure left the tables exactly
//! as they were, leaked nothing, wrote nothing live and kept the TLB coherent.

use super::super::model::{AllocFailure, ModelRoot};
use super::super::*;
use super::Env;

const KB4: u64 = 4 << 10;
const MB2: u64 = 2 << 20;
const GB1: u64 = 1 << 30;
const GB512: u64 = 512 << 30;

type Setup = fn(&mut Env);
type Op = fn(&mut Env) -> Result<(), MapError>;

/// Runs `op` after `setup` with the n-th allocation failing, for every n until it succeeds.
/// Returns how many failing runs there were.
fn every_failure_point(setup: Setup, op: Op, live_writes_on_failure: bool) -> u64 {
    for n in 1.. {
        let mut e = Env::new(n % 2 == 0);
        setup(&mut e);
        e.m.fill_all();
        let snap = e.m.snapshot();
        let live_writes = e.m.counters.live_writes;
        e.m.set_alloc_failure(AllocFailure::Nth(n));
        let r = op(&mut e);
        e.m.set_alloc_failure(AllocFailure::Never);
        match r {
            Err(MapError::OutOfMemory) => {
                assert_eq!(
                    e.m.snapshot(),
                    snap,
                    "failure at allocation {n} changed the tables"
                );
                if !live_writes_on_failure {
                    assert_eq!(
                        e.m.counters.live_writes, live_writes,
                        "failure at {n} wrote live entries"
                    );
                }
                e.check();
            }
            Ok(()) => {
                e.check();
                e.teardown();
                return n - 1;
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
        e.teardown();
    }
    unreachable!()
}

#[test]
fn map_fails_cleanly_at_every_allocation() {
    // Crosses a level-0 boundary, with pages, 2 MiB blocks and a 1 GiB block.
    let n = every_failure_point(
        |e| {
            e.u.map(
                &mut e.m,
                VirtAddr(GB512 + 2 * GB1 + 7 * MB2),
                PhysAddr(0),
                KB4,
                Attrs::USER_RO,
                true,
            )
            .unwrap();
        },
        |e| {
            let va = GB512 - GB1 - 3 * MB2 - 5 * KB4;
            e.u.map(
                &mut e.m,
                VirtAddr(va),
                PhysAddr(va),
                2 * GB1 + 6 * MB2,
                Attrs::USER_RW,
                true,
            )
        },
        false,
    );
    // L1 for the first level-0 entry, L2 + L3 at the start; L2 + L3 at the end (the middle
    // is two 1 GiB blocks, one under the existing L1 of the second level-0 entry).
    assert_eq!(n, 5);
}

#[test]
fn kernel_map_fails_cleanly_at_every_allocation() {
    let n = every_failure_point(
        |_| {},
        |e| {
            let va = 0u64.wrapping_sub(4 * MB2 + 3 * KB4);
            e.k.map(
                &mut e.m,
                VirtAddr(va),
                PhysAddr(GB1 - 3 * KB4),
                4 * MB2 + 3 * KB4,
                Attrs::KERNEL_RW,
                true,
            )
        },
        false,
    );
    assert_eq!(
        n, 3,
        "L1, L2, L3 for the three pages; the rest is two 2 MiB blocks"
    );
}

#[test]
fn unmap_split_fails_cleanly_at_every_allocation() {
    let n = every_failure_point(
        |e| {
            e.u.map(
                &mut e.m,
                VirtAddr(GB1),
                PhysAddr(GB1),
                2 * GB1,
                Attrs::USER_RW,
                true,
            )
            .unwrap();
        },
        // Straddles the two 1 GiB blocks, unaligned at both ends: four split tables.
        |e| {
            e.u.unmap(&mut e.m, VirtAddr(2 * GB1 - 3 * MB2 - KB4), 5 * MB2 + 2 * KB4)
        },
        false,
    );
    assert_eq!(n, 4);
}

#[test]
fn protect_split_fails_cleanly_at_every_allocation() {
    let n = every_failure_point(
        |e| {
            e.k.map(
                &mut e.m,
                VirtAddr(KERNEL_BASE + GB1),
                PhysAddr(GB1),
                GB1,
                Attrs::KERNEL_RW,
                true,
            )
            .unwrap();
        },
        |e| {
            e.k.protect(
                &mut e.m,
                VirtAddr(KERNEL_BASE + GB1 + 5 * KB4),
                3 * MB2,
                Attrs::KERNEL_RO,
            )
        },
        false,
    );
    assert_eq!(n, 3);
}

#[test]
fn copy_fails_cleanly_at_every_allocation() {
    // The destination is the kernel root's sibling: a second user root with its own ASID,
    // created in setup. On failure the copy unmaps what it did (live writes allowed), and the
    // tables must be back as before.
    fn setup(e: &mut Env) {
        e.u.map(&mut e.m, VirtAddr(0), PhysAddr(0), 2 * MB2, Attrs::USER_RW, true)
            .unwrap();
        e.u.map(
            &mut e.m,
            VirtAddr(GB1 - KB4),
            PhysAddr(0x9000),
            3 * KB4,
            Attrs::USER_RO,
            true,
        )
        .unwrap();
        e.u.map(
            &mut e.m,
            VirtAddr(GB512),
            PhysAddr(GB1),
            5 * KB4,
            Attrs::USER_RX,
            true,
        )
        .unwrap();
    }
    fn op(e: &mut Env) -> Result<(), MapError> {
        let mut dst = Root::new_user(&mut e.m, Asid(11)).map_err(MapError::from)?;
        e.m.add_root(dst.pa(), ModelRoot::User { asid: Asid(11) });
        let snap = e.m.snapshot();
        let r = e.u.copy_range(&mut e.m, &mut dst, VirtAddr(0), 2 * GB512, |l| {
            Some((l.pa, l.attrs))
        });
        if r.is_err() {
            assert_eq!(
                e.m.snapshot(),
                snap,
                "copy failure did not restore the destination"
            );
        } else {
            let src: Vec<_> = e.u.leaves(&e.m).map(|l| (l.va, l.pa, l.attrs, l.level)).collect();
            let got: Vec<_> = dst.leaves(&e.m).map(|l| (l.va, l.pa, l.attrs, l.level)).collect();
            assert_eq!(src, got);
        }
        e.m.check_all();
        let tables = e.m.tables_under(dst.pa());
        e.m.retire_root(dst.pa());
        assert_eq!(dst.destroy(&mut e.m), tables);
        r.map(|_| ())
    }
    let n = every_failure_point(setup, op, true);
    assert!(n >= 6, "only {n} allocations");
}
