/* Maps and touches memory until the system runs out: Linux's OOM killer ends it with SIGKILL. */
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
int main(void) {
    for (unsigned long mib = 0;; mib += 64) {
        char *p = mmap(0, 64 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) {
            printf("oom: mmap failed after %lu MiB\n", mib);
            return 3;
        }
        for (unsigned long i = 0; i < (64 << 20); i += 4096) p[i] = 1;
    }
}
