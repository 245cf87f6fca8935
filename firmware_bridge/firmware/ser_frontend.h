/*
 * ser_frontend.h - fixed-point MFCC / log-mel front end for microcontrollers (portable C99).
 *
 * Bit-exact port of edge_runtime/frontend/fixed_point.py: int16 PCM in, int32 features out
 * (Q(frac_bits) log2 units, Q16 by default). Both front-end versions: 1 (radix-2 FFT, absolute
 * log energies; the tables' algorithm_version 0 or 1) and 2 (radix-4 FFT, per-channel running-mean
 * subtraction, whose state lives in ser_fe_state_t: reset it per stream). Integer arithmetic only (no float, no double): the
 * tables are generated on the host (edge_runtime.frontend.make_tables) and exported as const arrays
 * by `ser-edge export` (firmware_bridge/export.py), which also emits a ser_fe_tables_t instance
 * pointing at them. The same ser_frontend.c therefore runs any exported configuration.
 *
 * No dynamic allocation: the caller owns a ser_fe_state_t, sized at compile time by
 * SER_FE_MAX_FRAME_LENGTH and SER_FE_MAX_MELS (defaults fit the default 512-point, 40-mel config;
 * define them with -D for every translation unit when the configuration is larger).
 *
 * Streaming use (frames bit-identical to compute_features on the concatenated audio):
 *
 *     static ser_fe_state_t fe;
 *     ser_fe_init(&fe, &ser_fe_tables);          // from the exported <prefix>_model.c
 *     while (n) {                                // any chunking
 *         size_t k = ser_fe_push(&fe, pcm, n);   // copies what fits in the frame buffer
 *         pcm += k; n -= k;
 *         while (ser_fe_pop(&fe, feats)) use(feats);   // computes each completed frame
 *     }
 *
 * Requirements on the C implementation (checked at compile time in ser_frontend.c): two's
 * complement int32_t/int64_t and arithmetic right shift of negative values (every GCC, Clang, IAR,
 * Keil/armclang target does this; C99 leaves it implementation-defined).
 */
#ifndef SER_FRONTEND_H
#define SER_FRONTEND_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifndef SER_FE_MAX_FRAME_LENGTH
#define SER_FE_MAX_FRAME_LENGTH 512 /* largest frame_length (= FFT size) the state can hold */
#endif
#ifndef SER_FE_MAX_MELS
#define SER_FE_MAX_MELS 40 /* largest n_mels */
#endif
#if (SER_FE_MAX_FRAME_LENGTH & (SER_FE_MAX_FRAME_LENGTH - 1)) || SER_FE_MAX_FRAME_LENGTH < 16
#error "SER_FE_MAX_FRAME_LENGTH must be a power of two >= 16"
#endif
/* Frames ser_fe_compute transforms side by side (version 2): on 64-bit hosts every step of the FFT
 * and the mel stage then works on SER_FE_LANES frames at once (the compiler vectorises across
 * frames), at the cost of SER_FE_LANES copies of the work arrays in ser_fe_state_t. 1 on
 * microcontrollers: one frame at a time. Streaming (ser_fe_pop) always computes one frame. */
#ifndef SER_FE_LANES
#if defined(__x86_64__) || defined(__aarch64__)
#define SER_FE_LANES 8
#else
#define SER_FE_LANES 1
#endif
#endif

#define SER_FE_OUTPUT_MFCC 0
#define SER_FE_OUTPUT_LOGMEL 1

#define SER_FE_NORM_NONE 0
#define SER_FE_NORM_MEAN 1 /* version 2: per-channel running-mean subtraction */

/* Return codes of ser_fe_init / ser_fe_check_tables. */
#define SER_FE_OK 0
#define SER_FE_ERR_NULL (-1)         /* a required pointer is NULL */
#define SER_FE_ERR_TOO_LARGE (-2)    /* frame_length or n_mels exceed the compiled maxima */
#define SER_FE_ERR_CONFIG (-3)       /* parameters outside the ranges the arithmetic is proven for */

