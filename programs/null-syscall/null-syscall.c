/* The null system call benchmark: getppid() in a loop, timed with clock_gettime(CLOCK_MONOTONIC)
 * (virtual ns under QEMU's -icount shift=0). Prints one "bench op=null-syscall ns=N" line. */
#include <stdio.h>
#include <time.h>

static long now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000L + t.tv_nsec;
}

static long getppid_raw(void) {
    register long x8 __asm__("x8") = 173; /* __NR_getppid */
    register long x0 __asm__("x0");
    __asm__ volatile("svc #0" : "=r"(x0) : "r"(x8) : "memory");
    return x0;
}

int main(void) {
    enum { N = 20000 };
    long sum = 0;
    long t0 = now();
    for (int i = 0; i < N; i++) sum += getppid_raw();
    long t1 = now();
    printf("bench op=null-syscall ns=%ld calls=%d check=%ld\n", (t1 - t0) / N, N, sum);
    return 0;
}
