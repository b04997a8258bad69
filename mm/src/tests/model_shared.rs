//! The hardware model with level-3 tables shared between roots (copy-on-write page tables):
//! walks, TLB and walk cache per root / ASID through a shared table, each root's own APTable
//! limits, and negative tests — writes into a shared table, frees while a root still links
//! it, unsharing without break-before-make or without the right TLBI, reductions of
//! hierarchical limits without a TLBI, illegal second links — that the model must flag.

use super::super::model::{Access, El, Fault, FaultKind, ModelRoot};
use super::super::*;
use super::{slot_of, Env, USER_ASID};

const KB4: u64 = 4 << 10;
const MB2: u64 = 2 << 20;
const RAM: u64 = 0x4000_0000;
const A: u16 = USER_ASID.0;
const B: u16 = 8;

fn perm_fault() -> Result<PhysAddr, Fault> {
    Err(Fault {
        kind: FaultKind::Permission,
        level: Level::L3,
    })
}

fn va_tlbi(va: u64, asid: u16, leaf_only: bool) -> TlbOp {
    TlbOp::Va {
        va: VirtAddr(va),
        asid: Asid(asid),
        leaf_only,
        level: None,
    }
}

/// The user root `e.u` (ASID `A`) and a second user root `b` (ASID `B`) whose level-2
/// descriptors for VA 0..2 MiB both point at the same level-3 table `l3`, with APTable =
/// NoWrite. `l3` maps 0x1000 (user RW) and 0x2000 (user RO).
struct Shared {
    e: Env,
    b: Root,
    l2a: PhysAddr,
    l2b: PhysAddr,
    l3: PhysAddr,
}

/// `e.u` with its two pages, plus `b` registered with an empty level-1 table `l1b` linked.
fn two_roots() -> (Env, Root, PhysAddr) {
    let mut e = Env::new(false);
    e.u.map(
        &mut e.m,
        VirtAddr(0x1000),
        PhysAddr(RAM),
        KB4,
        Attrs::USER_RW,
        true,
    )
    .unwrap();
    e.u.map(
        &mut e.m,
        VirtAddr(0x2000),
        PhysAddr(RAM + 0x1000),
        KB4,
        Attrs::USER_RO,
        true,
    )
    .unwrap();
    let b = Root::new_user(&mut e.m, Asid(B)).unwrap();
    e.m.add_root(b.pa(), ModelRoot::User { asid: Asid(B) });
    let l1b = e.m.alloc_table().unwrap();
    e.m.publish();
    e.m.write(b.pa(), 0, Descriptor::table(l1b));
    (e, b, l1b)
}

/// The level-2 table of `root` for VA 0.
fn l2_of(m: &model::Model, root: PhysAddr) -> PhysAddr {
    let l1 = m.read(root, 0).next_table();
    m.read(l1, 0).next_table()
}

/// Fork-like sharing: the parent's level-2 descriptor gets APTable = NoWrite in place (a
/// reduction: TLBI by ASID), then the child's new level-2 table points at the same level-3
/// table, also with NoWrite.
fn share() -> Shared {
    let (mut e, b, l1b) = two_roots();
    let u = e.u.pa();
    let (l3, _, _, _) = slot_of(&e.m, u, VirtAddr(0x1000));
    let l2a = l2_of(&e.m, u);
    let td = e.m.read(l2a, 0);
    e.m.write(l2a, 0, td.with_ap_table(ApTable::NoWrite));
    e.m.tlb_maintenance(&[TlbOp::Asid(USER_ASID)]);
    let l2b = e.m.alloc_table().unwrap();
    e.m.write(l2b, 0, td.with_ap_table(ApTable::NoWrite));
    e.m.publish();
    e.m.write(l1b, 0, Descriptor::table(l2b));
    let mut want = vec![u, b.pa()];
    want.sort_unstable_by_key(|r| r.0);
    assert_eq!(e.m.table_sharers(l3), want);
    assert_eq!(e.m.tables_under(b.pa()), 4);
    assert_eq!(e.m.shared_tables_under(b.pa()), 1);
    assert_eq!(e.m.shared_tables_under(u), 1);
    e.m.check_all();
    Shared { e, b, l2a, l2b, l3 }
}

