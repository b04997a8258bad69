//! The `newc` cpio format, as Linux's initramfs uses it.
//!
//! An archive is a sequence of entries, each a 110-byte ASCII header, the NUL-terminated name
//! (padded so that header and name together end on a 4-byte boundary; the name may be followed
//! by more NULs inside `namesize`, which Tessera's archive writer uses to start each file's data
//! on a page), then the file data
//! (padded to a 4-byte boundary). An entry named `TRAILER!!!` ends the archive; anything after
//! it (usually zero padding to a block size) is ignored.
//!
//! The header is the magic `070701` (or `070702`, whose `check` field is the 32-bit sum of the
//! data bytes) and thirteen 8-digit hexadecimal fields: `ino`, `mode`, `uid`, `gid`, `nlink`,
//! `mtime`, `filesize`, `devmajor`, `devminor`, `rdevmajor`, `rdevminor`, `namesize` (with the
//! NUL), `check`.
//!
//! [`Archive::new`] validates the whole archive once, so iterating and looking up afterwards
//! cannot fail. Offsets are relative to the start of the archive bytes, which are assumed to be
//! placed at a 4-byte aligned address (the data offsets are then 4-byte aligned too).

use alloc::vec::Vec;
use core::fmt;

/// Magic of an entry without checksum.
pub const MAGIC: &[u8; 6] = b"070701";
/// Magic of an entry whose `check` field is the sum of its data bytes.
pub const MAGIC_CRC: &[u8; 6] = b"070702";
/// Size of an entry header in bytes.
pub const HEADER_LEN: usize = 110;
/// Name of the entry that ends an archive.
pub const TRAILER: &str = "TRAILER!!!";

/// File type bits of `mode`.
pub const S_IFMT: u32 = 0o170000;
/// Regular file.
pub const S_IFREG: u32 = 0o100000;
/// Directory.
pub const S_IFDIR: u32 = 0o040000;
/// Symbolic link (the data is the target).
pub const S_IFLNK: u32 = 0o120000;

/// Header fields, in order after the magic.
const FIELD_MODE: usize = 1;
const FIELD_FILESIZE: usize = 6;
const FIELD_NAMESIZE: usize = 11;
const FIELD_CHECK: usize = 12;
const FIELDS: usize = 13;

/// Why an archive was rejected. Every variant carries the archive offset it refers to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CpioError {
    /// The six bytes at `offset` are neither `070701` nor `070702`.
    BadMagic { offset: usize, found: [u8; 6] },
    /// A header, name or data starting at `offset` needs `needed` bytes, but the archive ends
    /// first (`available` bytes are left).
    Truncated {
        offset: usize,
        needed: usize,
        available: usize,
    },
    /// The 8-character header field at `offset` is not hexadecimal.
    BadHex { offset: usize },
    /// The name at `offset` (of `namesize` bytes) has no NUL byte, or a byte other than NUL
    /// after its first.
    NameNotTerminated { offset: usize, namesize: usize },
    /// The name at `offset` is not UTF-8.
    NameNotUtf8 { offset: usize },
    /// The `070702` entry whose header is at `offset` has data that does not sum to its
    /// `check` field.
    BadChecksum {
        offset: usize,
        expected: u32,
        computed: u32,
    },
    /// The archive ends at `offset` without a `TRAILER!!!` entry.
    MissingTrailer { offset: usize },
}

impl fmt::Display for CpioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            CpioError::BadMagic { offset, found } => {
                write!(
                    f,
                    "cpio: bad magic {:?} at offset {offset:#x}",
                    found.escape_ascii()
                )
            }
            CpioError::Truncated {
                offset,
                needed,
                available,
            } => write!(
                f,
                "cpio: truncated at offset {offset:#x}: {needed} bytes needed, {available} left"
            ),
            CpioError::BadHex { offset } => write!(f, "cpio: bad hex field at offset {offset:#x}"),
            CpioError::NameNotTerminated { offset, namesize } => {
                write!(
                    f,
                    "cpio: name of {namesize} bytes at offset {offset:#x} is not NUL-terminated"
                )
            }
            CpioError::NameNotUtf8 { offset } => write!(f, "cpio: name at offset {offset:#x} is not UTF-8"),
            CpioError::BadChecksum {
                offset,
                expected,
                computed,
            } => write!(
                f,
                "cpio: checksum of entry at offset {offset:#x} is {computed:#x}, header says {expected:#x}"
            ),
            CpioError::MissingTrailer { offset } => {
                write!(f, "cpio: archive ends at offset {offset:#x} without {TRAILER}")
            }
        }
    }
}

