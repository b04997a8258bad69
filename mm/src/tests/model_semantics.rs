//! The hardware model's own behaviour, and negative tests: deliberately wrong sequences the
//! model must flag. If one of the `should_panic` tests starts passing silently, the model has
//! lost the ability to catch that class of engine bug.

use super::super::model::{Access, AllocFailure, El, Fault, FaultKind};
use super::super::*;
use super::{slot_of, Env, USER_ASID};

const KB4: u64 = 4 << 10;
const MB2: u64 = 2 << 20;
const RAM: u64 = 0x4000_0000;
const A: u16 = USER_ASID.0;

fn fault(kind: FaultKind, level: Level) -> Fault {
    Fault { kind, level }
}

fn user_page(e: &mut Env, va: u64, attrs: Attrs) {
    e.u.map(&mut e.m, VirtAddr(va), PhysAddr(RAM), KB4, attrs, true)
        .unwrap();
}

/// Break (write invalid) the leaf for `va` in the user root without any TLBI.
fn raw_break(e: &mut Env, va: u64) -> (PhysAddr, usize, Descriptor) {
    let (t, i, _, d) = slot_of(&e.m, e.u.pa(), VirtAddr(va));
    e.m.write(t, i, Descriptor::INVALID);
    (t, i, d)
}

fn va_tlbi(va: u64, asid: u16, leaf_only: bool, level: Option<Level>) -> TlbOp {
    TlbOp::Va {
        va: VirtAddr(va),
        asid: Asid(asid),
        leaf_only,
        level,
    }
}

#[test]
fn translation_faults_report_their_level() {
    let mut e = Env::new(false);
    let r = e.u.pa();
    assert_eq!(
        e.m.table_walk(r, VirtAddr(0x1000)),
        Err(fault(FaultKind::Translation, Level::L0))
    );
    user_page(&mut e, 0x1000, Attrs::USER_RW);
    assert_eq!(
        e.m.table_walk(r, VirtAddr(1 << 30)),
        Err(fault(FaultKind::Translation, Level::L1))
    );
    assert_eq!(
        e.m.table_walk(r, VirtAddr(0x40_0000)),
        Err(fault(FaultKind::Translation, Level::L2))
    );
    assert_eq!(
        e.m.table_walk(r, VirtAddr(0x2000)),
        Err(fault(FaultKind::Translation, Level::L3))
    );
    assert_eq!(
        e.m.table_walk(r, VirtAddr(0x1fff)).unwrap().pa(0x1fff),
        PhysAddr(RAM + 0xfff)
    );
    e.teardown();
}

#[test]
fn access_flag_fault() {
    let mut e = Env::new(false);
    user_page(&mut e, 0x1000, Attrs::USER_RW);
    let (t, i, _, d) = slot_of(&e.m, e.u.pa(), VirtAddr(0x1000));
    e.m.write(t, i, d.with_af(false)); // AF may change in place
    assert_eq!(
        e.m.access(e.u.pa(), A, VirtAddr(0x1000), El::El0, Access::Read),
        Err(fault(FaultKind::AccessFlag, Level::L3))
    );
    assert_eq!(e.m.tlb_len(), 0, "a faulting leaf is not cached");
    e.m.write(t, i, d);
    e.teardown();
}

