/*
 * ser_protocol.h - device side of the ser-edge serial protocol (portable C99, no allocation).
 *
 * Same bytes as edge_runtime/protocol (framing.py, _cobs.py, messages.py; docs/protocol.md):
 *
 *   raw frame:  u8 version | u8 type | u16 seq | u16 length | payload[length] | u32 CRC-32
 *               (all little-endian; CRC-32/ISO-HDLC = zlib.crc32 over header + payload)
 *   wire:       COBS(raw frame) followed by one 0x00 delimiter
 *
 * The decoder is fed bytes as they arrive (UART RX interrupt or DMA ring) and returns a validated
 * frame when a delimiter completes one. A bad frame is dropped, counted by reason exactly like the
 * Python FrameDecoder (cobs, short, crc, version, length, oversize, unknown_type) and decoding
 * resynchronises at the next 0x00. Payload layouts are checked by the message helpers below.
 */
#ifndef SER_PROTOCOL_H
#define SER_PROTOCOL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SER_PROTOCOL_VERSION 1 /* frame format (header version byte) */
/* Message-set revision this codec can encode/parse (RESEND, SYNC, INFO extension). A device loop
 * announces in INFO.protocol_version the revision it implements, min(HELLO.max_version, its own);
 * a loop without retransmission says 1 and then never receives RESEND or SYNC from a host. */
#define SER_PROTOCOL_REVISION 2
#define SER_MAX_RESEND_RANGES 8
/* A forward sequence jump of this many frames or more is a resynchronisation, not a loss. */
#define SER_MAX_SEQ_GAP 1024u
#define SER_HEADER_SIZE 6
#define SER_CRC_SIZE 4
#define SER_PROTOCOL_MAX_PAYLOAD 4096 /* protocol ceiling (framing.MAX_PAYLOAD) */

/* Largest payload this build accepts (advertised in INFO.max_payload); sizes the decoder buffer. */
#ifndef SER_MAX_PAYLOAD
#define SER_MAX_PAYLOAD 1024
#endif
#if SER_MAX_PAYLOAD > SER_PROTOCOL_MAX_PAYLOAD
#error "SER_MAX_PAYLOAD exceeds the protocol's 4096-byte ceiling"
#endif

#define SER_COBS_MAX_ENCODED(n) ((n) + (n) / 254 + 1)
#define SER_MAX_RAW_FRAME (SER_HEADER_SIZE + SER_MAX_PAYLOAD + SER_CRC_SIZE)
/* A complete wire frame for a payload of n bytes, delimiter included. */
#define SER_WIRE_SIZE(n) (SER_COBS_MAX_ENCODED(SER_HEADER_SIZE + (n) + SER_CRC_SIZE) + 1)

/* Message types (messages.MsgType). */
enum {
    SER_MSG_HELLO = 0x01, SER_MSG_INFO = 0x02, SER_MSG_AUDIO = 0x03, SER_MSG_FEATURES = 0x04,
    SER_MSG_RESULT = 0x05, SER_MSG_ERROR = 0x06, SER_MSG_PING = 0x07, SER_MSG_PONG = 0x08,
    SER_MSG_START = 0x09, SER_MSG_STOP = 0x0A, SER_MSG_ACK = 0x0B, SER_MSG_GET_STATS = 0x0C,
    SER_MSG_STATS = 0x0D, SER_MSG_RESEND = 0x0E /* revision 2 */
};
#define SER_MSG_TYPE_MAX 0x0E
#define SER_NO_SEQ 0xFFFF

/* Result flags (messages.ResultFlags) and error codes (messages.ErrorCode). */
enum { SER_RESULT_SILENCE = 0x01, SER_RESULT_UNCERTAIN = 0x02, SER_RESULT_GAP = 0x04, SER_RESULT_PUSH = 0x08 };
enum {
    SER_ERR_BAD_PAYLOAD = 1, SER_ERR_UNKNOWN_TYPE = 2, SER_ERR_NO_SESSION = 3, SER_ERR_WRONG_MODE = 4,
    SER_ERR_BAD_DIMS = 5, SER_ERR_UNSUPPORTED = 6, SER_ERR_ENGINE = 7, SER_ERR_GAP = 8,
    SER_ERR_STREAM_RESET = 9, SER_ERR_TOO_LARGE = 10, SER_ERR_VERSION = 11
};