/// One archive member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    /// The name as stored (without the NUL), e.g. `bin/sh` or `./bin/sh`.
    pub name: &'a str,
    /// File type and permission bits (`S_IF*` | `0o7777`).
    pub mode: u32,
    /// The file contents (for a symlink, its target).
    pub data: &'a [u8],
    /// Offset of `data` within the archive bytes (a multiple of 4), to map the data in place.
    pub data_offset: usize,
}

impl Entry<'_> {
    /// The file type bits of `mode`.
    pub fn file_type(&self) -> u32 {
        self.mode & S_IFMT
    }

    /// True for a regular file.
    pub fn is_file(&self) -> bool {
        self.file_type() == S_IFREG
    }

    /// True for a directory.
    pub fn is_dir(&self) -> bool {
        self.file_type() == S_IFDIR
    }

    /// True for a symbolic link.
    pub fn is_symlink(&self) -> bool {
        self.file_type() == S_IFLNK
    }
}

/// A validated `newc` archive borrowed from memory.
#[derive(Clone, Copy)]
pub struct Archive<'a> {
    bytes: &'a [u8],
    /// Offset of the trailer's header: the entries lie in `bytes[..end]`.
    end: usize,
    len: usize,
}

impl fmt::Debug for Archive<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Archive")
            .field("bytes", &self.bytes.len())
            .field("entries", &self.len)
            .finish()
    }
}

impl<'a> Archive<'a> {
    /// Validates every entry of `bytes` up to and including the trailer.
    pub fn new(bytes: &'a [u8]) -> Result<Archive<'a>, CpioError> {
        let mut offset = 0;
        let mut len = 0;
        loop {
            if offset == bytes.len() {
                return Err(CpioError::MissingTrailer { offset });
            }
            let (entry, next) = parse_entry(bytes, offset)?;
            if entry.name == TRAILER {
                return Ok(Archive {
                    bytes,
                    end: offset,
                    len,
                });
            }
            len += 1;
            offset = next;
        }
    }

    /// The archive bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Number of entries, the trailer excluded.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the archive holds only the trailer.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The entries in archive order, the trailer excluded.
    pub fn entries(&self) -> Entries<'a> {
        Entries {
            bytes: self.bytes,
            offset: 0,
            end: self.end,
        }
    }

    /// The entry called `name`, ignoring a leading `/` or `./` on either side (`bin/sh`,
    /// `/bin/sh` and `./bin/sh` all name the same file). When a name occurs more than once, the
    /// last entry wins, as when Linux unpacks an initramfs.
    pub fn find(&self, name: &str) -> Option<Entry<'a>> {
        let name = normalize(name);
        self.entries().filter(|e| normalize(e.name) == name).last()
    }
}

/// Iterator over the entries of an [`Archive`].
#[derive(Clone, Debug)]
pub struct Entries<'a> {
    bytes: &'a [u8],
    offset: usize,
    end: usize,
}

impl<'a> Iterator for Entries<'a> {
    type Item = Entry<'a>;

    fn next(&mut self) -> Option<Entry<'a>> {
        if self.offset >= self.end {
            return None;
        }
        // The archive was validated by `Archive::new`, so this cannot fail; stop if it did.
        let (entry, next) = parse_entry(self.bytes, self.offset).ok()?;
        self.offset = next;
        Some(entry)
    }
}

/// `name` without leading `/` and `./` components.
/// A name as stored, without leading `/` and `./` (how [`Archive::find`] compares names).
pub fn normalize(mut name: &str) -> &str {
    loop {
        if let Some(rest) = name.strip_prefix('/') {
            name = rest;
        } else if let Some(rest) = name.strip_prefix("./") {
            name = rest;
        } else {
            return name;
        }
    }
}

fn align4(n: usize) -> Option<usize> {
    n.checked_add(3).map(|n| n & !3)
}

/// `bytes[offset..offset + len]`, or `Truncated`.
fn take(bytes: &[u8], offset: usize, len: usize) -> Result<&[u8], CpioError> {
    let rest = bytes.get(offset..);
    let available = rest.map_or(0, <[u8]>::len);
    rest.and_then(|rest| rest.get(..len)).ok_or(CpioError::Truncated {
        offset,
        needed: len,
        available,
    })
}

fn hex_field(header: &[u8], header_offset: usize, index: usize) -> Result<u32, CpioError> {
    let start = 6 + 8 * index;
    let offset = header_offset + start;
    header[start..start + 8].iter().try_fold(0u32, |acc, &b| {
        let digit = (b as char).to_digit(16).ok_or(CpioError::BadHex { offset })?;
        Ok((acc << 4) | digit)
    })
}

