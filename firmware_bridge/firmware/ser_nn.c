/* ser_nn.c - int8 kernels of the ahead-of-time model export; see ser_nn.h.
 *
 * Arithmetic follows the TFLite quantisation specification and the integer reference kernels
 * (the oracle in the tests is the tflite-micro interpreter):
 *   - conv / FC accumulate (x - x_zp) * w in int32, add the int32 bias, requantise with
 *     MultiplyByQuantizedMultiplier (rounding doubling high multiply, then rounding right shift),
 *     add the output zero point, clamp to the fused-activation range;
 *   - the int16 LSTM gates are two FCs (input with bias, recurrent without) each requantised to
 *     int16 Q3.12 and saturated, added with saturation, then a LUT sigmoid / tanh (Q0.15);
 *     element-wise products are requantised the same way; the cell state is int16.
 * Requires two's complement and arithmetic >> of negative values (true of every ARM compiler and
 * GCC/Clang on any host), checked below at compile time.
 */
#include "ser_nn.h"

#include <stdint.h>
#include <string.h>

typedef char ser_nn_arith_shift_check[((-8 >> 1) == -4) ? 1 : -1];

#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
#include <arm_acle.h>
#define SER_NN_DSP 1
#else
#define SER_NN_DSP 0
#endif

#define SER_NN_MIN(a, b) ((a) < (b) ? (a) : (b))
#define SER_NN_MAX(a, b) ((a) > (b) ? (a) : (b))

static inline int32_t clamp(int32_t v, int32_t lo, int32_t hi) {
    return v < lo ? lo : (v > hi ? hi : v);
}

/* MultiplyByQuantizedMultiplier (TFLite, double rounding). The rounding doubling high multiply
 * trunc((x*m + nudge) / 2^31), nudge = x*m >= 0 ? 2^30 : 1 - 2^30, equals floor((x*m + 2^30) / 2^31)
 * for every sign (for x*m < 0, trunc(v / 2^31) = floor((v + 2^31 - 1) / 2^31)), i.e. one add and
 * one arithmetic shift of the 64-bit product. m is in [2^30, 2^31), so the x = m = INT32_MIN
 * saturation case cannot occur. */
static inline int32_t requant(int32_t x, int32_t m, int32_t shift) {
    int32_t hi, right, half;
    if (shift > 0) x = (int32_t)((uint32_t)x << shift);
    hi = (int32_t)(((int64_t)x * m + ((int64_t)1 << 30)) >> 31);
    if (shift >= 0) return hi;
    /* RoundingDivideByPOT (round half away from zero) as one add: floor((hi + 2^(r-1) - [hi < 0]) / 2^r);
     * exact unless the add overflows, i.e. hi within 2^(r-1) of INT32_MAX (then the slow form). */
    right = -shift;
    half = (int32_t)(1u << (right - 1));
    if (hi <= INT32_MAX - half) return (hi + half + (hi >> 31)) >> right;
    {
        int32_t mask = (int32_t)((1u << right) - 1u), rem = hi & mask;
        return (hi >> right) + (rem > (mask >> 1) ? 1 : 0);
    }
}

/* Saturate to int16 / int8 (one SSAT on a DSP core). */
#if SER_NN_DSP
#define SAT16(v) __ssat((v), 16)
#define SAT8(v) __ssat((v), 8)
#else
#define SAT16(v) clamp((v), -32768, 32767)
#define SAT8(v) clamp((v), -128, 127)
#endif

int32_t ser_nn_requantize(int32_t x, int32_t multiplier, int32_t shift) {
    return requant(x, multiplier, shift);
}


/* int16 logistic with the 256-entry LUT (input Q3.12, output Q0.15): TFLite's
 * reference_integer_ops::Logistic with input_multiplier 0 (x * 3, interpolation on |x| / 2^9). */
static inline int16_t sigmoid_s16(int32_t in, const uint16_t *lut) {
    int32_t x = in * 3;
    uint32_t ax = (uint32_t)(x < 0 ? -x : x);
    uint32_t uh = ax >> 9, r;
    if (uh >= 255u) {
        r = 0x7FFFu << 10;
    } else {
        uint32_t ua = lut[uh], ub = lut[uh + 1];
        r = (ua << 9) + (ax & 0x1FFu) * (ub - ua);
    }
    r = x >= 0 ? r + (1u << 9) : (1u << 25) - r + (1u << 9) - 1u;
    return (int16_t)(r >> 10);
}

