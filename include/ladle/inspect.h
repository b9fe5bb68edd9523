/* inspect: what a ladle file holds, without loading it ('ladle inspect').
 *
 * Any ladle file: a corpus (plain or clustered, format "ladle-corpus") or a model file
 * (format "ladle-checkpoint": a dense model, a soup, an instantiated model, or a training
 * checkpoint, i.e. any of those with an /optim group). Only metadata is read: attributes,
 * group listings and dataset shapes, plus the values of one dataset for --dump.
 *
 * Text output is "key: value" lines (kind, format, step, world size at save, ladle
 * version, a configuration summary, parameter counts, domains, then every tensor with its
 * shape, listed in the model's flat-vector order); --json prints the same as one JSON
 * object. A dump prints one value per line (%.9g for float32, so a value parsed back as
 * float32 is bit-exact), in row-major order.
 *
 * Every rank reads the file on its own (serial HDF5, file locking off) and performs the
 * same checks, so a bad file is a usage error that every rank reaches identically (see
 * error.h); only the rank `rank` == 0 writes to `out`. */
#ifndef LADLE_INSPECT_H
#define LADLE_INSPECT_H

#include <stdio.h>

typedef struct {
    const char *dump;   /* NULL, or a dataset path such as "shared/h.0.ffn.w1" (a leading '/' is allowed) */
    int json;           /* 1: JSON instead of text */
} ladle_inspect_options;

/* Describe the file at path (or dump one of its datasets) on out when rank == 0. A
 * missing, non-HDF5 or non-ladle file, or an unknown dataset for dump, is a usage error
 * naming it. Returns 0. */
int ladle_inspect(const char *path, const ladle_inspect_options *options, int rank, FILE *out);

/* s as a JSON string, quoted and escaped ('"', '\\', control bytes); NULL as null. Every
 * --json output writes its names and paths with it: a domain or file name may hold any byte. */
void ladle_json_string(FILE *out, const char *s);

#endif
