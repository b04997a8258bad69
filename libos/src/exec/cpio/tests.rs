use super::*;
use alloc::string::{String, ToString};
use alloc::vec;
use proptest::prelude::*;

/// A raw entry: `magic`, the 13 header fields (namesize taken from `name_bytes`), the name
/// bytes as given (NUL included by the caller) and the data, each padded as the format wants.
fn raw_entry(magic: &[u8; 6], mode: u32, name_bytes: &[u8], data: &[u8], check: u32) -> Vec<u8> {
    let fields = [
        1,
        mode,
        0,
        0,
        1,
        0,
        data.len() as u32,
        0,
        0,
        0,
        0,
        name_bytes.len() as u32,
        check,
    ];
    let mut out = Vec::new();
    out.extend_from_slice(magic);
    for field in fields {
        out.extend_from_slice(alloc::format!("{field:08X}").as_bytes());
    }
    out.extend_from_slice(name_bytes);
    pad4(&mut out);
    out.extend_from_slice(data);
    pad4(&mut out);
    out
}

fn trailer() -> Vec<u8> {
    raw_entry(MAGIC, 0, b"TRAILER!!!\0", &[], 0)
}

fn sample() -> Vec<u8> {
    write_newc(&[
        (".", S_IFDIR | 0o755, b""),
        ("bin", S_IFDIR | 0o755, b""),
        ("bin/hello", S_IFREG | 0o755, b"\x7fELF hello"),
        ("etc/motd", S_IFREG | 0o644, b"hi\n"),
        ("bin/sh", S_IFLNK | 0o777, b"hello"),
    ])
}

#[test]
fn reads_what_it_writes() {
    let bytes = sample();
    let archive = Archive::new(&bytes).unwrap();
    assert_eq!(archive.len(), 5);
    assert!(!archive.is_empty());
    let names: Vec<&str> = archive.entries().map(|e| e.name).collect();
    assert_eq!(names, [".", "bin", "bin/hello", "etc/motd", "bin/sh"]);
    let hello = archive.find("bin/hello").unwrap();
    assert_eq!(hello.data, b"\x7fELF hello");
    assert_eq!(hello.mode, S_IFREG | 0o755);
    assert!(hello.is_file() && !hello.is_dir() && !hello.is_symlink());
    assert_eq!(hello.data_offset % 4, 0);
    assert_eq!(
        &bytes[hello.data_offset..hello.data_offset + hello.data.len()],
        hello.data
    );
    assert!(archive.find("bin").unwrap().is_dir());
    assert!(archive.find("bin/sh").unwrap().is_symlink());
    assert_eq!(archive.find("bin/sh").unwrap().file_type(), S_IFLNK);
    assert_eq!(archive.bytes().len(), bytes.len());
}

#[test]
fn writer_fields() {
    let bytes = write_newc(&[("a", S_IFREG | 0o600, b"xyz")]);
    // ino 1, nlink 1, mtime 0, filesize 3, namesize 2.
    assert_eq!(&bytes[..6], b"070701");
    let field = |i: usize| {
        core::str::from_utf8(&bytes[6 + 8 * i..14 + 8 * i])
            .unwrap()
            .to_string()
    };
    assert_eq!(field(0), "00000001");
    assert_eq!(field(1), "00008180");
    assert_eq!(field(4), "00000001");
    assert_eq!(field(5), "00000000");
    assert_eq!(field(6), "00000003");
    assert_eq!(field(11), "00000002");
    // Header (110) + "a\0" = 112: data at 112, padded to 116, then the trailer.
    assert_eq!(&bytes[112..115], b"xyz");
    assert_eq!(&bytes[116..122], b"070701");
    assert_eq!(bytes.len() % 4, 0);
    assert_eq!(bytes.len(), 116 + 124);
}

#[test]
fn empty_archive_is_just_a_trailer() {
    let bytes = write_newc(&[]);
    assert_eq!(bytes.len(), 124);
    assert_eq!(&bytes[110..], b"TRAILER!!!\0\0\0\0");
    let archive = Archive::new(&bytes).unwrap();
    assert!(archive.is_empty());
    assert_eq!(archive.entries().count(), 0);
    assert_eq!(archive.find("x"), None);
}

