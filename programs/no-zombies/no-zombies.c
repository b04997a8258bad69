/* With SIGCHLD ignored, children leave no zombies: wait() blocks until every child has exited,
 * then fails with ECHILD, and kill(pid, 0) finds no exited child. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    if (signal(SIGCHLD, SIG_IGN) == SIG_ERR) {
        printf("no-zombies: FAILED: signal: %s\n", strerror(errno));
        return 1;
    }
    pid_t pids[3];
    for (int i = 0; i < 3; i++) {
        pids[i] = fork();
        if (pids[i] < 0) {
            printf("no-zombies: FAILED: fork: %s\n", strerror(errno));
            return 1;
        }
        if (pids[i] == 0) {
            struct timespec t = {0, 5000000L * (i + 1)};
            nanosleep(&t, NULL);
            _exit(i);
        }
    }
    int status;
    pid_t r = wait(&status);
    if (r != -1 || errno != ECHILD) {
        printf("no-zombies: FAILED: wait returned %d (errno %d), want -1 ECHILD\n", (int)r, errno);
        return 1;
    }
    for (int i = 0; i < 3; i++) {
        if (kill(pids[i], 0) == 0 || errno != ESRCH) {
            printf("no-zombies: FAILED: child %d still exists\n", i);
            return 1;
        }
    }
    printf("no-zombies: ECHILD after every child exited, no zombie left\n");
    return 0;
}
