#include "ladle/optim.h"

#include <math.h>

float ladle_lr_at(const ladle_config *cfg, long step)
{
    if (cfg->warmup > 0 && step < cfg->warmup)
        return cfg->lr * (float)(step + 1) / (float)cfg->warmup;
    long decay_steps = cfg->steps - cfg->warmup;
    if (decay_steps <= 1) return cfg->lr;
    double progress = (double)(step - cfg->warmup) / (double)(decay_steps - 1);
    if (progress > 1.0) progress = 1.0;
    double min_lr = cfg->lr * cfg->min_lr_ratio;
    return (float)(min_lr + 0.5 * (cfg->lr - min_lr) * (1.0 + cos(3.14159265358979323846 * progress)));
}

float ladle_clip_factor(const ladle_config *cfg, double norm)
{
    if (cfg->clip <= 0.0f) return 1.0f;
    double factor = cfg->clip / (norm + 1e-6);   /* as torch.nn.utils.clip_grad_norm_ */
    return factor < 1.0 ? (float)factor : 1.0f;
}

void ladle_adamw_update(const ladle_tensor *tensors, int n_tensors, const ladle_config *cfg, float *param,
                        const float *grad, float *m, float *v, size_t lo, size_t hi, long t,
                        float lr, float grad_factor)
{
    const float b1 = cfg->beta1, b2 = cfg->beta2, eps = cfg->eps;
    const float c1 = 1.0f - powf(b1, (float)t), c2 = 1.0f - powf(b2, (float)t);
    /* walk the tensors that intersect the slice: weight decay is per tensor */
    for (int ti = 0; ti < n_tensors; ti++) {
        const ladle_tensor *tensor = &tensors[ti];
        size_t a = tensor->offset > lo ? tensor->offset : lo;
        size_t b = tensor->offset + tensor->size < hi ? tensor->offset + tensor->size : hi;
        if (a >= b || tensor->frozen) continue;
        const float decay = tensor->decay ? 1.0f - lr * cfg->weight_decay : 1.0f;
#pragma omp simd
        for (size_t j = a - lo; j < b - lo; j++) {
            float g = grad[j] * grad_factor;
            m[j] = b1 * m[j] + (1.0f - b1) * g;
            v[j] = b2 * v[j] + (1.0f - b2) * g * g;
            float mhat = m[j] / c1, vhat = v[j] / c2;
            param[j] = param[j] * decay - lr * mhat / (sqrtf(vhat) + eps);
        }
    }
}
