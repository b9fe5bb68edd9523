#include "ladle/generate.h"
#include "ladle/error.h"
#include "ladle/rng.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Draw a byte from softmax(logits / temperature). */
static int sample_byte(const float *logits, float temperature, float u)
{
    int best = 0;
    for (int i = 1; i < LADLE_VOCAB; i++) if (logits[i] > logits[best]) best = i;
    if (temperature <= 0.0f) return best;
    double p[LADLE_VOCAB], sum = 0.0;
    for (int i = 0; i < LADLE_VOCAB; i++) {
        p[i] = exp((double)(logits[i] - logits[best]) / temperature);
        sum += p[i];
    }
    double target = u * sum, acc = 0.0;
    for (int i = 0; i < LADLE_VOCAB; i++) {
        acc += p[i];
        if (acc > target) return i;
    }
    return best;
}

void ladle_generate(const ladle_model *model, const float *params, const char *prompt, int n_bytes,
                    float temperature, uint64_t seed, FILE *out)
{
    const int T = model->context;
    size_t plen = strlen(prompt);
    uint8_t *text = ladle_malloc(plen + (size_t)n_bytes + 1, "generated text");
    memcpy(text, prompt, plen);
    size_t len = plen;
    if (len == 0) text[len++] = '\n';   /* an empty prompt starts from a newline */
    fwrite(text, 1, len, out);
    ladle_activations acts;
    ladle_activations_create(&acts, model, 1);
    uint8_t *window = ladle_calloc((size_t)T, 1, "context window");
    for (int i = 0; i < n_bytes; i++) {
        /* the model sees the last T bytes, left-aligned; predict after the last one */
        size_t n = len < (size_t)T ? len : (size_t)T;
        memcpy(window, text + len - n, n);
        ladle_model_forward(model, params, &acts, window, NULL, 1);
        const float *logits = acts.logits + (n - 1) * LADLE_VOCAB;
        int next = sample_byte(logits, temperature, ladle_rng_uniform(seed, 0, LADLE_STREAM_SAMPLE, (uint64_t)i));
        text[len++] = (uint8_t)next;
        fputc(next, out);
    }
    fputc('\n', out);
    fflush(out);
    free(window);
    free(text);
    ladle_activations_free(&acts);
}
