/*
 * ser_frontend.c - fixed-point MFCC / log-mel front end, bit-exact with
 * edge_runtime/frontend/fixed_point.py (see ser_frontend.h for the API).
 *
 * Arithmetic rules that make it bit-exact with numpy:
 *   - every rounding is "add half, arithmetic shift right" (round half up), done at exactly the
 *     points where numpy does it; sums of exact products are order-independent, so loops may be
 *     ordered for speed (e.g. twiddle-outer FFT loops);
 *   - values that fit int32 by the bounds below are stored as int32; every product that can exceed
 *     2^31 is formed as int64 (int32 x int32 -> int64: one SMULL / SMLAL on a Cortex-M3/M4/M7,
 *     which GCC emits for `(int64_t)a * b`);
 *   - left shifts of possibly negative values are written as multiplications by a power of two
 *     (a left shift of a negative value is undefined in C; the product is exact and is a shift in
 *     the generated code).
 *
 * Bounds (N = frame_length, M = N/2, B = block_bits, Q = twiddle_bits; FrontendConfig enforces
 * B + log2 N <= 30, ser_fe_check_tables re-checks it):
 *   windowed sample  |x w|      <= 2^15 * 2^30 = 2^45               int64 (SMULL)
 *   normalised       |v|        <= 2^B (<= 2^21 by default)          int32
 *   FFT after stage h: magnitude <= (M/h) sqrt2 2^B, so every component and every butterfly sum
 *     or difference stays < 2^(B + log2 M + 1.5) <= 2^30.5 < 2^31    int32
 *   butterfly products c (dr+di), di (s-c), dr (c+s): < 2^30.5 * 2^30 = 2^60.5, sums < 2^61.5
 *                                                                    int64 (SMULL/SMLAL)
 *   real split: E, O components < 2^30.5; (E << Q) + c O - s O < 3 * 2^60.5 < 2^62.2   int64
 *   |X_k| <= N 2^B = 2^30 -> power P = re^2 + im^2 <= 2^61           int64
 *   mel split (P >> 15) r <= P, (P & 0x7FFF) r < 2^30; filter sums <= N sum v^2 <= 2^60 (Parseval)
 *   log2 result: exponent term |e - 90 - 2s| < 2^8, times 2^16 < 2^24   int32
 *   DCT: |sum d logmel| < 2^24 * 2^20 * 128 = 2^51                    int64 accumulator
 *   output |.| < 2^24 * sqrt(n_mels) < 2^28                           int32
 */
#include "ser_frontend.h"

/* Build-time table formats (optional; the firmware image passes -DSER_FE_TWIDDLE_BITS=30
 * -DSER_FE_MEL_BITS=15 from its export): on a Cortex-M4 a 64-bit shift by a constant is 2
 * instructions, by a variable 7. ser_fe_check_tables refuses tables of another format. */
#ifdef SER_FE_TWIDDLE_BITS
#define TWIDDLE_BITS(t) (SER_FE_TWIDDLE_BITS)
#else
#define TWIDDLE_BITS(t) ((t)->twiddle_bits)
#endif
#ifdef SER_FE_MEL_BITS
#define MEL_BITS(t) (SER_FE_MEL_BITS)
#else
#define MEL_BITS(t) ((t)->mel_bits)
#endif
/* FFT loop order: twiddle-outer (each twiddle loaded once per stage) on cache-less Cortex-M
 * cores; group-outer (contiguous rows) elsewhere. Same arithmetic, same values. */
#ifndef SER_FE_TWIDDLE_OUTER
#if defined(__ARM_ARCH_7EM__) || defined(__ARM_ARCH_7M__) || defined(__ARM_ARCH_8M_MAIN__)
#define SER_FE_TWIDDLE_OUTER 1
#else
#define SER_FE_TWIDDLE_OUTER 0
#endif
#endif


#include <string.h>

/* Compile-time checks of what the arithmetic relies on (negative index = compile error). */
typedef char ser_fe_need_asr32[((int32_t)-1 >> 1) == -1 ? 1 : -1];
typedef char ser_fe_need_asr64[((int64_t)-1 >> 1) == -1 ? 1 : -1];
typedef char ser_fe_need_twos_complement[(-1 & 3) == 3 ? 1 : -1];

#if defined(__GNUC__) || defined(__clang__)
/* Number of significant bits of x (0 for 0): C's 64 - clz, numpy's _bit_length. One or two CLZ
 * instructions on ARMv7-M. */
static inline int bitlen64(uint64_t x) { return x ? 64 - __builtin_clzll(x) : 0; }
#else
static int bitlen64(uint64_t x) {
    int n = 0;
    if (x >> 32) { n += 32; x >>= 32; }
    if (x >> 16) { n += 16; x >>= 16; }
    if (x >> 8) { n += 8; x >>= 8; }
    if (x >> 4) { n += 4; x >>= 4; }
    if (x >> 2) { n += 2; x >>= 2; }
    if (x >> 1) { n += 1; x >>= 1; }
    return n + (int)x;
}
#endif

static int log2_exact(int32_t n) {
    int b = 0;
    while ((1 << b) < n) b++;
    return b;
}

