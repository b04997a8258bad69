//! Property tests: random map / unmap / protect sequences on the kernel and a user root,
//! against a reference `BTreeMap<page VA, (PA, Attrs)>`.
//!
//! The ranges live in 16 MiB windows placed on interesting boundaries (a 1 GiB boundary, a
//! level-0 boundary, the very top of each half), mix single pages, odd page runs and 2 MiB
//! aligned runs (so blocks, splits and table freeing all happen). Physical addresses keep the
//! VA's offset in its 2 MiB block unless skewed, so blocks are eligible when allowed.
//!
//! Before every step the model MMU touches every mapping (so every stale entry a missing TLBI
//! would leave is in its TLB); after every step the model checks TLB coherence, contiguous
//! groups and leaks, and the engine's view (leaf iterator and `translate`) and the model's
//! table walk must both agree with the reference. Some cases run with an allocator that fails
//! every n-th allocation: a failed operation must leave the tables bit-for-bit unchanged.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::super::model::{AllocFailure, Model};
use super::super::*;
use super::Env;

const KB4: u64 = 4 << 10;
const MB2: u64 = 2 << 20;
const GB1: u64 = 1 << 30;
const GB512: u64 = 512 << 30;
const WINDOW_PAGES: u64 = 4096;
const PA_BASE: u64 = 0x4000_0000;

fn window(kernel: bool, w: usize) -> u64 {
    let bases = if kernel {
        [
            KERNEL_BASE,
            KERNEL_BASE + GB512 - 8 * MB2 / 2,
            0u64.wrapping_sub(8 * MB2),
        ]
    } else {
        [GB1 - 8 * MB2 / 2, GB512 - 8 * MB2 / 2, USER_END - 8 * MB2]
    };
    bases[w]
}

fn attrs(kernel: bool, i: usize) -> Attrs {
    use MemType::*;
    let (r, w, u, x) = (Prot::READ, Prot::WRITE, Prot::USER, Prot::EXEC_USER);
    if kernel {
        [
            Attrs::KERNEL_RW,
            Attrs::KERNEL_RO,
            Attrs::KERNEL_RX,
            Attrs::DEVICE,
            Attrs::new(r | w, NonCacheable, true),
            Attrs::new(r, Normal, true),
        ][i]
    } else {
        [
            Attrs::USER_RW,
            Attrs::USER_RO,
            Attrs::USER_RX,
            Attrs::new(r | w | u, NonCacheable, false),
            Attrs::new(r | w, Device, false),
            Attrs::new(r | u | x, Normal, false),
        ][i]
    }
}

#[derive(Clone, Debug)]
enum Op {
    Map {
        kernel: bool,
        win: usize,
        page: u64,
        npages: u64,
        pa_block: u64,
        skew: bool,
        attrs: usize,
        blocks: bool,
    },
    Unmap {
        kernel: bool,
        win: usize,
        page: u64,
        npages: u64,
    },
    Protect {
        kernel: bool,
        win: usize,
        page: u64,
        npages: u64,
        attrs: usize,
    },
    /// The user address space gets a new ASID (as after a rollover, with the full flush).
    NewAsid(u16),
}

fn range() -> impl Strategy<Value = (u64, u64)> {
    prop_oneof![
        4 => (0..WINDOW_PAGES, 1..24u64),
        3 => (0..8u64, 1..3u64).prop_map(|(b, n)| (b * 512, n * 512)),
        1 => (0..WINDOW_PAGES, 1..1400u64),
    ]
    .prop_map(|(page, n)| (page, n.min(WINDOW_PAGES - page)))
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (any::<bool>(), 0..3usize, range(), 0..8u64, prop::bool::weighted(0.2), 0..6usize, prop::bool::weighted(0.8))
            .prop_map(|(kernel, win, (page, npages), pa_block, skew, attrs, blocks)| Op::Map {
                kernel, win, page, npages, pa_block, skew, attrs, blocks
            }),
        3 => (any::<bool>(), 0..3usize, range())
            .prop_map(|(kernel, win, (page, npages))| Op::Unmap { kernel, win, page, npages }),
        2 => (any::<bool>(), 0..3usize, range(), 0..6usize)
            .prop_map(|(kernel, win, (page, npages), attrs)| Op::Protect { kernel, win, page, npages, attrs }),
        1 => (1..200u16).prop_map(Op::NewAsid),
    ]
}