#[test]
fn permission_model() {
    let mut e = Env::new(false);
    let (k, u) = (e.k.pa(), e.u.pa());
    let kva = |o: u64| VirtAddr(KERNEL_BASE + o);
    e.k.map(&mut e.m, kva(0), PhysAddr(RAM), KB4, Attrs::KERNEL_RW, true)
        .unwrap();
    e.k.map(&mut e.m, kva(0x1000), PhysAddr(RAM), KB4, Attrs::KERNEL_RX, true)
        .unwrap();
    user_page(&mut e, 0x1000, Attrs::USER_RW);
    user_page(
        &mut e,
        0x2000,
        Attrs::USER_RO.with_prot(Prot::READ | Prot::USER | Prot::EXEC_KERNEL),
    );
    user_page(&mut e, 0x3000, Attrs::USER_RX);
    let m = &mut e.m;
    let perm = |l| -> Result<PhysAddr, Fault> { Err(fault(FaultKind::Permission, l)) };
    use Access::*;
    use El::*;
    assert!(m.access(k, 0, kva(0), El1, Write).is_ok());
    assert_eq!(m.access(k, 0, kva(0), El0, Read), perm(Level::L3));
    assert_eq!(m.access(k, 0, kva(0), El1, Exec), perm(Level::L3), "PXN");
    assert!(m.access(k, 0, kva(0x1000), El1, Exec).is_ok());
    assert_eq!(
        m.access(k, 0, kva(0x1000), El1, Write),
        perm(Level::L3),
        "read-only"
    );
    assert!(m.access(u, A, VirtAddr(0x1000), El0, Write).is_ok());
    assert_eq!(
        m.access(u, A, VirtAddr(0x1000), El0, Exec),
        perm(Level::L3),
        "UXN"
    );
    assert!(
        m.access(u, A, VirtAddr(0x2000), El1, Exec).is_ok(),
        "EL0 read-only may be EL1-executable"
    );
    assert!(m.access(u, A, VirtAddr(0x3000), El0, Exec).is_ok());
    // EL0-writable memory is never EL1-executable, whatever PXN says.
    let (t, i, _, d) = slot_of(m, u, VirtAddr(0x1000));
    m.write(t, i, d.with_pxn(false));
    assert_eq!(
        m.table_walk(u, VirtAddr(0x1000))
            .map(|r| model::Perms::of(r.desc, r.hier).el1_x),
        Ok(false)
    );
    // Hierarchical limits on the level-2 table descriptor (in place: a permission change).
    let l1 = m.read(u, 0).next_table();
    let l2 = m.read(l1, 0).next_table();
    let td = m.read(l2, 0);
    m.write(l2, 0, td.with_ap_table(ApTable::NoEl0).with_uxn_table(true));
    let w = m.table_walk(u, VirtAddr(0x3000)).unwrap();
    let p = model::Perms::of(w.desc, w.hier);
    assert!(!p.el0_r && !p.el0_x && p.el1_r);
    m.write(l2, 0, td.with_ap_table(ApTable::NoWrite));
    let w = m.table_walk(u, VirtAddr(0x1000)).unwrap();
    assert!(!model::Perms::of(w.desc, w.hier).el1_w);
    m.write(l2, 0, td);
    m.write(t, i, d);
    m.fill_all();
    e.check();
    e.teardown();
}

#[test]
fn tlb_returns_stale_translation_until_tlbi() {
    let mut e = Env::new(false);
    user_page(&mut e, 0x5000, Attrs::USER_RW);
    let u = e.u.pa();
    assert_eq!(
        e.m.access(u, A, VirtAddr(0x5000), El::El0, Access::Read),
        Ok(PhysAddr(RAM))
    );
    raw_break(&mut e, 0x5000);
    // The tables say unmapped; the TLB still translates.
    assert!(e.m.table_walk(u, VirtAddr(0x5000)).is_err());
    assert_eq!(
        e.m.access(u, A, VirtAddr(0x5000), El::El0, Access::Read),
        Ok(PhysAddr(RAM))
    );
    // Another ASID does not see it.
    assert!(e
        .m
        .access(u, A + 1, VirtAddr(0x5000), El::El0, Access::Read)
        .is_err());
    e.m.tlb_maintenance(&[va_tlbi(0x5000, A, true, Some(Level::L3))]);
    assert_eq!(
        e.m.access(u, A, VirtAddr(0x5000), El::El0, Access::Read),
        Err(fault(FaultKind::Translation, Level::L3))
    );
    e.check();
    e.teardown();
}

