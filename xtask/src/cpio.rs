//! The newc ("new ASCII") cpio archive that carries the EL0 programs in the kernel image.
//!
//! Each member is a 110-byte header (the magic `070701` and 13 fields of 8 ASCII hex digits), the
//! NUL-terminated name padded so that header and name together fill a multiple of 4 bytes, then
//! the data padded to a multiple of 4. The archive ends with the member `TRAILER!!!`. The output is
//! deterministic: inode numbers count from 1, owner, group and mtime are 0.

use anyhow::{bail, Result};

/// The magic of a newc header.
pub const MAGIC: &[u8; 6] = b"070701";
/// The name of the last member.
pub const TRAILER: &str = "TRAILER!!!";
/// Bytes in a header, before the name.
pub const HEADER_LEN: usize = 110;
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
}

/// Writes the archive of `entries` (name, mode, contents). A `mode` without file-type bits is a
/// regular file (`0o755` becomes `0o100755`). Names must be non-empty, unique, without NUL and
/// not the trailer's.
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
        member(&mut out, i as u32 + 1, mode, 1, name, size);
        out.extend_from_slice(data);
        pad4(&mut out);
    }
    member(&mut out, 0, 0, 1, TRAILER, 0);
    Ok(out)
}

/// The archive with no members: only the trailer.
pub fn empty() -> Vec<u8> {
    write::<&str, &[u8]>(&[]).expect("the empty archive is valid")
}

fn member(out: &mut Vec<u8>, ino: u32, mode: u32, nlink: u32, name: &str, size: u32) {
    let namesize = name.len() as u32 + 1;
    // ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check
    let fields = [ino, mode, 0, 0, nlink, 0, size, 0, 0, 0, 0, namesize, 0];
    out.extend_from_slice(MAGIC);
    for f in fields {
        out.extend_from_slice(format!("{f:08X}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
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
        let Some((0, name)) = name.split_last() else {
            bail!("cpio: name at offset {name_at} is not NUL-terminated");
        };
        let name = std::str::from_utf8(name)?.to_string();
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
             00000003\
             00000000"
        );
        // Header and "ab\0" (113 bytes) padded to 116, then the data padded to 8 bytes.
        assert_eq!(&a[110..116], b"ab\0\0\0\0");
        assert_eq!(&a[116..124], b"hello\0\0\0");
        assert_eq!(&a[124..130], MAGIC);
        assert!(a.len().is_multiple_of(4));
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
        // Every header starts 4-aligned.
        for (i, w) in a.windows(6).enumerate() {
            if w == MAGIC {
                assert!(i.is_multiple_of(4));
            }
        }
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
}
