//! ASID allocator tests, including rollover with tiny widths and a TLB-safety property.

use std::collections::HashMap;

use proptest::prelude::*;

use super::super::{Activation, Asid, AsidAllocator, AsidContext};

#[test]
fn allocates_distinct_nonzero_asids_and_keeps_them() {
    let mut a = AsidAllocator::<1>::new(8);
    let mut s: Vec<AsidContext> = (0..10).map(|_| AsidContext::new()).collect();
    let mut seen = Vec::new();
    for c in s.iter_mut() {
        let act = a.activate(0, c);
        assert!(act.changed && !act.flush_tlb && act.asid != Asid::RESERVED);
        seen.push(act.asid);
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 10);
    let again = a.activate(0, &mut s[3]);
    assert_eq!(
        again,
        Activation {
            asid: s[3].asid().unwrap(),
            changed: false,
            flush_tlb: false
        }
    );
    assert_eq!(a.running(0), s[3].asid());
    assert_eq!(a.generation(), 1);
}

#[test]
fn rollover_with_two_bit_asids() {
    let mut a = AsidAllocator::<1>::new(2); // ASIDs 1..=3
    let mut s: Vec<AsidContext> = (0..5).map(|_| AsidContext::new()).collect();
    for (i, c) in s.iter_mut().take(3).enumerate() {
        assert_eq!(a.activate(0, c).asid, Asid(i as u16 + 1));
    }
    // The fourth exhausts the space: new generation, the running ASID (3) stays reserved,
    // this CPU must flush.
    let act = a.activate(0, &mut s[3]);
    assert_eq!(a.generation(), 2);
    assert_eq!(a.rollovers(), 1);
    assert!(act.flush_tlb && act.changed);
    assert_eq!(act.asid, Asid(1));
    // The space that was running keeps its number in the new generation.
    let act = a.activate(0, &mut s[2]);
    assert_eq!((act.asid, act.changed, act.flush_tlb), (Asid(3), false, false));
    assert_eq!(s[2].generation(), 2);
    // An old-generation space whose number was taken gets a new one.
    let act = a.activate(0, &mut s[0]);
    assert_eq!((act.asid, act.changed), (Asid(2), true));
    // Space 1 (old ASID 2, now taken) forces the next rollover.
    let act = a.activate(0, &mut s[1]);
    assert_eq!(a.generation(), 3);
    assert!(act.flush_tlb);
    assert_ne!(
        act.asid,
        Asid(2),
        "ASID 2 is reserved for the space running at rollover"
    );
}

#[test]
fn sixteen_bit_space_rolls_over_after_65535() {
    let mut a = AsidAllocator::<1>::new(16);
    let mut c = AsidContext::new();
    for i in 1..=65535u32 {
        c = AsidContext::new();
        let act = a.activate(0, &mut c);
        assert_eq!(act.asid, Asid(i as u16));
    }
    assert_eq!(a.generation(), 1);
    let mut d = AsidContext::new();
    let act = a.activate(0, &mut d);
    assert!(act.flush_tlb);
    assert_eq!(a.generation(), 2);
    assert_ne!(act.asid, c.asid().unwrap(), "the running ASID is reserved");
}

#[test]
#[should_panic(expected = "too small")]
fn width_must_leave_room_beyond_the_reserved_asids() {
    let _ = AsidAllocator::<3>::new(2);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    /// Random context switches of `spaces` address spaces over two CPUs with 2..=4-bit ASIDs.
    /// Each CPU's TLB is modelled as the set of (ASID -> address space) it may hold entries
    /// for; a CPU must never run an address space with an ASID its TLB may hold for another
    /// one, and no two address spaces may hold the same ASID in the current generation.
    #[test]
    fn asids_never_alias_in_a_tlb(
        bits in 2u8..=4,
        spaces in 2usize..14,
        switches in prop::collection::vec((0usize..2, 0usize..14), 1..300),
    ) {
        let mut a = AsidAllocator::<2>::new(bits);
        let mut ctx = vec![AsidContext::new(); spaces];
        let mut tlb: [HashMap<u16, usize>; 2] = [HashMap::new(), HashMap::new()];
        for (cpu, s) in switches {
            let s = s % spaces;
            let act = a.activate(cpu, &mut ctx[s]);
            if act.flush_tlb {
                tlb[cpu].clear();
            }
            prop_assert!(act.asid != Asid::RESERVED);
            prop_assert!((act.asid.0 as u32) < (1u32 << bits));
            if let Some(&other) = tlb[cpu].get(&act.asid.0) {
                prop_assert_eq!(other, s, "cpu {} would hit space {}'s entries for ASID {}", cpu, other, act.asid.0);
            }
            tlb[cpu].insert(act.asid.0, s);
            let mut current: Vec<u16> = ctx
                .iter()
                .filter(|c| c.generation() == a.generation())
                .map(|c| c.asid().unwrap().0)
                .collect();
            let n = current.len();
            current.sort_unstable();
            current.dedup();
            prop_assert_eq!(current.len(), n, "two address spaces share an ASID in one generation");
        }
    }
}