/* Drop reasons, in the order of framing.DROP_REASONS ("payload" is reported by the message
 * helpers, not the frame decoder). ser_decoder_feed returns -(reason + 1) for a dropped frame. */
typedef enum {
    SER_DROP_COBS = 0, SER_DROP_SHORT, SER_DROP_CRC, SER_DROP_VERSION, SER_DROP_LENGTH,
    SER_DROP_OVERSIZE, SER_DROP_UNKNOWN_TYPE, SER_DROP_PAYLOAD, SER_DROP_N
} ser_drop_reason_t;

/* ---- primitives ---- */

/* CRC-32/ISO-HDLC (zlib.crc32). Incremental: crc = ser_crc32_update(0, a, n); crc = ...(crc, b, m). */
uint32_t ser_crc32_update(uint32_t crc, const uint8_t *data, size_t n);
uint32_t ser_crc32(const uint8_t *data, size_t n);

/* COBS encode n bytes into out (no delimiter); returns the encoded length, 0 if cap is too small
 * (an encoding is never empty). Identical to the Python `cobs` package. */
size_t ser_cobs_encode(const uint8_t *in, size_t n, uint8_t *out, size_t cap);

/* COBS decode one block (without its 0x00); out may equal in (in-place decoding). Returns the
 * decoded length, or -1 for invalid data (zero byte, code past the end, output over cap). */
long ser_cobs_decode(const uint8_t *in, size_t n, uint8_t *out, size_t cap);

/* ---- frames ---- */

/* Encode one complete wire frame (COBS + 0x00) into out; returns its length, 0 if it does not
 * fit in cap or the payload exceeds SER_PROTOCOL_MAX_PAYLOAD. SER_WIRE_SIZE(len) always fits. */
size_t ser_frame_encode(uint8_t type, uint16_t seq, const uint8_t *payload, size_t len,
                        uint8_t *out, size_t cap);

/* A decoded frame; payload points into the decoder's buffer (valid until the next feed). */
typedef struct {
    uint8_t version;
    uint8_t type;
    uint16_t seq;
    uint16_t length;
    const uint8_t *payload;
} ser_frame_t;

typedef struct {
    uint32_t bytes_in;
    uint32_t frames_ok;
    uint32_t empty;     /* zero-length segments (0x00 0x00): padding, not errors */
    uint32_t seq_lost;  /* frames missing according to sequence gaps */
    uint32_t dropped[SER_DROP_N];
    uint32_t seq_resync; /* sequence jumps taken as a peer restart (appended: layout-compatible) */
} ser_decoder_stats_t;

typedef struct {
    uint8_t buf[SER_COBS_MAX_ENCODED(SER_MAX_RAW_FRAME)];
    size_t len;
    size_t max_payload;  /* <= SER_MAX_PAYLOAD */
    size_t max_encoded;
    int discarding;      /* inside an oversize segment: skip to the next delimiter */
    int have_seq;
    uint16_t last_seq;
    ser_decoder_stats_t stats;
    /* Optional payload layout check run after the type check (e.g. ser_message_check): nonzero
     * drops the frame as SER_DROP_PAYLOAD before it counts as received, as the Python
     * FrameDecoder does. NULL (the default) = framing only. */
    int (*check)(uint8_t type, const uint8_t *payload, size_t len);
} ser_decoder_t;

