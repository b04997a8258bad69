//! Copies between the kernel and the running program's memory that cannot fault: the range is
//! pinned through the memory manager first (which checks it against the program's regions and
//! their protection, faulting pages in and breaking copy-on-write for a write), copied through the
//! kernel's linear map, then unpinned. A range the program may not access is `-EFAULT`; the
//! kernel itself never takes a fault on a user address.

use super::errno::{EFAULT, EINVAL, ENOMEM};
use crate::mm::space::{FaultError, Machine};
use crate::mm::{PhysAddr, VirtAddr, PAGE_SIZE};
use crate::platform::TargetMachine;
use crate::process::with_current_space;
use alloc::vec::Vec;

fn fault_errno(e: FaultError) -> i64 {
    match e {
        FaultError::Oom => -ENOMEM,
        _ => -EFAULT,
    }
}

/// Calls `f(pa, offset_in_range, piece_len)` for each piece of `[va, va + len)` that lies in one
/// page, given the pinned `pages` of the range in order.
pub(super) fn for_each_piece(pages: &[PhysAddr], va: u64, len: usize, mut f: impl FnMut(u64, usize, usize)) {
    let end = va + len as u64;
    let mut done = 0usize;
    for (i, page) in pages.iter().enumerate() {
        let page_va = (va & !(PAGE_SIZE - 1)) + i as u64 * PAGE_SIZE;
        let from = va.max(page_va);
        let n = (end.min(page_va + PAGE_SIZE) - from) as usize;
        f(page.0 + (from - page_va), done, n);
        done += n;
    }
}

/// Runs `f` over the physical pieces of `[va, va + len)` of the running program, pinned for
/// reading or writing: `f(pa, offset_in_range, piece_len)`.
fn with_pinned(va: u64, len: usize, write: bool, mut f: impl FnMut(u64, usize, usize)) -> Result<(), i64> {
    if len == 0 {
        return Ok(());
    }
    let end = va.checked_add(len as u64).ok_or(-EFAULT)?;
    if end > crate::mm::USER_END {
        return Err(-EFAULT);
    }
    with_current_space(|space| {
        let pin = space
            .pin(&mut TargetMachine, VirtAddr(va), len as u64, write)
            .map_err(fault_errno)?;
        for_each_piece(pin.pages(), va, len, &mut f);
        space.unpin(&mut TargetMachine, pin);
        Ok(())
    })
    .unwrap_or(Err(-EFAULT))
}

/// Reads `len` bytes of the program's memory at `va`.
pub fn read(va: u64, len: usize) -> Result<Vec<u8>, i64> {
    let mut buf = alloc::vec![0u8; len];
    with_pinned(va, len, false, |pa, off, n| {
        TargetMachine.read_bytes(PhysAddr(pa), &mut buf[off..off + n])
    })?;
    Ok(buf)
}

/// Writes `data` into the program's memory at `va`.
pub fn write(va: u64, data: &[u8]) -> Result<(), i64> {
    with_pinned(va, data.len(), true, |pa, off, n| {
        TargetMachine.write_bytes(PhysAddr(pa), &data[off..off + n])
    })
}

/// Reads a `u64` of the program's memory.
pub fn read_u64(va: u64) -> Result<u64, i64> {
    let b = read(va, 8)?;
    Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
}

/// Reads a `struct timespec` of the program's memory as nanoseconds: `-EINVAL` for a negative
/// second count or a nanosecond count outside `0..1_000_000_000`, as Linux.
pub fn read_timespec_ns(va: u64) -> Result<u64, i64> {
    let t = read(va, 16)?;
    let sec = i64::from_le_bytes(t[0..8].try_into().expect("8 bytes"));
    let nsec = i64::from_le_bytes(t[8..16].try_into().expect("8 bytes"));
    if sec < 0 || !(0..1_000_000_000).contains(&nsec) {
        return Err(-EINVAL);
    }
    Ok((sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(nsec as u64))
}

/// Writes `u64`s into the program's memory.
pub fn write_u64s(va: u64, words: &[u64]) -> Result<(), i64> {
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    write(va, &bytes)
}