/// Whether every byte is zero, a word at a time (names padded to align their data may carry tens
/// of KiB of NULs).
fn all_zero(bytes: &[u8]) -> bool {
    let words = bytes.chunks_exact(8);
    let tail = words.remainder();
    words
        .into_iter()
        .all(|w| u64::from_ne_bytes(w.try_into().expect("8 bytes")) == 0)
        && tail.iter().all(|&b| b == 0)
}

/// Parses the entry whose header is at `offset`; returns it and the offset of the next header.
fn parse_entry(bytes: &[u8], offset: usize) -> Result<(Entry<'_>, usize), CpioError> {
    let header = take(bytes, offset, HEADER_LEN)?;
    let magic: [u8; 6] = header[..6].try_into().unwrap_or([0; 6]);
    if &magic != MAGIC && &magic != MAGIC_CRC {
        return Err(CpioError::BadMagic { offset, found: magic });
    }
    let mut fields = [0u32; FIELDS];
    for (i, field) in fields.iter_mut().enumerate() {
        *field = hex_field(header, offset, i)?;
    }
    let namesize = fields[FIELD_NAMESIZE] as usize;
    let filesize = fields[FIELD_FILESIZE] as usize;

    let name_offset = offset + HEADER_LEN;
    let name = take(bytes, name_offset, namesize)?;
    // The name ends at its first NUL; NULs after it pad the name field (an archive writer may
    // use them to align the data that follows).
    let not_terminated = CpioError::NameNotTerminated {
        offset: name_offset,
        namesize,
    };
    let nul = name.iter().position(|&b| b == 0).ok_or(not_terminated.clone())?;
    if !all_zero(&name[nul..]) {
        return Err(not_terminated);
    }
    let name = &name[..nul];
    let name = core::str::from_utf8(name).map_err(|_| CpioError::NameNotUtf8 { offset: name_offset })?;

    let overflow = CpioError::Truncated {
        offset: name_offset,
        needed: usize::MAX,
        available: 0,
    };
    let data_offset = name_offset
        .checked_add(namesize)
        .and_then(align4)
        .ok_or(overflow.clone())?;
    let data = take(bytes, data_offset, filesize)?;
    let end = data_offset.checked_add(filesize).ok_or(overflow.clone())?;
    // The padding after the last entry's data may be cut off at the end of the archive.
    let next = align4(end).ok_or(overflow)?.min(bytes.len());

    if &magic == MAGIC_CRC {
        let computed = data.iter().fold(0u32, |sum, &b| sum.wrapping_add(u32::from(b)));
        let expected = fields[FIELD_CHECK];
        if computed != expected {
            return Err(CpioError::BadChecksum {
                offset,
                expected,
                computed,
            });
        }
    }
    let entry = Entry {
        name,
        mode: fields[FIELD_MODE],
        data,
        data_offset,
    };
    Ok((entry, next))
}

/// Writes a `newc` archive (magic `070701`) of `files`, given as `(name, mode, data)`, followed
/// by the trailer. Inodes are numbered from 1; `nlink` is 1, `mtime`, `uid` and `gid` are 0.
/// Each file's data starts at a 4-byte aligned offset; the archive is not padded past the
/// trailer.
///
/// # Panics
///
/// If a name contains a NUL byte or is `TRAILER!!!`, or a file is 4 GiB or larger.
pub fn write_newc(files: &[(&str, u32, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, &(name, mode, data)) in files.iter().enumerate() {
        assert!(!name.contains('\0'), "cpio: name {name:?} contains NUL");
        assert!(name != TRAILER, "cpio: a file cannot be called {TRAILER}");
        let ino = u32::try_from(i + 1).expect("cpio: too many files");
        write_entry(&mut out, ino, mode, 1, name, data);
    }
    write_entry(&mut out, 0, 0, 1, TRAILER, &[]);
    out
}

fn write_entry(out: &mut Vec<u8>, ino: u32, mode: u32, nlink: u32, name: &str, data: &[u8]) {
    let filesize = u32::try_from(data.len()).expect("cpio: file too large");
    let namesize = u32::try_from(name.len() + 1).expect("cpio: name too long");
    let fields = [ino, mode, 0, 0, nlink, 0, filesize, 0, 0, 0, 0, namesize, 0];
    out.extend_from_slice(MAGIC);
    for field in fields {
        out.extend_from_slice(alloc::format!("{field:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    out.resize(out.len().next_multiple_of(4), 0);
}

#[cfg(test)]
mod tests;
