/* The fused WaveNet step for the CPU (arcli/models/wavenet_fused.py lays out the weights and loads this file).
 *
 * One call generates n samples of one row, or of up to MAX_GROUP rows together: every layer's
 * dilated pair, gate, residual and skip, the output head and the draw of the next sample, with no
 * Python in between. The arithmetic is that of WaveNet.forward (arcli/models/wavenet.py) at one
 * position, on the model's own matrices, unfused:
 *   a = bias_l + [x | p] [W1; W0]            (the dilated pair: x_t and x_{t-dilation} of layer l)
 *   z = tanh(a_filter) * sigmoid(a_gate),    sigmoid(g) = (1 + tanh(g/2)) / 2
 *   [x | skip] += z [Wr | Ws]                 (the residual 1x1 and this layer's skip 1x1 at once)
 * then logits = out_b + relu(hidden_b + relu(skip) Wh) Wo and the draw: arcli's Sample strategy's
 * inverse-CDF lookup, the first token whose cumulative probability exceeds u * total * (1 - 2^-20).
 *
 * The matrix-vector products keep their outputs in vector registers: each matrix is packed in
 * column blocks of BLOCK (64) outputs, a block's rows contiguous (block, row, 64), so one block
 * streams through memory while its 64 accumulators stay in registers (8 AVX2 ones for one row;
 * with AVX-512, 4 per row for up to 6 rows, which share each weight vector loaded and converted).
 * Without AVX2, FMA and F16C: plain C loops, float32 only. Weights are float32, or float16
 * (converted on load with F16C) when the Python side finds that every matrix is exactly
 * representable in float16, as the shipped checkpoints are: half the bytes to stream from cache,
 * the same products. Zero inputs (the head's ReLU outputs) are skipped for one row. Most of a
 * sample's time is in the products (cc -DWAVENET_PROFILE counts cycles per section).
 * tanh and exp are vectorised (Cephes' expf polynomial, about 1 ulp).
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__AVX512F__) && defined(__F16C__) && defined(__FMA__)
#include <immintrin.h>
#define VEC 16
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define VEC 8
#else
#define VEC 1
#endif

#define BLOCK 64 /* outputs per packed column block */

#ifdef WAVENET_PROFILE /* cc -DWAVENET_PROFILE: cycles per section, read by wavenet_profile() */
#include <x86intrin.h>
static uint64_t prof[8], prof_t;
#define TICK(i) do { const uint64_t now_ = __rdtsc(); prof[i] += now_ - prof_t; prof_t = now_; } while (0)
void wavenet_profile(double *out) { for (int i = 0; i < 8; i++) { out[i] = (double)prof[i]; prof[i] = 0; } }
#else
#define TICK(i) do { } while (0)
#endif

typedef struct {
    int32_t layers, residual, dilation, skip, end, vocab, period, queue_rows;
} Dims;

/* Padded width: the next multiple of BLOCK. */
static inline int pad(int m) { return (m + BLOCK - 1) / BLOCK * BLOCK; }

/* 64 for the layout of the packed matrices; 1 if float16 weights can be read (F16C), else 0. */
int wavenet_block(void) { return BLOCK; }
int wavenet_half(void) { return VEC > 1; }

/* y[0:m] = init[0:m] + sum_k val[k] W[row[k], 0:m]: W packed (m / BLOCK, rows, BLOCK), float32 or
 * float16; m a multiple of BLOCK; y may be init. `row` NULL: rows 0..count-1. One row's products
 * use 256-bit vectors even where AVX-512 is there: measured on an AMD EPYC (Zen 4), 512-bit
 * ones ran a sample ~30% slower (they are split in two there, and float16 conversions with them). */
static void matvec(const float *val, const int32_t *row, int count, int rows, const void *W, int half, int m, const float *init,
                   float *y) {
    for (int c = 0; c < m; c += BLOCK) {
        const size_t base = (size_t)(c / BLOCK) * rows * BLOCK;
#if VEC > 1
        __m256 a[8]; /* 8 independent accumulators cover the FMA latency */
        for (int j = 0; j < 8; j++) a[j] = _mm256_loadu_ps(init + c + 8 * j);
        if (half) {
            const uint16_t *w = (const uint16_t *)W + base;
            for (int k = 0; k < count; k++) {
                const __m256 x = _mm256_set1_ps(val[k]);
                const uint16_t *r = w + (size_t)(row ? row[k] : k) * BLOCK;
                for (int j = 0; j < 8; j++)
                    a[j] = _mm256_fmadd_ps(x, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(r + 8 * j))), a[j]);
            }
        } else {
            const float *w = (const float *)W + base;
            for (int k = 0; k < count; k++) {
                const __m256 x = _mm256_set1_ps(val[k]);
                const float *r = w + (size_t)(row ? row[k] : k) * BLOCK;
                for (int j = 0; j < 8; j++) a[j] = _mm256_fmadd_ps(x, _mm256_loadu_ps(r + 8 * j), a[j]);
            }
        }
        for (int j = 0; j < 8; j++) _mm256_storeu_ps(y + c + 8 * j, a[j]);