#[test]
fn find_ignores_leading_slash_and_dot() {
    let bytes = write_newc(&[
        ("./bin/a", S_IFREG, b"1"),
        ("bin/b", S_IFREG, b"2"),
        ("/c", S_IFREG, b"3"),
    ]);
    let archive = Archive::new(&bytes).unwrap();
    for name in ["bin/a", "./bin/a", "/bin/a", ".//bin/a"] {
        assert_eq!(archive.find(name).unwrap().data, b"1", "{name}");
    }
    for name in ["bin/b", "./bin/b", "/bin/b"] {
        assert_eq!(archive.find(name).unwrap().data, b"2", "{name}");
    }
    assert_eq!(archive.find("c").unwrap().data, b"3");
    assert_eq!(archive.find("bin"), None);
    assert_eq!(archive.find("in/a"), None);
}

#[test]
fn later_duplicate_wins() {
    let bytes = write_newc(&[("f", S_IFREG, b"old"), ("./f", S_IFREG, b"new")]);
    assert_eq!(Archive::new(&bytes).unwrap().find("/f").unwrap().data, b"new");
}

#[test]
fn bytes_after_the_trailer_are_ignored() {
    let mut bytes = sample();
    bytes.extend_from_slice(&[0; 512]);
    bytes.extend_from_slice(b"garbage");
    assert_eq!(Archive::new(&bytes).unwrap().len(), 5);
}

#[test]
fn padding_after_the_last_data_may_be_cut() {
    let mut bytes = raw_entry(MAGIC, S_IFREG, b"x\0", b"12345", 0);
    bytes.extend(raw_entry(MAGIC, S_IFREG, b"TRAILER!!!\0", b"z", 0));
    bytes.truncate(bytes.len() - 3);
    assert_eq!(Archive::new(&bytes).unwrap().find("x").unwrap().data, b"12345");
}

#[test]
fn name_padding_is_required() {
    // Trailer header + name = 121 bytes, padded to 124: the data offset must be in bounds.
    let mut bytes = write_newc(&[("x", S_IFREG, b"12345")]);
    let len = bytes.len();
    bytes.truncate(len - 3);
    assert_eq!(
        Archive::new(&bytes).unwrap_err(),
        CpioError::Truncated {
            offset: len,
            needed: 0,
            available: 0
        }
    );
}

#[test]
fn crc_entries_are_checked() {
    let data = b"abc";
    let sum = u32::from(b'a') + u32::from(b'b') + u32::from(b'c');
    let mut good = raw_entry(MAGIC_CRC, S_IFREG, b"f\0", data, sum);
    good.extend(trailer());
    assert_eq!(Archive::new(&good).unwrap().find("f").unwrap().data, data);

    let mut bad = raw_entry(MAGIC_CRC, S_IFREG, b"f\0", data, sum + 1);
    bad.extend(trailer());
    assert_eq!(
        Archive::new(&bad).unwrap_err(),
        CpioError::BadChecksum {
            offset: 0,
            expected: sum + 1,
            computed: sum
        }
    );
}

#[test]
fn bad_magic() {
    let mut bytes = sample();
    bytes[0] = b'1';
    assert_eq!(
        Archive::new(&bytes).unwrap_err(),
        CpioError::BadMagic {
            offset: 0,
            found: *b"170701"
        }
    );

    // In the second entry.
    let mut bytes = sample();
    let second = 112 + 4; // "." entry: 110 + 2 = 112, no data; "bin" starts at 112.
    assert_eq!(&bytes[112..118], b"070701");
    bytes[second - 4 + 5] = b'7';
    assert_eq!(
        Archive::new(&bytes).unwrap_err(),
        CpioError::BadMagic {
            offset: 112,
            found: *b"070707"
        }
    );
}

#[test]
fn truncated_header() {
    let bytes = sample();
    assert_eq!(
        Archive::new(&bytes[..50]).unwrap_err(),
        CpioError::Truncated {
            offset: 0,
            needed: HEADER_LEN,
            available: 50
        }
    );
}

#[test]
fn truncated_name() {
    let bytes = raw_entry(MAGIC, S_IFREG, b"longname\0", b"", 0);
    assert_eq!(
        Archive::new(&bytes[..HEADER_LEN + 4]).unwrap_err(),
        CpioError::Truncated {
            offset: HEADER_LEN,
            needed: 9,
            available: 4
        }
    );
}

