/* Parent and child write the same pages after fork (initialised static data, zero static data,
 * a small heap block, the stack, a private anonymous mapping of 64 KiB whose pages the two sides
 * write at different offsets) and each reads back its own values after the other has written;
 * a shared anonymous page shows the child's write to the parent. Two pipes order the steps.
 *
 * Optional Tessera fork controls as in fork-tree: --fork copy|share, --folio 4k|64k. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAP_BYTES 65536
#define PAGE 4096

static volatile uint64_t data_word = 0x1111;
static volatile uint64_t bss_word;

static volatile uint64_t *heap_word, *map, *shared;
static int failures;

static void die(const char *who, const char *what) {
    fprintf(stderr, "cow-page: %s: %s: %s\n", who, what, strerror(errno));
    _exit(1);
}

static void expect(const char *who, const char *what, uint64_t got, uint64_t want) {
    if (got != want) {
        fprintf(stderr, "cow-page: %s: %s is %#llx, expected %#llx\n", who, what,
                (unsigned long long)got, (unsigned long long)want);
        failures++;
    }
}

/* The word at the start of page `i` of the private mapping. */
static volatile uint64_t *map_page(int i) { return map + i * (PAGE / 8); }

static void write_all(volatile uint64_t *stack_word, uint64_t v, int page) {
    data_word = v;
    bss_word = v + 1;
    *heap_word = v + 2;
    *stack_word = v + 3;
    *map_page(page) = v + 4;
}

static void check_all(const char *who, volatile uint64_t *stack_word, uint64_t v, int page,
                      int other_page, uint64_t other_value) {
    expect(who, "static data", data_word, v);
    expect(who, "static bss", bss_word, v + 1);
    expect(who, "heap", *heap_word, v + 2);
    expect(who, "stack", *stack_word, v + 3);
    expect(who, "own mapping page", *map_page(page), v + 4);
    expect(who, "other mapping page", *map_page(other_page), other_value);
    for (int i = 0; i < MAP_BYTES / PAGE; i++)
        if (i != page && i != other_page) expect(who, "untouched mapping page", *map_page(i), 0x77 + i);
}

static void signal_peer(int fd, const char *who) {
    if (write(fd, "x", 1) != 1) die(who, "write to pipe");
}

static void await_peer(int fd, const char *who) {
    char c;
    if (read(fd, &c, 1) != 1) die(who, "read from pipe");
}

static void fork_controls(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        long r;
        if (i + 1 < argc && !strcmp(argv[i], "--fork"))
            r = prctl(0x54455301, !strcmp(argv[++i], "share") ? 1UL : 0UL, 0, 0, 0);
        else if (i + 1 < argc && !strcmp(argv[i], "--folio"))
            r = prctl(0x54455303, !strcmp(argv[++i], "4k") ? 4096UL : 65536UL, 0, 0, 0);
        else {
            fprintf(stderr, "usage: cow-page [--fork copy|share] [--folio 4k|64k]\n");
            exit(2);
        }
        if (r < 0 && errno != EINVAL) die("parent", "prctl");
    }
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    fork_controls(argc, argv);
    volatile uint64_t stack_word = 0x2222;
    heap_word = malloc(64);
    map = mmap(NULL, MAP_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    shared = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (!heap_word || map == MAP_FAILED || shared == MAP_FAILED) die("parent", "allocation");
    *heap_word = 0x3333;
    for (int i = 0; i < MAP_BYTES / PAGE; i++) *map_page(i) = 0x77 + i;
    *shared = 0;

    int to_child[2], to_parent[2];
    if (pipe(to_child) || pipe(to_parent)) die("parent", "pipe");
    pid_t pid = fork();
    if (pid < 0) die("parent", "fork");
    if (pid == 0) {
        /* Child: before anything is written, it sees the parent's values. */
        expect("child", "static data at fork", data_word, 0x1111);
        expect("child", "stack at fork", stack_word, 0x2222);
        expect("child", "heap at fork", *heap_word, 0x3333);
        write_all(&stack_word, 0xc000, 3);
        *shared = 0xc5;
        signal_peer(to_parent[1], "child");
        await_peer(to_child[0], "child");
        /* The parent has written its values meanwhile. */
        check_all("child", &stack_word, 0xc000, 3, 5, 0x77 + 5);
        _exit(failures ? 1 : 0);
    }
    await_peer(to_parent[0], "parent");
    /* The child has written: the parent still sees its own values. */
    expect("parent", "static data after child wrote", data_word, 0x1111);
    expect("parent", "stack after child wrote", stack_word, 0x2222);
    expect("parent", "heap after child wrote", *heap_word, 0x3333);
    expect("parent", "mapping page 3 after child wrote", *map_page(3), 0x77 + 3);
    expect("parent", "shared page", *shared, 0xc5);
    write_all(&stack_word, 0xa000, 5);
    signal_peer(to_child[1], "parent");
    int st;
    if (waitpid(pid, &st, 0) != pid) die("parent", "waitpid");
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "cow-page: child ended with status %#x\n", st);
        failures++;
    }
    check_all("parent", &stack_word, 0xa000, 5, 3, 0x77 + 3);
    if (failures) {
        fprintf(stderr, "cow-page: FAILED (%d checks)\n", failures);
        return 1;
    }
    printf("cow-page: ok\n");
    return 0;
}