/* int16 tanh with the same LUT (tanh x = 2 sigmoid(2x) - 1): TFLite's reference_integer_ops::Tanh;
 * (mult, rshift) is the input rescale computed on the host from the input's power-of-two scale. */
static inline int16_t tanh_s16(int32_t in, int32_t mult, int32_t rshift, const uint16_t *lut) {
    int32_t x = (in * mult + (rshift > 0 ? (1 << (rshift - 1)) : 0)) >> rshift;
    uint32_t ax = (uint32_t)(x < 0 ? -x : x);
    uint32_t uh = ax >> 8;
    int32_t r;
    if (uh >= 255u) {
        r = (int32_t)(0xFFFFu << 8);
    } else {
        uint32_t ua = lut[uh], ub = lut[uh + 1];
        r = (int32_t)((ua << 8) + (ax & 0xFFu) * (ub - ua));
    }
    r = x >= 0 ? r - (1 << 23) + (1 << 7) : -r + (1 << 23) + (1 << 7) - 1;
    return (int16_t)(r >> 8);
}

int16_t ser_nn_sigmoid_s16(int16_t x, const uint16_t *lut) { return sigmoid_s16(x, lut); }
int16_t ser_nn_tanh_s16(int16_t x, int32_t mult, int32_t rshift, const uint16_t *lut) {
    return tanh_s16(x, mult, rshift, lut);
}

/* Column slot of natural index j: groups of 4 stored as a0 a2 a1 a3. */
#define SLOT(j) (((j) & ~3) | (((j) & 1) << 1) | (((j) >> 1) & 1))

#if SER_NN_DSP
static inline uint32_t ld32(const void *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}
/* The same from a 4-byte aligned address (weights blocks, columns): lets the compiler pair loads
 * into LDRD / LDM. */
static inline uint32_t ld32a(const void *p) {
    uint32_t v;
    memcpy(&v, __builtin_assume_aligned(p, 4), 4);
    return v;
}
static inline int32_t sxtb16_ror8(uint32_t v) {
    int32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(v));
    return r;
}
#endif

/* col[0..n4) = x[0..n4) + off in slot order, n4 a multiple of 4 (col 4-byte aligned). On a DSP core
 * one word load, two SXTB16 (bytes 0,2 and 1,3), two SADD16 with the packed offset, two stores. */
static void expand4(const int8_t *x, int32_t n4, int32_t off, int16_t *col) {
    int32_t j;
#if SER_NN_DSP
    const int32_t off2 = (int32_t)(((uint32_t)off & 0xFFFFu) | ((uint32_t)off << 16));
    for (j = 0; j < n4; j += 4) {
        uint32_t v = ld32(x + j);
        int32_t lo = __sadd16(__sxtb16(v), off2), hi = __sadd16(sxtb16_ror8(v), off2);
        memcpy(col + j, &lo, 4);
        memcpy(col + j + 2, &hi, 4);
    }
#else
    for (j = 0; j < n4; j += 4) {
        col[j] = (int16_t)(x[j] + off);
        col[j + 1] = (int16_t)(x[j + 2] + off);
        col[j + 2] = (int16_t)(x[j + 1] + off);
        col[j + 3] = (int16_t)(x[j + 3] + off);
    }
#endif
}

/* col[0..k4) = x[0..n) + off in slot order, zero beyond n. */
static void expand(const int8_t *x, int32_t n, int32_t k4, int32_t off, int16_t *col) {
    int32_t j = n & ~3;
    expand4(x, j, off, col);
    for (; j < k4; j++) col[SLOT(j)] = (int16_t)(j < n ? x[j] + off : 0);
}

/* Dot products of one column with one block of 4 weight rows -> acc[0..4). The block is stored
 * interleaved by the exporter: for each group of 4 columns, 4 bytes of row 0, of row 1, of row 2,
 * of row 3 (16 consecutive bytes), so one pointer walks all four rows (two LDRD per group). */
