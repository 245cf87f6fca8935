"""Regenerate tests/golden/frontend_golden.json. Run only after an intentional arithmetic change
(and bump ALGORITHM_VERSION): the whole point of the golden file is to catch unintended ones.

    python tests/golden/regen_frontend_golden.py
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np


def golden_signal(n: int = 2048) -> np.ndarray:
    """Deterministic int16 signal from integer arithmetic only (identical on every platform):
    a triangle wave + a 32-bit LCG noise + an impulse + a full-scale burst (saturation path)."""
    out = np.empty(n, dtype=np.int16)
    state = 12345
    for i in range(n):
        state = (1103515245 * state + 12345) & 0xFFFFFFFF
        noise = ((state >> 16) & 0x7FF) - 1024  # +-1024
        tri = (i * 97) % 8000
        tri = (tri if tri < 4000 else 8000 - tri) * 4 - 8000  # +-8000
        v = tri + noise
        if i == 700:
            v = 32767
        if 1500 <= i < 1600:
            v = 32767 if i % 2 else -32768
        out[i] = max(-32768, min(32767, v))
    return out


def tables_digest(cfg) -> str:
    from edge_runtime.frontend import make_tables

    t = make_tables(cfg)
    h = hashlib.sha256()
    arrays = [t.window_q, t.fft_cos_q, t.fft_sin_q, t.rfft_cos_q, t.rfft_sin_q, t.mel.rise_q, t.mel.seg_len, t.log_table_q, t.dct_q]
    if cfg.algorithm_version >= 2:  # v1 digests predate the permutation's inclusion: keep them
        arrays.append(t.bitrev)
    for a in arrays:
        h.update(np.ascontiguousarray(a).astype("<i8").tobytes())
    return h.hexdigest()[:16]


#: Golden cases: name -> FrontendConfig keyword arguments. "mfcc"/"logmel" are version 1 (the
#: shipped model's front end; never regenerate them by accident), "v2_*" version 2. norm_shift=2
#: reaches the exponential smoother's steady state within the 7 frames of the golden signal.
CASES = {
    "mfcc": dict(algorithm_version=1, output="mfcc"),
    "logmel": dict(algorithm_version=1, output="logmel"),
    "v2_mfcc": dict(algorithm_version=2, output="mfcc"),
    "v2_logmel": dict(algorithm_version=2, output="logmel"),
    "v2_logmel_shift2": dict(algorithm_version=2, output="logmel", norm_shift=2),
    "v2_logmel_nonorm": dict(algorithm_version=2, output="logmel", norm="none"),
}


def main() -> None:
    from edge_runtime.frontend import FrontendConfig, compute_features

    x = golden_signal()
    doc = {"signal": "tests/golden/regen_frontend_golden.py:golden_signal(2048)", "cases": {}}
    old = json.loads(Path(__file__).with_name("frontend_golden.json").read_text())["cases"]
    for name, kw in CASES.items():
        cfg = FrontendConfig(**kw)
        if cfg.algorithm_version == 1 and name in old:  # version 1 is frozen: keep its vectors
            doc["cases"][name] = old[name]
            continue
        doc["cases"][name] = {
            "config_hash": cfg.hash,
            "tables_digest": tables_digest(cfg),
            "features": compute_features(x, cfg).tolist(),
        }
    path = Path(__file__).with_name("frontend_golden.json")
    path.write_text(json.dumps(doc, separators=(",", ":")) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