#[test]
fn tlbi_forms_reach_what_they_should() {
    let mut e = Env::new(true);
    user_page(&mut e, 0x5000, Attrs::USER_RW);
    e.k.map(
        &mut e.m,
        VirtAddr(KERNEL_BASE),
        PhysAddr(RAM),
        KB4,
        Attrs::KERNEL_RW,
        true,
    )
    .unwrap();
    let fill = |m: &mut model::Model| {
        m.tlb_maintenance(&[TlbOp::All]);
        m.fill_all();
        assert_eq!((m.tlb_len(), m.walk_cache_len()), (2, 6));
    };
    let m = &mut e.m;
    fill(m);
    // Last-level form: leaf gone, walk cache kept.
    m.tlb_maintenance(&[va_tlbi(0x5000, A, true, None)]);
    assert_eq!((m.tlb_len(), m.walk_cache_len()), (1, 6));
    // Non-last-level form: the walk entries for that VA go too.
    m.tlb_maintenance(&[va_tlbi(0x5000, A, false, None)]);
    assert_eq!((m.tlb_len(), m.walk_cache_len()), (1, 3));
    // A wrong TTL hint invalidates nothing.
    fill(m);
    m.tlb_maintenance(&[va_tlbi(0x5000, A, true, Some(Level::L2))]);
    assert_eq!(m.tlb_len(), 2);
    // Wrong ASID: nothing; VA form with any ASID reaches global (kernel) entries.
    m.tlb_maintenance(&[va_tlbi(0x5000, A + 1, false, None)]);
    assert_eq!((m.tlb_len(), m.walk_cache_len()), (2, 6));
    m.tlb_maintenance(&[va_tlbi(KERNEL_BASE, A + 1, true, Some(Level::L3))]);
    assert_eq!(m.tlb_len(), 1);
    // By ASID: the user entries (leaf and walk), never global ones.
    fill(m);
    m.tlb_maintenance(&[TlbOp::Asid(USER_ASID)]);
    assert_eq!((m.tlb_len(), m.walk_cache_len()), (1, 3));
    // Range: covers by intersection.
    fill(m);
    let r = TlbRange {
        base: VirtAddr(0x4000),
        scale: 0,
        num: 0,
        asid: Some(USER_ASID),
        leaf_only: true,
        level: None,
    };
    m.tlb_maintenance(&[TlbOp::Range(r)]);
    assert_eq!(m.tlb_len(), 1);
    e.teardown();
}

#[test]
#[should_panic(expected = "break-before-make violation")]
fn negative_output_address_changed_in_place() {
    let mut e = Env::new(false);
    user_page(&mut e, 0x1000, Attrs::USER_RW);
    let (t, i, _, d) = slot_of(&e.m, e.u.pa(), VirtAddr(0x1000));
    e.m.write(t, i, d.with_address(PhysAddr(RAM + 0x1000)));
}

#[test]
#[should_panic(expected = "break-before-make violation")]
fn negative_memory_type_changed_in_place() {
    let mut e = Env::new(false);
    user_page(&mut e, 0x1000, Attrs::USER_RW);
    let (t, i, _, d) = slot_of(&e.m, e.u.pa(), VirtAddr(0x1000));
    e.m.write(t, i, d.with_attr_index(MemType::Device.attr_index()));
}

#[test]
#[should_panic(expected = "no TLBI covering it completed")]
fn negative_break_without_tlbi() {
    let mut e = Env::new(false);
    user_page(&mut e, 0x1000, Attrs::USER_RW);
    let (t, i, d) = raw_break(&mut e, 0x1000);
    e.m.write(t, i, d.with_address(PhysAddr(RAM + 0x1000)));
}

#[test]
#[should_panic(expected = "no TLBI covering it completed")]
fn negative_break_with_tlbi_for_another_asid() {
    let mut e = Env::new(false);
    user_page(&mut e, 0x1000, Attrs::USER_RW);
    let (t, i, d) = raw_break(&mut e, 0x1000);
    e.m.tlb_maintenance(&[va_tlbi(0x1000, A + 1, true, None)]);
    e.m.write(t, i, d.with_address(PhysAddr(RAM + 0x1000)));
}