#else
        (void)half; /* float32 only (wavenet_half() is 0) */
        float a[BLOCK];
        memcpy(a, init + c, sizeof a);
        const float *w = (const float *)W + base;
        for (int k = 0; k < count; k++) {
            const float x = val[k], *r = w + (size_t)(row ? row[k] : k) * BLOCK;
            for (int j = 0; j < BLOCK; j++) a[j] += x * r[j];
        }
        memcpy(y + c, a, sizeof a);
#endif
    }
}

#define MAX_GROUP 6 /* rows whose products share each weight load (AVX-512: 6 x 4 accumulators) */

#if VEC == 16
/* matvec for G rows at once (dense inputs): each weight vector, loaded and converted once, feeds
 * the G rows' accumulators. G is a constant where it is inlined, so the 4G accumulators stay in
 * registers. */
static inline __attribute__((always_inline)) void matvec_group(const int G, const float *const *x, int n, const void *W, int half,
                                                               int m, const float *const *init, float *const *y) {
    for (int c = 0; c < m; c += BLOCK) {
        const size_t base = (size_t)(c / BLOCK) * n * BLOCK;
        __m512 a[MAX_GROUP][4];
        for (int g = 0; g < G; g++)
            for (int j = 0; j < 4; j++) a[g][j] = _mm512_loadu_ps(init[g] + c + 16 * j);
        for (int k = 0; k < n; k++) {
            __m512 w[4];
            if (half) {
                const uint16_t *r = (const uint16_t *)W + base + (size_t)k * BLOCK;
                for (int j = 0; j < 4; j++) w[j] = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(r + 16 * j)));
            } else {
                const float *r = (const float *)W + base + (size_t)k * BLOCK;
                for (int j = 0; j < 4; j++) w[j] = _mm512_loadu_ps(r + 16 * j);
            }
            for (int g = 0; g < G; g++) {
                const __m512 v = _mm512_set1_ps(x[g][k]);
                for (int j = 0; j < 4; j++) a[g][j] = _mm512_fmadd_ps(v, w[j], a[g][j]);
            }
        }
        for (int g = 0; g < G; g++)
            for (int j = 0; j < 4; j++) _mm512_storeu_ps(y[g] + c + 16 * j, a[g][j]);
    }
}
#endif

/* Rows that wavenet_generate runs together to advantage: MAX_GROUP with AVX-512, else 1. */
int wavenet_group(void) { return VEC == 16 ? MAX_GROUP : 1; }

/* y[g] = init[g] + x[g] W for G rows (dense inputs, n of them); W packed as for matvec. */
static void matvec_rows(int G, const float *const *x, int n, const void *W, int half, int m, const float *const *init, float *const *y) {
#if VEC == 16
    switch (G) {
        case 2: matvec_group(2, x, n, W, half, m, init, y); return;
        case 3: matvec_group(3, x, n, W, half, m, init, y); return;
        case 4: matvec_group(4, x, n, W, half, m, init, y); return;
        case 5: matvec_group(5, x, n, W, half, m, init, y); return;
        case 6: matvec_group(6, x, n, W, half, m, init, y); return;
        default: break;
    }
#endif
    for (int g = 0; g < G; g++) matvec(x[g], NULL, n, n, W, half, m, init[g], y[g]);
}

/* The nonzero entries of relu(v[0:n]): their values and indices; returns their number. */
static int relu_nonzero(const float *v, int n, float *val, int32_t *row) {
    int count = 0;
    for (int i = 0; i < n; i++)
        if (v[i] > 0.0f) { val[count] = v[i]; row[count++] = i; }
    return count;
}

