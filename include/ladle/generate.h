/* generate: sample bytes from a model, one at a time, from a prompt. */
#ifndef LADLE_GENERATE_H
#define LADLE_GENERATE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "ladle/model.h"

/* Writes the prompt and n_bytes sampled bytes to out. Temperature 0 is greedy. The
 * context is the last model->context bytes; sampling uses the counter RNG (seed, i). */
void ladle_generate(const ladle_model *model, const float *params, const char *prompt, int n_bytes,
                    float temperature, uint64_t seed, FILE *out);

#endif
