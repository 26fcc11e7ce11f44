/* The fused WaveNet step for the CPU (arcli/models/wavenet_fused.py builds and loads this file).
 *
 * One call generates n samples of one row: every layer's dilated pair, gate, residual and skip, the
 * output head and the draw of the next sample, with no Python in between. The arithmetic is that of
 * WaveNet.step in arcli/models/wavenet.py, on the same re-laid-out weights (_StepWeights): per layer
 * one matrix-vector product takes [x | z | p] of layer l to [a | x] of layer l+1; the skip 1x1s of
 * all layers are one product at the end; sigmoid(g) = (1 + tanh(g/2)) / 2 with the halves folded
 * into the weights. The draw is the inverse-CDF lookup of arcli's Sample strategy: the first token
 * whose cumulative probability exceeds u * total * (1 - 2^-20).
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    int32_t layers, residual, dilation, skip, end, vocab, period, queue_rows;
} Dims;

/* y = b + x W, W (n, m) row-major; rows of x that are zero (ReLU outputs) are skipped. */
static void matvec(const float *x, int n, const float *W, int m, const float *b, float *y) {
    memcpy(y, b, sizeof(float) * (size_t)m);
    for (int i = 0; i < n; i++) {
        const float xi = x[i];
        if (xi == 0.0f) continue;
        const float *w = W + (size_t)i * m;
        for (int j = 0; j < m; j++) y[j] += xi * w[j];
    }
}

static inline float fast_tanh(float v) {
    if (v > 15.0f) return 1.0f;
    if (v < -15.0f) return -1.0f;
    const float e = expf(2.0f * v);
    return (e - 1.0f) / (e + 1.0f);
}

/* Scratch floats needed by wavenet_generate. */
int64_t wavenet_scratch(const Dims *d) {
    const int64_t W2 = 2 * d->dilation + d->residual;
    return 2 * W2 + (int64_t)d->layers * d->dilation + d->skip + d->end + 2 * d->vocab + (int64_t)d->layers * W2
           + 2 * d->residual + d->dilation;
}

/* Generate n samples of one row.
 *   bias (L, W2): per-layer bias (conv + speaker) when frames == 0; else proj (frames, L, W2) holds
 *   the per-frame biases (static + projected conditioning), linearly interpolated per sample.
 *   queue (Q, R), *position and *previous (-1: no sample yet) are the row's state, updated.
 *   uniforms (n): one per sample; inv_temperature scales the logits; greedy != 0 takes the argmax.
 *   tokens (n) receives the samples; logits_out (n, V), if not NULL, the logits of each step.
 * Returns 0. */
int wavenet_generate(const Dims *d, const float *first, const float *first_past, const float *fused, const float *bias,
                     const float *proj, int32_t frames, int64_t offset, int32_t hop, const float *skip_w,
                     const float *skip_b, const float *hidden_w, const float *hidden_b, const float *out_w,
                     const float *out_b, const int64_t *slots, float *queue, int64_t *position, int32_t *previous,
                     int64_t n, const float *uniforms, float inv_temperature, int32_t greedy, int32_t *tokens,
                     float *logits_out, float *scratch) {
    const int L = d->layers, R = d->residual, D = d->dilation, S = d->skip, E = d->end, V = d->vocab;
    const int W2 = 2 * D + R, IN = 2 * R + D;
    float *a_x = scratch;                   /* (W2) this layer's [a | x] */
    float *next = a_x + W2;                 /* (W2) the next layer's */
    float *gated = next + W2;               /* (L * D) every layer's z */
    float *skip = gated + (size_t)L * D;    /* (S) */
    float *hid = skip + S;                  /* (E) */
    float *logits = hid + E;                /* (V) */
    float *cdf = logits + V;                /* (V) */
    float *layer_bias = cdf + V;            /* (L, W2) this sample's biases */
    float *xzp = layer_bias + (size_t)L * W2; /* (IN) [x | z | p] */
    for (int64_t s = 0; s < n; s++) {
        const int64_t t = *position;
        const float *b = bias;
        if (frames > 0) {
            int64_t u = offset + t, f = u / hop;
            float frac = (float)(u % hop) / (float)hop;
            if (f >= frames - 1) { f = frames - 1; frac = 0.0f; }
            const float *lo = proj + (size_t)f * L * W2, *hi = proj + (size_t)(f + 1 < frames ? f + 1 : f) * L * W2;
            for (int k = 0; k < L * W2; k++) layer_bias[k] = lo[k] + frac * (hi[k] - lo[k]);
            b = layer_bias;
        }
        const int64_t *slot = slots + (size_t)(t % d->period) * L;
        /* layer 0: [a | x] from the previous token, its bias and its input `dilation` samples ago */
        const float *past0 = queue + (size_t)slot[0] * R;
        matvec(past0, R, first_past, W2, b, a_x);
        if (*previous >= 0) {
            const float *row = first + (size_t)(*previous) * W2;
            for (int j = 0; j < W2; j++) a_x[j] += row[j];
        }
        for (int l = 0; l < L; l++) {
            float *z = gated + (size_t)l * D;
            for (int j = 0; j < D; j++) {
                const float filt = fast_tanh(a_x[j]), gate = fast_tanh(a_x[D + j]);
                z[j] = filt + filt * gate;
            }
            if (l + 1 < L) {
                memcpy(xzp, a_x + 2 * D, sizeof(float) * R);
                memcpy(xzp + R, z, sizeof(float) * D);
                memcpy(xzp + R + D, queue + (size_t)slot[l + 1] * R, sizeof(float) * R);
                matvec(xzp, IN, fused + (size_t)l * IN * W2, W2, b + (size_t)(l + 1) * W2, next);
            }
            memcpy(queue + (size_t)slot[l] * R, a_x + 2 * D, sizeof(float) * R); /* x_t replaces x_{t-dilation} */
            if (l + 1 < L) { float *swap = a_x; a_x = next; next = swap; }
        }
        matvec(gated, L * D, skip_w, S, skip_b, skip);
        for (int j = 0; j < S; j++) skip[j] = skip[j] > 0.0f ? skip[j] : 0.0f;
        matvec(skip, S, hidden_w, E, hidden_b, hid);
        for (int j = 0; j < E; j++) hid[j] = hid[j] > 0.0f ? hid[j] : 0.0f;
        matvec(hid, E, out_w, V, out_b, logits);
        if (logits_out) memcpy(logits_out + (size_t)s * V, logits, sizeof(float) * V);
        int token = 0;
        if (greedy) {
            for (int j = 1; j < V; j++) if (logits[j] > logits[token]) token = j;
        } else {
            float top = -INFINITY;
            for (int j = 0; j < V; j++) { logits[j] *= inv_temperature; if (logits[j] > top) top = logits[j]; }
            float total = 0.0f;
            for (int j = 0; j < V; j++) { total += expf(logits[j] - top); cdf[j] = total; }
            const float target = uniforms[s] * (cdf[V - 1] * (1.0f - 9.5367431640625e-07f));
            while (token < V - 1 && cdf[token] <= target) token++;
        }
        tokens[s] = token;
        *previous = token;
        *position = t + 1;
    }
    return 0;
}
