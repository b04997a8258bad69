use super::*;
use alloc::string::ToString;
use alloc::vec;
use proptest::prelude::*;

const R: u32 = 4;
const W: u32 = 2;
const X: u32 = 1;

/// A program header to write.
#[derive(Clone, Copy, Debug)]
struct Ph {
    p_type: u32,
    flags: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
    memsz: u64,
    align: u64,
}

fn ph(p_type: u32, flags: u32, offset: u64, vaddr: u64, filesz: u64, memsz: u64) -> Ph {
    Ph {
        p_type,
        flags,
        offset,
        vaddr,
        filesz,
        memsz,
        align: 0x10000,
    }
}

fn load(flags: u32, offset: u64, vaddr: u64, filesz: u64, memsz: u64) -> Ph {
    ph(PT_LOAD, flags, offset, vaddr, filesz, memsz)
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Writes an ELF64 AArch64 file of type `e_type`: the header, the program headers at offset 64,
/// and a recognisable byte pattern everywhere else, long enough for every header's file range
/// that ends below 1 MiB.
fn image(e_type: u16, entry: u64, phdrs: &[Ph]) -> Vec<u8> {
    let table_end = EHDR_SIZE + PHDR_SIZE * phdrs.len();
    let data_end = phdrs
        .iter()
        .filter_map(|p| p.offset.checked_add(p.filesz))
        .filter(|&end| end < 1 << 20)
        .max()
        .unwrap_or(0) as usize;
    let mut b: Vec<u8> = (0..table_end.max(data_end)).map(|i| (i % 251) as u8).collect();
    b[..EHDR_SIZE].fill(0);
    b[..4].copy_from_slice(b"\x7fELF");
    b[4] = 2; // ELFCLASS64
    b[5] = 1; // ELFDATA2LSB
    b[6] = 1; // EV_CURRENT
    put16(&mut b, 16, e_type);
    put16(&mut b, 18, EM_AARCH64);
    put32(&mut b, 20, 1);
    put64(&mut b, 24, entry);
    put64(&mut b, 32, EHDR_SIZE as u64);
    put16(&mut b, 52, EHDR_SIZE as u16);
    put16(&mut b, 54, PHDR_SIZE as u16);
    put16(&mut b, 56, phdrs.len() as u16);
    for (i, p) in phdrs.iter().enumerate() {
        let at = EHDR_SIZE + i * PHDR_SIZE;
        put32(&mut b, at, p.p_type);
        put32(&mut b, at + 4, p.flags);
        put64(&mut b, at + 8, p.offset);
        put64(&mut b, at + 16, p.vaddr);
        put64(&mut b, at + 24, p.vaddr);
        put64(&mut b, at + 32, p.filesz);
        put64(&mut b, at + 40, p.memsz);
        put64(&mut b, at + 48, p.align);
    }
    b
}

const ENTRY: u64 = 0x40_0100;

/// A typical static executable: PT_PHDR, text (with the headers), data+bss, TLS, GNU_STACK.
fn static_exec_phdrs() -> Vec<Ph> {
    vec![
        ph(PT_PHDR, R, 64, 0x40_0040, 5 * 56, 5 * 56),
        load(R | X, 0, 0x40_0000, 0x1800, 0x1800),
        load(R | W, 0x1f00, 0x41_1f00, 0x100, 0x2000),
        Ph {
            align: 16,
            ..ph(PT_TLS, R, 0x1f00, 0x41_1f00, 0x10, 0x40)
        },
        Ph {
            align: 16,
            ..ph(PT_GNU_STACK, R | W, 0, 0, 0, 0)
        },
    ]
}

fn static_exec() -> Vec<u8> {
    image(ET_EXEC, ENTRY, &static_exec_phdrs())
}

fn err(phdrs: &[Ph]) -> ElfError {
    Elf::parse(&image(ET_EXEC, ENTRY, phdrs)).unwrap_err()
}

#[test]
fn parses_a_static_executable() {
    let bytes = static_exec();
    let elf = Elf::parse(&bytes).unwrap();
    assert!(!elf.is_pie());
    assert_eq!(elf.entry(), ENTRY);
    assert_eq!(elf.phnum(), 5);
    assert_eq!(elf.phent(), 56);
    assert_eq!(elf.phdr_vaddr(), Some(0x40_0040));
    assert_eq!(elf.bytes().len(), bytes.len());
    let segs = elf.segments();
    assert_eq!(segs.len(), 2);
    assert_eq!(
        segs[0],
        Segment {
            vaddr: 0x40_0000,
            memsz: 0x1800,
            offset: 0,
            filesz: 0x1800,
            flags: Flags::READ | Flags::EXEC,
            align: 0x10000
        }
    );
    assert!(segs[0].flags.readable() && segs[0].flags.executable() && !segs[0].flags.writable());
    assert_eq!(segs[1].flags.bits(), R | W);
    assert_eq!(segs[1].end(), 0x41_3f00);
    assert_eq!(segs[1].pages(), 0x41_1000..0x41_4000);
    assert_eq!(elf.segment_data(&segs[1]), &bytes[0x1f00..0x2000]);
    assert_eq!(elf.image_range(), 0x40_0000..0x41_4000);
    assert_eq!(
        elf.tls(),
        Some(Tls {
            vaddr: 0x41_1f00,
            memsz: 0x40,
            filesz: 0x10,
            align: 16
        })
    );
    assert_eq!(elf.stack_flags(), Some(Flags::READ | Flags::WRITE));
    assert!(!elf.executable_stack());
}

#[test]
fn phdr_address_from_the_load_that_holds_the_table() {
    let mut phdrs = static_exec_phdrs();
    phdrs.remove(0);
    let bytes = image(ET_EXEC, ENTRY, &phdrs);
    let elf = Elf::parse(&bytes).unwrap();
    assert_eq!(elf.phdr_vaddr(), Some(0x40_0040));
    assert_eq!(
        elf.tls(),
        Some(Tls {
            vaddr: 0x41_1f00,
            memsz: 0x40,
            filesz: 0x10,
            align: 16
        })
    );
}

#[test]
fn phdr_address_unknown_when_no_load_maps_the_table() {
    let bytes = image(
        ET_EXEC,
        0x40_1000,
        &[load(R | X, 0x1000, 0x40_1000, 0x100, 0x100)],
    );
    let elf = Elf::parse(&bytes).unwrap();
    assert_eq!(elf.phdr_vaddr(), None);
    assert_eq!(elf.tls(), None);
    assert_eq!(elf.stack_flags(), None);
    assert!(!elf.executable_stack());
}

#[test]
fn static_pie_is_accepted_unbiased() {
    let phdrs = [
        ph(PT_PHDR, R, 64, 64, 4 * 56, 4 * 56),
        load(R | X, 0, 0, 0x1000, 0x1000),
        load(R | W, 0x1000, 0x1_1000, 0x80, 0x1000),
        ph(PT_DYNAMIC, R | W, 0x1000, 0x1_1000, 0x80, 0x80),
    ];
    let bytes = image(ET_DYN, 0x200, &phdrs);
    let elf = Elf::parse(&bytes).unwrap();
    assert!(elf.is_pie());
    assert_eq!(elf.entry(), 0x200);
    assert_eq!(elf.phdr_vaddr(), Some(64));
    assert_eq!(elf.image_range(), 0..0x1_2000);
}

#[test]
fn executable_stack_is_reported() {
    let mut phdrs = static_exec_phdrs();
    phdrs[4].flags = R | W | X;
    let bytes = image(ET_EXEC, ENTRY, &phdrs);
    let elf = Elf::parse(&bytes).unwrap();
    assert!(elf.executable_stack());
    assert_eq!(elf.stack_flags(), Some(Flags(R | W | X)));
}

#[test]
fn segments_may_share_a_page_and_reach_the_top() {
    let top = USER_VA_END - 0x1000;
    let phdrs = [
        load(R | X, 0, top - 0x2000, 0x1100, 0x1100),
        load(R | W, 0x1100, top - 0x2000 + 0x1100, 0x10, 0xf00),
    ];
    let elf_bytes = image(ET_EXEC, top - 0x2000 + 0x100, &phdrs);
    let elf = Elf::parse(&elf_bytes).unwrap();
    assert_eq!(elf.segments()[1].end(), top);
    assert_eq!(elf.image_range(), top - 0x2000..top);

    let phdrs = [load(R | X, 0, USER_VA_END - 0x1000, 0x800, 0x1000)];
    assert!(Elf::parse(&image(ET_EXEC, USER_VA_END - 0x1000, &phdrs)).is_ok());
}

#[test]
fn zero_sized_loads_are_kept() {
    let phdrs = [
        load(R | X, 0, 0x40_0000, 0x1000, 0x1000),
        load(R, 0x1000, 0x40_1000, 0, 0),
    ];
    let bytes = image(ET_EXEC, ENTRY, &phdrs);
    let elf = Elf::parse(&bytes).unwrap();
    assert_eq!(elf.segments().len(), 2);
    assert!(elf.segment_data(&elf.segments()[1]).is_empty());
}

#[test]
fn header_errors() {
    let good = static_exec();
    assert_eq!(
        Elf::parse(&good[..63]).unwrap_err(),
        ElfError::TooShort { len: 63 }
    );
    assert_eq!(Elf::parse(&[]).unwrap_err(), ElfError::TooShort { len: 0 });

    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = good.clone();
        f(&mut b);
        Elf::parse(&b).unwrap_err()
    };
    assert_eq!(with(&|b| b[1] = b'e'), ElfError::BadMagic { found: *b"\x7feLF" });
    assert_eq!(with(&|b| b[4] = 1), ElfError::NotElf64 { class: 1 });
    assert_eq!(with(&|b| b[5] = 2), ElfError::NotLittleEndian { data: 2 });
    assert_eq!(with(&|b| b[6] = 0), ElfError::BadVersion { ident: 0, version: 1 });
    assert_eq!(
        with(&|b| put32(b, 20, 2)),
        ElfError::BadVersion { ident: 1, version: 2 }
    );
    assert_eq!(
        with(&|b| put16(b, 18, 62)),
        ElfError::WrongMachine { machine: 62 }
    );
    for e_type in [0, 1, 4, 0xfe00] {
        assert_eq!(with(&|b| put16(b, 16, e_type)), ElfError::BadType { e_type });
    }
    assert_eq!(
        with(&|b| put16(b, 54, 64)),
        ElfError::BadPhentsize { phentsize: 64 }
    );
    for phnum in [0, MAX_PHNUM + 1, 0xffff] {
        assert_eq!(with(&|b| put16(b, 56, phnum)), ElfError::BadPhnum { phnum });
    }
    let len = good.len();
    assert_eq!(
        with(&|b| put16(b, 56, MAX_PHNUM)),
        ElfError::PhdrsOutOfFile {
            phoff: 64,
            phnum: MAX_PHNUM,
            file_len: len
        }
    );
    for phoff in [len as u64, len as u64 - 56 * 5 + 1, u64::MAX - 8] {
        assert_eq!(
            with(&|b| put64(b, 32, phoff)),
            ElfError::PhdrsOutOfFile {
                phoff,
                phnum: 5,
                file_len: len
            }
        );
    }
}

