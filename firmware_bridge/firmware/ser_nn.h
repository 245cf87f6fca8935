/* ser_nn.h - int8 neural-network kernels for the ahead-of-time model export (`ser-edge export`).
 *
 * Portable C99 (integers only); on a Cortex-M4/M7/M33 with the DSP extension (__ARM_FEATURE_DSP)
 * the inner products use SMLAD through ACLE intrinsics. Every kernel reproduces the arithmetic of
 * the TFLite integer reference kernels (TFLite Micro) bit for bit: same accumulation, same
 * fixed-point requantisation (QuantizeMultiplier + MultiplyByQuantizedMultiplier with
 * double rounding), same LUT-based int16 sigmoid / tanh in the LSTM.
 *
 * The parameter structs are filled by generated code (<prefix>_net.c): shapes, offsets,
 * per-channel multipliers and shifts are computed on the host; weights are stored per output unit,
 * each row zero-padded to a multiple of 4 ("k4"), rows in blocks of 4 interleaved by groups of 4
 * bytes (row0[0..4) row1[0..4) row2[0..4) row3[0..4) row0[4..8) ...), the last n % 4 rows plain. Activations are expanded once to
 * int16 "columns" (value + input offset, groups of 4 stored as a0 a2 a1 a3 so that one SXTB16 of
 * 4 weight bytes lines up with one 32-bit load of the column) and reused for every output unit.
 * No kernel allocates: buffers come from the caller's arena (sizes in the structs' comments).
 */
#ifndef SER_NN_H
#define SER_NN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SER_NN_VERSION 1

#if defined(__GNUC__) || defined(__clang__)
#define SER_NN_ALIGNED(n) __attribute__((aligned(n)))
#else
#define SER_NN_ALIGNED(n)
#endif

/* CONV_2D, NHWC int8, per-channel weights [out_c][k_h][k_w][in_c] (row padded to k4).
 * col: int16 scratch of k4 entries. */
typedef struct {
    int32_t in_h, in_w, in_c, out_h, out_w, out_c;
    int32_t k_h, k_w, stride_h, stride_w, dil_h, dil_w, pad_top, pad_left;
    int32_t k4;
    int32_t input_offset;            /* -input zero point */
    int32_t output_offset, act_min, act_max;
    const int8_t *weights;
    const int32_t *bias;             /* [out_c] (zeros when the model has none) */
    const int32_t *mult, *shift;     /* [out_c] QuantizeMultiplier of in*w/out scales */
} ser_nn_conv_t;

/* MAX_POOL_2D (op 0) / AVERAGE_POOL_2D (op 1), NHWC int8, batch 1. */
typedef struct {
    int32_t in_h, in_w, c, out_h, out_w, k_h, k_w, stride_h, stride_w, pad_top, pad_left;
    int32_t act_min, act_max, average;
} ser_nn_pool_t;

/* FULLY_CONNECTED int8: out[b][o] = requant(bias[o] + sum_i (in[b][i] + input_offset) * w[o][i]).
 * col: int16 scratch of k4 entries. */
typedef struct {
    int32_t batches, n_in, n_out, k4;
    int32_t input_offset, output_offset, act_min, act_max;
    const int8_t *weights;           /* [n_out][k4] */
    const int32_t *bias;             /* [n_out] */
    const int32_t *mult, *shift;     /* [n_out] (per-tensor values repeated) */
} ser_nn_fc_t;

/* STRIDED_SLICE (and any pure gather expressible as 4 nested ranges) on elements of elem_size
 * bytes; start/stop/stride per axis already resolved on the host (masks, negative indices). */
typedef struct {
    int32_t in_shape[4], start[4], stop[4], stride[4];
    int32_t elem_size;
} ser_nn_slice_t;

