/* optim: AdamW on an owned slice of the flat parameter vector, the learning-rate
 * schedule (linear warmup, cosine decay) and global-norm clipping.
 *
 * Matches torch.optim.AdamW: decoupled weight decay p -= lr * wd * p, then the
 * bias-corrected Adam step p -= lr * m_hat / (sqrt(v_hat) + eps). Weight decay applies
 * only to tensors whose table entry says so (matrices and embeddings). */
#ifndef LADLE_OPTIM_H
#define LADLE_OPTIM_H

#include <stddef.h>

#include "ladle/config.h"
#include "ladle/model.h"

/* Learning rate for optimizer step `step` (0-based) of cfg->steps. */
float ladle_lr_at(const ladle_config *cfg, long step);

/* Factor that scales gradients of global norm `norm` down to cfg->clip (1 if no clip). */
float ladle_clip_factor(const ladle_config *cfg, double norm);

/* One AdamW step (t = 1-based step count) on elements [lo, hi) of a flat vector described
 * by a tensor table (the model's, or the router's); param, grad, m, v are the slice-local
 * arrays of those elements. grad is multiplied by grad_factor first. */
void ladle_adamw_update(const ladle_tensor *tensors, int n_tensors, const ladle_config *cfg, float *param,
                        const float *grad, float *m, float *v, size_t lo, size_t hi, long t,
                        float lr, float grad_factor);

#endif