#[test]
fn interpreter_is_rejected() {
    let mut phdrs = static_exec_phdrs();
    let interp = b"/lib/ld-linux-aarch64.so.1\0";
    phdrs.insert(
        1,
        ph(
            PT_INTERP,
            R,
            0x400,
            0x40_0400,
            interp.len() as u64,
            interp.len() as u64,
        ),
    );
    phdrs[0].filesz = 6 * 56;
    phdrs[0].memsz = 6 * 56;
    for e_type in [ET_EXEC, ET_DYN] {
        let mut bytes = image(e_type, ENTRY, &phdrs);
        bytes[0x400..0x400 + interp.len()].copy_from_slice(interp);
        assert_eq!(
            Elf::parse(&bytes).unwrap_err(),
            ElfError::Dynamic {
                interpreter: "/lib/ld-linux-aarch64.so.1".to_string()
            }
        );
    }
    // An interpreter path outside the file.
    let len = 1 << 20;
    phdrs[1].offset = len;
    let bytes = image(ET_EXEC, ENTRY, &phdrs);
    let file_len = bytes.len();
    assert_eq!(
        Elf::parse(&bytes).unwrap_err(),
        ElfError::SegmentOutOfFile {
            index: 1,
            offset: len,
            filesz: interp.len() as u64,
            file_len
        }
    );
}