#[test]
#[should_panic(expected = "no TLBI covering it completed")]
fn negative_block_split_with_leaf_tlbi_at_the_wrong_level() {
    let mut e = Env::new(false);
    e.u.map(&mut e.m, VirtAddr(0), PhysAddr(0), MB2, Attrs::USER_RW, true)
        .unwrap();
    let (t, i, level, d) = slot_of(&e.m, e.u.pa(), VirtAddr(0));
    assert_eq!(level, Level::L2);
    let l3 = e.m.alloc_table().unwrap();
    e.m.write(t, i, Descriptor::INVALID);
    // The block is a level-2 leaf; a level-3 hint may invalidate nothing.
    e.m.tlb_maintenance(&[va_tlbi(0, A, true, Some(Level::L3))]);
    let _ = d;
    e.m.write(t, i, Descriptor::table(l3));
}

#[test]
fn break_tlbi_make_is_accepted() {
    let mut e = Env::new(false);
    user_page(&mut e, 0x1000, Attrs::USER_RW);
    e.m.fill_all();
    let (t, i, d) = raw_break(&mut e, 0x1000);
    e.m.tlb_maintenance(&[va_tlbi(0x1000, A, true, Some(Level::L3))]);
    e.m.write(t, i, d.with_address(PhysAddr(RAM + 0x1000)));
    e.check();
    assert_eq!(
        e.m.access(e.u.pa(), A, VirtAddr(0x1000), El::El0, Access::Read),
        Ok(PhysAddr(RAM + 0x1000))
    );
    e.teardown();
}

#[test]
#[should_panic(expected = "freed while a live descriptor references it")]
fn negative_free_of_a_live_table() {
    let mut e = Env::new(false);
    user_page(&mut e, 0x1000, Attrs::USER_RW);
    let (t, _, _, _) = slot_of(&e.m, e.u.pa(), VirtAddr(0x1000));
    e.m.free_table(t);
}

#[test]
#[should_panic(expected = "walk-cache entry still references it")]
fn negative_free_after_leaf_only_tlbi() {
    let mut e = Env::new(false);
    user_page(&mut e, 0x1000, Attrs::USER_RW);
    e.m.fill_all();
    let (l3, _, _, _) = slot_of(&e.m, e.u.pa(), VirtAddr(0x1000));
    let l1 = e.m.read(e.u.pa(), 0).next_table();
    let l2 = e.m.read(l1, 0).next_table();
    e.m.write(l2, 0, Descriptor::INVALID); // unlink the level-3 table
                                           // Last-level TLBI: the walk cache still holds the level-2 descriptor pointing to it.
    e.m.tlb_maintenance(&[va_tlbi(0x1000, A, true, None)]);
    e.m.free_table(l3);
}

#[test]
fn free_after_non_leaf_tlbi_is_accepted() {
    let mut e = Env::new(false);
    user_page(&mut e, 0x1000, Attrs::USER_RW);
    e.m.fill_all();
    let (l3, _, _, _) = slot_of(&e.m, e.u.pa(), VirtAddr(0x1000));
    let l1 = e.m.read(e.u.pa(), 0).next_table();
    let l2 = e.m.read(l1, 0).next_table();
    e.m.write(l2, 0, Descriptor::INVALID);
    e.m.tlb_maintenance(&[va_tlbi(0x1000, A, false, None)]);
    e.m.free_table(l3);
    // The now-empty level-2 and level-1 tables remain linked: not a leak, just untidy.
    e.check();
    e.teardown();
}

#[test]
#[should_panic(expected = "TLB incoherent")]
fn negative_unmap_without_tlbi() {
    let mut e = Env::new(false);
    user_page(&mut e, 0x1000, Attrs::USER_RW);
    e.m.fill_all();
    raw_break(&mut e, 0x1000);
    e.m.check_tlb_coherent();
}

