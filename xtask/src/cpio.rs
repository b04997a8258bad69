//! The newc ("new ASCII") cpio archive that carries the EL0 programs in the kernel image.
//!
//! Each member is a 110-byte header (the magic `070701` and 13 fields of 8 ASCII hex digits), the
//! NUL-terminated name padded so that header and name together fill a multiple of 4 bytes, then
//! the data padded to a multiple of 4. The archive ends with the member `TRAILER!!!`. The output is
//! deterministic: inode numbers count from 1, owner, group and mtime are 0.
//!
//! Every file's data starts at an offset aligned to [`data_align`] of its size (4 KiB, or 64 KiB
//! for a file of 64 KiB or more), so that the kernel, which places the archive 64 KiB aligned in
//! its image, maps a program's pages where they lie (whole 64 KiB folios where they fit). The
//! name field carries the padding: `namesize` counts the name, its NUL and as many further NULs
//! as the alignment needs. Readers take the name up to its first NUL (GNU cpio, bsdtar and the
//! kernel's reader, `libos/src/exec/cpio.rs`, do); the format only requires header and name to
//! end 4-byte aligned, which they still do.

use anyhow::{bail, Result};

/// The magic of a newc header.
pub const MAGIC: &[u8; 6] = b"070701";
/// The name of the last member.
pub const TRAILER: &str = "TRAILER!!!";
/// Bytes in a header, before the name.
pub const HEADER_LEN: usize = 110;
/// The smallest alignment [`write`] gives a file's data (one page).
pub const PAGE: usize = 4096;
/// The alignment [`write`] gives the data of a file of at least this size (one CONTPTE block).
pub const BLOCK: usize = 64 << 10;
/// The file-type bits of `mode`, and the type of a regular file.
pub const S_IFMT: u32 = 0o170000;
pub const S_IFREG: u32 = 0o100000;

/// A member of an archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    /// The full `st_mode` (type and permission bits).
    pub mode: u32,
    pub data: Vec<u8>,
    /// Where the data starts in the archive.
    pub data_offset: usize,
}

/// The alignment of the data of a file of `len` bytes in an archive [`write`] makes: 64 KiB from
/// 64 KiB up, else 4 KiB.
pub fn data_align(len: usize) -> usize {
    if len >= BLOCK {
        BLOCK
    } else {
        PAGE
    }
}

/// Writes the archive of `entries` (name, mode, contents), each file's data at an offset aligned
/// to [`data_align`]. A `mode` without file-type bits is a regular file (`0o755` becomes
/// `0o100755`). Names must be non-empty, unique, without NUL and not the trailer's.
pub fn write<N, D>(entries: &[(N, u32, D)]) -> Result<Vec<u8>>
where
    N: AsRef<str>,
    D: AsRef<[u8]>,
{
    let mut out = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for (i, (name, mode, data)) in entries.iter().enumerate() {
        let (name, data) = (name.as_ref(), data.as_ref());
        if name.is_empty() || name.contains('\0') || name == TRAILER {
            bail!("cpio: invalid member name {name:?}");
        }
        if seen.contains(&name) {
            bail!("cpio: two members named {name:?}");
        }
        seen.push(name);
        let Ok(size) = u32::try_from(data.len()) else {
            bail!("cpio: {name} is too large ({} bytes)", data.len());
        };
        let mode = if mode & S_IFMT == 0 { mode | S_IFREG } else { *mode };
        member(
            &mut out,
            i as u32 + 1,
            mode,
            1,
            name,
            size,
            data_align(data.len()),
        );
        debug_assert!(out.len().is_multiple_of(data_align(data.len())));
        out.extend_from_slice(data);
        pad4(&mut out);
    }
    member(&mut out, 0, 0, 1, TRAILER, 0, 4);
    Ok(out)
}

/// The archive with no members: only the trailer.
pub fn empty() -> Vec<u8> {
    write::<&str, &[u8]>(&[]).expect("the empty archive is valid")
}