#[test]
fn load_out_of_file() {
    let bytes = image(ET_EXEC, ENTRY, &[load(R | X, 0, 0x40_0000, 0x200, 0x1000)]);
    let mut short = bytes.clone();
    short.truncate(0x100);
    assert_eq!(
        Elf::parse(&short).unwrap_err(),
        ElfError::SegmentOutOfFile {
            index: 0,
            offset: 0,
            filesz: 0x200,
            file_len: 0x100
        }
    );
    let huge = u64::MAX - 0xfff;
    let phdrs = [
        load(R | X, 0, 0x40_0000, 0x200, 0x1000),
        load(R | W, huge, 0x40_1000, 0x2000, 0x2000),
    ];
    let bytes = image(ET_EXEC, ENTRY, &phdrs);
    let file_len = bytes.len();
    assert_eq!(
        Elf::parse(&bytes).unwrap_err(),
        ElfError::SegmentOutOfFile {
            index: 1,
            offset: huge,
            filesz: 0x2000,
            file_len
        }
    );
}

#[test]
fn filesz_exceeds_memsz() {
    assert_eq!(
        err(&[load(R | X, 0, 0x40_0000, 0x2000, 0x1000)]),
        ElfError::FileszExceedsMemsz {
            index: 0,
            filesz: 0x2000,
            memsz: 0x1000
        }
    );
}

