/* Benchmark: ITERATIONS (default 100) times fork, the child execve's exit0 (which exits 0 at
 * once), waitpid; prints the median and mean time of one iteration (CLOCK_MONOTONIC; virtual
 * time under --icount).
 *
 * forkbench-exec [ITERATIONS]. The program is $FORKBENCH_EXEC (default /exit0: Tessera looks
 * the last path component up in its program archive). Where the host cannot execute arm64
 * programs (qemu-user without binfmt_misc), FORKBENCH_WRAPPER=/usr/bin/qemu-aarch64 runs it
 * through qemu. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void fail(const char *what) {
    fprintf(stderr, "forkbench-exec: FAILED: %s (errno %d: %s)\n", what, errno, strerror(errno));
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
    long n = 100;
    if (argc > 2 || (argc == 2 && atol(argv[1]) <= 0)) {
        fprintf(stderr, "usage: forkbench-exec [ITERATIONS]\n");
        return 2;
    }
    if (argc == 2) n = atol(argv[1]);
    char *path = getenv("FORKBENCH_EXEC");
    if (!path || !*path) path = "/exit0";
    char *wrapper = getenv("FORKBENCH_WRAPPER");
    char *child_argv[3] = {"exit0", NULL, NULL};
    if (wrapper && *wrapper) {
        child_argv[0] = wrapper;
        child_argv[1] = path;
        path = wrapper;
    }
    char *child_env[] = {NULL};
    uint64_t *t = malloc((size_t)n * sizeof *t), sum = 0;
    if (!t) fail("malloc");
    for (long i = 0; i < n; i++) {
        uint64_t t0 = now_ns();
        pid_t pid = fork();
        if (pid < 0) fail("fork");
        if (pid == 0) {
            execve(path, child_argv, child_env);
            _exit(127);
        }
        int st;
        if (waitpid(pid, &st, 0) != pid) fail("waitpid");
        t[i] = now_ns() - t0;
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            fprintf(stderr, "forkbench-exec: FAILED: child status %#x%s\n", st,
                    WIFEXITED(st) && WEXITSTATUS(st) == 127 ? " (execve failed; see FORKBENCH_EXEC)" : "");
            return 1;
        }
        sum += t[i];
    }
    sort_u64(t, n);
    printf("forkbench-exec: median %llu ns\n", (unsigned long long)t[n / 2]);
    printf("forkbench-exec: mean %llu ns\n", (unsigned long long)(sum / (uint64_t)n));
    return 0;
}
