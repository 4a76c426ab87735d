/* bench_scale.h — the two halves of bench_scale: the router's simulation
 * (bench_scale.c, which has main) and the store's write rate
 * (bench_scale_store.c). */
#ifndef SDGATE_BENCH_SCALE_H
#define SDGATE_BENCH_SCALE_H

/* Prints the store's tables; argv holds the options bench_scale.c did not
 * take (--store-jobs N, --store-dir DIR). Returns 0, or 1 when a store failed. */
int bench_scale_store(int argc, char **argv, int quick);

#endif