#[test]
fn misaligned() {
    assert_eq!(
        err(&[load(R | X, 0x10, 0x40_0000, 0x20, 0x1000)]),
        ElfError::Misaligned {
            index: 0,
            vaddr: 0x40_0000,
            offset: 0x10
        }
    );
}

#[test]
fn out_of_range() {
    let vaddr = USER_VA_END - 0x1000;
    assert_eq!(
        err(&[load(R | X, 0, vaddr, 0x100, 0x1001)]),
        ElfError::SegmentOutOfRange {
            index: 0,
            vaddr,
            memsz: 0x1001
        }
    );
    let vaddr = u64::MAX - 0xfff;
    assert_eq!(
        err(&[load(R | X, 0, vaddr, 0x100, 0x2000)]),
        ElfError::SegmentOutOfRange {
            index: 0,
            vaddr,
            memsz: 0x2000
        }
    );
    // Past the end once rounded up to a page.
    let vaddr = USER_VA_END - 0x1000;
    assert_eq!(
        err(&[
            load(R | X, 0, vaddr, 0x100, 0x1000),
            load(R | W, 0x100, USER_VA_END + 0x100, 0, 1)
        ]),
        ElfError::SegmentOutOfRange {
            index: 1,
            vaddr: USER_VA_END + 0x100,
            memsz: 1
        }
    );
}

#[test]
fn overlapping_or_unsorted() {
    assert_eq!(
        err(&[
            load(R | X, 0, 0x40_0000, 0x1000, 0x1800),
            load(R | W, 0x1000, 0x40_1000, 0x100, 0x100)
        ]),
        ElfError::SegmentOverlap {
            index: 1,
            vaddr: 0x40_1000,
            prev_end: 0x40_1800
        }
    );
    assert_eq!(
        err(&[
            load(R | X, 0, 0x40_0000, 0x1000, 0x1000),
            load(R | W, 0x1000, 0x30_1000, 0x100, 0x100)
        ]),
        ElfError::SegmentOverlap {
            index: 1,
            vaddr: 0x30_1000,
            prev_end: 0x40_1000
        }
    );
}

#[test]
fn duplicates() {
    let text = load(R | X, 0, 0x40_0000, 0x1000, 0x1000);
    for p_type in [PT_PHDR, PT_TLS, PT_GNU_STACK] {
        let one = ph(p_type, R, 64, 0x40_0040, 0, 0);
        assert_eq!(
            err(&[text, one, one]),
            ElfError::DuplicateSegment { index: 2, p_type }
        );
    }
}