impl Shared {
    /// A new level-3 table for `b`, published: a copy of the shared one, or empty.
    fn new_table(&mut self, copy_entries: bool) -> PhysAddr {
        let t = self.e.m.alloc_table().unwrap();
        if copy_entries {
            for i in 0..ENTRIES {
                let d = self.e.m.read(self.l3, i);
                self.e.m.write(t, i, d);
            }
        }
        self.e.m.publish();
        t
    }

    /// Drops `b`'s link to the shared table (invalid level-2 descriptor, TLBI by ASID `B`).
    fn drop_b_link(&mut self) {
        self.e.m.write(self.l2b, 0, Descriptor::INVALID);
        self.e.m.tlb_maintenance(&[TlbOp::Asid(Asid(B))]);
        assert_eq!(self.e.m.table_sharers(self.l3), vec![self.e.u.pa()]);
    }

    /// Destroys `b` (which must no longer link `l3`), then the environment.
    fn teardown(self) {
        let Shared { mut e, b, .. } = self;
        e.m.check_all();
        let tables = e.m.tables_under(b.pa());
        assert_eq!(e.m.shared_tables_under(b.pa()), 0);
        e.m.retire_root(b.pa());
        assert_eq!(b.destroy(&mut e.m), tables);
        e.teardown();
    }
}

#[test]
fn reads_through_both_roots_writes_fault() {
    let mut s = share();
    let (u, b) = (s.e.u.pa(), s.b.pa());
    let m = &mut s.e.m;
    for (root, asid) in [(u, A), (b, B)] {
        for _ in 0..2 {
            // The second round hits the TLB.
            assert_eq!(
                m.access(root, asid, VirtAddr(0x1000), El::El0, Access::Read),
                Ok(PhysAddr(RAM))
            );
            assert_eq!(
                m.access(root, asid, VirtAddr(0x2000), El::El0, Access::Read),
                Ok(PhysAddr(RAM + 0x1000))
            );
            for el in [El::El0, El::El1] {
                assert_eq!(
                    m.access(root, asid, VirtAddr(0x1000), el, Access::Write),
                    perm_fault(),
                    "APTable NoWrite denies writes at every EL"
                );
            }
        }
        let w = m.table_walk(root, VirtAddr(0x1000)).unwrap();
        assert!(w.hier.no_write && !w.hier.no_el0);
    }
    // One leaf entry per page and ASID; walk-cache entries at levels 0..2 per ASID.
    assert_eq!((m.tlb_len(), m.walk_cache_len()), (4, 6));
    m.fill_all();
    assert_eq!((m.tlb_len(), m.walk_cache_len()), (4, 6));
    m.check_all();
    // Invalidating one ASID leaves the other's entries.
    m.tlb_maintenance(&[TlbOp::Asid(Asid(B))]);
    assert_eq!((m.tlb_len(), m.walk_cache_len()), (2, 3));
    s.drop_b_link();
    s.teardown();
}

#[test]
fn aptable_limits_are_per_root() {
    let mut s = share();
    let (u, b) = (s.e.u.pa(), s.b.pa());
    // A stricter limit on b's own descriptor only (a reduction: TLBI for ASID B).
    let td = s.e.m.read(s.l2b, 0);
    s.e.m.write(s.l2b, 0, td.with_ap_table(ApTable::NoWriteNoEl0));
    s.e.m.tlb_maintenance(&[va_tlbi(0, B, false)]);
    let m = &mut s.e.m;
    m.fill_all();
    m.check_all();
    assert_eq!(
        m.access(u, A, VirtAddr(0x1000), El::El0, Access::Read),
        Ok(PhysAddr(RAM))
    );
    assert_eq!(
        m.access(b, B, VirtAddr(0x1000), El::El0, Access::Read),
        perm_fault()
    );
    assert_eq!(
        m.access(b, B, VirtAddr(0x1000), El::El1, Access::Read),
        Ok(PhysAddr(RAM))
    );
    s.drop_b_link();
    s.teardown();
}

