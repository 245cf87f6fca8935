/*
 * ser_protocol.c - COBS framing, CRC-32 and message payloads of the ser-edge serial protocol.
 * Byte-for-byte the same as edge_runtime/protocol (tested against it in both directions).
 */
#include "ser_protocol.h"

#include <string.h>

/* ---- CRC-32/ISO-HDLC: reflected poly 0xEDB88320, init and xorout 0xFFFFFFFF. A 16-entry
 * (64-byte) nibble table: two lookups per byte, a good size/speed trade on an MCU. */
static const uint32_t crc_nibble[16] = {
    0x00000000u, 0x1DB71064u, 0x3B6E20C8u, 0x26D930ACu, 0x76DC4190u, 0x6B6B51F4u,
    0x4DB26158u, 0x5005713Cu, 0xEDB88320u, 0xF00F9344u, 0xD6D6A3E8u, 0xCB61B38Cu,
    0x9B64C2B0u, 0x86D3D2D4u, 0xA00AE278u, 0xBDBDF21Cu};

uint32_t ser_crc32_update(uint32_t crc, const uint8_t *data, size_t n) {
    size_t i;
    crc = ~crc;
    for (i = 0; i < n; i++) {
        crc ^= data[i];
        crc = (crc >> 4) ^ crc_nibble[crc & 0xFu];
        crc = (crc >> 4) ^ crc_nibble[crc & 0xFu];
    }
    return ~crc;
}

uint32_t ser_crc32(const uint8_t *data, size_t n) { return ser_crc32_update(0, data, n); }

/* ---- COBS, as a byte-at-a-time encoder so that header, payload and CRC are encoded without
 * first copying them into one raw buffer. A block that reaches 254 data bytes (code 0xFF) is
 * closed only when another byte follows: no trailing empty block, like the `cobs` package. */
typedef struct {
    uint8_t *out;
    size_t cap, pos, code_pos;
    uint8_t code;
    int overflow;
} cobs_enc_t;

static void cobs_begin(cobs_enc_t *e, uint8_t *out, size_t cap) {
    e->out = out;
    e->cap = cap;
    e->code_pos = 0;
    e->pos = 1;
    e->code = 1;
    e->overflow = cap < 1;
}

static void cobs_close_block(cobs_enc_t *e) {
    if (e->code_pos < e->cap) e->out[e->code_pos] = e->code;
    e->code_pos = e->pos++;
    e->code = 1;
    if (e->code_pos >= e->cap) e->overflow = 1;
}

static void cobs_put(cobs_enc_t *e, uint8_t b) {
    if (e->code == 0xFF) cobs_close_block(e); /* a full block followed by more data */
    if (b == 0) {
        cobs_close_block(e);
    } else {
        if (e->pos < e->cap) e->out[e->pos] = b;
        else e->overflow = 1;
        e->pos++;
        e->code++;
    }
}

static void cobs_put_n(cobs_enc_t *e, const uint8_t *p, size_t n) {
    size_t i;
    for (i = 0; i < n; i++) cobs_put(e, p[i]);
}

static size_t cobs_end(cobs_enc_t *e) {
    if (e->overflow || e->pos > e->cap) return 0;
    e->out[e->code_pos] = e->code;
    return e->pos;
}

size_t ser_cobs_encode(const uint8_t *in, size_t n, uint8_t *out, size_t cap) {
    cobs_enc_t e;
    cobs_begin(&e, out, cap);
    cobs_put_n(&e, in, n);
    return cobs_end(&e);
}

long ser_cobs_decode(const uint8_t *in, size_t n, uint8_t *out, size_t cap) {
    size_t i = 0, o = 0;
    while (i < n) {
        const size_t code = in[i], end = i + code;
        size_t k;
        if (code == 0 || end > n) return -1; /* zero byte / code past the end */
        for (k = i + 1; k < end; k++) {
            if (in[k] == 0 || o >= cap) return -1;
            out[o++] = in[k]; /* o <= k - 1 < k: safe when out == in */
        }
        i = end;
        if (code != 0xFF && i < n) {
            if (o >= cap) return -1;
            out[o++] = 0;
        }
    }
    return (long)o;
}

/* ---- frames ---- */

static void put_u16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put_u32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}
static uint16_t get_u16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t get_u32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