#[test]
fn no_load_segments() {
    assert_eq!(
        err(&[ph(PT_GNU_STACK, R | W, 0, 0, 0, 0)]),
        ElfError::NoLoadSegments
    );
}

#[test]
fn entry_must_be_executable() {
    let phdrs = [
        load(R | X, 0, 0x40_0000, 0x1000, 0x1000),
        load(R | W, 0x1000, 0x41_0000 + 0x1000, 0x10, 0x10),
    ];
    for entry in [0x41_1000, 0x40_1000, 0x3f_ffff, 0] {
        let bytes = image(ET_EXEC, entry, &phdrs);
        assert_eq!(
            Elf::parse(&bytes).unwrap_err(),
            ElfError::EntryNotExecutable { entry }
        );
    }
}

#[test]
fn pt_phdr_must_be_loaded() {
    // Inside the text segment's memory but past its file bytes.
    let mut phdrs = static_exec_phdrs();
    phdrs[1].filesz = 0x100;
    phdrs[0].vaddr = 0x40_00f0;
    let size = 5 * 56;
    assert_eq!(
        err(&phdrs),
        ElfError::PhdrNotLoaded {
            vaddr: 0x40_00f0,
            size
        }
    );
    // Not in any segment; and wrapping around.
    for vaddr in [0x10_0000, u64::MAX - 8] {
        let mut phdrs = static_exec_phdrs();
        phdrs[0].vaddr = vaddr;
        assert_eq!(err(&phdrs), ElfError::PhdrNotLoaded { vaddr, size });
    }
}

#[test]
fn errors_display() {
    let errors = [
        ElfError::TooShort { len: 1 },
        ElfError::BadMagic { found: [0; 4] },
        ElfError::NotElf64 { class: 1 },
        ElfError::NotLittleEndian { data: 2 },
        ElfError::BadVersion { ident: 0, version: 1 },
        ElfError::WrongMachine { machine: 62 },
        ElfError::BadType { e_type: 1 },
        ElfError::BadPhentsize { phentsize: 1 },
        ElfError::BadPhnum { phnum: 0 },
        ElfError::PhdrsOutOfFile {
            phoff: 1,
            phnum: 1,
            file_len: 1,
        },
        ElfError::Dynamic {
            interpreter: "/lib/ld.so".to_string(),
        },
        ElfError::SegmentOutOfFile {
            index: 0,
            offset: 0,
            filesz: 1,
            file_len: 0,
        },
        ElfError::FileszExceedsMemsz {
            index: 0,
            filesz: 2,
            memsz: 1,
        },
        ElfError::Misaligned {
            index: 0,
            vaddr: 0,
            offset: 1,
        },
        ElfError::SegmentOutOfRange {
            index: 0,
            vaddr: 0,
            memsz: 0,
        },
        ElfError::SegmentOverlap {
            index: 1,
            vaddr: 0,
            prev_end: 1,
        },
        ElfError::DuplicateSegment {
            index: 1,
            p_type: PT_TLS,
        },
        ElfError::NoLoadSegments,
        ElfError::EntryNotExecutable { entry: 0 },
        ElfError::PhdrNotLoaded { vaddr: 0, size: 56 },
    ];
    for e in errors {
        let text = e.to_string();
        assert!(text.starts_with("elf: "), "{text}");
    }
}

/// One generated `PT_LOAD`: pages of gap before it, filesz, memsz beyond filesz, flags.
type SegSpec = (u64, u64, u64, u32);

/// A valid layout: the segments (the first is executable and holds the entry, at `entry_at`
/// modulo its size), the entry choice, and whether it is a static-pie.
fn layout() -> impl Strategy<Value = (Vec<SegSpec>, u64, bool)> {
    (
        proptest::collection::vec((0u64..4, 0u64..3000, 0u64..9000, 0u32..8), 1..5),
        any::<u64>(),
        any::<bool>(),
    )
}