/*
 * Everything the front end needs, all integers. Field meanings follow FrontendConfig and
 * FrontendTables (edge_runtime/frontend/{config,tables}.py); N = frame_length, M = N/2.
 */
typedef struct {
    int32_t frame_length;   /* N, power of two, 16..4096 */
    int32_t hop_length;     /* 1..N */
    int32_t n_mels;         /* 1..SER_FE_MAX_MELS */
    int32_t n_out;          /* features per frame: n_mfcc (mfcc) or n_mels (logmel) */
    int32_t output;         /* SER_FE_OUTPUT_MFCC or SER_FE_OUTPUT_LOGMEL */
    int32_t frac_bits;      /* output Q format, 0..16 */
    int32_t window_bits;    /* window Q format (30) */
    int32_t block_bits;     /* block floating point: peak in [2^(b-1), 2^b] (21) */
    int32_t twiddle_bits;   /* FFT twiddles Q format (30) */
    int32_t mel_bits;       /* mel rise weights Q format (15) */
    int32_t log_table_bits; /* T: log table has 2^T + 1 entries (7) */
    int32_t dct_bits;       /* DCT matrix Q format (20) */
    int32_t log_floor_q16;  /* floor of the log2 energy, Q16 */
    int32_t bin_lo;         /* first FFT bin inside the filterbank */
    int32_t bin_hi;         /* one past the last */
    const int32_t *window_q;   /* [N] periodic Hann, Q(window_bits) */
    const uint16_t *bitrev;    /* [M] FFT output position of bin k (bit / digit reversal) */
    const int32_t *fft_cos_q;  /* [max(M/2,1)] (v1) or [3M/4] (v2) cos(2 pi k / M), Q(twiddle_bits) */
    const int32_t *fft_sin_q;  /* same length: sin(2 pi k / M) */
    const int32_t *rfft_cos_q; /* [M+1] cos(2 pi k / N) (real-FFT split twiddles) */
    const int32_t *rfft_sin_q; /* [M+1] sin(2 pi k / N) */
    const uint16_t *seg_len;   /* [n_mels+1] bins per mel segment (segments are consecutive) */
    const int32_t *rise_q;     /* [bin_hi-bin_lo] rise weight of each bin, Q(mel_bits) */
    const int32_t *log_table_q;/* [2^T + 1] round(log2(1 + i/2^T) * 2^16) */
    const int32_t *dct_q;      /* [n_out * n_mels] row-major DCT-II, Q(dct_bits); NULL for logmel */
    /* Added with front-end version 2 (after the pointers, so older initialisers still compile:
     * fields they leave out are 0, which means version 1). */
    int32_t algorithm_version; /* 1 (or 0): radix-2 FFT, no normalisation; 2: radix-4 FFT */
    int32_t fft_shift;         /* v2: right shift at the last twiddled FFT stage (block_bits+log2 N-30) */
    int32_t norm;              /* SER_FE_NORM_NONE or SER_FE_NORM_MEAN (v2 only) */
    int32_t norm_shift;        /* v2 running mean: time constant 2^norm_shift frames (0..12) */
} ser_fe_tables_t;

/* Caller-owned state: frame ring buffer + work arrays + v2 running mean (about 3.8 KB for N=512,
 * 40 mels; plus SER_FE_LANES x (4 N + 8 n_mels) B of lanes on 64-bit hosts, 19 KB). Frames depend
 * on earlier frames of the stream only through norm_acc/norm_count (v2). */
