//! The program break and memory mappings (anonymous, private or shared).

use super::super::errno::*;
use super::{Action, Call, Return};
use crate::mm::space::{Shm, SpaceError};
use crate::mm::vma::{MapAlign, Placement, VmProt, VmaError, VmaKind};
use crate::mm::{VirtAddr, PAGE_SIZE, USER_END};
use crate::platform::TargetMachine;
use crate::process::with_current_space;

const PROT_MASK: u64 = 0b111;
const MAP_SHARED: u64 = 0x01;
const MAP_PRIVATE: u64 = 0x02;
const MAP_TYPE: u64 = 0x0f;
const MAP_FIXED: u64 = 0x10;
const MAP_ANONYMOUS: u64 = 0x20;
const MAP_FIXED_NOREPLACE: u64 = 0x10_0000;
/// Flags this kernel accepts and ignores (hints that change nothing here).
const MAP_IGNORED: u64 = 0x100 /* GROWSDOWN */ | 0x800 /* DENYWRITE */ | 0x1000 /* EXECUTABLE */
    | 0x2000 /* LOCKED */ | 0x4000 /* NORESERVE */ | 0x8000 /* POPULATE */ | 0x1_0000 /* NONBLOCK */
    | 0x2_0000 /* STACK */ | 0x4_0000 /* HUGETLB */;

pub(in crate::user) fn prot(p: u64) -> VmProt {
    let mut v = VmProt::NONE;
    if p & 1 != 0 {
        v = v.union(VmProt::READ);
    }
    if p & 2 != 0 {
        v = v.union(VmProt::WRITE);
    }
    if p & 4 != 0 {
        v = v.union(VmProt::EXEC);
    }
    v
}

fn space_errno(e: SpaceError) -> i64 {
    match e {
        SpaceError::OutOfMemory => -ENOMEM,
        SpaceError::Vma(VmaError::Exists) => -EEXIST,
        SpaceError::Vma(VmaError::NoSpace) | SpaceError::Vma(VmaError::TooManyMappings) => -ENOMEM,
        SpaceError::Vma(VmaError::NotMapped) => -ENOMEM,
        SpaceError::ReadOnly => -EACCES,
        _ => -EINVAL,
    }
}

fn with_space(f: impl FnOnce(&mut crate::mm::space::Space) -> Result<(), SpaceError>) -> i64 {
    match with_current_space(f) {
        Some(Ok(())) => 0,
        Some(Err(e)) => space_errno(e),
        None => -EFAULT,
    }
}

pub fn brk(c: &mut Call, a: &[u64; 6]) -> Action {
    let addr = a[0];
    let t = c.leader_task();
    let current = t.brk;
    if addr < t.brk_start || addr > t.brk_limit {
        return Return(current as i64);
    }
    let old_end = current.next_multiple_of(PAGE_SIZE);
    let new_end = addr.next_multiple_of(PAGE_SIZE);
    let r = if new_end > old_end {
        with_current_space(|s| {
            s.mmap(
                &mut TargetMachine,
                Placement::FixedNoReplace(VirtAddr(old_end)),
                new_end - old_end,
                VmProt::RW,
                VmaKind::AnonPrivate,
                MapAlign::Page,
            )
            .map(|_| ())
        })
    } else if new_end < old_end {
        with_current_space(|s| s.munmap(&mut TargetMachine, VirtAddr(new_end), old_end - new_end))
    } else {
        Some(Ok(()))
    };
    let t = c.leader_task();
    if let Some(Ok(())) = r {
        t.brk = addr;
    }
    Return(t.brk as i64)
}

pub fn munmap(_c: &mut Call, a: &[u64; 6]) -> Action {
    if !a[0].is_multiple_of(PAGE_SIZE) || a[1] == 0 {
        return Return(-EINVAL);
    }
    let len = a[1].next_multiple_of(PAGE_SIZE);
    Return(with_space(|s| s.munmap(&mut TargetMachine, VirtAddr(a[0]), len)))
}

