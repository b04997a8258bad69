//! `memcpy`, `memmove`, `memset`, `memcmp` and `bcmp` for the kernel, in assembly: 64 bytes per
//! loop iteration with load/store pairs of general registers (the kernel uses no FP/SIMD
//! register), small sizes with a few overlapping accesses instead of byte loops. They replace
//! the portable versions `compiler_builtins` links for bare-metal targets (an 8-byte store loop
//! for `memset`, and a byte loop for `memcmp`).
//!
//! Unaligned accesses are fine on Normal memory with `SCTLR_EL1.A` clear, as the kernel runs;
//! these routines must not be used on Device memory.

#[cfg(target_os = "none")]
core::arch::global_asm!(
    r#"
.section .text.memcpy, "ax"
.balign 64
// void *memcpy(void *dst, const void *src, size_t n) and memmove: the same code, correct for
// overlapping buffers. Copies forwards unless dst lies above src inside it; below 64 bytes every
// load comes before any store.
.global memcpy
.global memmove
.type memcpy, %function
.type memmove, %function
memcpy:
memmove:
    mov     x15, x0
    mov     x3, x0
    cmp     x2, #64
    b.lo    .Lcopy_lt64
    sub     x4, x3, x1
    cmp     x4, x2
    b.lo    .Lcopy_backward
.Lcopy_forward:
    ldp     x4, x5, [x1]
    ldp     x6, x7, [x1, #16]
    ldp     x8, x9, [x1, #32]
    ldp     x10, x11, [x1, #48]
    add     x1, x1, #64
    sub     x2, x2, #64
    stp     x4, x5, [x3]
    stp     x6, x7, [x3, #16]
    stp     x8, x9, [x3, #32]
    stp     x10, x11, [x3, #48]
    add     x3, x3, #64
    cmp     x2, #64
    b.hs    .Lcopy_forward
    b       .Lcopy_lt64
.Lcopy_backward:
    add     x1, x1, x2
    add     x3, x3, x2
1:  ldp     x4, x5, [x1, #-16]
    ldp     x6, x7, [x1, #-32]
    ldp     x8, x9, [x1, #-48]
    ldp     x10, x11, [x1, #-64]
    sub     x1, x1, #64
    sub     x2, x2, #64
    stp     x4, x5, [x3, #-16]
    stp     x6, x7, [x3, #-32]
    stp     x8, x9, [x3, #-48]
    stp     x10, x11, [x3, #-64]
    sub     x3, x3, #64
    cmp     x2, #64
    b.hs    1b
    sub     x1, x1, x2
    sub     x3, x3, x2
.Lcopy_lt64:
    cmp     x2, #16
    b.lo    .Lcopy_lt16
    add     x12, x1, x2
    add     x13, x3, x2
    ldp     x4, x5, [x1]
    ldp     x6, x7, [x12, #-16]
    cmp     x2, #32
    b.ls    2f
    ldp     x8, x9, [x1, #16]
    ldp     x10, x11, [x12, #-32]
    stp     x8, x9, [x3, #16]
    stp     x10, x11, [x13, #-32]
2:  stp     x4, x5, [x3]
    stp     x6, x7, [x13, #-16]
    mov     x0, x15
    ret
.Lcopy_lt16:
    add     x12, x1, x2
    add     x13, x3, x2
    cmp     x2, #8
    b.lo    3f
    ldr     x4, [x1]
    ldr     x5, [x12, #-8]
    str     x4, [x3]
    str     x5, [x13, #-8]
    mov     x0, x15
    ret
3:  cmp     x2, #4
    b.lo    4f
    ldr     w4, [x1]
    ldr     w5, [x12, #-4]
    str     w4, [x3]
    str     w5, [x13, #-4]
    mov     x0, x15
    ret
4:  cbz     x2, 5f
    lsr     x6, x2, #1
    ldrb    w4, [x1]
    ldrb    w5, [x12, #-1]
    ldrb    w7, [x1, x6]
    strb    w4, [x3]
    strb    w5, [x13, #-1]
    strb    w7, [x3, x6]
5:  mov     x0, x15
    ret
.size memcpy, . - memcpy
.size memmove, . - memmove

// void *memset(void *dst, int c, size_t n)
.global memset
.type memset, %function
.balign 64
memset:
    mov     x15, x0
    and     x1, x1, #0xff
    mov     x4, #0x0101010101010101
    mul     x4, x1, x4
    add     x13, x0, x2
    cmp     x2, #16
    b.lo    .Lset_lt16
    stp     x4, x4, [x0]
    stp     x4, x4, [x13, #-16]
    cmp     x2, #32
    b.ls    .Lset_done
    add     x3, x0, #16
    and     x3, x3, #~15
    sub     x5, x13, #64
    cmp     x3, x5
    b.hi    7f
6:  stp     x4, x4, [x3]
    stp     x4, x4, [x3, #16]
    stp     x4, x4, [x3, #32]
    stp     x4, x4, [x3, #48]
    add     x3, x3, #64
    cmp     x3, x5
    b.ls    6b
7:  sub     x5, x13, #16
8:  cmp     x3, x5
    b.hs    .Lset_done
    stp     x4, x4, [x3]
    add     x3, x3, #16
    b       8b
.Lset_lt16:
    cmp     x2, #8
    b.lo    9f
    str     x4, [x0]
    str     x4, [x13, #-8]
    b       .Lset_done
9:  cmp     x2, #4
    b.lo    10f
    str     w4, [x0]
    str     w4, [x13, #-4]
    b       .Lset_done
10: cbz     x2, .Lset_done
    lsr     x6, x2, #1
    strb    w4, [x0]
    strb    w4, [x13, #-1]
    strb    w4, [x0, x6]
.Lset_done:
    mov     x0, x15
    ret
.size memset, . - memset

// int memcmp(const void *a, const void *b, size_t n), and bcmp (any non-zero when different).
.global memcmp
.global bcmp
.type memcmp, %function
.type bcmp, %function
.balign 64
memcmp:
bcmp:
    cmp     x2, #8
    b.lo    12f
11: ldr     x3, [x0], #8
    ldr     x4, [x1], #8
    cmp     x3, x4
    b.ne    14f
    sub     x2, x2, #8
    cmp     x2, #8
    b.hs    11b
12: cbz     x2, 13f
    ldrb    w3, [x0], #1
    ldrb    w4, [x1], #1
    subs    w5, w3, w4
    b.ne    15f
    sub     x2, x2, #1
    b       12b
13: mov     w0, #0
    ret
14: rev     x3, x3
    rev     x4, x4
    cmp     x3, x4
    mov     w0, #1
    cneg    w0, w0, lo
    ret
15: mov     w0, w5
    ret
.size memcmp, . - memcmp
.size bcmp, . - bcmp
"#
);