#if VEC == 16
typedef __m512 vf;
typedef __m512i vi;
#define V_SET1 _mm512_set1_ps
#define V_LOAD _mm512_loadu_ps
#define V_STORE _mm512_storeu_ps
#define V_ADD _mm512_add_ps
#define V_SUB _mm512_sub_ps
#define V_MUL _mm512_mul_ps
#define V_DIV _mm512_div_ps
#define V_FMA _mm512_fmadd_ps
#define V_FNMA _mm512_fnmadd_ps
#define V_MIN _mm512_min_ps
#define V_MAX _mm512_max_ps
#define V_ROUND(x) _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define V_POW2(k) _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(k), _mm512_set1_epi32(127)), 23))
#elif VEC == 8
typedef __m256 vf;
#define V_SET1 _mm256_set1_ps
#define V_LOAD _mm256_loadu_ps
#define V_STORE _mm256_storeu_ps
#define V_ADD _mm256_add_ps
#define V_SUB _mm256_sub_ps
#define V_MUL _mm256_mul_ps
#define V_DIV _mm256_div_ps
#define V_FMA _mm256_fmadd_ps
#define V_FNMA _mm256_fnmadd_ps
#define V_MIN _mm256_min_ps
#define V_MAX _mm256_max_ps
#define V_ROUND(x) _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define V_POW2(k) _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23))
#endif

#if VEC > 1
/* exp(x) for x in [-80, 80] (clamped): 2^k e^r, |r| <= ln2/2, Cephes' polynomial for e^r. */
static inline vf v_exp(vf x) {
    x = V_MIN(V_MAX(x, V_SET1(-80.0f)), V_SET1(80.0f));
    const vf k = V_ROUND(V_MUL(x, V_SET1(1.44269504088896341f)));
    vf r = V_FNMA(k, V_SET1(0.693359375f), x);
    r = V_FNMA(k, V_SET1(-2.12194440e-4f), r);
    vf p = V_SET1(1.9875691500e-4f);
    p = V_FMA(p, r, V_SET1(1.3981999507e-3f));
    p = V_FMA(p, r, V_SET1(8.3334519073e-3f));
    p = V_FMA(p, r, V_SET1(4.1665795894e-2f));
    p = V_FMA(p, r, V_SET1(1.6666665459e-1f));
    p = V_FMA(p, r, V_SET1(5.0000001201e-1f));
    p = V_FMA(p, V_MUL(r, r), V_ADD(r, V_SET1(1.0f)));
    return V_MUL(p, V_POW2(k));
}

/* tanh(v) = 1 - 2 / (exp(2v) + 1) */
static inline vf v_tanh(vf v) {
    const vf e = v_exp(V_ADD(v, v));
    return V_SUB(V_SET1(1.0f), V_DIV(V_SET1(2.0f), V_ADD(e, V_SET1(1.0f))));
}
#endif

static inline float s_tanh(float v) {
    v = fminf(fmaxf(v, -40.0f), 40.0f);
    const float e = expf(2.0f * v);
    return 1.0f - 2.0f / (e + 1.0f);
}

/* z[0:D] = tanh(a[0:D]) * sigmoid(a[D:2D]) */
static void gate(const float *a, int D, float *z) {
    int j = 0;
#if VEC > 1
    const vf half = V_SET1(0.5f);
    for (; j + VEC <= D; j += VEC) {
        const vf f = v_tanh(V_LOAD(a + j)), g = v_tanh(V_MUL(V_LOAD(a + D + j), half));
        V_STORE(z + j, V_MUL(f, V_FMA(g, half, half)));
    }
#endif
    for (; j < D; j++) z[j] = s_tanh(a[j]) * (0.5f + 0.5f * s_tanh(0.5f * a[D + j]));
}

/* e[j] = exp(v[j] - top) for j < n */
static void exp_shifted(const float *v, int n, float top, float *e) {
    int j = 0;
#if VEC > 1
    const vf t = V_SET1(top);
    for (; j + VEC <= n; j += VEC) V_STORE(e + j, v_exp(V_SUB(V_LOAD(v + j), t)));
#endif
    for (; j < n; j++) e[j] = expf(v[j] - top);
}

/* One row's state and conditioning, for wavenet_generate.
 *   bias (L, pad(2D)): per-layer conv bias (+ speaker) when frames == 0; else proj (frames, L, pad(2D))
 *   holds the per-frame biases (bias + projected conditioning), linearly interpolated per sample at
 *   offset + t. queue (Q, R), *position and *previous (-1: no sample yet) are updated.
 *   uniforms (n): one per sample; tokens (n) receives the samples; logits_out (n, V), if not NULL,
 *   the logits of each step; scratch: wavenet_scratch() floats. */