#[test]
#[should_panic(expected = "write into a level-3 table shared by 2 roots")]
fn negative_write_into_a_shared_table() {
    let mut s = share();
    let (t, i, _, _) = slot_of(&s.e.m, s.e.u.pa(), VirtAddr(0x1000));
    assert_eq!(t, s.l3);
    // Even a break (what an unmap starts with) is refused while the table is shared.
    s.e.m.write(t, i, Descriptor::INVALID);
}

#[test]
#[should_panic(expected = "shared tables are read-only; break the sharing first")]
fn negative_permission_change_in_a_shared_table() {
    let mut s = share();
    let (t, i, _, d) = slot_of(&s.e.m, s.b.pa(), VirtAddr(0x2000));
    s.e.m.write(t, i, d.with_ap(AccessPerm::El1RwEl0Rw));
}

#[test]
fn hardware_access_flag_update_in_a_shared_table() {
    // 0x1000 becomes a clean writable (DBM) entry with AF clear before the sharing.
    let (mut e, b, l1b) = two_roots();
    let u = e.u.pa();
    let (t, i, _, d) = slot_of(&e.m, u, VirtAddr(0x1000));
    let clean = d.with_dbm(true).with_ap(AccessPerm::El1RoEl0Ro).with_af(false);
    e.m.write(t, i, clean);
    let l2a = l2_of(&e.m, u);
    let td = e.m.read(l2a, 0).with_ap_table(ApTable::NoWrite);
    e.m.write(l2a, 0, td);
    e.m.tlb_maintenance(&[TlbOp::Asid(USER_ASID)]);
    let l2b = e.m.alloc_table().unwrap();
    e.m.write(l2b, 0, td);
    e.m.publish();
    e.m.write(l1b, 0, Descriptor::table(l2b));
    assert_eq!(e.m.table_sharers(t).len(), 2);
    assert_eq!(
        e.m.access(b.pa(), B, VirtAddr(0x1000), El::El0, Access::Read),
        Err(Fault {
            kind: FaultKind::AccessFlag,
            level: Level::L3
        })
    );
    // A write through b: the hardware sets AF but does not mark the entry dirty (APTable
    // NoWrite), the one kind of write a shared table accepts.
    let n = e.m.hw_update(b.pa(), VirtAddr(0x1000), true).unwrap();
    assert_eq!(n, clean.with_af(true));
    assert_eq!(
        e.m.access(u, A, VirtAddr(0x1000), El::El0, Access::Read),
        Ok(PhysAddr(RAM))
    );
    let mut s = Shared {
        e,
        b,
        l2a,
        l2b,
        l3: t,
    };
    s.e.m.check_all();
    s.drop_b_link();
    // Once unshared (and the limit cleared with a TLBI), the dirty update happens again.
    let td = s.e.m.read(s.l2a, 0);
    s.e.m.write(s.l2a, 0, td.with_ap_table(ApTable::NoEffect));
    let n = s.e.m.hw_update(u, VirtAddr(0x1000), true).unwrap();
    assert!(n.ap().writable());
    s.e.m.tlb_maintenance(&[TlbOp::Asid(USER_ASID)]);
    s.teardown();
}