type Reference = BTreeMap<u64, (u64, Attrs)>;

struct Harness {
    e: Env,
    refs: [Reference; 2], // [user, kernel]
    fail_every: Option<u64>,
    failures: u64,
}

impl Harness {
    fn apply(&mut self, op: &Op) {
        self.e.m.fill_all();
        let before = self.fail_every.map(|_| self.e.m.snapshot());
        let (kernel, va, len) = match *op {
            Op::Map {
                kernel,
                win,
                page,
                npages,
                ..
            }
            | Op::Unmap {
                kernel,
                win,
                page,
                npages,
            }
            | Op::Protect {
                kernel,
                win,
                page,
                npages,
                ..
            } => (kernel, window(kernel, win) + page * KB4, npages * KB4),
            Op::NewAsid(asid) => {
                self.e.m.tlb_maintenance(&[TlbOp::All]);
                self.e.u.set_asid(Asid(asid));
                self.e.m.set_root_asid(self.e.u.pa(), Asid(asid));
                return;
            }
        };
        let reference = &mut self.refs[kernel as usize];
        let pages = (0..len / KB4).map(|i| va.wrapping_add(i * KB4));
        let (m, root) = self.e.split(kernel);
        let (result, expected) = match *op {
            Op::Map {
                pa_block,
                skew,
                attrs: ai,
                blocks,
                ..
            } => {
                let pa = PA_BASE + pa_block * MB2 + (va % MB2) + if skew { KB4 } else { 0 };
                let a = attrs(kernel, ai);
                let first = pages.clone().find(|p| reference.contains_key(p));
                let expected = match first {
                    Some(p) => Err(MapError::AlreadyMapped(VirtAddr(p))),
                    None => Ok(()),
                };
                let r = root.map(m, VirtAddr(va), PhysAddr(pa), len, a, blocks);
                if r.is_ok() {
                    for (i, p) in pages.enumerate() {
                        reference.insert(p, (pa + i as u64 * KB4, a));
                    }
                }
                (r, expected)
            }
            Op::Unmap { .. } => {
                let r = root.unmap(m, VirtAddr(va), len);
                if r.is_ok() {
                    for p in pages {
                        reference.remove(&p);
                    }
                }
                (r, Ok(()))
            }
            Op::Protect { attrs: ai, .. } => {
                let a = attrs(kernel, ai);
                let r = root.protect(m, VirtAddr(va), len, a);
                if r.is_ok() {
                    for p in pages {
                        if let Some(v) = reference.get_mut(&p) {
                            v.1 = a;
                        }
                    }
                }
                (r, Ok(()))
            }
            Op::NewAsid(_) => unreachable!(),
        };
        match result {
            Err(MapError::OutOfMemory) if self.fail_every.is_some() => {
                self.failures += 1;
                assert!(
                    before.unwrap() == m.snapshot(),
                    "failed {op:?} changed the tables"
                );
            }
            r => assert_eq!(r, expected, "{op:?}"),
        }
        self.e.m.check_all();
        self.verify(kernel);
    }