#[test]
#[should_panic(expected = "cached entry more permissive")]
fn negative_permission_restriction_without_tlbi() {
    let mut e = Env::new(false);
    user_page(&mut e, 0x1000, Attrs::USER_RW);
    e.m.fill_all();
    let (t, i, _, d) = slot_of(&e.m, e.u.pa(), VirtAddr(0x1000));
    e.m.write(t, i, d.with_ap(AccessPerm::El1RoEl0Ro));
    e.m.check_tlb_coherent();
}

#[test]
fn permission_relaxation_without_tlbi_is_tolerated() {
    let mut e = Env::new(false);
    user_page(&mut e, 0x1000, Attrs::USER_RO);
    e.m.fill_all();
    let (t, i, _, d) = slot_of(&e.m, e.u.pa(), VirtAddr(0x1000));
    e.m.write(t, i, d.with_ap(AccessPerm::El1RwEl0Rw));
    e.m.check_tlb_coherent();
    // The stale entry gives a spurious permission fault, as on hardware.
    assert_eq!(
        e.m.access(e.u.pa(), A, VirtAddr(0x1000), El::El0, Access::Write),
        Err(fault(FaultKind::Permission, Level::L3))
    );
    e.teardown();
}

/// Builds a level-3 table for the 2 MiB region at `va` (which must be unmapped, with its
/// level-2 table present) holding 16 pages `f(j)` at entries 16..32, and links it.
fn hand_made_group(e: &mut Env, va: u64, f: impl Fn(usize) -> Descriptor) {
    let (l2, i, level, _) = slot_of(&e.m, e.u.pa(), VirtAddr(va));
    assert_eq!(level, Level::L2);
    let t = e.m.alloc_table().unwrap();
    for j in 0..16 {
        e.m.write(t, 16 + j, f(j));
    }
    e.m.publish();
    e.m.write(l2, i, Descriptor::table(t));
}

#[test]
#[should_panic(expected = "before its contents (or its zeroing) were published")]
fn negative_table_linked_before_publication() {
    let mut e = Env::new(false);
    user_page(&mut e, 0x1000, Attrs::USER_RW);
    let (l2, i, _, _) = slot_of(&e.m, e.u.pa(), VirtAddr(MB2));
    let t = e.m.alloc_table().unwrap();
    e.m.write(t, 0, Attrs::USER_RW.leaf(Level::L3, PhysAddr(RAM)));
    e.m.write(l2, i, Descriptor::table(t));
}

fn cont_page(oa: u64) -> Descriptor {
    Attrs::USER_RW.leaf(Level::L3, PhysAddr(oa)).with_contiguous(true)
}

#[test]
fn contiguous_group_accepted() {
    let mut e = Env::new(false);
    user_page(&mut e, 0x1000, Attrs::USER_RW);
    hand_made_group(&mut e, MB2, |j| cont_page(RAM + 0x1_0000 + j as u64 * KB4));
    e.m.fill_all();
    e.check();
    e.teardown();
}

#[test]
#[should_panic(expected = "output addresses not consecutive")]
fn negative_contiguous_group_with_a_gap() {
    let mut e = Env::new(false);
    user_page(&mut e, 0x1000, Attrs::USER_RW);
    hand_made_group(&mut e, MB2, |j| {
        cont_page(RAM + 0x1_0000 + (j as u64 + (j == 9) as u64) * KB4)
    });
    e.m.check_contiguous();
}

#[test]
#[should_panic(expected = "first output address not aligned")]
fn negative_contiguous_group_misaligned() {
    let mut e = Env::new(false);
    user_page(&mut e, 0x1000, Attrs::USER_RW);
    hand_made_group(&mut e, MB2, |j| cont_page(RAM + KB4 + j as u64 * KB4));
    e.m.check_contiguous();
}

#[test]
#[should_panic(expected = "without the Contiguous bit")]
fn negative_contiguous_group_missing_bit() {
    let mut e = Env::new(false);
    user_page(&mut e, 0x1000, Attrs::USER_RW);
    hand_made_group(&mut e, MB2, |j| {
        cont_page(RAM + j as u64 * KB4).with_contiguous(j != 15)
    });
    e.m.check_contiguous();
}