typedef struct {
    const float *bias, *proj;
    int64_t frames, offset;
    float *queue;
    int64_t *position;
    int32_t *previous;
    const float *uniforms;
    int32_t *tokens;
    float *logits_out, *scratch;
} Row;

/* Scratch floats needed by one row of wavenet_generate. */
int64_t wavenet_scratch(const Dims *d) {
    const int64_t R = d->residual, D = d->dilation, S = d->skip, E = d->end, V = d->vocab;
    const int64_t RS = pad((int)(R + S)) > R + pad((int)S) ? pad((int)(R + S)) : R + pad((int)S);
    return 2 * R + pad((int)(2 * D)) + D + RS + pad((int)E) + 2 * pad((int)V) + (int64_t)d->layers * pad((int)(2 * D))
           + 2 * (S > E ? S : E);
}

/* Generate n samples of each of G rows at the same position, together (G <= MAX_GROUP share each
 * weight load; 1 row: the head skips zero inputs).
 *   embed (V, R): the token embedding (x of layer 0; zeros before the first sample).
 *   conv ((L, pad(2D)/64, 2R, 64) packed [W1; W0]), res ((L-1, pad(R+S)/64, D, 64) packed [Wr | Ws]),
 *   last ((pad(S)/64, D, 64) packed Ws of the last layer), hidden ((pad(E)/64, S, 64)), out
 *   ((pad(V)/64, E, 64)): float16 if half, else float32.
 *   skip_b (S): the skip biases summed over layers; hidden_b (pad(E)), out_b (pad(V)).
 *   slots (period, L): the queue rows of x_{t-dilation} per layer at t mod period.
 *   inv_temperature scales the logits; greedy != 0 takes the argmax.
 * Returns 0, or -1 if G is out of range or the rows' positions differ. */