int ser_fe_check_tables(const ser_fe_tables_t *t) {
    int32_t n, m, sum, j;
    if (!t || !t->window_q || !t->bitrev || !t->fft_cos_q || !t->fft_sin_q || !t->rfft_cos_q ||
        !t->rfft_sin_q || !t->seg_len || !t->rise_q || !t->log_table_q)
        return SER_FE_ERR_NULL;
    if (t->output != SER_FE_OUTPUT_MFCC && t->output != SER_FE_OUTPUT_LOGMEL) return SER_FE_ERR_CONFIG;
    if (t->output == SER_FE_OUTPUT_MFCC && !t->dct_q) return SER_FE_ERR_NULL;
    n = t->frame_length;
    if (n < 16 || n > 4096 || (n & (n - 1))) return SER_FE_ERR_CONFIG;
    if (n > SER_FE_MAX_FRAME_LENGTH || t->n_mels > SER_FE_MAX_MELS) return SER_FE_ERR_TOO_LARGE;
    m = n / 2;
    if (t->hop_length < 1 || t->hop_length > n) return SER_FE_ERR_CONFIG;
    if (t->n_mels < 1 || t->n_out < 1 || t->n_out > t->n_mels) return SER_FE_ERR_CONFIG;
    if (t->output == SER_FE_OUTPUT_LOGMEL && t->n_out != t->n_mels) return SER_FE_ERR_CONFIG;
    if (t->frac_bits < 0 || t->frac_bits > 16) return SER_FE_ERR_CONFIG;
    if (t->window_bits < 1 || t->window_bits > 30) return SER_FE_ERR_CONFIG;
    if (t->block_bits < 1) return SER_FE_ERR_CONFIG;
    if (t->algorithm_version != 2 && t->block_bits + log2_exact(n) > 30) return SER_FE_ERR_CONFIG;
    if (t->twiddle_bits < 1 || t->twiddle_bits > 30) return SER_FE_ERR_CONFIG;
    if (t->mel_bits < 1 || t->mel_bits > 30) return SER_FE_ERR_CONFIG;
    if (t->twiddle_bits != TWIDDLE_BITS(t) || t->mel_bits != MEL_BITS(t)) return SER_FE_ERR_CONFIG;
    for (j = 0; j < n; j++) /* the peak pass takes |x w| = |x| w */
        if (t->window_q[j] < 0) return SER_FE_ERR_CONFIG;
    if (t->log_table_bits < 1 || t->log_table_bits > 15) return SER_FE_ERR_CONFIG;
    if (t->dct_bits < 0 || t->dct_bits > 30 || t->dct_bits + 16 - t->frac_bits < 1) return SER_FE_ERR_CONFIG;
    if (t->bin_lo < 0 || t->bin_hi <= t->bin_lo || t->bin_hi > m + 1) return SER_FE_ERR_CONFIG;
    if (t->algorithm_version == 0 || t->algorithm_version == 1) {
        if (t->fft_shift != 0 || t->norm != SER_FE_NORM_NONE) return SER_FE_ERR_CONFIG;
    } else if (t->algorithm_version == 2) {
        const int32_t lm = log2_exact(m), r = (lm % 2 == 0) ? 2 : 1;
        const int32_t want = t->block_bits + log2_exact(n) - 30;
        /* v2 bounds (see fft_v2): dr + di of the shifted stage < 2^(B + log2 M - r + 1) <= 2^30 */
        if (t->block_bits + lm - r > 29) return SER_FE_ERR_CONFIG;
        if (t->fft_shift != (want > 0 ? want : 0)) return SER_FE_ERR_CONFIG;
        if (t->norm != SER_FE_NORM_NONE && t->norm != SER_FE_NORM_MEAN) return SER_FE_ERR_CONFIG;
        if (t->norm_shift < 0 || t->norm_shift > 12) return SER_FE_ERR_CONFIG;
        if (t->log_floor_q16 < -64 * 65536 || t->log_floor_q16 > 0) return SER_FE_ERR_CONFIG;
    } else {
        return SER_FE_ERR_CONFIG;
    }
    for (sum = 0, j = 0; j <= t->n_mels; j++) sum += t->seg_len[j];
    if (sum != t->bin_hi - t->bin_lo) return SER_FE_ERR_CONFIG;
    for (j = 0; j < t->bin_hi - t->bin_lo; j++) /* the mel split's products rely on 0 <= r <= 2^mel_bits */
        if (t->rise_q[j] < 0 || t->rise_q[j] > ((int32_t)1 << t->mel_bits)) return SER_FE_ERR_CONFIG;
    return SER_FE_OK;
}

void ser_fe_reset(ser_fe_state_t *st) {
    st->start = 0;
    st->count = 0;
    st->frames_emitted = 0;
    st->samples_seen = 0;
    st->norm_count = 0;
    memset(st->norm_acc, 0, sizeof st->norm_acc);
}

int ser_fe_init(ser_fe_state_t *st, const ser_fe_tables_t *t) {
    int rc;
    if (!st) return SER_FE_ERR_NULL;
    st->t = NULL;
    rc = ser_fe_check_tables(t);
    if (rc != SER_FE_OK) return rc;
    st->t = t;
    ser_fe_reset(st);
    return SER_FE_OK;
}

/* 4 (v1). M-point radix-2 DIF FFT, in place, output in bit-reversed order. Butterfly on (a, b):
 * a' = a + b; b' = (a - b) W with W = c - j s and one rounding per component, 3 multiplies:
 * A = c (dr + di) + 2^(Q-1); re = (A + di (s - c)) >> Q; im = (A - dr (c + s)) >> Q. */
static void fft_v1(const ser_fe_tables_t *t, int32_t *re, int32_t *im) {
    const int32_t m = t->frame_length / 2, q = TWIDDLE_BITS(t);
    int32_t j, h, g;
    {
        const int64_t rnd = (int64_t)1 << (q - 1);
        for (h = m / 2; h >= 4; h >>= 1) {
            const int32_t stride = m / (2 * h);
#if SER_FE_TWIDDLE_OUTER
            for (j = 0; j < h; j++) {
                const int32_t c = t->fft_cos_q[j * stride], sn = t->fft_sin_q[j * stride];
                const int32_t s_c = sn - c, c_s = c + sn;
                int32_t *ar = re + j, *ai = im + j;
                if (c == (int32_t)1 << q && sn == 0) { /* W = 1 exactly: the formula gives (dr, di) */
                    for (g = 0; g < m; g += 2 * h, ar += 2 * h, ai += 2 * h) {
                        const int32_t a_r = ar[0], a_i = ai[0], b_r = ar[h], b_i = ai[h];
                        ar[0] = a_r + b_r;
                        ai[0] = a_i + b_i;
                        ar[h] = a_r - b_r;
                        ai[h] = a_i - b_i;
                    }
                    continue;
                }
                if (c == 0 && sn == (int32_t)1 << q) { /* W = -j exactly: the formula gives (di, -dr) */
                    for (g = 0; g < m; g += 2 * h, ar += 2 * h, ai += 2 * h) {
                        const int32_t a_r = ar[0], a_i = ai[0], b_r = ar[h], b_i = ai[h];
                        ar[0] = a_r + b_r;
                        ai[0] = a_i + b_i;
                        ar[h] = a_i - b_i;
                        ai[h] = b_r - a_r;
                    }
                    continue;
                }
                for (g = 0; g < m; g += 2 * h, ar += 2 * h, ai += 2 * h) {
                    const int32_t a_r = ar[0], a_i = ai[0], b_r = ar[h], b_i = ai[h];
                    const int32_t dr = a_r - b_r, di = a_i - b_i;
                    const int64_t acc = (int64_t)c * (dr + di) + rnd;
                    ar[0] = a_r + b_r;
                    ai[0] = a_i + b_i;
                    ar[h] = (int32_t)((acc + (int64_t)di * s_c) >> q);
                    ai[h] = (int32_t)((acc - (int64_t)dr * c_s) >> q);
                }
            }
            continue;
#endif
            /* group-outer, twiddle-inner: the inner loop walks contiguous a/b rows (the same
             * arithmetic in another order; every value is computed exactly as before) */
            for (g = 0; g < m; g += 2 * h) {
                int32_t *ar = re + g, *ai = im + g, *br = re + g + h, *bi = im + g + h;
                for (j = 0; j < h; j++) {
                    const int32_t c = t->fft_cos_q[j * stride], sn = t->fft_sin_q[j * stride];
                    const int32_t s_c = sn - c, c_s = c + sn; /* |.| <= sqrt2 2^Q < 2^31 */
                    const int32_t dr = ar[j] - br[j], di = ai[j] - bi[j];
                    const int64_t acc = (int64_t)c * (dr + di) + rnd;
                    ar[j] += br[j];
                    ai[j] += bi[j];
                    br[j] = (int32_t)((acc + (int64_t)di * s_c) >> q);
                    bi[j] = (int32_t)((acc - (int64_t)dr * c_s) >> q);
                }
            }
        }
        if (m >= 4) {
            /* h = 2 (W in {1, -j}, where the general formula gives (dr, di) and (di, -dr)) and
             * h = 1 (W = 1) fused: one pass over each group of 4, the same sums in the same order */
            for (g = 0; g < m; g += 4) {
                int32_t *r = re + g, *i = im + g;
                const int32_t b0r = r[0] + r[2], b0i = i[0] + i[2], b1r = r[0] - r[2], b1i = i[0] - i[2];
                const int32_t b2r = r[1] + r[3], b2i = i[1] + i[3], b3r = r[1] - r[3], b3i = i[1] - i[3];
                r[0] = b0r + b2r; i[0] = b0i + b2i;
                r[1] = b0r - b2r; i[1] = b0i - b2i;
                r[2] = b1r + b3i; i[2] = b1i - b3r;
                r[3] = b1r - b3i; i[3] = b1i + b3r;
            }
        } else {
            for (g = 0; g < m; g += 2) { /* h = 1: W = 1, exact */
                const int32_t dr = re[g] - re[g + 1], di = im[g] - im[g + 1];
                re[g] += re[g + 1];
                im[g] += im[g + 1];
                re[g + 1] = dr;
                im[g + 1] = di;
            }
        }
    }

}

