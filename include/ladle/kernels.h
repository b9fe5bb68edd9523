/* kernels: the layers of the byte-level GPT, as forward/backward pairs.
 *
 * Conventions (as in llm.c): activations are row-major [N, C] with N = B*T rows;
 * a linear layer's weight is [OC, C] (PyTorch's layout), y = x W^T + b. Every matrix
 * product goes through BLIS. Backward functions ACCUMULATE (+=) into both the parameter
 * gradients and the input gradients, so callers zero what must start at zero. */
#ifndef LADLE_KERNELS_H
#define LADLE_KERNELS_H

#include <stddef.h>
#include <stdint.h>

/* C = alpha * op(A) op(B) + beta * C, row-major, with leading dimensions (BLIS). */
void ladle_gemm(int trans_a, int trans_b, int m, int n, int k, float alpha,
                const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc);

/* out[b,t,:] = wte[tokens[b,t],:] + wpe[t,:] */
void encoder_forward(float *out, const uint8_t *tokens, const float *wte, const float *wpe,
                     int B, int T, int C);
void encoder_backward(float *dwte, float *dwpe, const float *dout, const uint8_t *tokens,
                      int B, int T, int C);

/* LayerNorm over the last dimension, eps 1e-5; mean and rstd [N] are saved for backward. */
void layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                       const float *weight, const float *bias, int N, int C);
void layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                        const float *inp, const float *weight, const float *mean,
                        const float *rstd, int N, int C);

/* out[N, OC] = inp[N, C] weight[OC, C]^T + bias[OC] (bias may be NULL). */
void matmul_forward(float *out, const float *inp, const float *weight, const float *bias,
                    int N, int C, int OC);
void matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                     const float *inp, const float *weight, int N, int C, int OC);

/* Causal multi-head self-attention. qkv [B, T, 3C] holds q | k | v; att [B, NH, T, T]
 * keeps the softmax probabilities for backward; out [B, T, C]. backward needs a scratch
 * of T*T floats. */
void attention_forward(float *out, float *att, const float *qkv, int B, int T, int C, int NH);
void attention_backward(float *dqkv, float *scratch, const float *dout, const float *qkv,
                        const float *att, int B, int T, int C, int NH);

/* GELU, tanh approximation (GPT-2). */
void gelu_forward(float *out, const float *inp, size_t n);
void gelu_backward(float *dinp, const float *inp, const float *dout, size_t n);

/* swish (SiLU): x * sigmoid(x). backward accumulates (+=) like gelu_backward. */
void swish_forward(float *out, const float *inp, size_t n);
void swish_backward(float *dinp, const float *inp, const float *dout, size_t n);

/* out = a + b */
void residual_forward(float *out, const float *a, const float *b, size_t n);

/* Softmax over V logits per row and cross-entropy against targets. probs [N, V] is kept
 * for backward; returns the SUM of the N per-row losses (double, so that the sum does
 * not depend on how rows are split across ranks more than it must). */
double crossentropy_forward(float *probs, float *losses, const float *logits,
                            const uint8_t *targets, int N, int V);
/* dlogits += scale * (probs - onehot(targets)) */
void crossentropy_backward(float *dlogits, const float *probs, const uint8_t *targets,
                           float scale, int N, int V);

#endif
