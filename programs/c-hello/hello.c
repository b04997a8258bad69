/* A tiny C program for Tessera's EL0 processes: printf, malloc, exit status 0. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    printf("c-hello: hello from EL0\n");
    size_t n = 1000;
    unsigned long *v = malloc(n * sizeof *v);
    if (v == NULL) {
        printf("c-hello: malloc failed\n");
        return 1;
    }
    unsigned long sum = 0;
    for (size_t i = 0; i < n; i++) {
        v[i] = i * i;
        sum += v[i];
    }
    printf("c-hello: %zu squares, sum %lu\n", n, sum);
    char *s = malloc(64);
    if (s == NULL || (s = strcpy(s, "grown"), s = realloc(s, 4096)) == NULL) {
        printf("c-hello: malloc failed\n");
        return 1;
    }
    strcat(s, " and reallocated");
    printf("c-hello: %s\n", s);
    free(s);
    free(v);
    printf("c-hello: %d args", argc - 1);
    for (int i = 1; i < argc; i++)
        printf(" %s", argv[i]);
    printf("\nc-hello: done\n");
    return 0;
}