typedef struct {
    const ser_fe_tables_t *t;
    uint32_t start;          /* ring index of the next frame's first sample */
    uint32_t count;          /* samples buffered from `start` */
    uint32_t frames_emitted; /* frames popped since init/reset */
    uint32_t samples_seen;   /* samples accepted since init/reset (wraps) */
    int16_t ring[SER_FE_MAX_FRAME_LENGTH];
    int32_t re[SER_FE_MAX_FRAME_LENGTH / 2]; /* FFT data, |.| < 2^29.5 (see ser_frontend.c) */
    int32_t im[SER_FE_MAX_FRAME_LENGTH / 2];
    int64_t mel[SER_FE_MAX_MELS];            /* mel energies, <= 2^60 */
    int32_t logmel[SER_FE_MAX_MELS];         /* Q16 log2, |.| < 2^24 */
    int32_t norm_acc[SER_FE_MAX_MELS];       /* v2 running mean, Q23 log2, |.| < 2^30 */
    uint32_t norm_count;                     /* v2 frames seen, saturates at 2^norm_shift */
#if SER_FE_LANES > 1
    /* ser_fe_compute's frames side by side: element i of lane l at [i * SER_FE_LANES + l] */
    int32_t lane_re[SER_FE_MAX_FRAME_LENGTH / 2 * SER_FE_LANES];
    int32_t lane_im[SER_FE_MAX_FRAME_LENGTH / 2 * SER_FE_LANES];
    int64_t lane_mel[SER_FE_MAX_MELS * SER_FE_LANES];
#endif
} ser_fe_state_t;

/* Validate tables against the compiled limits and the proven ranges; SER_FE_OK or an error. */
int ser_fe_check_tables(const ser_fe_tables_t *t);

/* Bind the tables and clear the stream. Returns SER_FE_OK or an error code (state unusable). */
int ser_fe_init(ser_fe_state_t *st, const ser_fe_tables_t *t);

/* Forget buffered audio and the v2 running mean (start of a new stream); keeps the tables. */
void ser_fe_reset(ser_fe_state_t *st);

/*
 * Copy up to n samples into the frame buffer; returns how many were taken. It takes fewer than n
 * only when a complete frame is waiting: call ser_fe_pop until it returns 0, then push the rest.
 */
size_t ser_fe_push(ser_fe_state_t *st, const int16_t *pcm, size_t n);

/* If a frame is complete, compute it into features[n_out], advance by hop, return 1; else 0. */
int ser_fe_pop(ser_fe_state_t *st, int32_t *features);

/* Samples still needed before the next ser_fe_pop returns 1. */
size_t ser_fe_samples_needed(const ser_fe_state_t *st);

/* push + pop loop with a callback per frame; returns the number of frames produced. */
typedef void (*ser_fe_frame_cb)(void *ctx, const int32_t *features, uint32_t frame_index);
size_t ser_fe_process(ser_fe_state_t *st, const int16_t *pcm, size_t n, int32_t *features,
                      ser_fe_frame_cb cb, void *ctx);

/* Number of frames of a clip of n samples (no padding; 0 when n < frame_length). */
size_t ser_fe_n_frames(const ser_fe_tables_t *t, size_t n);

/*
 * Batch helper: features of a whole clip, frames read in place (no copy into the ring), written
 * row-major to out[frame * n_out + k]; at most max_frames frames. Uses st only as scratch (the
 * stream is reset). Returns the number of frames written.
 */
size_t ser_fe_compute(ser_fe_state_t *st, const int16_t *pcm, size_t n, int32_t *out,
                      size_t max_frames);

/*
 * Model input quantisation (edge_runtime.interpreter.FeatureQuantizer, bit-exact):
 * q8 = clamp(round_half_away(q * m0 / 2^right_shift) + zero_point, -128, 127), product in int64.
 * m0 (in [2^30, 2^31)) and right_shift are computed on the host and exported as
 * <PREFIX>_INPUT_MULTIPLIER / <PREFIX>_INPUT_RIGHT_SHIFT.
 */
void ser_fe_quantize(const int32_t *q, size_t n, int32_t m0, int32_t right_shift,
                     int32_t zero_point, int8_t *out);

/* FNV-1a 32 over the parameters and every table (as little-endian int32), for integrity checks;
 * equals firmware_bridge.export.tables_checksum(cfg). */
uint32_t ser_fe_tables_checksum(const ser_fe_tables_t *t);

/* sizeof(ser_fe_state_t) / sizeof(ser_fe_tables_t) for the host bindings' layout checks. */
size_t ser_fe_state_size(void);
size_t ser_fe_tables_size(void);

/* SER_FE_LANES of this build (frames ser_fe_compute transforms side by side). */
size_t ser_fe_lanes(void);

#ifdef __cplusplus
}
#endif

#endif /* SER_FRONTEND_H */
