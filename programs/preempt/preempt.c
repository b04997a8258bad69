/* Preemption and kill: two children count in a shared anonymous page in tight loops without
 * system calls; the parent sleeps and checks that both counters moved (twice), then kills both
 * with SIGKILL. SIGTERM's default action ends a busy child and a child blocked reading a pipe. */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void fail(const char *what) {
    fprintf(stderr, "preempt: FAILED: %s (errno %d: %s)\n", what, errno, strerror(errno));
    exit(1);
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static volatile uint64_t *counters;

static pid_t busy_child(int slot) {
    pid_t pid = fork();
    if (pid < 0) fail("fork");
    if (pid == 0) {
        for (;;) counters[slot]++;
    }
    return pid;
}

/* Kills `pid` with `sig` and checks that it died of it. */
static void kill_and_check(pid_t pid, int sig, const char *what) {
    int st;
    if (kill(pid, sig) != 0) fail("kill");
    if (waitpid(pid, &st, 0) != pid) fail("waitpid");
    if (!WIFSIGNALED(st) || WTERMSIG(st) != sig) {
        fprintf(stderr, "preempt: FAILED: %s: status %#x, expected death by signal %d\n", what, st, sig);
        exit(1);
    }
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    counters = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (counters == MAP_FAILED) fail("mmap");
    pid_t a = busy_child(0), b = busy_child(1);
    uint64_t prev[2] = {0, 0};
    /* Each round, both counters must move while the parent sleeps. The parent looks every 50 ms
     * and gives up after 5 s: a slow or busy host may run the guest slowly, but a scheduler
     * that never preempts a busy child never moves the other counter. */
    for (int round = 0; round < 2; round++) {
        uint64_t now[2];
        int tries = 0;
        do {
            sleep_ms(50);
            now[0] = counters[0];
            now[1] = counters[1];
        } while ((now[0] <= prev[0] || now[1] <= prev[1]) && ++tries < 100);
        for (int i = 0; i < 2; i++) {
            if (now[i] <= prev[i]) {
                fprintf(stderr, "preempt: FAILED: round %d: counter %d did not move in 5 s (%llu)\n", round, i,
                        (unsigned long long)now[i]);
                kill(a, SIGKILL);
                kill(b, SIGKILL);
                exit(1);
            }
            prev[i] = now[i];
        }
    }
    printf("preempt: both counters moved\n");
    kill_and_check(a, SIGKILL, "SIGKILL of a busy child");
    kill_and_check(b, SIGKILL, "SIGKILL of a busy child");
    uint64_t after = counters[0];
    sleep_ms(10);
    if (counters[0] != after) fail("a killed child still counts");
    printf("preempt: SIGKILL ok\n");

    pid_t c = busy_child(2);
    sleep_ms(10);
    kill_and_check(c, SIGTERM, "SIGTERM of a busy child");
    int gate[2];
    if (pipe(gate)) fail("pipe");
    pid_t d = fork();
    if (d < 0) fail("fork");
    if (d == 0) {
        char ch;
        close(gate[1]);
        _exit(read(gate[0], &ch, 1) == 0 ? 3 : 4);
    }
    close(gate[0]);
    sleep_ms(10);
    kill_and_check(d, SIGTERM, "SIGTERM of a child blocked in read");
    close(gate[1]);
    printf("preempt: SIGTERM ok\n");
    printf("preempt: ok\n");
    return 0;
}