/* 4 (v2). M-point radix-4 DIF FFT (radix-2 last when log2 M is odd), in place, output in
 * digit-reversed order (t->bitrev). Butterfly on a0..a3 at offsets n, n+q, n+2q, n+3q:
 *   b0 = a0+a2, b1 = a0-a2, b2 = a1+a3, b3 = a1-a3;
 *   c0 = b0+b2, c1 = b1 - j b3, c2 = b0-b2, c3 = b1 + j b3;  c_l *= W_M^(n l stride)
 * with the v1 3-multiply product and one rounding per component. The last twiddled stage (q = 4,
 * or q = 2 when log2 M is odd) shifts every output sh = fft_shift bits further right (c0 and the
 * n = 0 outputs, whose twiddle is exactly 1, by a plain rounding shift: the general formula gives
 * the same value). Bounds (B = block_bits <= 23 for N = 512): magnitude <= 2^(B + 0.5) times the
 * growth so far (4 per stage); at the shifted stage c_l <= 2^29.5 and dr + di <= 2^30 (int32),
 * products < 2^30.5 * 2^30 (int64); after it <= 2^27.5, final <= 2^29.5. */
#if defined(__GNUC__) || defined(__clang__)
#define SER_FE_INLINE static inline __attribute__((always_inline))
#define SER_FE_NOINLINE static __attribute__((noinline))
#else
#define SER_FE_INLINE static inline
#define SER_FE_NOINLINE static
#endif

SER_FE_INLINE void twiddle(int32_t dr, int32_t di, int32_t c, int32_t sn, int64_t rnd, int qs,
                           int32_t *outr, int32_t *outi) {
    const int64_t acc = (int64_t)c * (dr + di) + rnd;
    *outr = (int32_t)((acc + (int64_t)di * (sn - c)) >> qs);
    *outi = (int32_t)((acc - (int64_t)dr * (c + sn)) >> qs);
}

/* One radix-4 stage with quarter length q. Inlined at call sites where qs and sh are constants, so
 * the 64-bit shifts are by constants (2 instructions on a Cortex-M4 instead of 7 for a variable
 * shift; a shift by 32 is just the high word). */
SER_FE_INLINE void radix4_stage(int32_t *re, int32_t *im, int32_t m, int32_t q, const int32_t *cs,
                                const int32_t *sn, int qs, int sh) {
    const int32_t stride = m / (4 * q);
    const int64_t rnd = (int64_t)1 << (qs - 1);
    const int32_t half = sh ? (int32_t)1 << (sh - 1) : 0;
    int32_t g, n;
    for (g = 0; g < m; g += 4 * q) {
        int32_t *r0 = re + g, *r1 = r0 + q, *r2 = r1 + q, *r3 = r2 + q;
        int32_t *i0 = im + g, *i1 = i0 + q, *i2 = i1 + q, *i3 = i2 + q;
        for (n = 0; n < q; n++) {
            const int32_t b0r = r0[n] + r2[n], b0i = i0[n] + i2[n];
            const int32_t b1r = r0[n] - r2[n], b1i = i0[n] - i2[n];
            const int32_t b2r = r1[n] + r3[n], b2i = i1[n] + i3[n];
            const int32_t b3r = r1[n] - r3[n], b3i = i1[n] - i3[n];
            const int32_t c0r = b0r + b2r, c0i = b0i + b2i, c2r = b0r - b2r, c2i = b0i - b2i;
            const int32_t c1r = b1r + b3i, c1i = b1i - b3r, c3r = b1r - b3i, c3i = b1i + b3r;
            if (n == 0) { /* W = 1 for every output: exact, or a rounding shift */
                r0[0] = (c0r + half) >> sh; i0[0] = (c0i + half) >> sh;
                r1[0] = (c1r + half) >> sh; i1[0] = (c1i + half) >> sh;
                r2[0] = (c2r + half) >> sh; i2[0] = (c2i + half) >> sh;
                r3[0] = (c3r + half) >> sh; i3[0] = (c3i + half) >> sh;
                continue;
            }
            r0[n] = (c0r + half) >> sh;
            i0[n] = (c0i + half) >> sh;
            twiddle(c1r, c1i, cs[n * stride], sn[n * stride], rnd, qs, &r1[n], &i1[n]);
            twiddle(c2r, c2i, cs[2 * n * stride], sn[2 * n * stride], rnd, qs, &r2[n], &i2[n]);
            twiddle(c3r, c3i, cs[3 * n * stride], sn[3 * n * stride], rnd, qs, &r3[n], &i3[n]);
        }
    }
}

/* The last stage (q = 1): every twiddle is 1 and there is no shift, only additions. */
static void radix4_last(int32_t *re, int32_t *im, int32_t m) {
    int32_t g;
    for (g = 0; g < m; g += 4) {
        int32_t *r = re + g, *i = im + g;
        const int32_t b0r = r[0] + r[2], b0i = i[0] + i[2], b1r = r[0] - r[2], b1i = i[0] - i[2];
        const int32_t b2r = r[1] + r[3], b2i = i[1] + i[3], b3r = r[1] - r[3], b3i = i[1] - i[3];
        r[0] = b0r + b2r; i[0] = b0i + b2i;
        r[1] = b1r + b3i; i[1] = b1i - b3r;
        r[2] = b0r - b2r; i[2] = b0i - b2i;
        r[3] = b1r - b3i; i[3] = b1i + b3r;
    }
}

