use super::*;
use alloc::string::{String, ToString};
use proptest::prelude::*;

const TOP: u64 = 0x1_0000_0000;
const RANDOM: [u8; 16] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16];

/// What a program's start-up code sees, read back from a built stack.
#[derive(Debug)]
struct Parsed {
    argv: Vec<String>,
    envp: Vec<String>,
    auxv: Vec<(u64, u64)>,
    /// Address just past the AT_NULL entry.
    vectors_end: u64,
}

fn word(st: &InitialStack, top: u64, addr: u64) -> u64 {
    assert!(
        addr >= st.sp && addr + 8 <= top && addr.is_multiple_of(8),
        "word at {addr:#x}"
    );
    let at = (addr - st.sp) as usize;
    u64::from_le_bytes(st.bytes[at..at + 8].try_into().unwrap())
}

/// The NUL-terminated string at `addr`, which must lie inside the image.
fn cstr(st: &InitialStack, top: u64, addr: u64) -> String {
    assert!(addr >= st.sp && addr < top, "string at {addr:#x}");
    let rest = &st.bytes[(addr - st.sp) as usize..];
    let len = rest.iter().position(|&b| b == 0).expect("NUL-terminated");
    String::from_utf8(rest[..len].to_vec()).unwrap()
}

fn parse(st: &InitialStack, top: u64) -> Parsed {
    assert_eq!(st.bytes.len() as u64, top - st.sp);
    let mut at = st.sp;
    let mut next = || {
        let w = word(st, top, at);
        at += 8;
        w
    };
    let argc = next();
    let argv_ptrs: Vec<u64> = (0..argc).map(|_| next()).collect();
    assert_eq!(next(), 0, "argv ends with NULL");
    let mut envp_ptrs = Vec::new();
    loop {
        match next() {
            0 => break,
            p => envp_ptrs.push(p),
        }
    }
    let mut auxv = Vec::new();
    loop {
        let (key, value) = (next(), next());
        if key == AT_NULL {
            assert_eq!(value, 0);
            break;
        }
        auxv.push((key, value));
    }
    Parsed {
        argv: argv_ptrs.iter().map(|&p| cstr(st, top, p)).collect(),
        envp: envp_ptrs.iter().map(|&p| cstr(st, top, p)).collect(),
        auxv,
        vectors_end: at,
    }
}

fn aux_value(p: &Parsed, key: u64) -> Option<u64> {
    p.auxv.iter().find(|&&(k, _)| k == key).map(|&(_, v)| v)
}

#[test]
fn exact_layout_of_a_small_stack() {
    let aux = [(AT_PAGESZ, 4096), (AT_PHDR, 0x40_0040)];
    let st = build(TOP, &["/bin/hello", "a"], &["HOME=/"], &aux, RANDOM).unwrap();
    // Strings: 11 + 2 + 7 = 20 bytes below an 8-byte end marker; random 16-aligned below them
    // (48 below top); 16 words of vectors (128 bytes): 176 bytes in all.
    assert_eq!(st.sp, TOP - 176);
    assert_eq!(st.bytes.len(), 176);
    assert_eq!(st.random, TOP - 48);
    assert_eq!(st.execfn, TOP - 28);
    assert_eq!(&st.bytes[176 - 28..176 - 8], b"/bin/hello\0a\0HOME=/\0");
    assert_eq!(&st.bytes[176 - 8..], &[0; 8]);
    assert_eq!(&st.bytes[176 - 48..176 - 32], &RANDOM);
    let words: Vec<u64> = (0..16).map(|i| word(&st, TOP, st.sp + 8 * i)).collect();
    assert_eq!(
        words,
        [
            2,
            TOP - 28,
            TOP - 17,
            0,
            TOP - 15,
            0,
            AT_PAGESZ,
            4096,
            AT_PHDR,
            0x40_0040,
            AT_RANDOM,
            TOP - 48,
            AT_EXECFN,
            TOP - 28,
            AT_NULL,
            0
        ]
    );
    // The padding between the vectors and the random bytes is zero.
    assert!(st.bytes[128..176 - 48].iter().all(|&b| b == 0));
}

