// Threads with Linux semantics: a mutex-protected counter, a condition-variable ping-pong, thread
// ids, a global written by a thread, thread-local storage, exit() from a thread ending the whole
// process, detached threads, a thread blocked in read() of a pipe while main writes, signals to
// the process and to one thread, a fault in a thread killing the process, the main thread ending
// first, and execve from a thread (of $SPAWN_DIR/echo-args, default /echo-args; with
// $SPAWN_WRAPPER in front if set).
#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <sched.h>
#include <signal.h>
#include <time.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define NTHREADS 8
#define ROUNDS 10000
#define PINGS 1000

static void fail(const char *what) {
    printf("threads: FAILED: %s\n", what);
    fflush(stdout);
    _exit(1);
}

static pid_t gettid_(void) { return (pid_t)syscall(SYS_gettid); }

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static long counter;

static void *count(void *arg) {
    (void)arg;
    for (int i = 0; i < ROUNDS; i++) {
        pthread_mutex_lock(&lock);
        long v = counter;
        if (i % 1000 == 0)
            sched_yield();
        counter = v + 1;
        pthread_mutex_unlock(&lock);
    }
    return NULL;
}

static pthread_mutex_t pp_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pp_cond = PTHREAD_COND_INITIALIZER;
static int turn; // 0: ping's turn, 1: pong's
static int pongs;

static void *pong(void *arg) {
    (void)arg;
    for (int i = 0; i < PINGS; i++) {
        pthread_mutex_lock(&pp_lock);
        while (turn != 1)
            pthread_cond_wait(&pp_cond, &pp_lock);
        pongs++;
        turn = 0;
        pthread_cond_signal(&pp_cond);
        pthread_mutex_unlock(&pp_lock);
    }
    return NULL;
}

struct ids {
    pid_t pid, tid;
};

static void *ids(void *arg) {
    struct ids *r = arg;
    r->pid = getpid();
    r->tid = gettid_();
    return NULL;
}

static int global;

static void *set_global(void *arg) {
    (void)arg;
    global = 4242;
    return (void *)7;
}

static __thread int tls = 1;

static void *tls_thread(void *arg) {
    int me = (int)(long)arg;
    if (tls != 1)
        return (void *)1;
    tls = me * 100;
    for (int i = 0; i < 5; i++) {
        sched_yield();
        if (tls != me * 100)
            return (void *)2;
    }
    return (void *)(long)tls;
}

static void *exit_thread(void *arg) {
    (void)arg;
    exit(42);
}

static void *sleeper(void *arg) {
    (void)arg;
    for (;;)
        pause();
    return NULL;
}

static volatile int detached_ran;

static void *detached(void *arg) {
    (void)arg;
    detached_ran = 1;
    return NULL;
}

static int pipefd[2];

static void *reader(void *arg) {
    (void)arg;
    char buf[32];
    ssize_t n = read(pipefd[0], buf, sizeof buf - 1);
    if (n <= 0)
        return (void *)1;
    buf[n] = 0;
    return strcmp(buf, "through the pipe") == 0 ? NULL : (void *)2;
}

static volatile pid_t handled_by;

static void on_usr(int sig) {
    (void)sig;
    handled_by = gettid_();
}

static volatile int stop_spinning;
static volatile pid_t spinner_tid;

static void *spinner(void *arg) {
    (void)arg;
    spinner_tid = gettid_();
    while (!stop_spinning)
        sched_yield();
    return NULL;
}

static void *faulter(void *arg) {
    (void)arg;
    volatile int *volatile bad = (int *)8;
    *bad = 1;
    return NULL;
}

static void *late_exit(void *arg) {
    (void)arg;
    usleep(20000);
    // The main thread has ended: its memory is still this thread's.
    global = 99;
    exit(global == 99 ? 7 : 1);
}

static char *echo_args;

static void *execer(void *arg) {
    (void)arg;
    char *envp[] = {"SPAWN_VAR=thread", NULL};
    // $SPAWN_WRAPPER (qemu-aarch64) in front, where the host kernel cannot run arm64 programs.
    char *wrapper = getenv("SPAWN_WRAPPER");
    if (wrapper) {
        char *argv[] = {wrapper, echo_args, "9", "from", "a thread", NULL};
        execve(wrapper, argv, envp);
    } else {
        char *argv[] = {"echo-args", "9", "from", "a thread", NULL};
        execve(echo_args, argv, envp);
    }
    _exit(101);
}

static long futex(int *uaddr, int op, int val, const struct timespec *t, int *uaddr2, int val3) {
    return syscall(SYS_futex, uaddr, op, val, t, uaddr2, val3);
}

