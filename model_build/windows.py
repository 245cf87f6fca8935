"""Training-side views of the runtime's window policy (``edge_runtime.window_policy``): no windowing here.

``make_windows`` cuts each clip with :func:`edge_runtime.window_policy.plan_windows` (the windows
``ser-edge run`` classifies: every ``hop_frames``, the end-aligned tail flush, a short clip padded
with the front end's digital-silence frame), and ``aggregate`` turns window probabilities into clip
scores by the policy's rule (mean log-probability). Training uses a denser hop than inference,
nothing else differs. The published accuracy does not come from here: it runs the int8 model
through ``StreamingClassifier`` (speech gate included) in :mod:`model_build.evaluate`.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from edge_runtime.window_policy import WindowPolicy, cut_windows, log_softmax


@lru_cache(maxsize=16)
def _silence_frame(cfg) -> np.ndarray:
    from edge_runtime.classifier import silence_features

    return silence_features(cfg)


def silence_frame(cfg) -> np.ndarray:
    """The front end's output for one frame of digital silence (the padding value), raw Q units."""
    return _silence_frame(cfg).copy()


def clip_windows(feats: np.ndarray, window_frames: int, hop_frames: int, pad_frame: np.ndarray,
                 policy: WindowPolicy | None = None) -> np.ndarray:
    """``(n_windows, window_frames, n_features)`` windows of one clip (the runtime's windows)."""
    pol = (policy or WindowPolicy()).resolve(window_frames, hop_frames)
    return cut_windows(np.asarray(feats), pol, pad_frame)


def make_windows(feats_list, window_frames: int, hop_frames: int, pad_frame: np.ndarray,
                 labels=None, policy: WindowPolicy | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Windows of many clips: ``(X, clip_index, y)``; ``y`` repeats each clip's label per window.

    A clip shorter than the policy's ``min_frames`` has no window (the runtime gives it none either).
    """
    pol = (policy or WindowPolicy()).resolve(window_frames, hop_frames)
    xs, idx = [], []
    for i, f in enumerate(feats_list):
        w = cut_windows(np.asarray(f), pol, pad_frame)
        xs.append(w)
        idx.append(np.full(len(w), i, dtype=np.int64))
    X = np.concatenate(xs) if xs else np.zeros((0, window_frames, len(pad_frame)))
    ci = np.concatenate(idx) if idx else np.zeros(0, np.int64)
    y = None if labels is None else np.asarray(labels)[ci]
    return X, ci, y


def aggregate(window_probs: np.ndarray, clip_index: np.ndarray, n_clips: int) -> np.ndarray:
    """Clip scores by the policy's rule: softmax of the mean log-probability of each clip's windows
    (its argmax is the runtime's utterance label); a clip without windows gets uniform scores."""
    p = np.asarray(window_probs, np.float64)
    lp = np.log(np.maximum(p, 1e-12))
    out = np.zeros((n_clips, p.shape[1]))
    np.add.at(out, clip_index, lp)
    counts = np.bincount(clip_index, minlength=n_clips).astype(np.float64)
    return np.exp(log_softmax(out / np.maximum(counts, 1)[:, None]))


def softmax(z: np.ndarray) -> np.ndarray:
    """Softmax over the last axis."""
    return np.exp(log_softmax(z))
