/* Benchmark: the latency of fork in a process with MIB MiB (default 256) of touched anonymous
 * memory. Forks FORKS times (default 9); each child _exit(0)s at once and is reaped before the
 * next fork. Prints the median and mean time of the fork call in the parent (CLOCK_MONOTONIC;
 * virtual time under --icount).
 *
 * forkbench-touch [MIB [FORKS]] [--fork copy|share] [--folio 4k|64k] (Tessera controls,
 * skipped on Linux; --folio applies to the mapping touched). */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void fail(const char *what) {
    fprintf(stderr, "forkbench-touch: FAILED: %s (errno %d: %s)\n", what, errno, strerror(errno));
    exit(1);
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Insertion sort: few samples, and no library sort (glibc's asks the kernel for sysinfo). */
static void sort_u64(uint64_t *t, long n) {
    for (long i = 1; i < n; i++) {
        uint64_t v = t[i];
        long j = i;
        for (; j > 0 && t[j - 1] > v; j--) t[j] = t[j - 1];
        t[j] = v;
    }
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    long mib = 256, n = 9;
    int pos = 0;
    for (int i = 1; i < argc; i++) {
        long r = 0;
        if (!strcmp(argv[i], "--fork") && i + 1 < argc)
            r = prctl(0x54455301, !strcmp(argv[++i], "share") ? 1UL : 0UL, 0, 0, 0);
        else if (!strcmp(argv[i], "--folio") && i + 1 < argc)
            r = prctl(0x54455303, !strcmp(argv[++i], "4k") ? 4096UL : 65536UL, 0, 0, 0);
        else if (pos < 2 && argv[i][0] != '-' && atol(argv[i]) > 0)
            *(pos++ == 0 ? &mib : &n) = atol(argv[i]);
        else {
            fprintf(stderr, "usage: forkbench-touch [MIB [FORKS]] [--fork copy|share] [--folio 4k|64k]\n");
            return 2;
        }
        if (r < 0 && errno != EINVAL) fail("prctl");
    }
    size_t bytes = (size_t)mib << 20;
    volatile char *mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) fail("mmap");
    for (size_t off = 0; off < bytes; off += 4096) mem[off] = (char)(off >> 12);
    uint64_t *t = malloc((size_t)n * sizeof *t), sum = 0;
    if (!t) fail("malloc");
    for (long i = 0; i < n; i++) {
        uint64_t t0 = now_ns();
        pid_t pid = fork();
        if (pid == 0) _exit(0);
        t[i] = now_ns() - t0;
        if (pid < 0) fail("fork");
        int st;
        if (waitpid(pid, &st, 0) != pid) fail("waitpid");
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            fprintf(stderr, "forkbench-touch: FAILED: child status %#x\n", st);
            return 1;
        }
        sum += t[i];
    }
    sort_u64(t, n);
    printf("forkbench-touch: fork median %llu ns\n", (unsigned long long)t[n / 2]);
    printf("forkbench-touch: fork mean %llu ns\n", (unsigned long long)(sum / (uint64_t)n));
    return 0;
}
