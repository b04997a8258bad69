//! Parsing and validation of static AArch64 ELF64 executables.
//!
//! [`Elf::parse`] accepts a little-endian ELF64 file for `EM_AARCH64` that is either
//! - `ET_EXEC`: a position-dependent static executable, loaded at its link addresses; or
//! - `ET_DYN` without `PT_INTERP`: a static-pie, which relocates itself. Its addresses (segment
//!   `vaddr`s, the entry, the program header address) are reported unbiased; the caller picks a
//!   page-aligned load bias and adds it to all of them ([`Elf::is_pie`] tells which case it is).
//!
//! A `PT_INTERP` segment (a dynamically linked program) is rejected with
//! [`ElfError::Dynamic`]. The `PT_LOAD` segments are checked so that a loader can map them
//! without further checks: each lies in the file and below [`USER_VA_END`], its file offset and
//! address agree modulo the page size, `p_filesz <= p_memsz`, they are sorted by address and do
//! not overlap, and the entry point lies in an executable one. Two segments may still share a
//! page at their boundary (the loader then maps that page with both segments' permissions).

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::ops::Range;

/// The `e_machine` of AArch64.
pub const EM_AARCH64: u16 = 183;
/// `e_type` of a position-dependent executable.
pub const ET_EXEC: u16 = 2;
/// `e_type` of a shared object or position-independent executable.
pub const ET_DYN: u16 = 3;

/// Loadable segment.
pub const PT_LOAD: u32 = 1;
/// Dynamic linking information (present in static-pie too).
pub const PT_DYNAMIC: u32 = 2;
/// Path of the program interpreter (dynamic linker).
pub const PT_INTERP: u32 = 3;
/// Location of the program header table in memory.
pub const PT_PHDR: u32 = 6;
/// Thread-local storage template.
pub const PT_TLS: u32 = 7;
/// Stack permissions.
pub const PT_GNU_STACK: u32 = 0x6474_e551;

/// Size of the ELF64 file header.
pub const EHDR_SIZE: usize = 64;
/// Size of an ELF64 program header.
pub const PHDR_SIZE: usize = 56;
/// Largest accepted program header count (Linux's limit: a 64 KiB table).
pub const MAX_PHNUM: u16 = (65536 / PHDR_SIZE) as u16;
/// The page size the segment checks use.
pub const PAGE_SIZE: u64 = 4096;
/// End of the user address range (48-bit VA, lower half): every segment lies below it.
pub const USER_VA_END: u64 = 1 << 47;

/// Segment permissions (`p_flags`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flags(pub u32);

impl Flags {
    /// Executable (`PF_X`).
    pub const EXEC: Flags = Flags(1);
    /// Writable (`PF_W`).
    pub const WRITE: Flags = Flags(2);
    /// Readable (`PF_R`).
    pub const READ: Flags = Flags(4);

    /// The raw `p_flags`.
    pub fn bits(self) -> u32 {
        self.0
    }

    /// `PF_R` is set.
    pub fn readable(self) -> bool {
        self.0 & Self::READ.0 != 0
    }

    /// `PF_W` is set.
    pub fn writable(self) -> bool {
        self.0 & Self::WRITE.0 != 0
    }

    /// `PF_X` is set.
    pub fn executable(self) -> bool {
        self.0 & Self::EXEC.0 != 0
    }
}

impl core::ops::BitOr for Flags {
    type Output = Flags;

    fn bitor(self, rhs: Flags) -> Flags {
        Flags(self.0 | rhs.0)
    }
}

/// A validated `PT_LOAD` segment: `filesz` bytes from file `offset` are mapped at `vaddr`, the
/// rest of `memsz` is zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub vaddr: u64,
    pub memsz: u64,
    pub offset: u64,
    pub filesz: u64,
    pub flags: Flags,
    /// `p_align` as given (only reported).
    pub align: u64,
}

impl Segment {
    /// End of the segment in memory (`vaddr + memsz`).
    pub fn end(&self) -> u64 {
        self.vaddr + self.memsz
    }

    /// The page-aligned memory the segment occupies.
    pub fn pages(&self) -> Range<u64> {
        align_down(self.vaddr)..align_up(self.end())
    }