#[test]
fn truncated_data() {
    let bytes = raw_entry(MAGIC, S_IFREG, b"ab\0", b"0123456789", 0);
    // Header + name = 113, data at 116.
    assert_eq!(
        Archive::new(&bytes[..120]).unwrap_err(),
        CpioError::Truncated {
            offset: 116,
            needed: 10,
            available: 4
        }
    );
}

#[test]
fn huge_sizes_are_truncation_not_overflow() {
    let mut bytes = raw_entry(MAGIC, S_IFREG, b"ab\0", b"", 0);
    bytes[6 + 8 * FIELD_FILESIZE..6 + 8 * FIELD_FILESIZE + 8].copy_from_slice(b"FFFFFFFF");
    bytes.extend(trailer());
    assert!(matches!(
        Archive::new(&bytes).unwrap_err(),
        CpioError::Truncated {
            offset: 116,
            needed: 0xffff_ffff,
            ..
        }
    ));
    let mut bytes = raw_entry(MAGIC, S_IFREG, b"ab\0", b"", 0);
    bytes[6 + 8 * FIELD_NAMESIZE..6 + 8 * FIELD_NAMESIZE + 8].copy_from_slice(b"ffffffff");
    assert!(matches!(
        Archive::new(&bytes).unwrap_err(),
        CpioError::Truncated {
            offset: HEADER_LEN,
            needed: 0xffff_ffff,
            ..
        }
    ));
}

#[test]
fn bad_hex() {
    let mut bytes = sample();
    // The filesize field of the first entry.
    bytes[6 + 8 * FIELD_FILESIZE + 3] = b'g';
    assert_eq!(
        Archive::new(&bytes).unwrap_err(),
        CpioError::BadHex {
            offset: 6 + 8 * FIELD_FILESIZE
        }
    );
    let mut bytes = sample();
    bytes[6 + 8 * FIELD_CHECK + 7] = b' ';
    assert_eq!(
        Archive::new(&bytes).unwrap_err(),
        CpioError::BadHex {
            offset: 6 + 8 * FIELD_CHECK
        }
    );
}

#[test]
fn name_not_terminated() {
    for name in [&b""[..], b"abc", b"a\0b\0"] {
        let mut bytes = raw_entry(MAGIC, S_IFREG, name, b"", 0);
        bytes.extend(trailer());
        assert_eq!(
            Archive::new(&bytes).unwrap_err(),
            CpioError::NameNotTerminated {
                offset: HEADER_LEN,
                namesize: name.len()
            },
            "{name:?}"
        );
    }
}

#[test]
fn nuls_after_the_name_pad_it() {
    // The name field padded with NULs so that the data starts on a page.
    let mut name = b"bin/prog\0".to_vec();
    name.resize(4096 - HEADER_LEN, 0);
    let mut bytes = raw_entry(MAGIC, S_IFREG | 0o755, &name, b"text", 0);
    bytes.extend(trailer());
    let archive = Archive::new(&bytes).unwrap();
    let e = archive.find("bin/prog").unwrap();
    assert_eq!((e.name, e.data, e.data_offset), ("bin/prog", &b"text"[..], 4096));
}

#[test]
fn name_not_utf8() {
    let mut bytes = raw_entry(MAGIC, S_IFREG, b"a\xffb\0", b"", 0);
    bytes.extend(trailer());
    assert_eq!(
        Archive::new(&bytes).unwrap_err(),
        CpioError::NameNotUtf8 { offset: HEADER_LEN }
    );
}

#[test]
fn missing_trailer() {
    assert_eq!(
        Archive::new(&[]).unwrap_err(),
        CpioError::MissingTrailer { offset: 0 }
    );
    let bytes = raw_entry(MAGIC, S_IFREG, b"a\0", b"data", 0);
    assert_eq!(
        Archive::new(&bytes).unwrap_err(),
        CpioError::MissingTrailer { offset: bytes.len() }
    );
    // The entry's data ends the bytes, without padding.
    let bytes = raw_entry(MAGIC, S_IFREG, b"a\0", b"dat", 0);
    assert_eq!(
        Archive::new(&bytes[..bytes.len() - 1]).unwrap_err(),
        CpioError::MissingTrailer { offset: 115 }
    );
}