static void fft_v2(const ser_fe_tables_t *t, int32_t *re, int32_t *im) {
    const int32_t m = t->frame_length / 2, qb = TWIDDLE_BITS(t);
    const int32_t *cs = t->fft_cos_q, *sn = t->fft_sin_q;
    const int32_t q_shift = (log2_exact(m) % 2 == 0) ? 4 : 2;
    const int fsh = (int)t->fft_shift;
    int32_t q, g;
    for (q = m / 4; q >= 1; q /= 4) {
        if (q == 1) {
            radix4_last(re, im, m);
            return;
        }
        if (q != q_shift) /* constant shifts: qb is a build-time constant on the M4 */
            radix4_stage(re, im, m, q, cs, sn, qb, 0);
        else if (fsh == 0)
            radix4_stage(re, im, m, q, cs, sn, qb, 0);
        else if (fsh == 1)
            radix4_stage(re, im, m, q, cs, sn, qb + 1, 1);
        else if (fsh == 2)
            radix4_stage(re, im, m, q, cs, sn, qb + 2, 2);
        else
            radix4_stage(re, im, m, q, cs, sn, qb + fsh, fsh);
        if (q == 2) break; /* log2 M odd: one radix-2 stage left */
    }
    for (g = 0; g < m; g += 2) { /* radix-2, W = 1: exact */
        const int32_t dr = re[g] - re[g + 1], di = im[g] - im[g + 1];
        re[g] += re[g + 1];
        im[g] += im[g + 1];
        re[g + 1] = dr;
        im[g + 1] = di;
    }
}

/* Peak pass over a contiguous run of samples: OR of |x| w (w >= 0), two at a time. |x| is
 * formed branch-free ((x ^ x>>31) - x>>31, two instructions with shifted operands). */
SER_FE_INLINE void peak_run(const int16_t *x, const int32_t *w, int32_t len, uint32_t *lo, uint32_t *hi) {
    uint32_t a_lo = *lo, a_hi = *hi;
    for (; len >= 2; len -= 2, x += 2, w += 2) {
        const int32_t v0 = x[0], v1 = x[1];
        const uint64_t p0 = (uint64_t)(uint32_t)((v0 ^ (v0 >> 31)) - (v0 >> 31)) * (uint32_t)w[0];
        const uint64_t p1 = (uint64_t)(uint32_t)((v1 ^ (v1 >> 31)) - (v1 >> 31)) * (uint32_t)w[1];
        a_lo |= (uint32_t)p0 | (uint32_t)p1;
        a_hi |= (uint32_t)(p0 >> 32) | (uint32_t)(p1 >> 32);
    }
    if (len) {
        const int32_t v0 = x[0];
        const uint64_t p0 = (uint64_t)(uint32_t)((v0 ^ (v0 >> 31)) - (v0 >> 31)) * (uint32_t)w[0];
        a_lo |= (uint32_t)p0;
        a_hi |= (uint32_t)(p0 >> 32);
    }
    *lo = a_lo;
    *hi = a_hi;
}

/* Shift pass over a contiguous run of sample pairs (even -> re, odd -> im): x w scaled by 2^s
 * (s >= 0) or rounded down by 2^-s, exactly as in compute_frame's general loop. */
static void shift_run(const int16_t *x, const int32_t *w, int32_t pairs, int32_t *re, int32_t *im, int s) {
    int32_t i;
    if (s >= 0) {
        const int32_t mul = (int32_t)1 << s;
        for (i = 0; i < pairs; i++, x += 2, w += 2) {
            re[i] = (int32_t)((int64_t)x[0] * w[0]) * mul;
            im[i] = (int32_t)((int64_t)x[1] * w[1]) * mul;
        }
    } else if (-s < 32) {
        const int rs = -s;
        const int64_t rnd = (int64_t)1 << (rs - 1);
        for (i = 0; i < pairs; i++, x += 2, w += 2) {
            const uint64_t a = (uint64_t)((int64_t)x[0] * w[0] + rnd);
            const uint64_t b = (uint64_t)((int64_t)x[1] * w[1] + rnd);
            re[i] = (int32_t)(((uint32_t)a >> rs) | ((uint32_t)(a >> 32) << (32 - rs)));
            im[i] = (int32_t)(((uint32_t)b >> rs) | ((uint32_t)(b >> 32) << (32 - rs)));
        }
    } else {
        const int rs = -s;
        const int64_t rnd = (int64_t)1 << (rs - 1);
        for (i = 0; i < pairs; i++, x += 2, w += 2) {
            re[i] = (int32_t)(((int64_t)x[0] * w[0] + rnd) >> rs);
            im[i] = (int32_t)(((int64_t)x[1] * w[1] + rnd) >> rs);
        }
    }
}

/*
 * Steps 2-7 of one frame: samples src[(start + i) & mask], i < N (mask = N-1 for the ring, all
 * ones for a linear buffer) -> mel energies st->mel; returns the frame's block shift s. Steps
 * numbered as in fixed_point.py.
 */