/* max_payload 0 means SER_MAX_PAYLOAD; larger values are clamped to it. */
void ser_decoder_init(ser_decoder_t *d, size_t max_payload);
/* Forget a partial frame and the sequence history (e.g. after reopening the link). */
void ser_decoder_reset(ser_decoder_t *d);
/* The decoder's counters (for a STATS reply) and sizeof(ser_decoder_t) (host bindings). */
const ser_decoder_stats_t *ser_decoder_stats(const ser_decoder_t *d);
size_t ser_decoder_size(void);

/*
 * Feed one byte. Returns 1 when it completed a valid frame (*out filled), 0 when nothing
 * happened, or -(reason + 1) when it completed a frame that was dropped; for reasons checked after
 * the CRC (version, length, oversize, unknown_type) *out carries the header so the device can
 * answer with ERROR(ref_seq, ref_type).
 */
int ser_decoder_feed(ser_decoder_t *d, uint8_t byte, ser_frame_t *out);

/* ---- message helpers (payload layouts of messages.py) ---- */

/* AUDIO: u32 offset + int16 samples. Returns the sample count (0: a SYNC, revision 2), or -1 (bad
 * payload). The samples
 * are little-endian int16 at payload + 4 (read them with ser_audio_sample: the payload is not
 * necessarily 2-byte aligned). */
long ser_audio_parse(const uint8_t *payload, size_t len, uint32_t *offset);
int16_t ser_audio_sample(const uint8_t *payload, size_t i);

/* RESULT: fixed 21-byte head + n int8 scores. Returns the payload length (21 + n) or 0 if the
 * buffer is too small / label_index is out of range. */
size_t ser_result_payload(uint32_t window_index, uint16_t session, uint8_t label_index, uint8_t flags,
                          uint32_t t_start_ms, uint32_t t_end_ms, uint32_t latency_us,
                          const int8_t *scores, uint8_t n_scores, uint8_t *out, size_t cap);

/* ACK: u16 ref_seq, u8 ref_type, u8 status (4 bytes). */
size_t ser_ack_payload(uint16_t ref_seq, uint8_t ref_type, uint8_t status, uint8_t *out, size_t cap);

/* ERROR: u16 code, u16 ref_seq, u8 ref_type, UTF-8 text (<= 200 bytes; NUL-terminated input). */
size_t ser_error_payload(uint16_t code, uint16_t ref_seq, uint8_t ref_type, const char *text,
                         uint8_t *out, size_t cap);

/* The payload layout rules of messages.py for every type (lengths, string bounds, UTF-8,
 * RESULT label range). 0 = well formed, -1 = a "payload" drop. */
int ser_message_check(uint8_t type, const uint8_t *payload, size_t len);
/* Check every frame's payload with ser_message_check inside the decoder (on != 0), as the Python
 * FrameDecoder does: a malformed payload is a "payload" drop, not a received frame. */
void ser_decoder_check_messages(ser_decoder_t *d, int on);

/* START: u8 mode, pad, u16 session, u32 start_offset (exactly 8 bytes). 0 ok, -1 bad payload. */
int ser_start_parse(const uint8_t *payload, size_t len, uint8_t *mode, uint16_t *session,
                    uint32_t *start_offset);

/* RESEND (revision 2): u16 session, u8 n (1..SER_MAX_RESEND_RANGES), pad, n x (u32 first, u32 count).
 * Device -> host: stream ranges of AUDIO samples / FEATURES frames to send again; host -> device:
 * RESULT window ranges. ser_resend_payload returns the payload length (4 + 8n) or 0 (bad n, a count
 * of 0, or cap too small); ser_resend_parse returns n, or -1 for a bad payload, and fills at most
 * max_ranges pairs. */
size_t ser_resend_payload(uint16_t session, const uint32_t *first, const uint32_t *count, unsigned n,
                          uint8_t *out, size_t cap);
int ser_resend_parse(const uint8_t *payload, size_t len, uint16_t *session, uint32_t *first,
                     uint32_t *count, unsigned max_ranges);

#ifdef __cplusplus
}
#endif

#endif /* SER_PROTOCOL_H */