    /// True when `addr` lies in `[vaddr, vaddr + memsz)`.
    pub fn contains(&self, addr: u64) -> bool {
        (self.vaddr..self.end()).contains(&addr)
    }
}

/// The `PT_TLS` segment, reported as given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tls {
    pub vaddr: u64,
    pub memsz: u64,
    pub filesz: u64,
    pub align: u64,
}

/// Why a file was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ElfError {
    /// The file is shorter than an ELF header.
    TooShort { len: usize },
    /// The file does not start with `\x7fELF`.
    BadMagic { found: [u8; 4] },
    /// `EI_CLASS` is not `ELFCLASS64` (2).
    NotElf64 { class: u8 },
    /// `EI_DATA` is not `ELFDATA2LSB` (1).
    NotLittleEndian { data: u8 },
    /// `EI_VERSION` or `e_version` is not 1.
    BadVersion { ident: u8, version: u32 },
    /// `e_machine` is not `EM_AARCH64`.
    WrongMachine { machine: u16 },
    /// `e_type` is neither `ET_EXEC` nor `ET_DYN`.
    BadType { e_type: u16 },
    /// `e_phentsize` is not 56.
    BadPhentsize { phentsize: u16 },
    /// `e_phnum` is 0 or above [`MAX_PHNUM`] (this includes the `PN_XNUM` escape).
    BadPhnum { phnum: u16 },
    /// The program header table does not lie in the file.
    PhdrsOutOfFile { phoff: u64, phnum: u16, file_len: usize },
    /// The program asks for an interpreter: it is dynamically linked.
    Dynamic { interpreter: String },
    /// Program header `index` refers to file bytes past the end of the file.
    SegmentOutOfFile {
        index: usize,
        offset: u64,
        filesz: u64,
        file_len: usize,
    },
    /// `PT_LOAD` `index` has more file bytes than memory.
    FileszExceedsMemsz { index: usize, filesz: u64, memsz: u64 },
    /// `PT_LOAD` `index` has an address and file offset that differ modulo the page size.
    Misaligned { index: usize, vaddr: u64, offset: u64 },
    /// `PT_LOAD` `index` wraps around or reaches past [`USER_VA_END`].
    SegmentOutOfRange { index: usize, vaddr: u64, memsz: u64 },
    /// `PT_LOAD` `index` starts below the end of the previous `PT_LOAD` (unsorted or
    /// overlapping).
    SegmentOverlap { index: usize, vaddr: u64, prev_end: u64 },
    /// Program header `index` repeats a `p_type` that may occur only once.
    DuplicateSegment { index: usize, p_type: u32 },
    /// There is no `PT_LOAD` segment.
    NoLoadSegments,
    /// The entry point is not inside an executable `PT_LOAD`.
    EntryNotExecutable { entry: u64 },
    /// The program header table at `PT_PHDR`'s address (`size` bytes: `e_phnum` headers) is
    /// not in the file-backed part of a `PT_LOAD`.
    PhdrNotLoaded { vaddr: u64, size: u64 },
}