/// Writes a header and its name; for an `align` above 4, with NULs after the name up to the next
/// multiple of `align` (where the data starts).
fn member(out: &mut Vec<u8>, ino: u32, mode: u32, nlink: u32, name: &str, size: u32, align: usize) {
    let unpadded = out.len() + HEADER_LEN + name.len() + 1;
    let namesize = if align > 4 {
        (unpadded.next_multiple_of(align) - out.len() - HEADER_LEN) as u32
    } else {
        name.len() as u32 + 1
    };
    // ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check
    let fields = [ino, mode, 0, 0, nlink, 0, size, 0, 0, 0, 0, namesize, 0];
    out.extend_from_slice(MAGIC);
    for f in fields {
        out.extend_from_slice(format!("{f:08X}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.resize(out.len() + namesize as usize - name.len(), 0);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    out.resize(out.len().next_multiple_of(4), 0);
}

/// Reads a newc archive back (up to the trailer), checking magic, padding and bounds.
pub fn read(bytes: &[u8]) -> Result<Vec<Entry>> {
    let mut entries = Vec::new();
    let mut at = 0;
    loop {
        let Some(header) = bytes.get(at..at + HEADER_LEN) else {
            bail!("cpio: truncated header at offset {at}");
        };
        if &header[..6] != MAGIC {
            bail!("cpio: bad magic at offset {at}");
        }
        let field = |i: usize| -> Result<u32> {
            let text = std::str::from_utf8(&header[6 + 8 * i..14 + 8 * i])?;
            Ok(u32::from_str_radix(text, 16)?)
        };
        let (mode, size, namesize) = (field(1)?, field(6)? as usize, field(11)? as usize);
        let name_at = at + HEADER_LEN;
        let Some(name) = bytes.get(name_at..name_at + namesize) else {
            bail!("cpio: truncated name at offset {name_at}");
        };
        let Some(nul) = name.iter().position(|&b| b == 0) else {
            bail!("cpio: name at offset {name_at} is not NUL-terminated");
        };
        if name[nul..].iter().any(|&b| b != 0) {
            bail!("cpio: name at offset {name_at} has bytes after its NUL");
        }
        let name = std::str::from_utf8(&name[..nul])?.to_string();
        let data_at = (name_at + namesize).next_multiple_of(4);
        if name == TRAILER {
            return Ok(entries);
        }
        let Some(data) = bytes.get(data_at..data_at + size) else {
            bail!("cpio: truncated data of {name}");
        };
        entries.push(Entry {
            name,
            mode,
            data: data.to_vec(),
            data_offset: data_at,
        });
        at = (data_at + size).next_multiple_of(4);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_archive_is_a_trailer() {
        let a = empty();
        assert_eq!(a.len(), 124); // 110 + "TRAILER!!!\0" = 121, padded to 124
        let mut header = String::from("070701");
        for f in [0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 11, 0] {
            header.push_str(&format!("{f:08X}"));
        }
        assert_eq!(&a[..HEADER_LEN], header.as_bytes());
        assert_eq!(&a[HEADER_LEN..], b"TRAILER!!!\0\0\0\0");
        assert_eq!(read(&a).unwrap(), []);
    }

    #[test]
    fn layout_of_one_member() {
        let a = write(&[("ab", 0o644, b"hello")]).unwrap();
        let h = std::str::from_utf8(&a[..HEADER_LEN]).unwrap();
        assert_eq!(
            h,
            "070701\
             00000001\
             000081A4\
             00000000\
             00000000\
             00000001\
             00000000\
             00000005\
             00000000\
             00000000\
             00000000\
             00000000\
             00000F92\
             00000000"
        );
        // "ab" and NULs up to the page (namesize 4096 - 110), then the data padded to 8 bytes.
        assert_eq!(&a[110..113], b"ab\0");
        assert!(a[113..4096].iter().all(|&b| b == 0));
        assert_eq!(&a[4096..4104], b"hello\0\0\0");
        assert_eq!(&a[4104..4110], MAGIC);
        assert!(a.len().is_multiple_of(4));
        assert_eq!(read(&a).unwrap()[0].data_offset, 4096);
    }

    #[test]
    fn round_trip_with_every_padding() {
        let names = ["a", "bb", "ccc", "dddd", "eeeee"];
        let data: Vec<Vec<u8>> = (0..5).map(|n| (0..n as u8).collect()).collect();
        let entries: Vec<(&str, u32, &[u8])> = names
            .iter()
            .zip(&data)
            .map(|(n, d)| (*n, 0o755, d.as_slice()))
            .collect();
        let a = write(&entries).unwrap();
        assert!(a.len().is_multiple_of(4));
        let back = read(&a).unwrap();
        assert_eq!(back.len(), 5);
        for (e, (n, d)) in back.iter().zip(names.iter().zip(&data)) {
            assert_eq!(e.name, *n);
            assert_eq!(&e.data, d);
            assert_eq!(e.mode, S_IFREG | 0o755);
        }
        // Every header starts 4-aligned, every file's data on a page.
        for (i, w) in a.windows(6).enumerate() {
            if w == MAGIC {
                assert!(i.is_multiple_of(4));
            }
        }
        assert!(back.iter().all(|e| e.data_offset.is_multiple_of(PAGE)));
        // A mode with type bits is kept (a directory).
        let d = write(&[("dir", 0o040755, b"")]).unwrap();
        assert_eq!(read(&d).unwrap()[0].mode, 0o040755);
    }

    #[test]
    fn rejects_bad_names_and_archives() {
        let bad: [&str; 3] = ["", "a\0b", TRAILER];
        for name in bad {
            assert!(write(&[(name, 0o644, b"")]).is_err(), "{name:?}");
        }
        assert!(write(&[("x", 0o644, b"1"), ("x", 0o644, b"2")])
            .unwrap_err()
            .to_string()
            .contains("two members"));
        let a = write(&[("x", 0o644, b"1234")]).unwrap();
        assert!(read(&a[..a.len() - 20]).is_err());
        let mut b = a.clone();
        b[0] = b'1';
        assert!(read(&b).unwrap_err().to_string().contains("magic"));
    }

    #[test]
    fn large_files_start_on_64k_and_small_ones_on_a_page() {
        let big: Vec<u8> = (0..BLOCK + 5).map(|i| i as u8).collect();
        let small = b"0123456789".to_vec();
        let entries = [
            ("small", 0o755, &small),
            ("big", 0o755, &big),
            ("small2", 0o755, &small),
            ("big2", 0o755, &big),
        ];
        let a = write(&entries).unwrap();
        let back = read(&a).unwrap();
        let offsets: Vec<usize> = back.iter().map(|e| e.data_offset).collect();
        for (e, (name, _, data)) in back.iter().zip(&entries) {
            assert_eq!((e.name.as_str(), &e.data), (*name, *data));
            assert!(
                e.data_offset.is_multiple_of(data_align(data.len())),
                "{offsets:x?}"
            );
        }
        assert_eq!(data_align(BLOCK - 1), PAGE);
        assert_eq!(offsets[0], PAGE);
        assert_eq!(offsets[1], BLOCK);
        // The padding stays below one alignment unit per member.
        assert!(a.len() < 3 * BLOCK + 2 * PAGE + 2 * big.len());
    }

    #[test]
    fn gnu_cpio_lists_the_padded_names() {
        // Runs only where GNU cpio (or another `cpio`) is installed.
        let Ok(mut child) = std::process::Command::new("cpio")
            .arg("-t")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
        else {
            return;
        };
        let big = vec![7u8; BLOCK + 1];
        let a = write(&[("one", 0o755, &b"1"[..]), ("two/big", 0o644, &big[..])]).unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(&a).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        assert_eq!(String::from_utf8(out.stdout).unwrap(), "one\ntwo/big\n");
    }

    #[test]
    fn a_name_with_bytes_after_its_nul_is_rejected() {
        let mut a = write(&[("ab", 0o644, b"x")]).unwrap();
        a[HEADER_LEN + 10] = b'z';
        assert!(read(&a).unwrap_err().to_string().contains("after its NUL"));
    }
}