#[test]
fn unshare_by_dropping_a_link_then_write() {
    let mut s = share();
    s.e.m.fill_all();
    s.drop_b_link();
    let u = s.e.u.pa();
    assert_eq!(s.e.m.shared_tables_under(u), 0);
    assert_eq!(
        s.e.m.access(s.b.pa(), B, VirtAddr(0x1000), El::El0, Access::Read),
        Err(Fault {
            kind: FaultKind::Translation,
            level: Level::L2
        })
    );
    // The table is u's alone: an ordinary break-TLBI-make in it is accepted.
    let (t, i, _, d) = slot_of(&s.e.m, u, VirtAddr(0x1000));
    assert_eq!(t, s.l3);
    s.e.m.write(t, i, Descriptor::INVALID);
    s.e.m.tlb_maintenance(&[va_tlbi(0x1000, A, true)]);
    s.e.m.write(t, i, d.with_address(PhysAddr(RAM + 0x5000)));
    s.e.m.fill_all();
    s.e.m.check_all();
    assert_eq!(
        s.e.m.access(u, A, VirtAddr(0x1000), El::El0, Access::Read),
        Ok(PhysAddr(RAM + 0x5000))
    );
    s.teardown();
}

#[test]
#[should_panic(expected = "no TLBI covering it completed")]
fn negative_unshare_without_tlbi_between_break_and_make() {
    let mut s = share();
    s.e.m.fill_all();
    // A private copy of the shared table for b.
    let copy = s.new_table(true);
    s.e.m.write(s.l2b, 0, Descriptor::INVALID);
    s.e.m.write(s.l2b, 0, Descriptor::table(copy));
}

#[test]
#[should_panic(expected = "no TLBI covering it completed")]
fn negative_unshare_with_tlbi_for_the_other_asid() {
    let mut s = share();
    let copy = s.new_table(false);
    s.e.m.write(s.l2b, 0, Descriptor::INVALID);
    // ASID A's walk cache is not b's.
    s.e.m.tlb_maintenance(&[va_tlbi(0, A, false)]);
    s.e.m.write(s.l2b, 0, Descriptor::table(copy));
}

#[test]
#[should_panic(expected = "no TLBI covering it completed")]
fn negative_unshare_with_leaf_only_tlbi() {
    let mut s = share();
    let copy = s.new_table(false);
    s.e.m.write(s.l2b, 0, Descriptor::INVALID);
    // A last-level TLBI spares the walk cache holding the level-2 descriptor.
    s.e.m.tlb_maintenance(&[va_tlbi(0, B, true)]);
    s.e.m.write(s.l2b, 0, Descriptor::table(copy));
}

#[test]
#[should_panic(expected = "next-level table address changed")]
fn negative_unshare_in_place() {
    let mut s = share();
    let copy = s.new_table(false);
    s.e.m.write(s.l2b, 0, Descriptor::table(copy));
}

#[test]
fn unshare_by_replacing_with_a_copy() {
    let mut s = share();
    s.e.m.fill_all();
    let copy = s.new_table(true);
    s.e.m.write(s.l2b, 0, Descriptor::INVALID);
    // Covers b's walk cache for the range and b's leaves (and the pending break).
    s.e.m.tlb_maintenance(&[TlbOp::Asid(Asid(B))]);
    s.e.m.write(s.l2b, 0, Descriptor::table(copy));
    let (u, b) = (s.e.u.pa(), s.b.pa());
    assert_eq!(s.e.m.table_sharers(s.l3), vec![u]);
    assert_eq!(s.e.m.table_sharers(copy), vec![b]);
    // b may now write its copy (the make had no APTable limit).
    let (t, i, _, d) = slot_of(&s.e.m, b, VirtAddr(0x2000));
    assert_eq!(t, copy);
    s.e.m.write(t, i, d.with_ap(AccessPerm::El1RwEl0Rw));
    assert_eq!(
        s.e.m.access(b, B, VirtAddr(0x2000), El::El0, Access::Write),
        Ok(PhysAddr(RAM + 0x1000))
    );
    assert_eq!(
        s.e.m.access(u, A, VirtAddr(0x2000), El::El0, Access::Write),
        perm_fault()
    );
    s.e.m.fill_all();
    s.e.m.check_all();
    // Tear b's copy down with it.
    let Shared { mut e, b, .. } = s;
    let tables = e.m.tables_under(b.pa());
    e.m.retire_root(b.pa());
    assert_eq!(b.destroy(&mut e.m), tables);
    e.teardown();
}