#[test]
#[should_panic(expected = "attributes differ")]
fn negative_contiguous_group_mixed_attributes() {
    let mut e = Env::new(false);
    user_page(&mut e, 0x1000, Attrs::USER_RW);
    hand_made_group(&mut e, MB2, |j| cont_page(RAM + j as u64 * KB4).with_uxn(j != 3));
    e.m.check_contiguous();
}

#[test]
#[should_panic(expected = "unreachable from any root (leak)")]
fn negative_orphan_frame() {
    let mut e = Env::new(false);
    e.m.alloc_table().unwrap();
    e.m.check_no_orphans();
}

#[test]
#[should_panic(expected = "linked twice")]
fn negative_table_linked_twice() {
    let mut e = Env::new(false);
    user_page(&mut e, 0x1000, Attrs::USER_RW);
    let (l3, _, _, _) = slot_of(&e.m, e.u.pa(), VirtAddr(0x1000));
    let l1 = e.m.read(e.u.pa(), 0).next_table();
    let l2 = e.m.read(l1, 0).next_table();
    e.m.write(l2, 1, Descriptor::table(l3));
}

#[test]
#[should_panic(expected = "range TLBI without FEAT_TLBIRANGE")]
fn negative_range_tlbi_without_the_feature() {
    let mut e = Env::new(false);
    let r = TlbRange {
        base: VirtAddr(0),
        scale: 0,
        num: 0,
        asid: None,
        leaf_only: true,
        level: None,
    };
    e.m.tlb_maintenance(&[TlbOp::Range(r)]);
}

#[test]
#[should_panic(expected = "not an allocated table frame")]
fn negative_walk_into_freed_frame() {
    let mut e = Env::new(false);
    user_page(&mut e, 0x1000, Attrs::USER_RW);
    e.m.fill_all();
    // Retire and destroy behind the TLB's back: the walk cache still points into the tree.
    let k = e.u.pa();
    e.m.retire_root(k);
    let l1 = e.m.read(k, 0).next_table();
    let l2 = e.m.read(l1, 0).next_table();
    let (l3, _, _, _) = slot_of(&e.m, k, VirtAddr(0x1000));
    e.m.tlb_maintenance(&[TlbOp::Asid(USER_ASID)]); // drop everything, then free
    for f in [l3, l2, l1] {
        e.m.free_table(f);
    }
    // A walk cache entry for the root descriptor would be gone; force a walk through a stale
    // frame by walking the (still allocated) root directly.
    let _ = e.m.table_walk(k, VirtAddr(0x1000));
}

#[test]
fn alloc_failure_policies() {
    let mut m = model::Model::new();
    m.set_alloc_failure(AllocFailure::Nth(2));
    assert!(m.alloc_table().is_ok());
    assert!(m.alloc_table().is_err());
    assert!(m.alloc_table().is_ok());
    m.set_alloc_failure(AllocFailure::Every(2));
    let r: Vec<bool> = (0..4).map(|_| m.alloc_table().is_ok()).collect();
    assert_eq!(r, [true, false, true, false]);
    assert_eq!(m.counters.alloc_failures, 3);
}

#[test]
#[should_panic(expected = "two live user roots with")]
fn two_live_user_roots_with_one_asid_are_flagged() {
    let mut e = Env::new(false);
    let other = Root::new_user(&mut e.m, USER_ASID).unwrap();
    e.m.add_root(
        other.pa(),
        super::super::model::ModelRoot::User { asid: USER_ASID },
    );
}

#[test]
#[should_panic(expected = "two live user roots with")]
fn an_asid_change_to_a_live_roots_asid_is_flagged() {
    let mut e = Env::new(false);
    let other = Root::new_user(&mut e.m, Asid(A + 1)).unwrap();
    let model_root = super::super::model::ModelRoot::User { asid: Asid(A + 1) };
    e.m.add_root(other.pa(), model_root);
    e.m.set_root_asid(other.pa(), USER_ASID);
}