    /// The engine's leaves, expanded to pages, equal the reference; a sample of pages
    /// translates identically through `translate` and the model's table walk.
    fn verify(&self, kernel: bool) {
        let reference = &self.refs[kernel as usize];
        let root = if kernel { &self.e.k } else { &self.e.u };
        let m: &Model = &self.e.m;
        let mut got = Vec::with_capacity(reference.len());
        for l in root.leaves(m) {
            for i in 0..l.size / KB4 {
                got.push((l.va.0.wrapping_add(i * KB4), (l.pa.0 + i * KB4, l.attrs)));
            }
        }
        let want: Vec<(u64, (u64, Attrs))> = reference.iter().map(|(k, v)| (*k, *v)).collect();
        if got != want {
            let diff = got
                .iter()
                .zip(&want)
                .position(|(a, b)| a != b)
                .unwrap_or(got.len().min(want.len()));
            panic!(
                "leaves differ from the reference at #{diff}: got {:x?}, want {:x?} ({} vs {} pages)",
                got.get(diff),
                want.get(diff),
                got.len(),
                want.len()
            );
        }
        for (n, (&va, &(pa, a))) in reference.iter().enumerate() {
            if n % 7 != 0 {
                continue;
            }
            let probe = VirtAddr(va + (n as u64 * 8) % KB4);
            let t = root.translate(m, probe).expect("mapped");
            assert_eq!((t.pa.0, t.attrs), (pa + probe.0 % KB4, a), "translate {probe:?}");
            let w = m.table_walk(root.pa(), probe).expect("model walk");
            assert_eq!(w.pa(probe.0), t.pa, "model walk {probe:?}");
            assert_eq!(w.desc, t.desc);
        }
        // And a few addresses the reference says are unmapped.
        for (i, probe) in [0u64, 1, 2]
            .iter()
            .map(|w| window(kernel, *w as usize))
            .enumerate()
        {
            let probe = probe + i as u64 * 0x1_3000;
            if !reference.contains_key(&probe) {
                assert_eq!(root.translate(m, VirtAddr(probe)), None);
                assert!(m.table_walk(root.pa(), VirtAddr(probe)).is_err());
            }
        }
    }
}

fn run(ops: Vec<Op>, tlbi_range: bool, fail_every: Option<u64>) {
    let mut h = Harness {
        e: Env::new(tlbi_range),
        refs: [Reference::new(), Reference::new()],
        fail_every,
        failures: 0,
    };
    if let Some(n) = fail_every {
        h.e.m.set_alloc_failure(AllocFailure::Every(n));
    }
    h.e.m.set_logging(false);
    for op in &ops {
        h.apply(op);
    }
    h.e.m.set_alloc_failure(AllocFailure::Never);
    h.e.teardown();
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 48,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_operations_match_the_reference(
        ops in prop::collection::vec(op(), 1..28),
        tlbi_range in any::<bool>(),
    ) {
        run(ops, tlbi_range, None);
    }

    #[test]
    fn random_operations_with_failing_allocations(
        ops in prop::collection::vec(op(), 1..20),
        tlbi_range in any::<bool>(),
        every in 2..7u64,
    ) {
        run(ops, tlbi_range, Some(every));
    }
}

/// A fixed dense sequence over one window, so the suite always exercises splits, frees and
/// the top of the kernel half whatever proptest draws.
#[test]
fn scripted_sequence_at_the_top_of_the_kernel_half() {
    let mut ops = Vec::new();
    for (i, (page, npages)) in [
        (0u64, 4096u64),
        (100, 3),
        (512, 512),
        (1024, 1500),
        (4095, 1),
        (3000, 1096),
    ]
    .into_iter()
    .enumerate()
    {
        ops.push(Op::Unmap {
            kernel: true,
            win: 2,
            page: 0,
            npages: 4096,
        });
        ops.push(Op::Map {
            kernel: true,
            win: 2,
            page: 0,
            npages: 4096,
            pa_block: 0,
            skew: false,
            attrs: 0,
            blocks: true,
        });
        ops.push(Op::Protect {
            kernel: true,
            win: 2,
            page,
            npages,
            attrs: 1 + i % 5,
        });
        ops.push(Op::Unmap {
            kernel: true,
            win: 2,
            page: page / 2,
            npages: npages.min(4096 - page / 2),
        });
        ops.push(Op::Map {
            kernel: false,
            win: 2,
            page,
            npages,
            pa_block: 3,
            skew: i % 2 == 0,
            attrs: i % 6,
            blocks: true,
        });
    }
    run(ops.clone(), false, None);
    run(ops, true, Some(4));
}