impl fmt::Display for ElfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ElfError::TooShort { len } => write!(f, "elf: file of {len} bytes is too short"),
            ElfError::BadMagic { found } => write!(f, "elf: bad magic {found:02x?}"),
            ElfError::NotElf64 { class } => write!(f, "elf: class {class} is not ELF64"),
            ElfError::NotLittleEndian { data } => write!(f, "elf: data encoding {data} is not little endian"),
            ElfError::BadVersion { ident, version } => {
                write!(f, "elf: bad version (EI_VERSION {ident}, e_version {version})")
            }
            ElfError::WrongMachine { machine } => write!(f, "elf: machine {machine} is not AArch64 (183)"),
            ElfError::BadType { e_type } => write!(f, "elf: type {e_type} is not ET_EXEC or ET_DYN"),
            ElfError::BadPhentsize { phentsize } => {
                write!(f, "elf: program header size {phentsize} is not 56")
            }
            ElfError::BadPhnum { phnum } => write!(f, "elf: bad program header count {phnum}"),
            ElfError::PhdrsOutOfFile {
                phoff,
                phnum,
                file_len,
            } => write!(
                f,
                "elf: {phnum} program headers at {phoff:#x} do not fit in {file_len} bytes"
            ),
            ElfError::Dynamic { interpreter } => {
                write!(
                    f,
                    "elf: dynamically linked (interpreter {interpreter:?}); only static programs run"
                )
            }
            ElfError::SegmentOutOfFile {
                index,
                offset,
                filesz,
                file_len,
            } => write!(
                f,
                "elf: segment {index} file range {offset:#x}+{filesz:#x} is past the end ({file_len:#x})"
            ),
            ElfError::FileszExceedsMemsz { index, filesz, memsz } => {
                write!(
                    f,
                    "elf: segment {index} filesz {filesz:#x} exceeds memsz {memsz:#x}"
                )
            }
            ElfError::Misaligned { index, vaddr, offset } => write!(
                f,
                "elf: segment {index} vaddr {vaddr:#x} and offset {offset:#x} differ modulo the page size"
            ),
            ElfError::SegmentOutOfRange { index, vaddr, memsz } => {
                write!(
                    f,
                    "elf: segment {index} at {vaddr:#x}+{memsz:#x} is outside the user range"
                )
            }
            ElfError::SegmentOverlap {
                index,
                vaddr,
                prev_end,
            } => write!(
                f,
                "elf: segment {index} at {vaddr:#x} starts below the previous segment's end {prev_end:#x}"
            ),
            ElfError::DuplicateSegment { index, p_type } => {
                write!(f, "elf: program header {index} repeats type {p_type:#x}")
            }
            ElfError::NoLoadSegments => write!(f, "elf: no PT_LOAD segment"),
            ElfError::EntryNotExecutable { entry } => {
                write!(f, "elf: entry {entry:#x} is not in an executable segment")
            }
            ElfError::PhdrNotLoaded { vaddr, size } => {
                write!(f, "elf: PT_PHDR {vaddr:#x}+{size:#x} is not loaded from the file")
            }
        }
    }
}

/// A validated static AArch64 executable borrowed from memory.
#[derive(Clone)]
pub struct Elf<'a> {
    bytes: &'a [u8],
    pie: bool,
    entry: u64,
    phnum: u16,
    segments: Vec<Segment>,
    phdr_vaddr: Option<u64>,
    tls: Option<Tls>,
    stack_flags: Option<Flags>,
}

fn align_down(x: u64) -> u64 {
    x & !(PAGE_SIZE - 1)
}

fn align_up(x: u64) -> u64 {
    align_down(x.saturating_add(PAGE_SIZE - 1))
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut word = [0; 8];
    word.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(word)
}

/// One raw program header.
struct Phdr {
    p_type: u32,
    flags: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
    memsz: u64,
    align: u64,
}

impl Phdr {
    fn read(b: &[u8]) -> Phdr {
        Phdr {
            p_type: u32_at(b, 0),
            flags: u32_at(b, 4),
            offset: u64_at(b, 8),
            vaddr: u64_at(b, 16),
            filesz: u64_at(b, 32),
            memsz: u64_at(b, 40),
            align: u64_at(b, 48),
        }
    }

    /// The segment's file bytes, or `SegmentOutOfFile`.
    fn file_bytes<'a>(&self, bytes: &'a [u8], index: usize) -> Result<&'a [u8], ElfError> {
        let range = usize::try_from(self.offset).ok().and_then(|start| {
            let len = usize::try_from(self.filesz).ok()?;
            bytes.get(start..start.checked_add(len)?)
        });
        range.ok_or(ElfError::SegmentOutOfFile {
            index,
            offset: self.offset,
            filesz: self.filesz,
            file_len: bytes.len(),
        })
    }
}

impl fmt::Debug for Elf<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Elf")
            .field("len", &self.bytes.len())
            .field("pie", &self.pie)
            .field("entry", &format_args!("{:#x}", self.entry))
            .field("phnum", &self.phnum)
            .field("segments", &self.segments)
            .field("phdr_vaddr", &self.phdr_vaddr)
            .field("tls", &self.tls)
            .field("stack_flags", &self.stack_flags)
            .finish()
    }
}

