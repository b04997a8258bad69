/* The program spawn executes: echo-args STATUS [--closed N] [--write N] [WORD...]
 * prints its words and the environment variable SPAWN_VAR, checks that descriptor N is closed
 * (--closed: fcntl answers EBADF) or writes "echo-args\n" to descriptor N (--write), and exits
 * with STATUS. Exits 100 when a check fails. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: echo-args STATUS [--closed N] [--write N] [WORD...]\n");
        return 100;
    }
    int status = atoi(argv[1]);
    int i = 2;
    for (; i + 1 < argc; i += 2) {
        int fd = atoi(argv[i + 1]);
        if (!strcmp(argv[i], "--closed")) {
            errno = 0;
            if (fcntl(fd, F_GETFD) != -1 || errno != EBADF) {
                fprintf(stderr, "echo-args: fd %d is open, expected closed\n", fd);
                return 100;
            }
            printf("echo-args: fd %d closed\n", fd);
        } else if (!strcmp(argv[i], "--write")) {
            if (write(fd, "echo-args\n", 10) != 10) {
                fprintf(stderr, "echo-args: write to fd %d: %s\n", fd, strerror(errno));
                return 100;
            }
            printf("echo-args: fd %d open\n", fd);
        } else {
            break;
        }
    }
    printf("echo-args: %d words:", argc - i);
    for (; i < argc; i++) printf(" [%s]", argv[i]);
    printf("\n");
    const char *v = getenv("SPAWN_VAR");
    printf("echo-args: SPAWN_VAR=%s\n", v ? v : "(unset)");
    printf("echo-args: exit %d\n", status);
    return status;
}
