/* prune: the primitives of UNCURL (METHODS.md section 3), task-specific reduction of a
 * top-1 MoE layer's experts from Z to D.
 *
 *   1. ladle_router_affinity:   A_ij = (1 + cos(H_:i, H_:j)) / 2 from the router logits H
 *   2. ladle_spectral_cluster:  A -> D groups (normalised Laplacian, k-means on eigenvectors)
 *   3. ladle_align_and_merge:   per group, permute every member's hidden units onto the most
 *                               frequent member (ladle_hungarian) and average by frequency
 *
 * Expert banks use moe.h's layout: w1 [Z, Hd, C], b1 [Z, Hd], w2 [Z, C, Hd], b2 [Z, C]
 * (Hd = hidden width). Everything here is deterministic and runs on one rank. */
#ifndef LADLE_PRUNE_H
#define LADLE_PRUNE_H

#include <stddef.h>
#include <stdint.h>

/* Maximum-weight perfect assignment on the row-major n x n matrix score: row i gets column
 * assign[i], every column used once, maximising sum_i score[i, assign[i]]. Returns that
 * sum. O(n^3) (shortest augmenting paths with potentials). Scores must be finite; any sign;
 * among tied optima one is returned deterministically. n <= 0 returns 0. */
double ladle_hungarian(const double *score, int n, int *assign);

/* Affinity [z, z] of the experts from router logits [tokens, z]:
 * A_ij = (1 + cos(H_:i, H_:j)) / 2 in [0, 1], exactly symmetric, diagonal exactly 1. A column
 * that is all zero has cosine 0 (A = 1/2) with every other column. H^T H goes through BLIS
 * (single precision). */
void ladle_router_affinity(const float *logits, size_t tokens, int z, float *affinity);

/* Spectral clustering (Ng-Jordan-Weiss) of the symmetric affinity [z, z] (entries >= 0,
 * diagonal included as self-loops) into d groups, 1 <= d <= z: the d smallest eigenvectors
 * of I - D^-1/2 A D^-1/2 (LAPACKE_dsyevd), rows scaled to unit length, then kmeans.h's
 * Euclidean k-means on the rows (an all-zero row is a valid point there), seeded from
 * (seed, stream LADLE_STREAM_EXPERT + 2), with 100 restarts since z is small and a local
 * minimum would misgroup experts. labels[z] in 0..d-1, every group non-empty, numbered in
 * order of first appearance (labels[0] = 0). Same (affinity, d, seed) -> same labels. */
void ladle_spectral_cluster(const float *affinity, int z, int d, uint64_t seed, int *labels);

/* One UNCURL group. w1, b1, w2, b2: the whole bank (Z experts, layout above); members[m]:
 * the group's expert ids (distinct, any order); freq[Z]: how often each expert was the
 * top-1 choice, indexed by expert id (>= 0; only members' entries are read).
 *
 * The reference is the most frequent member (ties: lowest expert id). Every other member's
 * hidden units are permuted (assignment maximising <w1_ref, P w1_e> + <b1_ref, P b1_e> +
 * <w2_ref, w2_e P^T>); then out_* = sum_k f_k member_k / sum_k f_k over the permuted members
 * (plain average when all f_k are 0). out_w1 [Hd, C], out_b1 [Hd], out_w2 [C, Hd], out_b2 [C]:
 * one expert slot, which must not overlap the bank.
 *
 * perm, if not NULL, receives [m, Hd]: perm[k * Hd + h] = the hidden unit of members[k] that
 * was moved to position h (identity for the reference). Returns the reference's expert id.
 * Cost: one Hd x Hd assignment per non-reference member, O(Hd^3) each. */
int ladle_align_and_merge(const float *w1, const float *b1, const float *w2, const float *b2,
                          int C, int Hd, const int *members, int m, const double *freq,
                          float *out_w1, float *out_b1, float *out_w2, float *out_b2, int *perm);

/* ---- the pipeline ('ladle prune') ------------------------------------------------- */

#include <mpi.h>

typedef enum { LADLE_PRUNE_UNCURL = 0, LADLE_PRUNE_FREQUENCY = 1 } ladle_prune_method;

/* Collective: reduce every moe and smear (full-FFN) site of the model file in_path to D
 * experts for the task (smear sites: the routing probabilities of each segment stand in
 * for router logits, the most probable expert for the top-1 choice)
 * given as documents (up to `windows` windows of the model's context are read), and write
 * the pruned model (kind "dense", moe.experts = D) to out_path. UNCURL: router logits and
 * top-1 counts over the task, affinity, spectral clustering, align-and-merge per group,
 * the router re-initialised with D outputs (re-train it: train.init + train.only = router).
 * FREQUENCY (the paper's naive baseline): keep the D most used experts and their router
 * rows. Usage errors (nothing written): a soup, a model without moe/smear sites or with
 * tag or adapter sites, D outside [1, Z), task text shorter than one window. */
void ladle_prune_model(const char *in_path, const char *out_path, const uint8_t *const *docs, const size_t *lens,
                       size_t n_docs, int D, ladle_prune_method method, int windows, MPI_Comm comm);

#endif
