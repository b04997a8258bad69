/* Copy-on-write under memory pressure: touches MIB MiB (default 64), then forks FORKS children
 * (default 8). Each child checks every page still holds the parent's values, writes its own
 * into every page (forcing copies), checks them, and waits until the parent releases all
 * children at once, so that their copies exist together. Counts forks that fail with ENOMEM or
 * EAGAIN and children killed by SIGKILL (out of memory); anything else (another errno, another
 * status, wrong memory contents) is a failure.
 *
 * fork-oom [MIB [FORKS]] [--fork copy|share] [--folio 4k|64k] (Tessera controls, skipped on
 * Linux). */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAGE 4096

static void fail(const char *what) {
    fprintf(stderr, "fork-oom: FAILED: %s (errno %d: %s)\n", what, errno, strerror(errno));
    exit(1);
}

static uint64_t value(uint64_t owner, size_t page) { return (owner << 48) ^ (page * 0x9e3779b97f4a7c15ull); }

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    long mib = 64, forks = 8;
    int pos = 0;
    for (int i = 1; i < argc; i++) {
        long r = 0;
        if (!strcmp(argv[i], "--fork") && i + 1 < argc) {
            r = prctl(0x54455301, !strcmp(argv[++i], "share") ? 1UL : 0UL, 0, 0, 0);
        } else if (!strcmp(argv[i], "--folio") && i + 1 < argc) {
            r = prctl(0x54455303, !strcmp(argv[++i], "4k") ? 4096UL : 65536UL, 0, 0, 0);
        } else if (pos < 2 && argv[i][0] != '-') {
            *(pos++ == 0 ? &mib : &forks) = atol(argv[i]);
        } else {
            fprintf(stderr, "usage: fork-oom [MIB [FORKS]] [--fork copy|share] [--folio 4k|64k]\n");
            return 2;
        }
        if (r < 0 && errno != EINVAL) fail("prctl");
    }
    if (mib < 1 || forks < 1 || forks > 4096) {
        fprintf(stderr, "fork-oom: MIB >= 1 and FORKS 1..4096\n");
        return 2;
    }
    size_t bytes = (size_t)mib << 20, pages = bytes / PAGE;
    uint64_t *mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) fail("mmap");
    for (size_t p = 0; p < pages; p++) mem[p * (PAGE / 8)] = value(0, p);
    printf("fork-oom: %ld MiB touched, %ld forks\n", mib, forks);

    int gate[2];
    if (pipe(gate)) fail("pipe");
    pid_t *pids = calloc((size_t)forks, sizeof *pids);
    if (!pids) fail("calloc");
    long started = 0, enomem = 0, eagain = 0;
    for (long k = 0; k < forks; k++) {
        pid_t pid = fork();
        if (pid < 0) {
            if (errno == ENOMEM) enomem++;
            else if (errno == EAGAIN) eagain++;
            else fail("fork");
            continue;
        }
        if (pid == 0) {
            close(gate[1]);
            uint64_t me = (uint64_t)k + 1;
            for (size_t p = 0; p < pages; p++) {
                if (mem[p * (PAGE / 8)] != value(0, p)) _exit(2);
                mem[p * (PAGE / 8)] = value(me, p);
            }
            for (size_t p = 0; p < pages; p++)
                if (mem[p * (PAGE / 8)] != value(me, p)) _exit(2);
            char c;
            _exit(read(gate[0], &c, 1) == 0 ? 0 : 3);
        }
        pids[started++] = pid;
    }
    close(gate[1]);
    close(gate[0]);

    long ok = 0, killed = 0;
    for (long i = 0; i < started; i++) {
        int st;
        if (waitpid(pids[i], &st, 0) != pids[i]) fail("waitpid");
        if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
            ok++;
        } else if (WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL) {
            killed++;
        } else {
            fprintf(stderr, "fork-oom: FAILED: child %ld: status %#x%s\n", i, st,
                    WIFEXITED(st) && WEXITSTATUS(st) == 2 ? " (wrong memory contents)" : "");
            return 1;
        }
    }
    for (size_t p = 0; p < pages; p++)
        if (mem[p * (PAGE / 8)] != value(0, p)) {
            fprintf(stderr, "fork-oom: FAILED: the parent's page %zu changed\n", p);
            return 1;
        }
    printf("fork-oom: children ok %ld, killed %ld; forks failed ENOMEM %ld, EAGAIN %ld\n", ok, killed, enomem,
           eagain);
    printf("fork-oom: done\n");
    return 0;
}