static int frame_mel(ser_fe_state_t *st, const int16_t *src, size_t start, size_t mask) {
    const ser_fe_tables_t *t = st->t;
    const int32_t n = t->frame_length, m = n / 2, q = TWIDDLE_BITS(t);
    const int32_t *w = t->window_q;
    int32_t *re = st->re, *im = st->im;
    int32_t i;
    int s, rs;
    uint64_t peak = 0;
    /* the frame as at most two contiguous runs: src[start .. start + n1) then src[0 .. n - n1)
     * (a ring of n samples, mask = n - 1, wraps once; a linear buffer has mask = all ones) */
    const int32_t n1 = mask == ~(size_t)0 ? n : n - (int32_t)start;

    /* 2-3. Window (int16 x Q30 -> int64, exact, |.| <= 2^45) and block floating point. The
     * windowed frame is computed twice (peak pass, then shift pass) instead of being stored as
     * int64: two SMULLs per sample are cheaper than 8 bytes of RAM per sample. */
    {
        /* bitlen(max |x w|) = bitlen(OR |x w|), and the window is >= 0 (checked with the
         * tables), so |x w| = |x| w: one UMULL and two ORRs per sample */
        uint32_t or_lo = 0, or_hi = 0;
        peak_run(src + start, w, n1, &or_lo, &or_hi);
        peak_run(src, w + n1, n - n1, &or_lo, &or_hi);
        peak = (uint64_t)or_hi << 32 | or_lo;
    }
    s = t->block_bits - bitlen64(peak); /* peak 0 -> shift block_bits, the frame stays 0 */
    if (n1 % 2 == 0) { /* no sample pair straddles the ring's wrap (always, for an even hop) */
        shift_run(src + start, w, n1 / 2, re, im, s);
        shift_run(src, w + n1, (n - n1) / 2, re + n1 / 2, im + n1 / 2, s);
    } else if (s >= 0) {
        /* peak < 2^(B - s): v and v * 2^s fit int32 (|v * 2^s| < 2^B). */
        const int32_t mul = (int32_t)1 << s;
        for (i = 0; i < m; i++) {
            re[i] = (int32_t)((int64_t)src[(start + (size_t)(2 * i)) & mask] * w[2 * i]) * mul;
            im[i] = (int32_t)((int64_t)src[(start + (size_t)(2 * i + 1)) & mask] * w[2 * i + 1]) * mul;
        }
    } else {
        const int64_t rnd = (int64_t)1 << (-s - 1);
        rs = -s;
        if (rs < 32) { /* the result fits int32: only the low word of the shifted sum is needed */
            for (i = 0; i < m; i++) {
                const uint64_t a = (uint64_t)((int64_t)src[(start + (size_t)(2 * i)) & mask] * w[2 * i] + rnd);
                const uint64_t b = (uint64_t)((int64_t)src[(start + (size_t)(2 * i + 1)) & mask] * w[2 * i + 1] + rnd);
                re[i] = (int32_t)(((uint32_t)a >> rs) | ((uint32_t)(a >> 32) << (32 - rs)));
                im[i] = (int32_t)(((uint32_t)b >> rs) | ((uint32_t)(b >> 32) << (32 - rs)));
            }
        } else {
            for (i = 0; i < m; i++) {
                re[i] = (int32_t)(((int64_t)src[(start + (size_t)(2 * i)) & mask] * w[2 * i] + rnd) >> rs);
                im[i] = (int32_t)(((int64_t)src[(start + (size_t)(2 * i + 1)) & mask] * w[2 * i + 1] + rnd) >> rs);
            }
        }
    }

    /* 4. M-point FFT, in place (output order: t->bitrev). */
    if (t->algorithm_version == 2)
        fft_v2(t, re, im);
    else
        fft_v1(t, re, im);

    /* 5-7. Real-FFT split for the bins inside the filterbank, power, triangular mel filters.
     * X_k = (E_k - j W_N^k O_k) / 2, E = Z_k + conj(Z_{M-k}), O = Z_k - conj(Z_{M-k}), rounded once
     * per component: ((E << Q) + 2^Q +- ...) >> (Q + 1). */
    {
        const int32_t mb = MEL_BITS(t);
        const int64_t one_q = (int64_t)1 << q;
        /* mb <= 16 (Q15 by default): (P mod 2^mb) r + 2^(mb-1) < 2^(2 mb) <= 2^32, one 32-bit
         * multiply (r <= 2^mb is checked with the tables) */
        const int small_mb = mb <= 16;
        const uint32_t mask32 = ((uint32_t)1 << (small_mb ? mb : 16)) - 1u, half32 = (uint32_t)1 << (mb - 1);
        const int64_t mask_lo = ((int64_t)1 << mb) - 1, half_mb = (int64_t)1 << (mb - 1);
        const uint16_t *bitrev = t->bitrev;
        const int32_t *rc = t->rfft_cos_q + t->bin_lo, *rsn = t->rfft_sin_q + t->bin_lo, *rw = t->rise_q;
        const int32_t mm = m - 1;
        int32_t k = t->bin_lo, seg;
        for (seg = 0; seg <= t->n_mels; seg++) {
            /* a segment's bins feed the rising edge of filter seg and the falling edge of filter
             * seg - 1: sum P and the rising parts in registers; falling = sum P - sum rise (exact
             * int64 sums, so the same values as adding bin by bin) */
            const int32_t end = k + t->seg_len[seg];
            int64_t sum_p = 0, sum_rise = 0;
            for (; k < end; k++) {
                const int32_t kz = bitrev[k & mm], kc = bitrev[(m - k) & mm];
                const int32_t ar = re[kz], ai = im[kz], br = re[kc], bi = im[kc];
                /* components of E, O: sums of two values < 2^29.5 -> < 2^30.5, int32 */
                const int32_t er = ar + br, ei = ai - bi, o_r = ar - br, o_i = ai + bi;
                const int32_t c = *rc++, sn = *rsn++;
                /* |X_k| <= N 2^B <= 2^30: the rounded components fit int32; E 2^Q + 2^Q is
                 * (E + 1) 2^Q (E + 1 < 2^31) and -sn O a product with the sign folded in */
                const int32_t xr = (int32_t)(((int64_t)(er + 1) * one_q + (int64_t)c * o_i + (int64_t)(-sn) * o_r) >> (q + 1));
                const int32_t xi = (int32_t)(((int64_t)(ei + 1) * one_q - ((int64_t)c * o_r + (int64_t)sn * o_i)) >> (q + 1));
                /* ... so the power is one SMULL + one SMLAL: P <= 2^61 */
                const int64_t p = (int64_t)xr * xr + (int64_t)xi * xi;
                const uint32_t r = (uint32_t)*rw++; /* 0..2^mb */
                /* (P >> mb) r <= P; (P mod 2^mb) r < 2^(2 mb): unsigned products */
                int64_t rise = (int64_t)((uint64_t)(p >> mb) * r);
                if (small_mb)
                    rise += (((uint32_t)p & mask32) * r + half32) >> mb;
                else
                    rise += ((int64_t)(uint32_t)(p & mask_lo) * r + half_mb) >> mb;
                sum_p += p;
                sum_rise += rise;
            }
            if (seg < t->n_mels) st->mel[seg] = sum_rise;            /* rising edge of filter seg */
            if (seg > 0) st->mel[seg - 1] += sum_p - sum_rise;        /* falling edge of filter seg-1 */
        }
    }
    return s;
}

/* Steps 8-9 of one frame: mel energies st->mel of a frame with block shift s -> out[n_out]
 * (updates the v2 running mean: frames of a stream must come in order). */
static void frame_output(ser_fe_state_t *st, int s, int32_t *out) {
    const ser_fe_tables_t *t = st->t;
    int32_t i, j;

    /* 8. log2 in Q16: exponent from the bit length, mantissa normalised to [2^30, 2^31), then a
     * 2^T + 1 entry table with linear interpolation (Q15 fraction, rounded), minus the frame's
     * block shift and the window / PCM scaling (2 (15 + window_bits) bits of energy), floored. */
    {
        const int32_t tb = t->log_table_bits;
        const int32_t offset = 2 * (15 + t->window_bits) - 2 * t->fft_shift; /* v2 divided X by 2^fft_shift */
        const int32_t top = (1 << tb) - 1;
        for (j = 0; j < t->n_mels; j++) {
            const int64_t e64 = st->mel[j];
            int32_t val;
            if (e64 <= 0) {
                val = t->log_floor_q16;
            } else {
                const int32_t ez = bitlen64((uint64_t)e64) - 1; /* floor(log2), 0..60 */
                const int64_t mant = ez >= 30 ? e64 >> (ez - 30) : e64 << (30 - ez); /* [2^30, 2^31) */
                int32_t idx = (int32_t)(mant >> (30 - tb)) - (1 << tb);
                const int32_t frac15 = (int32_t)((mant >> (15 - tb)) & 0x7FFF);
                int32_t lo, hi;
                if (idx < 0) idx = 0; /* cannot happen for e > 0; mirrors numpy's clip */
                if (idx > top) idx = top;
                lo = t->log_table_q[idx];
                hi = t->log_table_q[idx + 1];
                lo += ((hi - lo) * frac15 + (1 << 14)) >> 15; /* (hi-lo) < 2^16: product < 2^31 */
                val = (ez - offset - 2 * s) * 65536 + lo;  /* |.| < 2^24 */
                if (val < t->log_floor_q16) val = t->log_floor_q16;
            }
            st->logmel[j] = val;
        }
    }

    /* 8b (v2). Running-mean subtraction per channel, state in Q23 (NORM_FRAC_BITS = 7 below Q16):
     * n = min(frames so far, 2^k); acc += floor((L 2^7 - acc + floor(n/2)) / n); y = L - round(acc / 2^7).
     * |L| <= 2^22 -> |L 2^7|, |acc|, |d| < 2^30: int32. A constant offset on L cancels exactly. */
    if (t->algorithm_version == 2 && t->norm == SER_FE_NORM_MEAN) {
        const uint32_t cap = (uint32_t)1 << t->norm_shift;
        const int k = (int)t->norm_shift;
        int32_t *acc = st->norm_acc;
        if (st->norm_count < cap) {
            const int32_t cnt = (int32_t)++st->norm_count, hn = cnt / 2;
            for (j = 0; j < t->n_mels; j++) {
                const int32_t num = st->logmel[j] * 128 - acc[j] + hn;
                int32_t d = num / cnt; /* C truncates: make it a floor division */
                if (num % cnt != 0 && num < 0) d -= 1;
                acc[j] += d;
                st->logmel[j] -= (acc[j] + 64) >> 7;
            }
        } else {
            const int32_t hk = k ? (int32_t)1 << (k - 1) : 0;
            for (j = 0; j < t->n_mels; j++) {
                acc[j] += (st->logmel[j] * 128 - acc[j] + hk) >> k;
                st->logmel[j] -= (acc[j] + 64) >> 7;
            }
        }
    }

    /* 9. Output: log-mel rescaled to Q(frac_bits), or DCT-II (Q(dct_bits) matrix, int64 sums). */
    if (t->output == SER_FE_OUTPUT_LOGMEL) {
        const int32_t sh = 16 - t->frac_bits;
        for (j = 0; j < t->n_mels; j++)
            out[j] = sh == 0 ? st->logmel[j] : (st->logmel[j] + (1 << (sh - 1))) >> sh;
    } else {
        const int32_t sh = t->dct_bits + 16 - t->frac_bits;
        const int64_t rnd = (int64_t)1 << (sh - 1);
        const int32_t *d = t->dct_q;
        for (i = 0; i < t->n_out; i++, d += t->n_mels) {
            int64_t acc = 0;
            for (j = 0; j < t->n_mels; j++) acc += (int64_t)d[j] * st->logmel[j]; /* SMLAL */
            out[i] = (int32_t)((acc + rnd) >> sh);
        }
    }
}

