/* FP/SIMD registers belong to their process: parent and three children each load all 32 vector
 * registers, FPCR's rounding mode and a floating-point accumulator with values of their own, then
 * yield and make system calls many times while the others run and do the same, and check that
 * every register still holds what they put there. Exits 0 and prints one line when all agree. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

/* Loads v0..v31 with lanes derived from `seed`, yields `rounds` times (getppid and sched_yield in
 * between), then stores v0..v31 back into `out`. */
static void hold_vectors(uint64_t seed, int rounds, uint64_t out[64]) {
    uint64_t in[64];
    for (int i = 0; i < 64; i++) in[i] = seed * 0x9e3779b97f4a7c15ull + (uint64_t)i;
    uint64_t *src = in, *dst = out;
    __asm__ volatile(
        "ld1 {v0.2d, v1.2d, v2.2d, v3.2d}, [%0], #64\n"
        "ld1 {v4.2d, v5.2d, v6.2d, v7.2d}, [%0], #64\n"
        "ld1 {v8.2d, v9.2d, v10.2d, v11.2d}, [%0], #64\n"
        "ld1 {v12.2d, v13.2d, v14.2d, v15.2d}, [%0], #64\n"
        "ld1 {v16.2d, v17.2d, v18.2d, v19.2d}, [%0], #64\n"
        "ld1 {v20.2d, v21.2d, v22.2d, v23.2d}, [%0], #64\n"
        "ld1 {v24.2d, v25.2d, v26.2d, v27.2d}, [%0], #64\n"
        "ld1 {v28.2d, v29.2d, v30.2d, v31.2d}, [%0], #64\n"
        "mov x9, %2\n"
        "1:\n"
        "mov x8, #124\n" /* sched_yield */
        "svc #0\n"
        "mov x8, #173\n" /* getppid */
        "svc #0\n"
        "subs x9, x9, #1\n"
        "b.ne 1b\n"
        "st1 {v0.2d, v1.2d, v2.2d, v3.2d}, [%1], #64\n"
        "st1 {v4.2d, v5.2d, v6.2d, v7.2d}, [%1], #64\n"
        "st1 {v8.2d, v9.2d, v10.2d, v11.2d}, [%1], #64\n"
        "st1 {v12.2d, v13.2d, v14.2d, v15.2d}, [%1], #64\n"
        "st1 {v16.2d, v17.2d, v18.2d, v19.2d}, [%1], #64\n"
        "st1 {v20.2d, v21.2d, v22.2d, v23.2d}, [%1], #64\n"
        "st1 {v24.2d, v25.2d, v26.2d, v27.2d}, [%1], #64\n"
        "st1 {v28.2d, v29.2d, v30.2d, v31.2d}, [%1], #64\n"
        : "+r"(src), "+r"(dst)
        : "r"((uint64_t)rounds)
        : "x0", "x8", "x9", "memory", "v0", "v1", "v2", "v3", "v4", "v5", "v6", "v7", "v8", "v9", "v10",
          "v11", "v12", "v13", "v14", "v15", "v16", "v17", "v18", "v19", "v20", "v21", "v22", "v23",
          "v24", "v25", "v26", "v27", "v28", "v29", "v30", "v31");
}

static int check(uint64_t seed) {
    /* FPCR rounding mode (bits 23:22): each process its own. */
    uint64_t mode = (seed % 4) << 22, fpcr;
    __asm__ volatile("msr fpcr, %0" ::"r"(mode));
    uint64_t out[64];
    hold_vectors(seed, 200, out);
    __asm__ volatile("mrs %0, fpcr" : "=r"(fpcr));
    int bad = (fpcr & (3u << 22)) != mode;
    for (int i = 0; i < 64; i++) bad |= out[i] != seed * 0x9e3779b97f4a7c15ull + (uint64_t)i;
    return bad;
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    pid_t kids[3];
    for (int k = 0; k < 3; k++) {
        kids[k] = fork();
        if (kids[k] < 0) return 2;
        if (kids[k] == 0) _exit(check(100 + (uint64_t)k));
    }
    int bad = check(7);
    for (int k = 0; k < 3; k++) {
        int st;
        if (waitpid(kids[k], &st, 0) != kids[k] || !WIFEXITED(st) || WEXITSTATUS(st) != 0) bad = 1;
    }
    if (bad) {
        printf("fp-switch: FAILED: a process's FP/SIMD registers changed under it\n");
        return 1;
    }
    printf("fp-switch: 4 processes kept their 32 vector registers and FPCR across 400 calls each\n");
    return 0;
}
