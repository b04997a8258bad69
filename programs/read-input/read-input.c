/* Reads its standard input (the serial console under Tessera) until a line "end", with plain
 * blocking read(2) calls, then prints what it read in upper case and how many read calls it
 * took. Says "read-input: ready" first, so a test knows when to type. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(void) {
    char buf[4096];
    size_t len = 0;
    int calls = 0;
    setvbuf(stdout, NULL, _IONBF, 0);
    printf("read-input: ready\n");
    while (len < sizeof buf - 1) {
        ssize_t n = read(0, buf + len, sizeof buf - 1 - len);
        calls++;
        if (n < 0) {
            printf("read-input: FAILED: read: %s\n", strerror(errno));
            return 1;
        }
        if (n == 0)
            break;
        len += (size_t)n;
        buf[len] = 0;
        if (strstr(buf, "end\n") || strstr(buf, "end\r"))
            break;
    }
    for (size_t i = 0; i < len; i++)
        buf[i] = (char)toupper((unsigned char)buf[i]);
    char *end = strstr(buf, "END");
    if (end)
        *end = 0;
    printf("read-input: %s", buf);
    printf("read-input: done\n");
    return 0;
}