/* One frame (see frame_mel) -> out[n_out]. */
static void compute_frame(ser_fe_state_t *st, const int16_t *src, size_t start, size_t mask,
                          int32_t *out) {
    frame_output(st, frame_mel(st, src, start, mask), out);
}

#if SER_FE_LANES > 1
/*
 * ser_fe_compute on hosts: SER_FE_LANES consecutive frames side by side (version 2). Each step
 * below is frame_mel's arithmetic, done for every lane in an inner loop of fixed length that the
 * compiler turns into vector instructions; the values are the same, bit for bit. Two rewrites of
 * the same integers make the loops vectorisable:
 *   - a right shift of an int64 value by qs <= 32 whose result fits int32 is taken as an unsigned
 *     shift of its bit pattern (the low 32 bits are the same; vector units have no 64-bit
 *     arithmetic shift), and int64 sums are formed modulo 2^64 (the same bits: the true sums are
 *     below 2^63);
 *   - the n = 0 butterflies use the general twiddle product: their twiddle is exactly 1, for which
 *     it gives the same value as radix4_stage's rounding shift.
 * Element i of lane l is at [i * SER_FE_LANES + l].
 */
#define LN SER_FE_LANES

/* c (dr + j di) (c - j s), rounded: radix4_stage's twiddle() with d = s - c, e = c + s */
#define LANE_TWIDDLE(dr, di, c, d, e, outr, outi)                                               \
    do {                                                                                        \
        const int64_t acc_ = (int64_t)(c) * ((dr) + (di)) + rnd;                                \
        (outr) = (int32_t)(uint32_t)((uint64_t)(acc_ + (int64_t)(di) * (d)) >> qs);             \
        (outi) = (int32_t)(uint32_t)((uint64_t)(acc_ - (int64_t)(dr) * (e)) >> qs);             \
    } while (0)

/* One radix-4 butterfly row (offset n of a group) for every lane; a_l = rows n + l q. */
SER_FE_INLINE void lanes_butterfly(int32_t *restrict r0, int32_t *restrict r1, int32_t *restrict r2,
                                   int32_t *restrict r3, int32_t *restrict i0, int32_t *restrict i1,
                                   int32_t *restrict i2, int32_t *restrict i3, const int32_t *tw,
                                   int64_t rnd, int qs, int sh) {
    const int32_t half = sh ? (int32_t)1 << (sh - 1) : 0;
    const int32_t c1 = tw[0], d1 = tw[1], e1 = tw[2], c2 = tw[3], d2 = tw[4], e2 = tw[5];
    const int32_t c3 = tw[6], d3 = tw[7], e3 = tw[8];
    int l;
    for (l = 0; l < LN; l++) {
        const int32_t b0r = r0[l] + r2[l], b0i = i0[l] + i2[l];
        const int32_t b1r = r0[l] - r2[l], b1i = i0[l] - i2[l];
        const int32_t b2r = r1[l] + r3[l], b2i = i1[l] + i3[l];
        const int32_t b3r = r1[l] - r3[l], b3i = i1[l] - i3[l];
        const int32_t c0r = b0r + b2r, c0i = b0i + b2i, c2r = b0r - b2r, c2i = b0i - b2i;
        const int32_t c1r = b1r + b3i, c1i = b1i - b3r, c3r = b1r - b3i, c3i = b1i + b3r;
        r0[l] = (c0r + half) >> sh;
        i0[l] = (c0i + half) >> sh;
        LANE_TWIDDLE(c1r, c1i, c1, d1, e1, r1[l], i1[l]);
        LANE_TWIDDLE(c2r, c2i, c2, d2, e2, r2[l], i2[l]);
        LANE_TWIDDLE(c3r, c3i, c3, d3, e3, r3[l], i3[l]);
    }
}

static void lanes_radix4_stage(int32_t *re, int32_t *im, int32_t m, int32_t q, const int32_t *cs,
                               const int32_t *sn, int qs, int sh) {
    const int32_t stride = m / (4 * q), ql = q * LN;
    const int64_t rnd = (int64_t)1 << (qs - 1);
    int32_t g, n, l;
    for (n = 0; n < q; n++) { /* twiddle-outer: the 9 constants of offset n serve every group */
        int32_t tw[9];
        for (l = 1; l <= 3; l++) {
            const int32_t c = cs[l * n * stride], s = sn[l * n * stride];
            tw[3 * (l - 1)] = c;
            tw[3 * (l - 1) + 1] = s - c; /* |.| <= sqrt2 2^Q < 2^31 */
            tw[3 * (l - 1) + 2] = c + s;
        }
        for (g = 0; g < m; g += 4 * q) {
            int32_t *r0 = re + (g + n) * LN, *i0 = im + (g + n) * LN;
            lanes_butterfly(r0, r0 + ql, r0 + 2 * ql, r0 + 3 * ql, i0, i0 + ql, i0 + 2 * ql, i0 + 3 * ql,
                            tw, rnd, qs, sh);
        }
    }
}

