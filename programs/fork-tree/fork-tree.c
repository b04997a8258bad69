/* A tree of processes (depth 3, fan-out 3 unless argv[1], argv[2] say otherwise). Every process
 * writes its own pattern into memory it shares copy-on-write with its parent and children (a
 * 256 KiB heap buffer allocated by the root, initialised and zero static data, a few pages of
 * stack), yields, and checks it sees only its own pattern; its exit status says whether it and its
 * whole subtree succeeded. The root prints the number of processes.
 *
 * Optional Tessera fork controls: --fork copy|share (prctl 0x54455301), --folio 4k|64k
 * (prctl 0x54455303, before the buffer is allocated). Linux answers EINVAL: they are skipped. */
#include <errno.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#define HEAP_BYTES (256 * 1024)
#define STACK_BYTES (4 * 4096)
#define STATIC_BYTES (3 * 4096)

static uint64_t *heap;
/* Initialised (.data) and zero (.bss) static data. */
static uint64_t data_words[STATIC_BYTES / 8] = {1, 2, 3};
static uint64_t bss_words[STATIC_BYTES / 8];

static int depth_max = 3, fanout = 3;

static uint64_t pattern(uint64_t id, uint64_t i) {
    return (id << 40) ^ (i * 0x9e3779b97f4a7c15ull) ^ 0x5a5a;
}

static void fill(uint64_t *p, size_t words, uint64_t id, uint64_t salt) {
    for (size_t i = 0; i < words; i++) p[i] = pattern(id, i + salt);
}

static int check(const uint64_t *p, size_t words, uint64_t id, uint64_t salt, const char *what) {
    for (size_t i = 0; i < words; i++) {
        if (p[i] != pattern(id, i + salt)) {
            fprintf(stderr, "fork-tree: process %llu: %s word %zu is %#llx, expected %#llx\n",
                    (unsigned long long)id, what, i, (unsigned long long)p[i],
                    (unsigned long long)pattern(id, i + salt));
            return 0;
        }
    }
    return 1;
}

/* Runs node `id` at `depth`; returns 0 when it and its subtree succeeded. */
static int node(uint64_t id, int depth) {
    volatile uint64_t stack_words[STACK_BYTES / 8];
    uint64_t *stack = (uint64_t *)stack_words;
    fill(heap, HEAP_BYTES / 8, id, 0);
    fill(data_words, STATIC_BYTES / 8, id, 1000);
    fill(bss_words, STATIC_BYTES / 8, id, 2000);
    fill(stack, STACK_BYTES / 8, id, 3000);

    pid_t kids[64];
    int nkids = 0, ok = 1;
    if (depth < depth_max) {
        for (int i = 0; i < fanout; i++) {
            uint64_t child = id * (uint64_t)fanout + (uint64_t)i + 1;
            pid_t pid = fork();
            if (pid < 0) {
                fprintf(stderr, "fork-tree: process %llu: fork: %s\n", (unsigned long long)id,
                        strerror(errno));
                ok = 0;
                break;
            }
            if (pid == 0) _exit(node(child, depth + 1));
            kids[nkids++] = pid;
        }
    }
    for (int i = 0; i < 3; i++) sched_yield();
    ok &= check(heap, HEAP_BYTES / 8, id, 0, "heap");
    ok &= check(data_words, STATIC_BYTES / 8, id, 1000, "data");
    ok &= check(bss_words, STATIC_BYTES / 8, id, 2000, "bss");
    ok &= check(stack, STACK_BYTES / 8, id, 3000, "stack");
    for (int i = 0; i < nkids; i++) {
        int st;
        if (waitpid(kids[i], &st, 0) != kids[i]) {
            fprintf(stderr, "fork-tree: process %llu: waitpid: %s\n", (unsigned long long)id,
                    strerror(errno));
            ok = 0;
        } else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            fprintf(stderr, "fork-tree: process %llu: child %d ended with status %#x\n",
                    (unsigned long long)id, i, st);
            ok = 0;
        }
    }
    /* The children's writes must not show through after they are gone. */
    ok &= check(heap, HEAP_BYTES / 8, id, 0, "heap after wait");
    ok &= check(stack, STACK_BYTES / 8, id, 3000, "stack after wait");
    return ok ? 0 : 1;
}

static void fork_controls(int argc, char **argv, int *i) {
    const char *opt = argv[*i];
    if (*i + 1 >= argc) {
        fprintf(stderr, "fork-tree: %s needs a value\n", opt);
        exit(2);
    }
    const char *v = argv[++*i];
    long r;
    if (!strcmp(opt, "--fork")) {
        if (strcmp(v, "copy") && strcmp(v, "share")) {
            fprintf(stderr, "fork-tree: --fork copy|share\n");
            exit(2);
        }
        r = prctl(0x54455301, !strcmp(v, "share") ? 1UL : 0UL, 0, 0, 0);
    } else {
        if (strcmp(v, "4k") && strcmp(v, "64k")) {
            fprintf(stderr, "fork-tree: --folio 4k|64k\n");
            exit(2);
        }
        r = prctl(0x54455303, !strcmp(v, "4k") ? 4096UL : 65536UL, 0, 0, 0);
    }
    if (r < 0 && errno != EINVAL) {
        fprintf(stderr, "fork-tree: prctl for %s %s: %s\n", opt, v, strerror(errno));
        exit(1);
    }
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    int pos = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--fork") || !strcmp(argv[i], "--folio")) {
            fork_controls(argc, argv, &i);
        } else if (pos == 0) {
            depth_max = atoi(argv[i]);
            pos++;
        } else if (pos == 1) {
            fanout = atoi(argv[i]);
            pos++;
        } else {
            fprintf(stderr, "usage: fork-tree [DEPTH [FANOUT]] [--fork copy|share] [--folio 4k|64k]\n");
            return 2;
        }
    }
    if (depth_max < 0 || depth_max > 8 || fanout < 1 || fanout > 64) {
        fprintf(stderr, "fork-tree: depth 0..8 and fan-out 1..64\n");
        return 2;
    }
    heap = malloc(HEAP_BYTES);
    if (!heap) {
        fprintf(stderr, "fork-tree: malloc failed\n");
        return 1;
    }
    long n = 0, level = 1;
    for (int d = 0; d <= depth_max; d++, level *= fanout) n += level;
    if (node(0, 0) != 0) {
        fprintf(stderr, "fork-tree: FAILED\n");
        return 1;
    }
    printf("fork-tree: %ld processes ok\n", n);
    return 0;
}
