/* bench.c — `nuance bench` (placeholder until written). */
#include <stdio.h>
int nu_cli_bench(int argc, char **argv);
int nu_cli_bench(int argc, char **argv) { (void)argc; (void)argv; fprintf(stderr, "bench: not yet\n"); return 1; }