fn layout_image(segs: &[SegSpec], entry_at: u64, pie: bool) -> (Vec<u8>, Vec<Segment>, u64) {
    let base = if pie { 0 } else { 0x40_0000 };
    let mut file = (EHDR_SIZE + PHDR_SIZE * segs.len()) as u64;
    let mut va = base;
    let mut phdrs = Vec::new();
    let mut want = Vec::new();
    for (i, &(gap, filesz, extra, flags)) in segs.iter().enumerate() {
        let offset = file;
        let vaddr = align_up(va) + gap * PAGE_SIZE + offset % PAGE_SIZE;
        let memsz = filesz + extra + u64::from(i == 0);
        let flags = if i == 0 { flags | X } else { flags };
        phdrs.push(load(flags, offset, vaddr, filesz, memsz));
        want.push(Segment {
            vaddr,
            memsz,
            offset,
            filesz,
            flags: Flags(flags),
            align: 0x10000,
        });
        file += filesz;
        va = vaddr + memsz;
    }
    let entry = want[0].vaddr + entry_at % want[0].memsz;
    (
        image(if pie { ET_DYN } else { ET_EXEC }, entry, &phdrs),
        want,
        entry,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn valid_layouts_parse((segs, entry_at, pie) in layout()) {
        let (bytes, want, entry) = layout_image(&segs, entry_at, pie);
        let elf = Elf::parse(&bytes).unwrap();
        prop_assert_eq!(elf.segments(), want.as_slice());
        prop_assert_eq!(elf.entry(), entry);
        prop_assert_eq!(elf.is_pie(), pie);
        prop_assert_eq!(elf.phnum() as usize, segs.len());
        for s in elf.segments() {
            prop_assert_eq!(elf.segment_data(s).len() as u64, s.filesz);
        }
    }

    #[test]
    fn mutated_elves_never_panic(
        (segs, entry_at, pie) in layout(),
        edits in proptest::collection::vec((0usize..EHDR_SIZE + 5 * PHDR_SIZE, any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        do_cut in any::<bool>(),
    ) {
        let (mut bytes, _, _) = layout_image(&segs, entry_at, pie);
        for (at, byte) in edits {
            let at = at % bytes.len();
            bytes[at] = byte;
        }
        if do_cut {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        if let Ok(elf) = Elf::parse(&bytes) {
            for s in elf.segments() {
                prop_assert!(elf.segment_data(s).len() as u64 == s.filesz);
                prop_assert!(s.end() <= USER_VA_END);
            }
            let _ = (elf.phdr_vaddr(), elf.tls(), elf.executable_stack(), elf.image_range(), elf.entry());
        }
    }

    #[test]
    fn random_bytes_never_panic(mut bytes in proptest::collection::vec(any::<u8>(), 0..400), fix in any::<bool>()) {
        if fix && bytes.len() >= EHDR_SIZE {
            // A plausible header over random program headers.
            let good = image(ET_EXEC, ENTRY, &[]);
            bytes[..54].copy_from_slice(&good[..54]);
            bytes[54..56].copy_from_slice(&(PHDR_SIZE as u16).to_le_bytes());
            bytes[56] %= 6;
            bytes[57] = 0;
            put64(&mut bytes, 32, EHDR_SIZE as u64);
        }
        let _ = Elf::parse(&bytes);
    }
}

#[test]
fn interpreter_wins_over_other_errors() {
    let interp = b"/lib/ld-musl-aarch64.so.1\0";
    let phdrs = [
        load(R | X, 0x10, 0x40_0000, 0x2000, 0x1000),
        ph(
            PT_INTERP,
            R,
            0x200,
            0x40_0200,
            interp.len() as u64,
            interp.len() as u64,
        ),
    ];
    let mut bytes = image(ET_EXEC, 0, &phdrs);
    bytes[0x200..0x200 + interp.len()].copy_from_slice(interp);
    assert_eq!(
        Elf::parse(&bytes).unwrap_err(),
        ElfError::Dynamic {
            interpreter: "/lib/ld-musl-aarch64.so.1".to_string()
        }
    );
}

#[test]
fn debug_output_is_short() {
    let bytes = static_exec();
    let text = alloc::format!("{:?}", Elf::parse(&bytes).unwrap());
    assert!(
        text.starts_with("Elf { len: 8192, pie: false, entry: 0x400100"),
        "{text}"
    );
}