int wavenet_generate(const Dims *d, int32_t half, const float *embed, const void *conv, const void *res, const void *last,
                     const void *hidden, const void *out, int32_t hop, const float *skip_b, const float *hidden_b,
                     const float *out_b, const int64_t *slots, Row *rows, int32_t G, int64_t n, float inv_temperature,
                     int32_t greedy) {
    const int L = d->layers, R = d->residual, D = d->dilation, S = d->skip, E = d->end, V = d->vocab;
    const int A = pad(2 * D), RSP = pad(R + S), SP = pad(S), EP = pad(E), VP = pad(V);
    const int RS = RSP > R + SP ? RSP : R + SP;
    if (G < 1 || G > MAX_GROUP) return -1;
    for (int g = 1; g < G; g++) if (*rows[g].position != *rows[0].position) return -1;
    half = half && wavenet_half();
    float *xp[MAX_GROUP], *a[MAX_GROUP], *z[MAX_GROUP], *xs[MAX_GROUP], *skip[MAX_GROUP], *hid[MAX_GROUP], *logits[MAX_GROUP],
        *cdf[MAX_GROUP], *layer_bias[MAX_GROUP], *val[MAX_GROUP];
    const float *b[MAX_GROUP], *bl[MAX_GROUP];
    int32_t *row_index[MAX_GROUP];
    for (int g = 0; g < G; g++) {
        xp[g] = rows[g].scratch;              /* (2R) [x | p] of this layer */
        a[g] = xp[g] + 2 * R;                 /* (A) filter and gate pre-activations */
        z[g] = a[g] + A;                      /* (D) gated units */
        xs[g] = z[g] + D;                     /* (RS) [x | skip] */
        skip[g] = xs[g] + R;
        hid[g] = xs[g] + RS;                  /* (EP) */
        logits[g] = hid[g] + EP;              /* (VP) */
        cdf[g] = logits[g] + VP;              /* (VP) */
        layer_bias[g] = cdf[g] + VP;          /* (L, A) this sample's biases */
        val[g] = layer_bias[g] + (size_t)L * A; /* (max(S, E)) the head's inputs (nonzero ones, for one row) */
        row_index[g] = (int32_t *)(val[g] + (S > E ? S : E)); /* (max(S, E)) their indices */
    }
    const size_t conv_size = (size_t)A * 2 * R, res_size = (size_t)RSP * D;
    const size_t bytes = half ? 2 : 4;
    for (int64_t s = 0; s < n; s++) {
        const int64_t t = *rows[0].position;
#ifdef WAVENET_PROFILE
        prof_t = __rdtsc();
#endif
        for (int g = 0; g < G; g++) {
            const Row *r = rows + g;
            b[g] = r->bias;
            if (r->frames > 0) {
                int64_t u = r->offset + t, f = u / hop;
                float frac = (float)(u % hop) / (float)hop;
                if (f >= r->frames - 1) { f = r->frames - 1; frac = 0.0f; }
                const float *lo = r->proj + (size_t)f * L * A, *hi = r->proj + (size_t)(f + 1 < r->frames ? f + 1 : f) * L * A;
                for (int k = 0; k < L * A; k++) layer_bias[g][k] = lo[k] + frac * (hi[k] - lo[k]);
                b[g] = layer_bias[g];
            }
            if (*r->previous >= 0) memcpy(xs[g], embed + (size_t)(*r->previous) * R, sizeof(float) * R);
            else memset(xs[g], 0, sizeof(float) * R);
            memcpy(skip[g], skip_b, sizeof(float) * S);
        }
        TICK(0);
        const int64_t *slot = slots + (size_t)(t % d->period) * L;
        for (int l = 0; l < L; l++) {
            for (int g = 0; g < G; g++) {
                float *past = rows[g].queue + (size_t)slot[l] * R;
                memcpy(xp[g], xs[g], sizeof(float) * R);
                memcpy(xp[g] + R, past, sizeof(float) * R);
                memcpy(past, xs[g], sizeof(float) * R); /* x_t replaces x_{t-dilation} */
                bl[g] = b[g] + (size_t)l * A;
            }
            TICK(0);
            const void *conv_l = (const char *)conv + l * conv_size * bytes;
            if (G == 1) matvec(xp[0], NULL, 2 * R, 2 * R, conv_l, half, A, bl[0], a[0]);
            else matvec_rows(G, (const float *const *)xp, 2 * R, conv_l, half, A, bl, a);
            TICK(1);
            for (int g = 0; g < G; g++) gate(a[g], D, z[g]);
            TICK(2);
            if (l + 1 < L) {
                const void *res_l = (const char *)res + l * res_size * bytes;
                if (G == 1) matvec(z[0], NULL, D, D, res_l, half, RSP, xs[0], xs[0]);
                else matvec_rows(G, (const float *const *)z, D, res_l, half, RSP, (const float *const *)xs, xs);
            } else {
                if (G == 1) matvec(z[0], NULL, D, D, last, half, SP, skip[0], skip[0]);
                else matvec_rows(G, (const float *const *)z, D, last, half, SP, (const float *const *)skip, skip);
            }
            TICK(3);
        }
        if (G == 1) { /* one row: skip the ReLUs' zeros */
            int count = relu_nonzero(skip[0], S, val[0], row_index[0]);
            matvec(val[0], row_index[0], count, S, hidden, half, EP, hidden_b, hid[0]);
            count = relu_nonzero(hid[0], E, val[0], row_index[0]);
            matvec(val[0], row_index[0], count, E, out, half, VP, out_b, logits[0]);
        } else {
            const float *hb[MAX_GROUP], *ob[MAX_GROUP];
            for (int g = 0; g < G; g++) {
                for (int j = 0; j < S; j++) val[g][j] = skip[g][j] > 0.0f ? skip[g][j] : 0.0f;
                hb[g] = hidden_b;
                ob[g] = out_b;
            }
            matvec_rows(G, (const float *const *)val, S, hidden, half, EP, hb, hid);
            for (int g = 0; g < G; g++)
                for (int j = 0; j < E; j++) val[g][j] = hid[g][j] > 0.0f ? hid[g][j] : 0.0f;
            matvec_rows(G, (const float *const *)val, E, out, half, VP, ob, logits);
        }
        TICK(4);
        for (int g = 0; g < G; g++) {
            Row *r = rows + g;
            float *lg = logits[g], *c = cdf[g];
            if (r->logits_out) memcpy(r->logits_out + (size_t)s * V, lg, sizeof(float) * V);
            int token = 0;
            if (greedy) {
                for (int j = 1; j < V; j++) if (lg[j] > lg[token]) token = j;
            } else {
                float top = -INFINITY;
                for (int j = 0; j < V; j++) { lg[j] *= inv_temperature; if (lg[j] > top) top = lg[j]; }
                exp_shifted(lg, V, top, c);
                float total = 0.0f;
                for (int j = 0; j < V; j++) { total += c[j]; c[j] = total; }
                const float target = r->uniforms[s] * (c[V - 1] * (1.0f - 9.5367431640625e-07f));
                while (token < V - 1 && c[token] <= target) token++;
            }
            r->tokens[s] = token;
            *r->previous = token;
            *r->position = t + 1;
        }
        TICK(5);
    }
    return 0;
}