#[test]
fn reads_back_without_environment_or_aux() {
    let st = build(TOP, &["prog"], &[], &[], RANDOM).unwrap();
    let p = parse(&st, TOP);
    assert_eq!(p.argv, ["prog"]);
    assert!(p.envp.is_empty());
    assert_eq!(p.auxv, [(AT_RANDOM, st.random), (AT_EXECFN, st.execfn)]);
    assert_eq!(st.sp % 16, 0);
}

#[test]
fn empty_strings_are_kept() {
    let st = build(TOP, &["", ""], &[""], &[], RANDOM).unwrap();
    let p = parse(&st, TOP);
    assert_eq!(p.argv, ["", ""]);
    assert_eq!(p.envp, [""]);
}

#[test]
fn longest_string_fits() {
    let long = "x".repeat(MAX_ARG_STRLEN - 1);
    let st = build(TOP, &[&long], &[], &[], RANDOM).unwrap();
    assert_eq!(parse(&st, TOP).argv[0].len(), MAX_ARG_STRLEN - 1);
}

#[test]
fn errors() {
    assert_eq!(
        build(TOP + 8, &["a"], &[], &[], RANDOM).unwrap_err(),
        StackError::MisalignedTop { top: TOP + 8 }
    );
    assert_eq!(
        build(TOP, &[], &[], &[], RANDOM).unwrap_err(),
        StackError::EmptyArgv
    );
    assert_eq!(
        build(TOP, &["a", "b\0c"], &[], &[], RANDOM).unwrap_err(),
        StackError::InteriorNul {
            which: Strings::Argv,
            index: 1
        }
    );
    assert_eq!(
        build(TOP, &["a"], &["X=1", "Y=\0"], &[], RANDOM).unwrap_err(),
        StackError::InteriorNul {
            which: Strings::Envp,
            index: 1
        }
    );
    let long = "x".repeat(MAX_ARG_STRLEN);
    assert_eq!(
        build(TOP, &["a", &long], &[], &[], RANDOM).unwrap_err(),
        StackError::StringTooLong {
            which: Strings::Argv,
            index: 1,
            len: MAX_ARG_STRLEN
        }
    );
    assert_eq!(
        build(TOP, &["a"], &[&long], &[], RANDOM).unwrap_err(),
        StackError::StringTooLong {
            which: Strings::Envp,
            index: 0,
            len: MAX_ARG_STRLEN
        }
    );
    for key in [AT_NULL, AT_RANDOM, AT_EXECFN] {
        assert_eq!(
            build(TOP, &["a"], &[], &[(AT_PAGESZ, 4096), (key, 1)], RANDOM).unwrap_err(),
            StackError::ReservedAux { key }
        );
    }
    // Two strings just under the per-string limit exceed the total.
    let big = "y".repeat(MAX_ARG_STRLEN - 1);
    assert!(matches!(
        build(TOP, &["a"], &[&big, &big], &[], RANDOM).unwrap_err(),
        StackError::TooLarge {
            limit: MAX_STACK_IMAGE,
            ..
        }
    ));
    // Many small strings: the pointers push it over.
    let many = alloc::vec!["z"; MAX_STACK_IMAGE / 12];
    assert!(build(TOP, &many, &[], &[], RANDOM).is_ok_and(|st| st.bytes.len() <= MAX_STACK_IMAGE));
    let many = alloc::vec!["z"; MAX_STACK_IMAGE / 8];
    assert!(build(TOP, &many, &[], &[], RANDOM).is_err_and(
        |e| matches!(e, StackError::TooLarge { size, limit: MAX_STACK_IMAGE } if size > MAX_STACK_IMAGE)
    ));
    assert_eq!(
        build(64, &["abc"], &[], &[], RANDOM).unwrap_err(),
        StackError::TopTooLow { top: 64, size: 112 }
    );
}