size_t ser_frame_encode(uint8_t type, uint16_t seq, const uint8_t *payload, size_t len,
                        uint8_t *out, size_t cap) {
    uint8_t head[SER_HEADER_SIZE], tail[SER_CRC_SIZE];
    uint32_t crc;
    cobs_enc_t e;
    size_t n;
    if (len > SER_PROTOCOL_MAX_PAYLOAD || (len && !payload) || cap < 2) return 0;
    head[0] = SER_PROTOCOL_VERSION;
    head[1] = type;
    put_u16(head + 2, seq);
    put_u16(head + 4, (uint16_t)len);
    crc = ser_crc32_update(0, head, SER_HEADER_SIZE);
    crc = ser_crc32_update(crc, payload, len);
    put_u32(tail, crc);
    cobs_begin(&e, out, cap - 1); /* keep one byte for the delimiter */
    cobs_put_n(&e, head, SER_HEADER_SIZE);
    cobs_put_n(&e, payload, len);
    cobs_put_n(&e, tail, SER_CRC_SIZE);
    n = cobs_end(&e);
    if (n == 0) return 0;
    out[n] = 0x00;
    return n + 1;
}

void ser_decoder_reset(ser_decoder_t *d) {
    d->len = 0;
    d->discarding = 0;
    d->have_seq = 0;
}

void ser_decoder_init(ser_decoder_t *d, size_t max_payload) {
    memset(d, 0, sizeof(*d));
    if (max_payload == 0 || max_payload > SER_MAX_PAYLOAD) max_payload = SER_MAX_PAYLOAD;
    d->max_payload = max_payload;
    /* Buffer whole frames up to this build's limit whatever the advertised max_payload, so that a
     * too-large frame still gets its CRC checked and can be answered TOO_LARGE (docs/protocol.md §7). */
    d->max_encoded = SER_COBS_MAX_ENCODED(SER_MAX_RAW_FRAME);
    ser_decoder_reset(d);
}

const ser_decoder_stats_t *ser_decoder_stats(const ser_decoder_t *d) { return &d->stats; }
size_t ser_decoder_size(void) { return sizeof(ser_decoder_t); }

static int drop(ser_decoder_t *d, ser_drop_reason_t r) {
    d->stats.dropped[r]++;
    return -(int)r - 1;
}

/* A complete segment (between delimiters): the checks of FrameDecoder._decode_segment, in order. */
static int decode_segment(ser_decoder_t *d, ser_frame_t *out) {
    long n = ser_cobs_decode(d->buf, d->len, d->buf, sizeof(d->buf)); /* in place */
    size_t body;
    uint16_t length, seq;
    uint8_t version, type;
    if (n < 0) return drop(d, SER_DROP_COBS);
    if ((size_t)n < SER_HEADER_SIZE + SER_CRC_SIZE) return drop(d, SER_DROP_SHORT);
    body = (size_t)n - SER_CRC_SIZE;
    if (ser_crc32(d->buf, body) != get_u32(d->buf + body)) return drop(d, SER_DROP_CRC);
    version = d->buf[0];
    type = d->buf[1];
    seq = get_u16(d->buf + 2);
    length = get_u16(d->buf + 4);
    out->version = version;
    out->type = type;
    out->seq = seq;
    out->length = length;
    out->payload = d->buf + SER_HEADER_SIZE;
    if (version != SER_PROTOCOL_VERSION) return drop(d, SER_DROP_VERSION);
    if ((size_t)length != body - SER_HEADER_SIZE) return drop(d, SER_DROP_LENGTH);
    if (length > d->max_payload) return drop(d, SER_DROP_OVERSIZE);
    if (type < 1 || type > SER_MSG_TYPE_MAX) return drop(d, SER_DROP_UNKNOWN_TYPE);
    if (d->check && d->check(type, out->payload, length)) return drop(d, SER_DROP_PAYLOAD);
    if (d->have_seq) {
        const uint16_t gap = (uint16_t)(seq - d->last_seq - 1u);
        if (gap < SER_MAX_SEQ_GAP) d->stats.seq_lost += gap;
        else d->stats.seq_resync++; /* backwards or huge jump: the peer restarted, not a loss */
    }
    d->have_seq = 1;
    d->last_seq = seq;
    d->stats.frames_ok++;
    return 1;
}