static void dot4(const int16_t *col, const int8_t *w, int32_t k4, int32_t *acc) {
    int32_t a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
    const int16_t *end = col + k4;
#if SER_NN_DSP && defined(__GNUC__) && !defined(SER_NN_NO_ASM)
    /* Per group of 4 columns: 3 LDRD (post-indexed), 8 SXTB16, 8 SMLAD, compare + branch:
     * 21 instructions for 16 multiply-accumulates. */
    if (col < end) {
        uint32_t c02, c13, v0, v1, v2, v3, t;
        __asm__ volatile(
            "1:\n\t"
            "ldrd %[c02], %[c13], [%[col]], #8\n\t"
            "ldrd %[v0], %[v1], [%[w]], #8\n\t"
            "ldrd %[v2], %[v3], [%[w]], #8\n\t"
            "sxtb16 %[t], %[v0]\n\t"
            "smlad %[a0], %[c02], %[t], %[a0]\n\t"
            "sxtb16 %[v0], %[v0], ror #8\n\t"
            "smlad %[a0], %[c13], %[v0], %[a0]\n\t"
            "sxtb16 %[t], %[v1]\n\t"
            "smlad %[a1], %[c02], %[t], %[a1]\n\t"
            "sxtb16 %[v1], %[v1], ror #8\n\t"
            "smlad %[a1], %[c13], %[v1], %[a1]\n\t"
            "sxtb16 %[t], %[v2]\n\t"
            "smlad %[a2], %[c02], %[t], %[a2]\n\t"
            "sxtb16 %[v2], %[v2], ror #8\n\t"
            "smlad %[a2], %[c13], %[v2], %[a2]\n\t"
            "sxtb16 %[t], %[v3]\n\t"
            "smlad %[a3], %[c02], %[t], %[a3]\n\t"
            "sxtb16 %[v3], %[v3], ror #8\n\t"
            "smlad %[a3], %[c13], %[v3], %[a3]\n\t"
            "cmp %[col], %[end]\n\t"
            "bne 1b"
            : [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [a3] "+r"(a3), [col] "+r"(col), [w] "+r"(w),
              [c02] "=&r"(c02), [c13] "=&r"(c13), [v0] "=&r"(v0), [v1] "=&r"(v1), [v2] "=&r"(v2),
              [v3] "=&r"(v3), [t] "=&r"(t)
            : [end] "r"(end)
            : "cc", "memory");
    }
#elif SER_NN_DSP
    for (; col < end; col += 4, w += 16) {
        int32_t c02 = (int32_t)ld32a(col), c13 = (int32_t)ld32a(col + 2);
        uint32_t v0 = ld32a(w), v1 = ld32a(w + 4), v2 = ld32a(w + 8), v3 = ld32a(w + 12);
        a0 = __smlad(c02, __sxtb16(v0), a0); a0 = __smlad(c13, sxtb16_ror8(v0), a0);
        a1 = __smlad(c02, __sxtb16(v1), a1); a1 = __smlad(c13, sxtb16_ror8(v1), a1);
        a2 = __smlad(c02, __sxtb16(v2), a2); a2 = __smlad(c13, sxtb16_ror8(v2), a2);
        a3 = __smlad(c02, __sxtb16(v3), a3); a3 = __smlad(c13, sxtb16_ror8(v3), a3);
    }
#else
    for (; col < end; col += 4, w += 16) {
        int32_t c0 = col[0], c2 = col[1], c1 = col[2], c3 = col[3];
        a0 += c0 * w[0] + c1 * w[1] + c2 * w[2] + c3 * w[3];
        a1 += c0 * w[4] + c1 * w[5] + c2 * w[6] + c3 * w[7];
        a2 += c0 * w[8] + c1 * w[9] + c2 * w[10] + c3 * w[11];
        a3 += c0 * w[12] + c1 * w[13] + c2 * w[14] + c3 * w[15];
    }
#endif
    acc[0] = a0; acc[1] = a1; acc[2] = a2; acc[3] = a3;
}

static int32_t dot1(const int16_t *col, const int8_t *w, int32_t k4, int32_t acc) {
    int32_t k;
#if SER_NN_DSP
    for (k = 0; k < k4; k += 4) {
        uint32_t v = ld32(w + k);
        acc = __smlad((int32_t)ld32(col + k), __sxtb16(v), acc);
        acc = __smlad((int32_t)ld32(col + k + 2), sxtb16_ror8(v), acc);
    }
#else
    for (k = 0; k < k4; k += 4)
        acc += col[k] * w[k] + col[k + 2] * w[k + 1] + col[k + 1] * w[k + 2] + col[k + 3] * w[k + 3];
#endif
    return acc;
}

/* rows x col -> int32 accumulators (bias + dot) for n rows. */
static void matvec(const int16_t *col, const int8_t *w, int32_t k4, int32_t n, const int32_t *bias, int32_t *acc) {
    int32_t o = 0;
    for (; o + 4 <= n; o += 4) {
        acc[o] = bias ? bias[o] : 0;
        acc[o + 1] = bias ? bias[o + 1] : 0;
        acc[o + 2] = bias ? bias[o + 2] : 0;
        acc[o + 3] = bias ? bias[o + 3] : 0;
        dot4(col, w + o * k4, k4, acc + o);
    }
    for (; o < n; o++) acc[o] = dot1(col, w + o * k4, k4, bias ? bias[o] : 0);
}

/* Requantise 4-at-a-time accumulators to int8 with per-row multipliers. */
static void store_s8(const int32_t *acc, int32_t n, const int32_t *mult, const int32_t *shift,
                     int32_t out_off, int32_t lo, int32_t hi, int8_t *out) {
    int32_t o;
    for (o = 0; o < n; o++) out[o] = (int8_t)clamp(requant(acc[o], mult[o], shift[o]) + out_off, lo, hi);
}

void ser_nn_conv(const ser_nn_conv_t *p, const int8_t *in, int8_t *out, int16_t *col) {
    int32_t oy, ox, acc[4];
    const int32_t K = p->k_h * p->k_w * p->in_c;
    for (oy = 0; oy < p->out_h; oy++) {
        for (ox = 0; ox < p->out_w; ox++) {
            int32_t ky, kx, j = 0, o;
            int8_t *dst = out + (oy * p->out_w + ox) * p->out_c;
            /* im2col: taps outside the image contribute 0 (TFLite skips them). */
            for (ky = 0; ky < p->k_h; ky++) {
                int32_t iy = oy * p->stride_h + ky * p->dil_h - p->pad_top;
                for (kx = 0; kx < p->k_w; kx++) {
                    int32_t ix = ox * p->stride_w + kx * p->dil_w - p->pad_left, c;
                    if (iy < 0 || iy >= p->in_h || ix < 0 || ix >= p->in_w) {
                        for (c = 0; c < p->in_c; c++, j++) col[SLOT(j)] = 0;
                    } else {
                        const int8_t *src = in + (iy * p->in_w + ix) * p->in_c;
                        if (((j | p->in_c) & 3) == 0) { /* whole groups of 4: the SIMD expansion */
                            expand4(src, p->in_c, p->input_offset, col + j);
                            j += p->in_c;
                        } else {
                            for (c = 0; c < p->in_c; c++, j++) col[SLOT(j)] = (int16_t)(src[c] + p->input_offset);
                        }
                    }
                }
            }
            for (; j < p->k4; j++) col[SLOT(j)] = 0;
            (void)K;
            for (o = 0; o + 4 <= p->out_c; o += 4) {
                acc[0] = p->bias[o]; acc[1] = p->bias[o + 1]; acc[2] = p->bias[o + 2]; acc[3] = p->bias[o + 3];
                dot4(col, p->weights + o * p->k4, p->k4, acc);
                store_s8(acc, 4, p->mult + o, p->shift + o, p->output_offset, p->act_min, p->act_max, dst + o);
            }
            for (; o < p->out_c; o++) {
                acc[0] = dot1(col, p->weights + o * p->k4, p->k4, p->bias[o]);
                store_s8(acc, 1, p->mult + o, p->shift + o, p->output_offset, p->act_min, p->act_max, dst + o);
            }
        }
    }
}

void ser_nn_pool(const ser_nn_pool_t *p, const int8_t *in, int8_t *out) {
    int32_t oy, ox, c;
    if (!p->average) { /* max: the first tap copied, the others compared channel-contiguously */
        for (oy = 0; oy < p->out_h; oy++) {
            for (ox = 0; ox < p->out_w; ox++) {
                int32_t y0 = oy * p->stride_h - p->pad_top, x0 = ox * p->stride_w - p->pad_left, ky, kx, first = 1;
                int32_t ys = SER_NN_MAX(0, -y0), ye = SER_NN_MIN(p->k_h, p->in_h - y0);
                int32_t xs = SER_NN_MAX(0, -x0), xe = SER_NN_MIN(p->k_w, p->in_w - x0);
                int8_t *dst = out + (oy * p->out_w + ox) * p->c;
                for (ky = ys; ky < ye; ky++) {
                    for (kx = xs; kx < xe; kx++) {
                        const int8_t *src = in + ((y0 + ky) * p->in_w + (x0 + kx)) * p->c;
                        if (first) {
                            memcpy(dst, src, (size_t)p->c);
                            first = 0;
                        } else {
                            for (c = 0; c < p->c; c++) if (src[c] > dst[c]) dst[c] = src[c];
                        }
                    }
                }
                if (first) memset(dst, -128, (size_t)p->c);
                if (p->act_min > -128 || p->act_max < 127)
                    for (c = 0; c < p->c; c++) dst[c] = (int8_t)clamp(dst[c], p->act_min, p->act_max);
            }
        }
        return;
    }
    for (oy = 0; oy < p->out_h; oy++) {
        for (ox = 0; ox < p->out_w; ox++) {
            int32_t y0 = oy * p->stride_h - p->pad_top, x0 = ox * p->stride_w - p->pad_left;
            int32_t ys = SER_NN_MAX(0, -y0), ye = SER_NN_MIN(p->k_h, p->in_h - y0);
            int32_t xs = SER_NN_MAX(0, -x0), xe = SER_NN_MIN(p->k_w, p->in_w - x0);
            for (c = 0; c < p->c; c++) {
                int32_t ky, kx, v = p->average ? 0 : -128, n = 0;
                for (ky = ys; ky < ye; ky++) {
                    for (kx = xs; kx < xe; kx++) {
                        int32_t s = in[((y0 + ky) * p->in_w + (x0 + kx)) * p->c + c];
                        if (p->average) v += s; else if (s > v) v = s;
                        n++;
                    }
                }
                if (p->average && n > 0) v = v > 0 ? (v + n / 2) / n : (v - n / 2) / n;
                out[(oy * p->out_w + ox) * p->c + c] = (int8_t)clamp(v, p->act_min, p->act_max);
            }
        }
    }
}

void ser_nn_fc(const ser_nn_fc_t *p, const int8_t *in, int8_t *out, int16_t *col) {
    int32_t b, o, acc[4];
    for (b = 0; b < p->batches; b++) {
        int8_t *dst = out + b * p->n_out;
        expand(in + b * p->n_in, p->n_in, p->k4, p->input_offset, col);
        for (o = 0; o + 4 <= p->n_out; o += 4) {
            acc[0] = p->bias[o]; acc[1] = p->bias[o + 1]; acc[2] = p->bias[o + 2]; acc[3] = p->bias[o + 3];
            dot4(col, p->weights + o * p->k4, p->k4, acc);
            store_s8(acc, 4, p->mult + o, p->shift + o, p->output_offset, p->act_min, p->act_max, dst + o);
        }
        for (; o < p->n_out; o++) {
            acc[0] = dot1(col, p->weights + o * p->k4, p->k4, p->bias[o]);
            store_s8(acc, 1, p->mult + o, p->shift + o, p->output_offset, p->act_min, p->act_max, dst + o);
        }
    }
}

void ser_nn_slice(const ser_nn_slice_t *p, const void *in, void *out) {
    const uint8_t *src = (const uint8_t *)in;
    uint8_t *dst = (uint8_t *)out;
    const int32_t *sh = p->in_shape, es = p->elem_size;
    int32_t i0, i1, i2, i3;
#define SER_NN_RANGE(i, d) for (i = p->start[d]; p->stride[d] > 0 ? i < p->stop[d] : i > p->stop[d]; i += p->stride[d])
    SER_NN_RANGE(i0, 0) SER_NN_RANGE(i1, 1) SER_NN_RANGE(i2, 2) SER_NN_RANGE(i3, 3) {
        memcpy(dst, src + (size_t)(((i0 * sh[1] + i1) * sh[2] + i2) * sh[3] + i3) * (size_t)es, (size_t)es);
        dst += es;
    }
#undef SER_NN_RANGE
}

/* One gate for one step: act(sat16(rq(bias + Wx.x)) + sat16(rq(Wh.h))) -> gate[n_cell]. */
static void lstm_gate(const ser_nn_lstm_t *p, int g, const int16_t *colx, const int16_t *colh,
                      int32_t *acc, int16_t *gate, int act_sigmoid) {
    int32_t i, n = p->n_cell;
    int32_t *acc_r = acc + n;
    matvec(colx, p->w_in[g], p->k4_in, n, p->bias[g], acc);
    matvec(colh, p->w_rec[g], p->k4_cell, n, NULL, acc_r);
    for (i = 0; i < n; i++) {
        int32_t a = SAT16(requant(acc[i], p->in_mult[g], p->in_shift[g]));
        int32_t r = SAT16(requant(acc_r[i], p->rec_mult[g], p->rec_shift[g]));
        int32_t s = SAT16(a + r);
        gate[i] = act_sigmoid ? sigmoid_s16(s, p->lut) : tanh_s16(s, 3, 0, p->lut);
    }
}

void ser_nn_lstm(const ser_nn_lstm_t *p, const int8_t *in, int8_t *out, int16_t *scratch,
                 int8_t *hidden, int16_t *cell) {
    const int32_t n = p->n_cell;
    int16_t *colx = scratch, *colh = colx + p->k4_in;
    int16_t *gi = colh + p->k4_cell, *gf = gi + n, *gc = gf + n, *go = gc + n;
    int32_t *acc = (int32_t *)(void *)(go + n + (n & 1)); /* 2 * n int32, 4-byte aligned */
    int32_t b, t, i;
    for (i = 0; i < p->batches * n; i++) {
        hidden[i] = (int8_t)p->hidden_zp;
        cell[i] = 0;
    }
    for (b = 0; b < p->batches; b++) {
        int8_t *h = hidden + b * n;
        int16_t *c = cell + b * n;
        for (t = 0; t < p->steps; t++) {
            int32_t row = p->time_major ? t * p->batches + b : b * p->steps + t;
            expand(in + row * p->n_input, p->n_input, p->k4_in, p->input_offset, colx);
            expand(h, n, p->k4_cell, p->hidden_offset, colh);
            lstm_gate(p, 1, colx, colh, acc, gf, 1);
            lstm_gate(p, 0, colx, colh, acc, gi, 1);
            lstm_gate(p, 2, colx, colh, acc, gc, p->cell_gate_sigmoid);
            lstm_gate(p, 3, colx, colh, acc, go, 1);
            for (i = 0; i < n; i++) {
                int32_t fc = SAT16(requant(gf[i] * c[i], p->fc_mult, p->fc_shift));
                int32_t ig = SAT16(requant(gi[i] * gc[i], p->ig_mult, p->ig_shift));
                int32_t cv = SAT16(fc + ig);
                int32_t th;
                if (p->cell_clip > 0) cv = clamp(cv, -p->cell_clip, p->cell_clip);
                c[i] = (int16_t)cv;
                th = tanh_s16(cv, p->tanh_mult, p->tanh_rshift, p->lut);
                h[i] = (int8_t)SAT8(p->hidden_zp + requant(th * go[i], p->out_mult, p->out_shift));
            }
            memcpy(out + row * n, h, (size_t)n);
        }
    }
}

void ser_nn_add(const ser_nn_add_t *p, const int8_t *a, const int8_t *b, int8_t *out) {
    int32_t i;
    for (i = 0; i < p->size; i++) {
        int32_t x = (int32_t)((uint32_t)(a[i] + p->input1_offset) << p->left_shift);
        int32_t y = (int32_t)((uint32_t)(b[i] + p->input2_offset) << p->left_shift);
        int32_t sx = requant(x, p->input1_mult, p->input1_shift);
        int32_t sy = requant(y, p->input2_mult, p->input2_shift);
        int32_t r = requant(p->subtract ? sx - sy : sx + sy, p->output_mult, p->output_shift) + p->output_offset;
        out[i] = (int8_t)clamp(r, p->act_min, p->act_max);
    }
}

void ser_nn_concat(const ser_nn_concat_t *p, const void *const *inputs, void *out) {
    uint8_t *dst = (uint8_t *)out;
    int32_t o, i;
    for (o = 0; o < p->outer; o++) {
        for (i = 0; i < p->n_inputs; i++) {
            memcpy(dst, (const uint8_t *)inputs[i] + (size_t)o * (size_t)p->inner[i], (size_t)p->inner[i]);
            dst += p->inner[i];
        }
    }
}
