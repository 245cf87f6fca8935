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
    for a in (t.window_q, t.fft_cos_q, t.fft_sin_q, t.rfft_cos_q, t.rfft_sin_q, t.mel.rise_q, t.mel.seg_len, t.log_table_q, t.dct_q):
        h.update(np.ascontiguousarray(a).astype("<i8").tobytes())
    return h.hexdigest()[:16]


def main() -> None:
    from edge_runtime.frontend import FrontendConfig, compute_features

    x = golden_signal()
    doc = {"signal": "tests/golden/regen_frontend_golden.py:golden_signal(2048)", "cases": {}}
    for output in ("mfcc", "logmel"):
        cfg = FrontendConfig(output=output)
        doc["cases"][output] = {
            "config_hash": cfg.hash,
            "tables_digest": tables_digest(cfg),
            "features": compute_features(x, cfg).tolist(),
        }
    path = Path(__file__).with_name("frontend_golden.json")
    path.write_text(json.dumps(doc, separators=(",", ":")) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