int ser_decoder_feed(ser_decoder_t *d, uint8_t byte, ser_frame_t *out) {
    int rc = 0;
    d->stats.bytes_in++;
    if (byte != 0) {
        if (d->discarding) return 0;
        if (d->len >= d->max_encoded) { /* the segment can no longer be a valid frame */
            d->len = 0;
            d->discarding = 1;
            return drop(d, SER_DROP_OVERSIZE);
        }
        d->buf[d->len++] = byte;
        return 0;
    }
    if (d->discarding) d->discarding = 0;
    else if (d->len) rc = decode_segment(d, out);
    else d->stats.empty++;
    d->len = 0;
    return rc;
}

/* ---- message helpers ---- */

long ser_audio_parse(const uint8_t *payload, size_t len, uint32_t *offset) {
    if (len < 4 || (len - 4) % 2) return -1; /* 0 samples: a SYNC (revision 2) */
    if (offset) *offset = get_u32(payload);
    return (long)((len - 4) / 2);
}

int16_t ser_audio_sample(const uint8_t *payload, size_t i) {
    const uint8_t *p = payload + 4 + 2 * i;
    return (int16_t)(uint16_t)(p[0] | (p[1] << 8));
}

size_t ser_result_payload(uint32_t window_index, uint16_t session, uint8_t label_index, uint8_t flags,
                          uint32_t t_start_ms, uint32_t t_end_ms, uint32_t latency_us,
                          const int8_t *scores, uint8_t n_scores, uint8_t *out, size_t cap) {
    const size_t n = 21u + n_scores;
    size_t i;
    if (cap < n || (n_scores && label_index >= n_scores) || (n_scores && !scores)) return 0;
    put_u32(out, window_index);
    put_u16(out + 4, session);
    out[6] = label_index;
    out[7] = flags;
    put_u32(out + 8, t_start_ms);
    put_u32(out + 12, t_end_ms);
    put_u32(out + 16, latency_us);
    out[20] = n_scores;
    for (i = 0; i < n_scores; i++) out[21 + i] = (uint8_t)scores[i];
    return n;
}

size_t ser_ack_payload(uint16_t ref_seq, uint8_t ref_type, uint8_t status, uint8_t *out, size_t cap) {
    if (cap < 4) return 0;
    put_u16(out, ref_seq);
    out[2] = ref_type;
    out[3] = status;
    return 4;
}

size_t ser_error_payload(uint16_t code, uint16_t ref_seq, uint8_t ref_type, const char *text,
                         uint8_t *out, size_t cap) {
    size_t n = text ? strlen(text) : 0;
    if (n > 200) n = 200;
    if (cap < 5 + n) return 0;
    put_u16(out, code);
    put_u16(out + 2, ref_seq);
    out[4] = ref_type;
    if (n) memcpy(out + 5, text, n);
    return 5 + n;
}

int ser_start_parse(const uint8_t *payload, size_t len, uint8_t *mode, uint16_t *session,
                    uint32_t *start_offset) {
    if (len != 8) return -1;
    if (mode) *mode = payload[0];
    if (session) *session = get_u16(payload + 2);
    if (start_offset) *start_offset = get_u32(payload + 4);
    return 0;
}

/* Strict UTF-8 as Python's bytes.decode("utf-8"): no overlongs, no surrogates, <= U+10FFFF. */
static int utf8_ok(const uint8_t *p, size_t n) {
    size_t i = 0;
    while (i < n) {
        const uint8_t c = p[i];
        size_t k, need;
        uint8_t lo = 0x80, hi = 0xBF;
        if (c < 0x80) { i++; continue; }
        if (c >= 0xC2 && c <= 0xDF) need = 1;
        else if (c >= 0xE0 && c <= 0xEF) { need = 2; if (c == 0xE0) lo = 0xA0; if (c == 0xED) hi = 0x9F; }
        else if (c >= 0xF0 && c <= 0xF4) { need = 3; if (c == 0xF0) lo = 0x90; if (c == 0xF4) hi = 0x8F; }
        else return 0;
        if (i + need >= n) return 0; /* runs past the end */
        for (k = 1; k <= need; k++) {
            const uint8_t b = p[i + k];
            if (k == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) return 0;
        }
        i += need + 1;
    }
    return 1;
}