#[test]
fn errors_display() {
    let errors = [
        StackError::MisalignedTop { top: 8 },
        StackError::EmptyArgv,
        StackError::InteriorNul {
            which: Strings::Argv,
            index: 0,
        },
        StackError::StringTooLong {
            which: Strings::Envp,
            index: 0,
            len: MAX_ARG_STRLEN,
        },
        StackError::ReservedAux { key: AT_RANDOM },
        StackError::TooLarge { size: 1, limit: 0 },
        StackError::TopTooLow { top: 0, size: 16 },
    ];
    for e in errors {
        let text = e.to_string();
        assert!(text.starts_with("stack: "), "{text}");
    }
}

/// Auxv entries a caller may pass (not the reserved ones).
fn caller_aux() -> impl Strategy<Value = Vec<(u64, u64)>> {
    let keys = prop::sample::select(alloc::vec![
        AT_PHDR,
        AT_PHENT,
        AT_PHNUM,
        AT_PAGESZ,
        AT_BASE,
        AT_FLAGS,
        AT_ENTRY,
        AT_UID,
        AT_EUID,
        AT_GID,
        AT_EGID,
        AT_HWCAP,
        AT_CLKTCK,
        AT_SECURE,
        AT_HWCAP2,
        AT_MINSIGSTKSZ,
    ]);
    proptest::collection::vec((keys, any::<u64>()), 0..12)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn built_stacks_read_back(
        argv in proptest::collection::vec("[^\0]{0,20}", 1..8),
        envp in proptest::collection::vec("[^\0]{0,30}", 0..8),
        aux in caller_aux(),
        random in any::<[u8; 16]>(),
        top_page in (1u64 << 8)..(1u64 << 35),
        top_in_page in 0u64..256,
    ) {
        let top = (top_page << 12) + top_in_page * 16;
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let envp: Vec<&str> = envp.iter().map(String::as_str).collect();
        let st = build(top, &argv, &envp, &aux, random).unwrap();
        prop_assert_eq!(st.sp % 16, 0);
        prop_assert!(st.sp < top);
        let p = parse(&st, top);
        prop_assert_eq!(&p.argv, &argv);
        prop_assert_eq!(&p.envp, &envp);

        // The caller's entries come first, in order; then AT_RANDOM and AT_EXECFN.
        prop_assert_eq!(&p.auxv[..aux.len()], aux.as_slice());
        prop_assert_eq!(p.auxv.len(), aux.len() + 2);
        let random_addr = aux_value(&p, AT_RANDOM).unwrap();
        prop_assert_eq!(random_addr, st.random);
        prop_assert!(random_addr >= p.vectors_end && random_addr + 16 <= top);
        let at = (random_addr - st.sp) as usize;
        prop_assert_eq!(&st.bytes[at..at + 16], &random);
        let execfn = aux_value(&p, AT_EXECFN).unwrap();
        prop_assert_eq!(execfn, st.execfn);
        prop_assert_eq!(execfn, word(&st, top, st.sp + 8));
        prop_assert_eq!(cstr(&st, top, execfn), argv[0]);

        // Every string lies above the vectors and the random bytes, inside the image.
        for i in 0..argv.len() + envp.len() {
            let slot = if i < argv.len() { st.sp + 8 + 8 * i as u64 } else { st.sp + 16 + 8 * i as u64 };
            let ptr = word(&st, top, slot);
            prop_assert!(ptr >= random_addr + 16 && ptr < top);
        }
    }

    #[test]
    fn arbitrary_inputs_never_panic(
        argv in proptest::collection::vec(".{0,8}", 0..4),
        aux in proptest::collection::vec((0u64..64, any::<u64>()), 0..4),
        top in any::<u64>(),
    ) {
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        if let Ok(st) = build(top, &argv, &argv, &aux, [0; 16]) {
            let p = parse(&st, top);
            prop_assert_eq!(&p.argv, &argv);
        }
    }
}

#[test]
fn top_of_address_space() {
    let top: u64 = !15;
    let st = build(top, &["a"], &["b"], &[], RANDOM).unwrap();
    let p = parse(&st, top);
    assert_eq!((p.argv[0].as_str(), p.envp[0].as_str()), ("a", "b"));
    assert_eq!(p.auxv[0], (AT_RANDOM, top - 32));
}
