"""Binary serial protocol shared by the device (edge_runtime) and the host (firmware_bridge).

Pure Python + numpy; uses the ``cobs`` package when installed, else a built-in COBS codec. No
pyserial here: transports live in ``edge_runtime.serial_device`` and ``firmware_bridge``.
Specification: docs/protocol.md.
"""
from ._cobs import COBS_BACKEND, CobsError, cobs_decode, cobs_encode
from .framing import (CRC_SIZE, DROP_REASONS, HEADER_SIZE, MAX_ENCODED_FRAME, MAX_PAYLOAD,
                      MAX_RAW_FRAME, PROTOCOL_VERSION, DecoderStats, FrameDecoder, Received,
                      Sequencer, build_raw_frame, crc32, encode_frame, encode_message)
from .messages import (DEVICE_TO_HOST, HOST_TO_DEVICE, INFO_FLAG_BOOT, MAX_RESEND_RANGES,
                       MESSAGE_CLASSES, NO_GATE, NO_SEQ, PROTOCOL_REVISION, STATS_FIELDS, Accepts,
                       Ack, AckStatus, Audio, Error, ErrorCode, Features, GetStats, Hello, Info,
                       InfoExtFlags, Message, Mode, MsgType, PayloadError, Ping, Pong, Resend,
                       Result, ResultFlags, Start, Stats, Stop)

__all__ = [
    "COBS_BACKEND", "CobsError", "cobs_decode", "cobs_encode", "CRC_SIZE", "DROP_REASONS",
    "HEADER_SIZE", "MAX_ENCODED_FRAME", "MAX_PAYLOAD", "MAX_RAW_FRAME", "PROTOCOL_VERSION",
    "DecoderStats", "FrameDecoder", "Received", "Sequencer", "build_raw_frame", "crc32",
    "encode_frame", "encode_message", "INFO_FLAG_BOOT", "MESSAGE_CLASSES", "NO_SEQ",
    "STATS_FIELDS", "Accepts", "Ack", "Audio", "Error", "ErrorCode", "Features", "GetStats",
    "Hello", "Info", "Message", "Mode", "MsgType", "PayloadError", "Ping", "Pong", "Result",
    "ResultFlags", "Start", "Stats", "Stop", "DEVICE_TO_HOST", "HOST_TO_DEVICE",
    "MAX_RESEND_RANGES", "NO_GATE", "PROTOCOL_REVISION", "AckStatus", "InfoExtFlags", "Resend",
]