pub fn mprotect(_c: &mut Call, a: &[u64; 6]) -> Action {
    if !a[0].is_multiple_of(PAGE_SIZE) || a[2] & !PROT_MASK != 0 {
        return Return(-EINVAL);
    }
    if a[1] == 0 {
        return Return(0);
    }
    let len = a[1].next_multiple_of(PAGE_SIZE);
    Return(with_space(|s| {
        s.mprotect(&mut TargetMachine, VirtAddr(a[0]), len, prot(a[2]))
    }))
}

pub fn mmap(c: &mut Call, a: &[u64; 6]) -> Action {
    let (addr, len, prot_bits, flags, fd, off) = (a[0], a[1], a[2], a[3], a[4] as i64, a[5]);
    let ty = flags & MAP_TYPE;
    if len == 0 || prot_bits & !PROT_MASK != 0 || (ty != MAP_SHARED && ty != MAP_PRIVATE) {
        return Return(-EINVAL);
    }
    if flags & !(MAP_TYPE | MAP_FIXED | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE | MAP_IGNORED) != 0 {
        return Return(-EINVAL);
    }
    if flags & MAP_ANONYMOUS == 0 {
        // No file can be mapped: the console and pipes cannot, other numbers are not open.
        return Return(match c.fds().get(fd) {
            Ok(_) => -ENODEV,
            Err(_) => -EBADF,
        });
    }
    if !off.is_multiple_of(PAGE_SIZE) {
        return Return(-EINVAL);
    }
    let Some(len) = len.checked_next_multiple_of(PAGE_SIZE).filter(|&l| l <= USER_END) else {
        return Return(-ENOMEM);
    };
    let placement = if flags & MAP_FIXED_NOREPLACE != 0 {
        if !addr.is_multiple_of(PAGE_SIZE) {
            return Return(-EINVAL);
        }
        Placement::FixedNoReplace(VirtAddr(addr))
    } else if flags & MAP_FIXED != 0 {
        if !addr.is_multiple_of(PAGE_SIZE) {
            return Return(-EINVAL);
        }
        Placement::Fixed(VirtAddr(addr))
    } else if addr != 0 {
        Placement::Hint(VirtAddr(addr & !(PAGE_SIZE - 1)))
    } else {
        Placement::Any
    };
    let kind = if ty == MAP_SHARED {
        VmaKind::Shared {
            obj: Shm::new(),
            offset: 0,
        }
    } else {
        VmaKind::AnonPrivate
    };
    let large = c.task().folio_size > PAGE_SIZE;
    let align = if large && len >= 64 << 10 && flags & (MAP_FIXED | MAP_FIXED_NOREPLACE) == 0 {
        MapAlign::Size64K
    } else {
        MapAlign::Page
    };
    Return(
        match with_current_space(|s| s.mmap(&mut TargetMachine, placement, len, prot(prot_bits), kind, align))
        {
            Some(Ok(va)) => va.as_u64() as i64,
            Some(Err(e)) => space_errno(e),
            None => -ENOMEM,
        },
    )
}

pub fn madvise(_c: &mut Call, a: &[u64; 6]) -> Action {
    const MADV_DONTNEED: u64 = 4;
    let (addr, len, advice) = (a[0], a[1], a[2]);
    if !addr.is_multiple_of(PAGE_SIZE) {
        return Return(-EINVAL);
    }
    if len == 0 {
        return Return(0);
    }
    let len = len.next_multiple_of(PAGE_SIZE);
    Return(match advice {
        MADV_DONTNEED => with_space(|s| s.madvise_dontneed(&mut TargetMachine, VirtAddr(addr), len)),
        // NORMAL, RANDOM, SEQUENTIAL, WILLNEED, FREE, HUGEPAGE, NOHUGEPAGE: hints.
        0..=3 | 8 | 14 | 15 => 0,
        _ => -EINVAL,
    })
}