#[test]
fn errors_display() {
    let errors = [
        CpioError::BadMagic {
            offset: 4,
            found: *b"07\x0001x",
        },
        CpioError::Truncated {
            offset: 1,
            needed: 2,
            available: 1,
        },
        CpioError::BadHex { offset: 6 },
        CpioError::NameNotTerminated {
            offset: 110,
            namesize: 3,
        },
        CpioError::NameNotUtf8 { offset: 110 },
        CpioError::BadChecksum {
            offset: 0,
            expected: 1,
            computed: 2,
        },
        CpioError::MissingTrailer { offset: 8 },
    ];
    for e in errors {
        let text = e.to_string();
        assert!(text.starts_with("cpio: "), "{text}");
    }
}

#[test]
#[should_panic(expected = "contains NUL")]
fn writer_rejects_nul_in_name() {
    write_newc(&[("a\0b", S_IFREG, b"")]);
}

#[test]
#[should_panic(expected = "cannot be called")]
fn writer_rejects_trailer_name() {
    write_newc(&[(TRAILER, S_IFREG, b"")]);
}

fn file_list() -> impl Strategy<Value = Vec<(String, u32, Vec<u8>)>> {
    proptest::collection::vec(
        (
            "[^\0]{0,24}",
            any::<u32>(),
            proptest::collection::vec(any::<u8>(), 0..40),
        ),
        0..8,
    )
    .prop_filter("no file may be called TRAILER!!!", |files| {
        files.iter().all(|f| f.0 != TRAILER)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn write_then_read_round_trips(files in file_list()) {
        let refs: Vec<(&str, u32, &[u8])> = files.iter().map(|(n, m, d)| (n.as_str(), *m, d.as_slice())).collect();
        let bytes = write_newc(&refs);
        let archive = Archive::new(&bytes).unwrap();
        prop_assert_eq!(archive.len(), files.len());
        let entries: Vec<Entry<'_>> = archive.entries().collect();
        prop_assert_eq!(entries.len(), files.len());
        for (entry, (name, mode, data)) in entries.iter().zip(&files) {
            prop_assert_eq!(entry.name, name.as_str());
            prop_assert_eq!(entry.mode, *mode);
            prop_assert_eq!(entry.data, data.as_slice());
            prop_assert_eq!(entry.data_offset % 4, 0);
            prop_assert_eq!(&bytes[entry.data_offset..entry.data_offset + data.len()], data.as_slice());
        }
        for (name, _, _) in &files {
            // The last file with the same normalized name is found.
            let want = files.iter().rev().find(|f| normalize(&f.0) == normalize(name)).unwrap();
            prop_assert_eq!(archive.find(name).unwrap().data, want.2.as_slice());
        }
    }

    #[test]
    fn mutated_archives_never_panic(
        files in file_list(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        cut in any::<prop::sample::Index>(),
        do_cut in any::<bool>(),
    ) {
        let refs: Vec<(&str, u32, &[u8])> = files.iter().map(|(n, m, d)| (n.as_str(), *m, d.as_slice())).collect();
        let mut bytes = write_newc(&refs);
        for (at, byte) in edits {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        if do_cut {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        if let Ok(archive) = Archive::new(&bytes) {
            let mut n = 0;
            for entry in archive.entries() {
                prop_assert!(entry.data_offset + entry.data.len() <= bytes.len());
                let _ = archive.find(entry.name);
                n += 1;
            }
            prop_assert_eq!(n, archive.len());
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = Archive::new(&bytes).map(|a| a.entries().count());
    }
}

#[test]
fn a_single_file_survives_the_writer() {
    let data = vec![0xa5u8; 4097];
    let bytes = write_newc(&[("big", S_IFREG | 0o755, &data)]);
    let entry = Archive::new(&bytes).unwrap().find("big").unwrap();
    assert_eq!(entry.data.len(), 4097);
    assert_eq!(entry.data_offset, 116);
}

#[test]
fn every_truncation_is_an_error_or_a_shorter_valid_prefix() {
    let bytes = sample();
    for len in 0..bytes.len() {
        match Archive::new(&bytes[..len]) {
            // Only the padding after the trailer's (empty) data can go.
            Ok(archive) => assert!(len >= bytes.len() - 3 && archive.len() == 5, "{len}"),
            Err(_) => assert!(len < bytes.len()),
        }
    }
}

#[test]
fn debug_output_is_short() {
    let bytes = sample();
    let text = alloc::format!("{:?}", Archive::new(&bytes).unwrap());
    assert_eq!(
        text,
        alloc::format!("Archive {{ bytes: {}, entries: 5 }}", bytes.len())
    );
}