/* radix4_last (q = 1, W = 1) for every lane */
SER_FE_INLINE void lanes_last4(int32_t *restrict r0, int32_t *restrict r1, int32_t *restrict r2,
                               int32_t *restrict r3, int32_t *restrict i0, int32_t *restrict i1,
                               int32_t *restrict i2, int32_t *restrict i3) {
    int l;
    for (l = 0; l < LN; l++) {
        const int32_t b0r = r0[l] + r2[l], b0i = i0[l] + i2[l], b1r = r0[l] - r2[l], b1i = i0[l] - i2[l];
        const int32_t b2r = r1[l] + r3[l], b2i = i1[l] + i3[l], b3r = r1[l] - r3[l], b3i = i1[l] - i3[l];
        r0[l] = b0r + b2r; i0[l] = b0i + b2i;
        r1[l] = b1r + b3i; i1[l] = b1i - b3r;
        r2[l] = b0r - b2r; i2[l] = b0i - b2i;
        r3[l] = b1r - b3i; i3[l] = b1i + b3r;
    }
}

/* the radix-2 last stage (W = 1, exact) for every lane */
SER_FE_INLINE void lanes_last2(int32_t *restrict r0, int32_t *restrict r1, int32_t *restrict i0,
                               int32_t *restrict i1) {
    int l;
    for (l = 0; l < LN; l++) {
        const int32_t dr = r0[l] - r1[l], di = i0[l] - i1[l];
        r0[l] += r1[l];
        i0[l] += i1[l];
        r1[l] = dr;
        i1[l] = di;
    }
}

static void lanes_fft(const ser_fe_tables_t *t, int32_t *re, int32_t *im) {
    const int32_t m = t->frame_length / 2, qb = TWIDDLE_BITS(t);
    const int32_t q_shift = (log2_exact(m) % 2 == 0) ? 4 : 2;
    int32_t q, g;
    for (q = m / 4; q >= 1; q /= 4) {
        if (q == 1) {
            for (g = 0; g < m; g += 4) {
                int32_t *r = re + g * LN, *i = im + g * LN;
                lanes_last4(r, r + LN, r + 2 * LN, r + 3 * LN, i, i + LN, i + 2 * LN, i + 3 * LN);
            }
            return;
        }
        if (q == q_shift)
            lanes_radix4_stage(re, im, m, q, t->fft_cos_q, t->fft_sin_q, qb + t->fft_shift, t->fft_shift);
        else
            lanes_radix4_stage(re, im, m, q, t->fft_cos_q, t->fft_sin_q, qb, 0);
        if (q == 2) break; /* log2 M odd: one radix-2 stage left */
    }
    for (g = 0; g < m; g += 2) {
        int32_t *r = re + g * LN, *i = im + g * LN;
        lanes_last2(r, r + LN, i, i + LN);
    }
}

/* One bin of frame_mel's split + power + mel split, for every lane: adds P and its rising share
 * to sp, sr (mel_bits <= 16: lanes_ok). Not inlined: on its own, with restrict arguments, the lane
 * loop is always vectorised (inlined into lanes_mel, GCC 12 left one copy scalar). */
SER_FE_NOINLINE void lanes_bin(const int32_t *restrict ar, const int32_t *restrict ai,
                             const int32_t *restrict br, const int32_t *restrict bi, int32_t c,
                             int32_t sn, uint32_t r, int q, int mb, int64_t *restrict sp,
                             int64_t *restrict sr) {
    const uint64_t half = (uint64_t)1 << (mb - 1);
    int l;
    for (l = 0; l < LN; l++) {
        const int32_t er = ar[l] + br[l], ei = ai[l] - bi[l], o_r = ar[l] - br[l], o_i = ai[l] + bi[l];
        /* (E + 1) 2^Q + c O_i - s O_r, modulo 2^64 (true value < 2^62.2), then >> (Q + 1) */
        const uint64_t sr_ = ((uint64_t)(int64_t)(er + 1) << q) + (uint64_t)((int64_t)c * o_i) -
                             (uint64_t)((int64_t)sn * o_r);
        const uint64_t si_ = ((uint64_t)(int64_t)(ei + 1) << q) - (uint64_t)((int64_t)c * o_r) -
                             (uint64_t)((int64_t)sn * o_i);
        const int32_t xr = (int32_t)(uint32_t)(sr_ >> (q + 1)), xi = (int32_t)(uint32_t)(si_ >> (q + 1));
        const uint64_t p = (uint64_t)((int64_t)xr * xr + (int64_t)xi * xi); /* <= 2^61 */
        /* rise = (P >> mb) r + (((P mod 2^mb) r + 2^(mb-1)) >> mb) = (P r + 2^(mb-1)) >> mb, from
         * P = H 2^32 + Lo: (H r) 2^(32-mb) + ((Lo r + 2^(mb-1)) >> mb), two 32 x 32 -> 64 products
         * (H r < 2^(29+mb), Lo r < 2^(32+mb)) */
        const uint64_t rise = (((uint64_t)(uint32_t)(p >> 32) * r) << (32 - mb)) +
                              (((uint64_t)(uint32_t)p * r + half) >> mb);
        sp[l] += (int64_t)p;
        sr[l] += (int64_t)rise;
    }
}

static void lanes_mel(ser_fe_state_t *st) {
    const ser_fe_tables_t *t = st->t;
    const int32_t m = t->frame_length / 2, mm = m - 1, q = TWIDDLE_BITS(t), mb = MEL_BITS(t);
    const uint16_t *bitrev = t->bitrev;
    const int32_t *rc = t->rfft_cos_q, *rsn = t->rfft_sin_q, *rw = t->rise_q - t->bin_lo;
    int64_t *mel = st->lane_mel;
    int32_t k = t->bin_lo, seg, l;
    for (seg = 0; seg <= t->n_mels; seg++) {
        const int32_t end = k + t->seg_len[seg];
        int64_t sp[LN] = {0}, sr[LN] = {0};
        for (; k < end; k++) {
            const int32_t kz = bitrev[k & mm] * LN, kc = bitrev[(m - k) & mm] * LN;
            lanes_bin(st->lane_re + kz, st->lane_im + kz, st->lane_re + kc, st->lane_im + kc, rc[k], rsn[k],
                      (uint32_t)rw[k], q, mb, sp, sr);
        }
        for (l = 0; l < LN; l++) {
            if (seg < t->n_mels) mel[seg * LN + l] = sr[l];
            if (seg > 0) mel[(seg - 1) * LN + l] += sp[l] - sr[l];
        }
    }
}

/* What the lanes path covers: version 2 with the default table formats' ranges. */
static int lanes_ok(const ser_fe_tables_t *t) {
    return t->algorithm_version == 2 && MEL_BITS(t) <= 16 && TWIDDLE_BITS(t) + t->fft_shift <= 32;
}