impl<'a> Elf<'a> {
    /// Parses and validates `bytes` (see the module documentation for what is checked).
    pub fn parse(bytes: &'a [u8]) -> Result<Elf<'a>, ElfError> {
        if bytes.len() < EHDR_SIZE {
            return Err(ElfError::TooShort { len: bytes.len() });
        }
        let magic = [bytes[0], bytes[1], bytes[2], bytes[3]];
        if &magic != b"\x7fELF" {
            return Err(ElfError::BadMagic { found: magic });
        }
        if bytes[4] != 2 {
            return Err(ElfError::NotElf64 { class: bytes[4] });
        }
        if bytes[5] != 1 {
            return Err(ElfError::NotLittleEndian { data: bytes[5] });
        }
        let version = u32_at(bytes, 20);
        if bytes[6] != 1 || version != 1 {
            return Err(ElfError::BadVersion {
                ident: bytes[6],
                version,
            });
        }
        let machine = u16_at(bytes, 18);
        if machine != EM_AARCH64 {
            return Err(ElfError::WrongMachine { machine });
        }
        let e_type = u16_at(bytes, 16);
        if e_type != ET_EXEC && e_type != ET_DYN {
            return Err(ElfError::BadType { e_type });
        }
        let entry = u64_at(bytes, 24);
        let phoff = u64_at(bytes, 32);
        let phentsize = u16_at(bytes, 54);
        if usize::from(phentsize) != PHDR_SIZE {
            return Err(ElfError::BadPhentsize { phentsize });
        }
        let phnum = u16_at(bytes, 56);
        if phnum == 0 || phnum > MAX_PHNUM {
            return Err(ElfError::BadPhnum { phnum });
        }
        let table_size = usize::from(phnum) * PHDR_SIZE;
        let table = usize::try_from(phoff)
            .ok()
            .and_then(|start| bytes.get(start..start.checked_add(table_size)?))
            .ok_or(ElfError::PhdrsOutOfFile {
                phoff,
                phnum,
                file_len: bytes.len(),
            })?;

        let mut segments: Vec<Segment> = Vec::new();
        let mut phdr = None;
        let mut tls = None;
        let mut stack_flags = None;
        // A dynamically linked program is reported as such whatever else is wrong with it.
        let phdrs = || table.chunks_exact(PHDR_SIZE).map(Phdr::read).enumerate();
        if let Some((index, ph)) = phdrs().find(|(_, ph)| ph.p_type == PT_INTERP) {
            let path = ph.file_bytes(bytes, index)?;
            let path = path.split(|&b| b == 0).next().unwrap_or_default();
            let interpreter = String::from_utf8_lossy(path).into_owned();
            return Err(ElfError::Dynamic { interpreter });
        }
        for (index, ph) in phdrs() {
            let duplicate = Err(ElfError::DuplicateSegment {
                index,
                p_type: ph.p_type,
            });
            match ph.p_type {
                PT_LOAD => {
                    let segment = check_load(bytes, index, &ph)?;
                    if let Some(prev) = segments.last() {
                        if segment.vaddr < prev.end() {
                            let prev_end = prev.end();
                            return Err(ElfError::SegmentOverlap {
                                index,
                                vaddr: segment.vaddr,
                                prev_end,
                            });
                        }
                    }
                    segments.push(segment);
                }
                PT_PHDR if phdr.is_some() => return duplicate,
                PT_PHDR => phdr = Some(ph.vaddr),
                PT_TLS if tls.is_some() => return duplicate,
                PT_TLS => {
                    let (vaddr, memsz, filesz, align) = (ph.vaddr, ph.memsz, ph.filesz, ph.align);
                    tls = Some(Tls {
                        vaddr,
                        memsz,
                        filesz,
                        align,
                    });
                }
                PT_GNU_STACK if stack_flags.is_some() => return duplicate,
                PT_GNU_STACK => stack_flags = Some(Flags(ph.flags)),
                _ => {}
            }
        }
        if segments.is_empty() {
            return Err(ElfError::NoLoadSegments);
        }
        if !segments.iter().any(|s| s.flags.executable() && s.contains(entry)) {
            return Err(ElfError::EntryNotExecutable { entry });
        }
        let table_size = table_size as u64;
        let phdr_vaddr = match phdr {
            Some(vaddr) => {
                let size = table_size;
                let loaded = vaddr.checked_add(size).is_some_and(|end| {
                    segments
                        .iter()
                        .any(|s| s.vaddr <= vaddr && end <= s.vaddr + s.filesz)
                });
                if !loaded {
                    return Err(ElfError::PhdrNotLoaded { vaddr, size });
                }
                Some(vaddr)
            }
            None => segments
                .iter()
                .find(|s| s.offset <= phoff && phoff + table_size <= s.offset + s.filesz)
                .map(|s| s.vaddr + (phoff - s.offset)),
        };
        Ok(Elf {
            bytes,
            pie: e_type == ET_DYN,
            entry,
            phnum,
            segments,
            phdr_vaddr,
            tls,
            stack_flags,
        })
    }

    /// The file bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// True for a static-pie (`ET_DYN`): every address reported is relative to the load bias
    /// the caller chooses.
    pub fn is_pie(&self) -> bool {
        self.pie
    }

    /// The entry point (`e_entry`).
    pub fn entry(&self) -> u64 {
        self.entry
    }

    /// The `PT_LOAD` segments, sorted by address and disjoint.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The bytes of `segment` in the file (`filesz` bytes from `offset`).
    pub fn segment_data(&self, segment: &Segment) -> &'a [u8] {
        // Checked by `parse` for the segments it returns; other values give an empty slice.
        let start = usize::try_from(segment.offset).unwrap_or(usize::MAX);
        let len = usize::try_from(segment.filesz).unwrap_or(usize::MAX);
        start
            .checked_add(len)
            .and_then(|end| self.bytes.get(start..end))
            .unwrap_or_default()
    }

