/* Asks to power the machine off, first with wrong magic (EINVAL), then as init would. */
#include <errno.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(void) {
    long r = syscall(SYS_reboot, 0x12345678, 672274793, 0x4321fedc, 0);
    printf("poweroff: bad magic refused with errno %d\n", r == -1 ? errno : 0);
    fflush(stdout);
    syscall(SYS_reboot, 0xfee1dead, 672274793, 0x4321fedc, 0);
    puts("poweroff: still running");
    return 1;
}