static int futex_word;
static volatile int waiting;

static void on_alarm(int sig) { (void)sig; }

static void *futex_waker(void *arg) {
    pid_t target = *(pid_t *)arg;
    while (!waiting)
        sched_yield();
    usleep(5000);
    syscall(SYS_tgkill, getpid(), target, SIGALRM);
    return NULL;
}

/// Forks a child running `body`, returns its wait status.
static int in_child(void (*body)(void)) {
    pid_t c = fork();
    if (c < 0)
        fail("fork");
    if (c == 0) {
        body();
        _exit(100);
    }
    int status;
    if (waitpid(c, &status, 0) != c)
        fail("waitpid");
    return status;
}

static void fault_body(void) {
    pthread_t s, f;
    pthread_create(&s, NULL, sleeper, NULL);
    pthread_create(&f, NULL, faulter, NULL);
    for (;;)
        pause();
}

static void leader_exits_body(void) {
    pthread_t t;
    pthread_create(&t, NULL, late_exit, NULL);
    pthread_exit(NULL);
}

static void exec_body(void) {
    pthread_t s, e;
    pthread_create(&s, NULL, sleeper, NULL);
    pthread_create(&e, NULL, execer, NULL);
    for (;;)
        pause();
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    pthread_t t[NTHREADS];

    for (int i = 0; i < NTHREADS; i++)
        if (pthread_create(&t[i], NULL, count, NULL))
            fail("pthread_create");
    for (int i = 0; i < NTHREADS; i++)
        if (pthread_join(t[i], NULL))
            fail("pthread_join");
    if (counter != NTHREADS * ROUNDS)
        fail("mutex counter");
    printf("threads: mutex counter %ld ok\n", counter);

    pthread_t p;
    if (pthread_create(&p, NULL, pong, NULL))
        fail("pthread_create pong");
    for (int i = 0; i < PINGS; i++) {
        pthread_mutex_lock(&pp_lock);
        while (turn != 0)
            pthread_cond_wait(&pp_cond, &pp_lock);
        turn = 1;
        pthread_cond_signal(&pp_cond);
        pthread_mutex_unlock(&pp_lock);
    }
    pthread_join(p, NULL);
    if (pongs != PINGS)
        fail("condvar ping-pong");
    printf("threads: condvar ping-pong %d rounds ok\n", pongs);

    struct ids r[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, ids, &r[i]);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    if (gettid_() != getpid())
        fail("gettid in main");
    if (r[0].pid != getpid() || r[1].pid != getpid())
        fail("getpid in a thread");
    if (r[0].tid == getpid() || r[1].tid == getpid() || r[0].tid == r[1].tid)
        fail("gettid in a thread");
    printf("threads: ids ok\n");

    void *ret;
    pthread_create(&p, NULL, set_global, NULL);
    pthread_join(p, &ret);
    if (global != 4242 || ret != (void *)7)
        fail("global after join");
    printf("threads: shared memory ok\n");

    tls = 5;
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, tls_thread, (void *)(long)(i + 1));
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], &ret);
        if (ret != (void *)(long)((i + 1) * 100))
            fail("thread-local value");
    }
    if (tls != 5)
        fail("thread-local value in main");
    printf("threads: thread-local ok\n");

    pid_t child = fork();
    if (child < 0)
        fail("fork");
    if (child == 0) {
        pthread_t s;
        pthread_create(&s, NULL, sleeper, NULL);
        pthread_create(&s, NULL, exit_thread, NULL);
        for (;;)
            pause();
    }
    int status;
    if (waitpid(child, &status, 0) != child)
        fail("waitpid");
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 42)
        fail("exit from a thread");
    printf("threads: exit from a thread ends the process with status 42 ok\n");

    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&p, &attr, detached, NULL))
        fail("pthread_create detached");
    pthread_t d;
    pthread_create(&d, NULL, detached, NULL);
    if (pthread_detach(d))
        fail("pthread_detach");
    for (int i = 0; i < 1000 && !detached_ran; i++)
        sched_yield();
    if (!detached_ran)
        fail("detached thread");
    printf("threads: detached ok\n");

    if (pipe(pipefd))
        fail("pipe");
    pthread_create(&p, NULL, reader, NULL);
    usleep(20000);
    if (write(pipefd[1], "through the pipe", 16) != 16)
        fail("write");
    pthread_join(p, &ret);
    if (ret != NULL)
        fail("read in a thread");
    printf("threads: read of a pipe in a thread ok\n");

    // A signal to the process goes to a thread that does not block it; pthread_kill to the
    // thread named.
    signal(SIGUSR1, on_usr);
    signal(SIGUSR2, on_usr);
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    pthread_create(&p, NULL, spinner, NULL);
    while (!spinner_tid)
        sched_yield();
    pthread_sigmask(SIG_BLOCK, &usr1, NULL);
    kill(getpid(), SIGUSR1);
    for (int i = 0; i < 1000 && !handled_by; i++)
        sched_yield();
    if (handled_by != spinner_tid)
        fail("kill to the process: handler not run by the thread that does not block it");
    handled_by = 0;
    pthread_kill(p, SIGUSR2);
    for (int i = 0; i < 1000 && !handled_by; i++)
        sched_yield();
    if (handled_by != spinner_tid)
        fail("pthread_kill: handler not run by the thread");
    handled_by = 0;
    pthread_sigmask(SIG_UNBLOCK, &usr1, NULL);
    pthread_kill(pthread_self(), SIGUSR2);
    if (handled_by != getpid())
        fail("pthread_kill to self");
    stop_spinning = 1;
    pthread_join(p, NULL);
    printf("threads: signals to the process and to a thread ok\n");

    status = in_child(fault_body);
    if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGSEGV)
        fail("a fault in a thread kills the process");
    printf("threads: a fault in a thread kills the process ok\n");

    status = in_child(leader_exits_body);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 7)
        fail("the main thread ending first");
    printf("threads: the main thread ends first ok\n");

    // futex answers.
    struct timespec ms10 = {0, 10 * 1000 * 1000};
    errno = 0;
    if (futex(&futex_word, FUTEX_WAIT_PRIVATE, 1, NULL, NULL, 0) != -1 || errno != EAGAIN)
        fail("FUTEX_WAIT on another value: EAGAIN");
    errno = 0;
    if (futex(&futex_word, FUTEX_WAIT_PRIVATE, 0, &ms10, NULL, 0) != -1 || errno != ETIMEDOUT)
        fail("FUTEX_WAIT timeout: ETIMEDOUT");
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    now.tv_nsec += 10 * 1000 * 1000;
    if (now.tv_nsec >= 1000000000) {
        now.tv_sec++;
        now.tv_nsec -= 1000000000;
    }
    errno = 0;
    if (futex(&futex_word, FUTEX_WAIT_BITSET_PRIVATE, 0, &now, NULL, FUTEX_BITSET_MATCH_ANY) != -1 ||
        errno != ETIMEDOUT)
        fail("FUTEX_WAIT_BITSET absolute timeout: ETIMEDOUT");
    errno = 0;
    if (futex(&futex_word, FUTEX_WAIT_BITSET_PRIVATE, 0, NULL, NULL, 0) != -1 || errno != EINVAL)
        fail("FUTEX_WAIT_BITSET with bitset 0: EINVAL");
    if (futex(&futex_word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0) != 0)
        fail("FUTEX_WAKE without waiters: 0");
    errno = 0;
    if (futex(&futex_word, 99, 0, NULL, NULL, 0) != -1 || errno != ENOSYS)
        fail("an unknown futex op: ENOSYS");
    struct sigaction sa = {0};
    sa.sa_handler = on_alarm; // no SA_RESTART
    sigaction(SIGALRM, &sa, NULL);
    pid_t me = gettid_();
    pthread_create(&p, NULL, futex_waker, &me);
    waiting = 1;
    errno = 0;
    if (futex(&futex_word, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0) != -1 || errno != EINTR)
        fail("FUTEX_WAIT interrupted by a handler: EINTR");
    pthread_join(p, NULL);
    printf("threads: futex EAGAIN ETIMEDOUT EINVAL ENOSYS EINTR ok\n");

    // clone's flag rules (Linux's): a thread shares the signal handlers, which share memory.
    errno = 0;
    if (syscall(SYS_clone, CLONE_VM | CLONE_THREAD, 0, 0, 0, 0) != -1 || errno != EINVAL)
        fail("CLONE_THREAD without CLONE_SIGHAND: EINVAL");
    errno = 0;
    if (syscall(SYS_clone, CLONE_SIGHAND, 0, 0, 0, 0) != -1 || errno != EINVAL)
        fail("CLONE_SIGHAND without CLONE_VM: EINVAL");
    printf("threads: clone flag checks ok\n");

    const char *dir = getenv("SPAWN_DIR");
    static char path[256];
    snprintf(path, sizeof path, "%s/echo-args", dir ? dir : "");
    echo_args = path;
    status = in_child(exec_body);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 9)
        fail("execve from a thread");
    printf("threads: execve from a thread ok\n");

    printf("threads: ok\n");
    return 0;
}