#[test]
#[should_panic(expected = "(shared by 2 roots)")]
fn negative_free_of_a_shared_table() {
    let mut s = share();
    let l3 = s.l3;
    s.e.m.free_table(l3);
}

#[test]
#[should_panic(expected = "freed while a live descriptor references it")]
fn negative_free_while_one_root_still_links_it() {
    let mut s = share();
    s.e.m.fill_all();
    s.drop_b_link();
    let l3 = s.l3;
    s.e.m.free_table(l3);
}

#[test]
#[should_panic(expected = "walk-cache entry still references it")]
fn negative_free_after_dropping_both_links_with_leaf_only_tlbi() {
    let mut s = share();
    s.e.m.fill_all();
    s.drop_b_link();
    s.e.m.write(s.l2a, 0, Descriptor::INVALID);
    s.e.m
        .tlb_maintenance(&[va_tlbi(0x1000, A, true), va_tlbi(0x2000, A, true)]);
    let l3 = s.l3;
    s.e.m.free_table(l3);
}

#[test]
fn free_after_dropping_both_links() {
    let mut s = share();
    s.e.m.fill_all();
    s.drop_b_link();
    s.e.m.write(s.l2a, 0, Descriptor::INVALID);
    s.e.m.tlb_maintenance(&[TlbOp::Asid(USER_ASID)]);
    assert!(s.e.m.table_sharers(s.l3).is_empty());
    let l3 = s.l3;
    s.e.m.free_table(l3);
    s.teardown();
}

#[test]
fn retiring_a_sharing_root_keeps_the_other_link() {
    let mut s = share();
    s.e.m.fill_all();
    let (u, b) = (s.e.u.pa(), s.b.pa());
    s.e.m.retire_root(b);
    assert_eq!(s.e.m.table_sharers(s.l3), vec![u]);
    assert_eq!(s.e.m.tables_under(b), 0);
    // b's own tables are no longer live: cut its tree above the shared table, then destroy.
    s.e.m.write(s.l2b, 0, Descriptor::INVALID);
    s.e.m.tlb_maintenance(&[TlbOp::Asid(Asid(B))]);
    let Shared { mut e, b, l3, .. } = s;
    assert_eq!(b.destroy(&mut e.m), 3);
    // u's table is writable again (sole link).
    let (t, i, _, d) = slot_of(&e.m, u, VirtAddr(0x2000));
    assert_eq!(t, l3);
    e.m.write(t, i, d.with_af(false));
    e.check();
    e.teardown();
}

#[test]
fn clearing_aptable_in_place_on_the_sole_link_is_accepted() {
    let mut s = share();
    s.e.m.fill_all();
    s.drop_b_link();
    let u = s.e.u.pa();
    let td = s.e.m.read(s.l2a, 0);
    // Same next-table address: a permission change, no break-before-make.
    s.e.m.write(s.l2a, 0, td.with_ap_table(ApTable::NoEffect));
    // Cached entries are stricter than the tables now: tolerated, a spurious fault at most.
    s.e.m.check_tlb_coherent();
    assert_eq!(
        s.e.m.access(u, A, VirtAddr(0x1000), El::El0, Access::Write),
        perm_fault()
    );
    s.e.m.tlb_maintenance(&[TlbOp::Asid(USER_ASID)]);
    assert_eq!(
        s.e.m.access(u, A, VirtAddr(0x1000), El::El0, Access::Write),
        Ok(PhysAddr(RAM))
    );
    s.teardown();
}

#[test]
#[should_panic(expected = "shared table writable")]
fn negative_clearing_aptable_while_shared() {
    let mut s = share();
    let td = s.e.m.read(s.l2a, 0);
    s.e.m.write(s.l2a, 0, td.with_ap_table(ApTable::NoEffect));
    s.e.m.tlb_maintenance(&[TlbOp::Asid(USER_ASID)]);
    s.e.m.check_all();
}