/* str8 at *pos: advance past it; 0 if it runs past the end or is not UTF-8. */
static int str8_ok(const uint8_t *p, size_t len, size_t *pos) {
    size_t n;
    if (*pos >= len) return 0;
    n = p[*pos];
    if (*pos + 1 + n > len || !utf8_ok(p + *pos + 1, n)) return 0;
    *pos += 1 + n;
    return 1;
}

int ser_message_check(uint8_t type, const uint8_t *p, size_t len) {
    size_t pos;
    unsigned i;
    switch (type) {
        case SER_MSG_HELLO: /* max_version >= 1, client name <= 64 bytes of UTF-8 */
            return len >= 4 && len <= 68 && p[0] >= 1 && utf8_ok(p + 4, len - 4) ? 0 : -1;
        case SER_MSG_INFO:
            if (len < 32) return -1;
            pos = 32;
            for (i = 0; i < 3u + p[26]; i++)
                if (!str8_ok(p, len, &pos)) return -1;
            if (pos == len) return 0;
            /* revision-2 extension: u8 length (>= 16) that ends the payload */
            return p[pos] >= 16 && pos + 1 + p[pos] == len ? 0 : -1;
        case SER_MSG_AUDIO: return len >= 4 && (len - 4) % 2 == 0 ? 0 : -1; /* 0 samples = SYNC (r2) */
        case SER_MSG_FEATURES: {
            size_t n, nf;
            if (len < 8) return -1;
            n = (size_t)(p[4] | p[5] << 8);
            nf = (size_t)(p[6] | p[7] << 8);
            return nf && len == 8 + n * nf ? 0 : -1; /* n = 0: SYNC (revision 2) */
        }
        case SER_MSG_RESULT: return len >= 21 && len == 21u + p[20] && p[6] < p[20] ? 0 : -1;
        case SER_MSG_ERROR: return len >= 5 && len <= 205 ? 0 : -1; /* text <= 200 bytes, errors="replace" */
        case SER_MSG_PING:
        case SER_MSG_PONG: return len <= 64 ? 0 : -1;
        case SER_MSG_START: return len == 8 ? 0 : -1;
        case SER_MSG_STOP:
        case SER_MSG_GET_STATS: return len == 0 ? 0 : -1;
        case SER_MSG_ACK: return len == 4 ? 0 : -1;
        case SER_MSG_STATS: return len >= 4 && len == 4u + 4u * p[2] ? 0 : -1;
        case SER_MSG_RESEND: { /* revision 2 */
            unsigned n = len >= 4 ? p[2] : 0u;
            if (n < 1 || n > SER_MAX_RESEND_RANGES || len != 4u + 8u * n) return -1;
            for (i = 0; i < n; i++)
                if (get_u32(p + 8 + 8 * i) == 0) return -1;
            return 0;
        }
        default: return -1;
    }
}

size_t ser_resend_payload(uint16_t session, const uint32_t *first, const uint32_t *count, unsigned n,
                          uint8_t *out, size_t cap) {
    unsigned i;
    if (n < 1 || n > SER_MAX_RESEND_RANGES || cap < 4u + 8u * n) return 0;
    for (i = 0; i < n; i++)
        if (count[i] == 0) return 0;
    put_u16(out, session);
    out[2] = (uint8_t)n;
    out[3] = 0;
    for (i = 0; i < n; i++) {
        put_u32(out + 4 + 8 * i, first[i]);
        put_u32(out + 8 + 8 * i, count[i]);
    }
    return 4u + 8u * n;
}

int ser_resend_parse(const uint8_t *payload, size_t len, uint16_t *session, uint32_t *first,
                     uint32_t *count, unsigned max_ranges) {
    unsigned n, i;
    if (len < 4) return -1;
    n = payload[2];
    if (n < 1 || n > SER_MAX_RESEND_RANGES || len != 4u + 8u * n) return -1;
    for (i = 0; i < n; i++)
        if (get_u32(payload + 8 + 8 * i) == 0) return -1;
    if (session) *session = get_u16(payload);
    for (i = 0; i < n && i < max_ranges; i++) {
        if (first) first[i] = get_u32(payload + 4 + 8 * i);
        if (count) count[i] = get_u32(payload + 8 + 8 * i);
    }
    return (int)n;
}

void ser_decoder_check_messages(ser_decoder_t *d, int on) { d->check = on ? ser_message_check : NULL; }