/* SER_FE_LANES frames of a linear buffer, starting at pcm[start] every hop samples -> out rows. */
static void compute_lanes(ser_fe_state_t *st, const int16_t *pcm, size_t start, size_t hop, int32_t *out) {
    const ser_fe_tables_t *t = st->t;
    const int32_t n = t->frame_length, m = n / 2;
    int s[LN];
    int32_t i, j, l;
    for (l = 0; l < LN; l++) { /* steps 2-3 per frame (frame_mel's code), then into lane l */
        const int16_t *x = pcm + start + (size_t)l * hop;
        uint32_t or_lo = 0, or_hi = 0;
        peak_run(x, t->window_q, n, &or_lo, &or_hi);
        s[l] = t->block_bits - bitlen64((uint64_t)or_hi << 32 | or_lo);
        shift_run(x, t->window_q, m, st->re, st->im, s[l]);
        for (i = 0; i < m; i++) {
            st->lane_re[i * LN + l] = st->re[i];
            st->lane_im[i * LN + l] = st->im[i];
        }
    }
    lanes_fft(t, st->lane_re, st->lane_im);
    lanes_mel(st);
    for (l = 0; l < LN; l++) { /* steps 8-9 per frame, in stream order (the v2 running mean) */
        for (j = 0; j < t->n_mels; j++) st->mel[j] = st->lane_mel[j * LN + l];
        frame_output(st, s[l], out + (size_t)l * (size_t)t->n_out);
    }
}
#endif /* SER_FE_LANES > 1 */

size_t ser_fe_push(ser_fe_state_t *st, const int16_t *pcm, size_t n) {
    const uint32_t cap = (uint32_t)st->t->frame_length, mask = cap - 1;
    size_t room = cap - st->count, k, i;
    if (!pcm) return 0;
    k = n < room ? n : room;
    for (i = 0; i < k; i++) st->ring[(st->start + st->count + (uint32_t)i) & mask] = pcm[i];
    st->count += (uint32_t)k;
    st->samples_seen += (uint32_t)k;
    return k;
}

int ser_fe_pop(ser_fe_state_t *st, int32_t *features) {
    const uint32_t cap = (uint32_t)st->t->frame_length, hop = (uint32_t)st->t->hop_length;
    if (st->count < cap) return 0;
    compute_frame(st, st->ring, st->start, cap - 1, features);
    st->start = (st->start + hop) & (cap - 1);
    st->count -= hop;
    st->frames_emitted++;
    return 1;
}

size_t ser_fe_samples_needed(const ser_fe_state_t *st) {
    return (size_t)st->t->frame_length - st->count;
}

size_t ser_fe_process(ser_fe_state_t *st, const int16_t *pcm, size_t n, int32_t *features,
                      ser_fe_frame_cb cb, void *ctx) {
    size_t frames = 0;
    if (!pcm) n = 0;
    while (1) {
        size_t k = ser_fe_push(st, pcm, n);
        pcm += k;
        n -= k;
        while (ser_fe_pop(st, features)) {
            if (cb) cb(ctx, features, st->frames_emitted - 1);
            frames++;
        }
        if (n == 0) break;
    }
    return frames;
}

size_t ser_fe_n_frames(const ser_fe_tables_t *t, size_t n) {
    if (n < (size_t)t->frame_length) return 0;
    return 1 + (n - (size_t)t->frame_length) / (size_t)t->hop_length;
}

size_t ser_fe_compute(ser_fe_state_t *st, const int16_t *pcm, size_t n, int32_t *out,
                      size_t max_frames) {
    size_t f = 0, nf = ser_fe_n_frames(st->t, n);
    const size_t no = (size_t)st->t->n_out, hop = (size_t)st->t->hop_length;
    ser_fe_reset(st);
    if (nf > max_frames) nf = max_frames;
#if SER_FE_LANES > 1
    if (lanes_ok(st->t))
        for (; f + SER_FE_LANES <= nf; f += SER_FE_LANES) compute_lanes(st, pcm, f * hop, hop, out + f * no);
#endif
    for (; f < nf; f++) compute_frame(st, pcm, f * hop, ~(size_t)0, out + f * no);
    return nf;
}

void ser_fe_quantize(const int32_t *q, size_t n, int32_t m0, int32_t right_shift,
                     int32_t zero_point, int8_t *out) {
    size_t i;
    for (i = 0; i < n; i++) {
        const int64_t p = (int64_t)q[i] * m0; /* |q| < 2^31, m0 < 2^31: |p| < 2^62 */
        int64_t r;
        if (right_shift >= 63) {
            r = 0; /* |p| + 2^(rs-1) < 2^rs */
        } else if (right_shift > 0) {
            const int64_t mag = ((p < 0 ? -p : p) + ((int64_t)1 << (right_shift - 1))) >> right_shift;
            r = p < 0 ? -mag : mag; /* round half away from zero */
        } else {
            r = p * ((int64_t)1 << -right_shift); /* multiplier >= 1: only for absurd input scales */
        }
        r += zero_point;
        out[i] = (int8_t)(r < -128 ? -128 : r > 127 ? 127 : r);
    }
}

static uint32_t fnv_i32(uint32_t h, int32_t v) {
    uint32_t u = (uint32_t)v;
    int b;
    for (b = 0; b < 4; b++) {
        h ^= (u >> (8 * b)) & 0xFFu;
        h *= 16777619u;
    }
    return h;
}

static uint32_t fnv_arr32(uint32_t h, const int32_t *a, int32_t n) {
    int32_t i;
    for (i = 0; i < n; i++) h = fnv_i32(h, a[i]);
    return h;
}

static uint32_t fnv_arr16(uint32_t h, const uint16_t *a, int32_t n) {
    int32_t i;
    for (i = 0; i < n; i++) h = fnv_i32(h, (int32_t)a[i]);
    return h;
}

uint32_t ser_fe_tables_checksum(const ser_fe_tables_t *t) {
    const int32_t n = t->frame_length, m = n / 2;
    const int32_t params[15] = {t->frame_length, t->hop_length, t->n_mels, t->n_out, t->output,
                                t->frac_bits, t->window_bits, t->block_bits, t->twiddle_bits,
                                t->mel_bits, t->log_table_bits, t->dct_bits, t->log_floor_q16,
                                t->bin_lo, t->bin_hi};
    uint32_t h = 2166136261u;
    h = fnv_arr32(h, params, 15);
    h = fnv_arr32(h, t->window_q, n);
    h = fnv_arr16(h, t->bitrev, m);
    const int32_t ntw = t->algorithm_version == 2 ? 3 * m / 4 : (m / 2 > 1 ? m / 2 : 1);
    h = fnv_arr32(h, t->fft_cos_q, ntw);
    h = fnv_arr32(h, t->fft_sin_q, ntw);
    h = fnv_arr32(h, t->rfft_cos_q, m + 1);
    h = fnv_arr32(h, t->rfft_sin_q, m + 1);
    h = fnv_arr16(h, t->seg_len, t->n_mels + 1);
    h = fnv_arr32(h, t->rise_q, t->bin_hi - t->bin_lo);
    h = fnv_arr32(h, t->log_table_q, (1 << t->log_table_bits) + 1);
    if (t->output == SER_FE_OUTPUT_MFCC) h = fnv_arr32(h, t->dct_q, t->n_out * t->n_mels);
    if (t->algorithm_version >= 2) { /* v1 checksums are unchanged by the v2 fields */
        const int32_t v2[4] = {t->algorithm_version, t->fft_shift, t->norm, t->norm_shift};
        h = fnv_arr32(h, v2, 4);
    }
    return h;
}

size_t ser_fe_state_size(void) { return sizeof(ser_fe_state_t); }
size_t ser_fe_tables_size(void) { return sizeof(ser_fe_tables_t); }
size_t ser_fe_lanes(void) { return SER_FE_LANES; }