/* UNIDIRECTIONAL_SEQUENCE_LSTM, int8 activations, int8 weights, int32 biases, int16 cell state
 * (the TFLite "8x8_16" integer LSTM without peephole, projection or layer norm).
 * Gate order in the arrays: 0 input, 1 forget, 2 cell, 3 output.
 * scratch: 4-byte aligned, k4_in + k4_cell + 4 * n_cell + 2 int16 then 2 * n_cell int32 (the exporter
 * sizes it); state: int8 hidden [batches * n_cell] and
 * int16 cell [batches * n_cell], zeroed (hidden: zero point) by ser_nn_lstm at entry. */
typedef struct {
    int32_t batches, steps, n_input, n_cell, time_major, k4_in, k4_cell;
    int32_t input_offset;            /* -input zero point */
    int32_t hidden_offset;           /* -hidden state zero point (recurrent FC input) */
    int32_t hidden_zp;
    const int8_t *w_in[4];           /* [n_cell][k4_in] */
    const int8_t *w_rec[4];          /* [n_cell][k4_cell] */
    const int32_t *bias[4];          /* [n_cell] */
    int32_t in_mult[4], in_shift[4]; /* input FC -> int16 Q3.12 */
    int32_t rec_mult[4], rec_shift[4];
    int32_t cell_gate_sigmoid;       /* 0: tanh (usual), 1: sigmoid */
    int32_t fc_mult, fc_shift;       /* forget (Q0.15) x cell -> cell */
    int32_t ig_mult, ig_shift;       /* input (Q0.15) x cell gate (Q0.15) -> cell */
    int32_t out_mult, out_shift;     /* tanh(cell) (Q0.15) x output gate -> hidden (int8) */
    int32_t tanh_mult, tanh_rshift;  /* tanh(cell) input rescale: (c * mult + round) >> rshift */
    int32_t cell_clip;               /* quantised clip, 0 = none */
    const uint16_t *lut;             /* 256-entry sigmoid(i / 24) in Q0.16 */
} ser_nn_lstm_t;

/* ADD / SUB of two int8 tensors of the same shape (TFLite's general rescaling: both inputs
 * shifted left by left_shift, rescaled to a common scale, summed, rescaled to the output). */
typedef struct {
    int32_t size, subtract;
    int32_t input1_offset, input2_offset, output_offset, left_shift;
    int32_t input1_mult, input1_shift, input2_mult, input2_shift, output_mult, output_shift;
    int32_t act_min, act_max;
} ser_nn_add_t;

/* CONCATENATION of inputs with the output's quantisation: for each of `outer` slices, copy
 * inner[i] bytes of input i in turn. */
#define SER_NN_MAX_CONCAT 8
typedef struct {
    int32_t outer, n_inputs;
    int32_t inner[SER_NN_MAX_CONCAT];
} ser_nn_concat_t;

void ser_nn_add(const ser_nn_add_t *p, const int8_t *a, const int8_t *b, int8_t *out);
void ser_nn_concat(const ser_nn_concat_t *p, const void *const *inputs, void *out);
void ser_nn_conv(const ser_nn_conv_t *p, const int8_t *in, int8_t *out, int16_t *col);
void ser_nn_pool(const ser_nn_pool_t *p, const int8_t *in, int8_t *out);
void ser_nn_fc(const ser_nn_fc_t *p, const int8_t *in, int8_t *out, int16_t *col);
void ser_nn_slice(const ser_nn_slice_t *p, const void *in, void *out);
void ser_nn_lstm(const ser_nn_lstm_t *p, const int8_t *in, int8_t *out, int16_t *scratch,
                 int8_t *hidden, int16_t *cell);

/* Building blocks, exported for tests. */
int32_t ser_nn_requantize(int32_t x, int32_t multiplier, int32_t shift);
int16_t ser_nn_sigmoid_s16(int16_t x, const uint16_t *lut);
int16_t ser_nn_tanh_s16(int16_t x, int32_t mult, int32_t rshift, const uint16_t *lut);

#ifdef __cplusplus
}
#endif

#endif /* SER_NN_H */