    /// The page-aligned address range from the first segment's start to the last one's end.
    pub fn image_range(&self) -> Range<u64> {
        let first = self.segments.first().map_or(0, |s| s.pages().start);
        let last = self.segments.last().map_or(0, |s| s.pages().end);
        first..last
    }

    /// The address of the program header table in memory (for `AT_PHDR`): `PT_PHDR`'s address
    /// if there is one, else the address at which the `PT_LOAD` containing `e_phoff` maps it;
    /// `None` when no segment maps the table.
    pub fn phdr_vaddr(&self) -> Option<u64> {
        self.phdr_vaddr
    }

    /// Number of program headers (for `AT_PHNUM`).
    pub fn phnum(&self) -> u16 {
        self.phnum
    }

    /// Size of a program header (for `AT_PHENT`): always 56.
    pub fn phent(&self) -> u16 {
        PHDR_SIZE as u16
    }

    /// The `PT_TLS` segment, if any.
    pub fn tls(&self) -> Option<Tls> {
        self.tls
    }

    /// The flags of `PT_GNU_STACK`, if present.
    pub fn stack_flags(&self) -> Option<Flags> {
        self.stack_flags
    }

    /// True when `PT_GNU_STACK` asks for an executable stack. Without `PT_GNU_STACK` the stack
    /// is not executable (arm64 Linux does not imply `READ_IMPLIES_EXEC` for native programs).
    pub fn executable_stack(&self) -> bool {
        self.stack_flags.is_some_and(Flags::executable)
    }
}

/// Checks one `PT_LOAD` in isolation.
fn check_load(bytes: &[u8], index: usize, ph: &Phdr) -> Result<Segment, ElfError> {
    ph.file_bytes(bytes, index)?;
    if ph.filesz > ph.memsz {
        return Err(ElfError::FileszExceedsMemsz {
            index,
            filesz: ph.filesz,
            memsz: ph.memsz,
        });
    }
    if ph.vaddr % PAGE_SIZE != ph.offset % PAGE_SIZE {
        return Err(ElfError::Misaligned {
            index,
            vaddr: ph.vaddr,
            offset: ph.offset,
        });
    }
    let in_range = ph
        .vaddr
        .checked_add(ph.memsz)
        .is_some_and(|end| align_up(end) <= USER_VA_END);
    if !in_range {
        return Err(ElfError::SegmentOutOfRange {
            index,
            vaddr: ph.vaddr,
            memsz: ph.memsz,
        });
    }
    Ok(Segment {
        vaddr: ph.vaddr,
        memsz: ph.memsz,
        offset: ph.offset,
        filesz: ph.filesz,
        flags: Flags(ph.flags),
        align: ph.align,
    })
}

#[cfg(test)]
mod tests;
