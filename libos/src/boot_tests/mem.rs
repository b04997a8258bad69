//! The kernel's `memcpy`, `memmove`, `memset` and `memcmp` (`arch::mem`) against byte-at-a-time
//! references, for every size up to 300 bytes and beyond, every alignment of source and
//! destination, and overlapping moves in both directions.

use alloc::vec;
use alloc::vec::Vec;
use core::hint::black_box;

/// A byte pattern that differs at every offset.
fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn read(p: *const u8, i: usize) -> u8 {
    // SAFETY: callers index inside their buffers.
    unsafe { core::ptr::read_volatile(p.add(i)) }
}

fn write(p: *mut u8, i: usize, v: u8) {
    // SAFETY: callers index inside their buffers.
    unsafe { core::ptr::write_volatile(p.add(i), v) }
}

const SIZES: &[usize] = &[
    0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 47, 48, 63, 64, 65, 100, 127, 128, 129, 191, 255, 256,
    300, 1000, 4095, 4096, 4097, 10000,
];

crate::boot_test! {
    /// memcpy and memset of every listed size at every source and destination alignment: the
    /// bytes in range are right and the guard bytes around them untouched.
    fn memcpy_and_memset_match_byte_loops() {
        for &n in SIZES {
            for src_off in 0..9 {
                for dst_off in 0..9 {
                    let src = pattern(n + 32, 7);
                    let mut dst = vec![0xeeu8; n + 32];
                    let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
                    // SAFETY: both ranges lie inside their buffers and do not overlap.
                    unsafe { core::ptr::copy_nonoverlapping(s.add(src_off), d.add(dst_off), black_box(n)) };
                    for i in 0..n + 32 {
                        let want = if (dst_off..dst_off + n).contains(&i) { read(s, i - dst_off + src_off) } else { 0xee };
                        assert_eq!(read(d, i), want, "memcpy n={n} src+{src_off} dst+{dst_off} byte {i}");
                    }
                    // SAFETY: inside `dst`.
                    unsafe { core::ptr::write_bytes(d.add(dst_off), black_box(0x5a), black_box(n)) };
                    for i in 0..n + 32 {
                        let old = if (dst_off..dst_off + n).contains(&i) { 0x5a } else { 0xee };
                        assert_eq!(read(d, i), old, "memset n={n} dst+{dst_off} byte {i}");
                    }
                }
            }
        }
    }
}

crate::boot_test! {
    /// memmove of overlapping ranges, the destination below and above the source by every
    /// distance up to 80 bytes, matches a copy through a separate buffer.
    fn memmove_handles_overlap_both_ways() {
        for &n in SIZES.iter().filter(|&&n| n <= 4097) {
            for shift in 0..80usize {
                for up in [false, true] {
                    let mut buf = pattern(n + 200, 3);
                    let b = buf.as_mut_ptr();
                    let (from, to) = if up { (40, 40 + shift) } else { (40 + shift, 40) };
                    let want: Vec<u8> = {
                        let mut w: Vec<u8> = (0..n + 200).map(|i| read(b, i)).collect();
                        let moved: Vec<u8> = (0..n).map(|i| read(b, from + i)).collect();
                        for (i, v) in moved.into_iter().enumerate() {
                            w[to + i] = v;
                        }
                        w
                    };
                    // SAFETY: both ranges lie inside `buf`; `copy` allows overlap.
                    unsafe { core::ptr::copy(b.add(from), b.add(to), black_box(n)) };
                    for (i, w) in want.iter().enumerate() {
                        assert_eq!(read(b, i), *w, "memmove n={n} from {from} to {to} byte {i}");
                    }
                }
            }
        }
    }
}

crate::boot_test! {
    /// memcmp's sign and bcmp's equality at every position of the first difference.
    fn memcmp_orders_like_bytes() {
        for &n in SIZES.iter().filter(|&&n| n > 0 && n <= 1000) {
            let a = pattern(n, 9);
            for at in [0, n / 2, n - 1] {
                for delta in [1u8, 0x80, 0xff] {
                    let mut b = a.clone();
                    write(b.as_mut_ptr(), at, read(a.as_ptr(), at).wrapping_add(delta));
                    let want = read(a.as_ptr(), at).cmp(&read(b.as_ptr(), at));
                    assert_eq!(black_box(&a[..]).cmp(black_box(&b[..])), want, "n={n} at={at} delta={delta}");
                    assert!(black_box(&a[..]) != black_box(&b[..]));
                }
            }
            assert!(black_box(&a[..]) == black_box(&a.clone()[..]));
        }
    }
}

crate::boot_test! {
    /// `arch::cpu::copy_pages` (the frame copy of copy-on-write faults) copies every byte of
    /// whole pages and nothing around them, for one page and for a 64 KiB folio.
    fn copy_pages_copies_whole_pages_exactly() {
        #[repr(C, align(4096))]
        struct Pages([u8; 20 * 4096]);
        let mut src = alloc::boxed::Box::new(Pages([0; 20 * 4096]));
        let mut dst = alloc::boxed::Box::new(Pages([0; 20 * 4096]));
        for (i, b) in src.0.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(13).wrapping_add((i >> 12) as u8);
        }
        for (off, len) in [(4096usize, 4096usize), (2 * 4096, 16 * 4096), (256, 512)] {
            dst.0.fill(0xee);
            // SAFETY: both ranges lie inside their (distinct) boxes, 256-byte aligned.
            unsafe { arch::cpu::copy_pages(dst.0.as_mut_ptr() as usize + off, src.0.as_ptr() as usize + off, black_box(len)) };
            for i in 0..dst.0.len() {
                let want = if (off..off + len).contains(&i) { src.0[i] } else { 0xee };
                assert_eq!(read(dst.0.as_ptr(), i), want, "copy_pages {len} bytes at {off}: byte {i}");
            }
        }
    }
}