#[test]
#[should_panic(expected = "shared table writable")]
fn negative_sharing_without_aptable_on_the_new_link() {
    let (mut e, _b, l1b) = two_roots();
    let l2a = l2_of(&e.m, e.u.pa());
    let td = e.m.read(l2a, 0).with_ap_table(ApTable::NoWrite);
    e.m.write(l2a, 0, td);
    e.m.tlb_maintenance(&[TlbOp::Asid(USER_ASID)]);
    let l2b = e.m.alloc_table().unwrap();
    e.m.write(l2b, 0, td.with_ap_table(ApTable::NoEl0));
    e.m.publish();
    e.m.write(l1b, 0, Descriptor::table(l2b));
    e.m.check_shared_read_only();
}

/// A single root: a cached writable translation, then APTable = NoWrite set in place.
fn reduce_without_tlbi() -> Env {
    let mut e = Env::new(false);
    let u = e.u.pa();
    e.u.map(
        &mut e.m,
        VirtAddr(0x1000),
        PhysAddr(RAM),
        KB4,
        Attrs::USER_RW,
        true,
    )
    .unwrap();
    assert_eq!(
        e.m.access(u, A, VirtAddr(0x1000), El::El0, Access::Write),
        Ok(PhysAddr(RAM))
    );
    let l2 = l2_of(&e.m, u);
    let td = e.m.read(l2, 0);
    e.m.write(l2, 0, td.with_ap_table(ApTable::NoWrite));
    e
}

#[test]
#[should_panic(expected = "cached entry more permissive")]
fn negative_aptable_reduction_without_tlbi() {
    let e = reduce_without_tlbi();
    e.m.check_tlb_coherent();
}

#[test]
#[should_panic(expected = "stale walk-cache entry")]
fn negative_aptable_reduction_with_leaf_only_tlbi() {
    let mut e = reduce_without_tlbi();
    // The leaf goes, the walk cache keeps the level-2 descriptor without the limit.
    e.m.tlb_maintenance(&[va_tlbi(0x1000, A, true)]);
    assert_eq!(e.m.tlb_len(), 0);
    e.m.check_tlb_coherent();
}

#[test]
fn aptable_reduction_with_tlbi_is_accepted() {
    let mut e = reduce_without_tlbi();
    e.m.tlb_maintenance(&[va_tlbi(0x1000, A, false)]);
    e.m.check_tlb_coherent();
    assert_eq!(
        e.m.access(e.u.pa(), A, VirtAddr(0x1000), El::El0, Access::Write),
        perm_fault()
    );
    e.m.fill_all();
    e.check();
    e.teardown();
}

#[test]
#[should_panic(expected = "(twice in the same root)")]
fn negative_shared_table_linked_twice_in_one_root() {
    let mut s = share();
    let td = s.e.m.read(s.l2a, 0);
    s.e.m.write(s.l2a, 1, td);
}

#[test]
#[should_panic(expected = "must translate the same VA range in every root")]
fn negative_shared_table_at_another_va() {
    let mut s = share();
    let td = s.e.m.read(s.l2b, 0);
    s.e.m.write(s.l2b, 0, Descriptor::INVALID);
    s.e.m.tlb_maintenance(&[TlbOp::Asid(Asid(B))]);
    // b links it again, but for 2 MiB..4 MiB.
    s.e.m.write(s.l2b, (MB2 >> 21) as usize, td);
}

#[test]
#[should_panic(expected = "only level-3 tables may be shared")]
fn negative_level2_table_shared() {
    let (mut e, b, l1b) = two_roots();
    let _ = b;
    let l2a = l2_of(&e.m, e.u.pa());
    e.m.write(l1b, 0, Descriptor::table(l2a));
}

#[test]
#[should_panic(expected = "linked twice")]
fn negative_linked_table_registered_as_a_root() {
    let mut s = share();
    let l3 = s.l3;
    s.e.m.add_root(l3, ModelRoot::User { asid: Asid(9) });
}
