"""Where does the int8 model disagree with its float twin? (the diagnosis behind ``--qat-epochs``)

For kept CV fold models (a ``bench/accuracy.py --out`` folder: ``*.tflite`` + ``*_float.npz`` +
``manifest.json``), on each fold's *test* actors' windows (every ``hop_frames``, the runtime's
windows, no speech gate) with the fixed-point front end's features:

1. **Per-tensor error of the shipped int8 model.** The int8 interpreter keeps every intermediate
   tensor (``experimental_preserve_all_tensors``); each is dequantised and compared with the float
   model's output at the same point (normaliser folded, temperature folded, so the same function):
   relative RMS error ``rms(int8 - float) / rms(float)``, and the error in units of the tensor's
   int8 step. The error accumulates, so this says where it *grows*.
2. **Agreement when one stage is left in float.** ``tf.lite.experimental.QuantizationDebugger``
   with ``denylisted_ops`` converts the same float model with that op kind kept in float
   (quantise / dequantise around it), everything else as shipped; the window top-1 agreement with
   the float model then says how much of the disagreement that stage causes. ``input only``:
   every op in float, only the int8 input quantisation kept.

Writes ``bench/results/qat_diagnosis.json`` and prints both tables.

    python bench/qat_diagnose.py --models /work/wt/model2/runs/cv_seeds --pairs 0:0,1:0,2:0
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "qat_diagnosis.json"
# op kinds of the shipped graph (besides the int8 input/output) and what they compute
STAGES = ("CONV_2D", "MAX_POOL_2D", "UNIDIRECTIONAL_SEQUENCE_LSTM", "FULLY_CONNECTED")
KEYS = {"CONV_2D": "conv", "MAX_POOL_2D": "maxpool", "UNIDIRECTIONAL_SEQUENCE_LSTM": "lstm", "FULLY_CONNECTED": "dense"}
# rows of table 2: key -> what is kept in float (everything else int8 as shipped)
ROW_LABELS = {"none": "nothing (as shipped; the debugger's own conversion)", "conv_float": "both CONV_2D (conv1, conv2)",
              "maxpool_float": "MAX_POOL_2D", "lstm_float": "the fused LSTM", "dense_float": "FULLY_CONNECTED (logits)",
              "all_ops_float_input_only": "every op (only the int8 input quantisation left)"}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _fold_inputs(models: Path, name: str, data: str):
    """The fold model's test windows (raw log2 units and int8) and its float model (logits / T)."""
    from edge_runtime.interpreter import IntModel
    from edge_runtime.model_metadata import read_metadata
    from model_build.calibrate import fold_temperature
    from model_build.corpora import load_corpus, open_corpus
    from model_build.features import fixed_point_features, to_real
    from model_build.models import export_model
    from model_build.pipeline import load_float
    from model_build.windows import make_windows, silence_frame

    import dataclasses

    man = {m["name"]: m for m in json.loads((models / "manifest.json").read_text())["models"]}[name]
    path = models / man["path"]
    data_bytes = path.read_bytes()
    meta = read_metadata(data_bytes)
    fe = meta.frontend_config()
    idx = open_corpus(Path(data) / "ravdess")
    idx = dataclasses.replace(idx, clips=tuple(c for c in idx.clips if c.speaker in set(man["test_speakers"])))
    _, audios, _ = load_corpus(idx, progress=False)
    feats = fixed_point_features(audios, fe, progress=False)
    Xq, _, _ = make_windows(feats, meta.window_frames, meta.hop_frames, silence_frame(fe))
    keras, mcfg, calib = load_float(path.with_name(path.stem + "_float.npz"))
    exp = export_model(keras, mcfg, calib.shape[1], calib.shape[2], len(meta.labels))
    t = float(meta.extra.get("calibration", {}).get("temperature", 1.0))
    if t != 1.0:
        fold_temperature(exp, t)
    exp._ser_cfg = mcfg.to_dict()
    x8 = IntModel(data_bytes).quantize(Xq)
    return data_bytes, exp, calib, to_real(Xq, fe), x8


def _float_activations(exp, X: np.ndarray) -> dict[str, np.ndarray]:
    """Outputs of the export model's layers that end an int8 op, for a batch of windows (the batch-1
    export graph's weights copied into a dynamic-batch twin)."""
    import tf_keras

    from model_build.models import ModelConfig, build_model

    names = ["relu1", "relu2", "pool", "lstm", "logits"]
    cfg = ModelConfig(**exp._ser_cfg)
    twin = build_model(cfg, X.shape[1], X.shape[2], exp.output_shape[-1], fold_norm=True, with_softmax=False)
    twin.set_weights(exp.get_weights())
    m = tf_keras.Model(twin.inputs, [twin.get_layer(n).output for n in names])
    outs = m.predict(X, batch_size=256, verbose=0)
    return {n: np.asarray(o, np.float64) for n, o in zip(names, outs)}


def _int8_tensors(model_bytes: bytes, x8: np.ndarray):
    """Every op's output tensor of the int8 model, dequantised, per window; and the op list."""
    import tensorflow as tf

    # reference kernels (no XNNPACK delegate): a delegated partition's inner tensors are not kept
    it = tf.lite.Interpreter(model_content=model_bytes, experimental_preserve_all_tensors=True, num_threads=1,
                             experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    ops = it._get_ops_details()
    inp = it.get_input_details()[0]["index"]
    details = {d["index"]: d for d in it.get_tensor_details()}
    outs = {op["index"]: [] for op in ops}
    for w in x8:
        it.reset_all_variables()
        it.set_tensor(inp, w[None])
        it.invoke()
        for op in ops:
            t = op["outputs"][0]
            d = details[t]
            s, z = d["quantization"]
            v = it.get_tensor(t).astype(np.float64)
            outs[op["index"]].append((v - z) * s if s else v)
    return ops, {k: np.stack(v) for k, v in outs.items()}, details


def _rel_rms(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)) / max(np.sqrt(np.mean(b ** 2)), 1e-12))


def per_tensor_error(model_bytes, exp, X, x8) -> list[dict]:
    """Table 1 rows for one fold model: each int8 op output vs the float layer it stands for."""
    ops, t8, details = _int8_tensors(model_bytes, x8)
    fl = _float_activations(exp, X)
    # the shipped graph in order: QUANTIZE? CONV(relu1) CONV(relu2) MAXPOOL (RESHAPEs) LSTM ... FC(logits)
    want = {"CONV_2D": ["relu1", "relu2"], "MAX_POOL_2D": ["pool"], "UNIDIRECTIONAL_SEQUENCE_LSTM": ["lstm"],
            "FULLY_CONNECTED": ["logits"]}
    rows = []
    seen: dict[str, int] = {}
    for op in ops:
        kind = op["op_name"]
        if kind not in want:
            continue
        k = seen.get(kind, 0)
        seen[kind] = k + 1
        if k >= len(want[kind]):
            continue
        layer = want[kind][k]
        a = t8[op["index"]]
        f = fl[layer]
        if layer == "lstm":  # the fused op outputs every step; the model reads the last one
            a = a.reshape(len(X), -1, f.shape[-1])[:, -1]
        a = a.reshape(f.shape)
        scale = details[op["outputs"][0]]["quantization"][0]
        err = a - f
        rows.append({"stage": layer, "op": kind, "rel_rms_error": _rel_rms(a, f),
                     "rms_error_in_steps": float(np.sqrt(np.mean(err ** 2)) / scale) if scale else None,
                     "int8_step": scale, "float_range": [float(f.min()), float(f.max())]})
    logit_op = [op for op in ops if op["op_name"] == "FULLY_CONNECTED"][-1]
    z8 = t8[logit_op["index"]].reshape(len(X), -1)
    rows.append({"stage": "top-1", "op": "argmax", "agreement": float(np.mean(z8.argmax(1) == fl["logits"].argmax(1)))})
    return rows


def agreement_with_float_stage(exp, calib, x_in, zf, denylist: list[str] | None, everything: bool = False) -> float:
    """Window top-1 agreement with the float logits ``zf`` of the model converted with the op kinds in
    ``denylist`` kept in float (QuantizationDebugger's selective quantisation); int8 input as shipped."""
    import tensorflow as tf

    from model_build.convert import representative_dataset

    def conv():
        c = tf.lite.TFLiteConverter.from_keras_model(exp)
        c.optimizations = [tf.lite.Optimize.DEFAULT]
        c.representative_dataset = representative_dataset(calib, len(calib))
        return c

    opts = tf.lite.experimental.QuantizationDebugOptions(
        denylisted_ops=list(STAGES) if everything else list(denylist or []))
    dbg = tf.lite.experimental.QuantizationDebugger(converter=conv(), debug_dataset=representative_dataset(calib, 8),
                                                    debug_options=opts)
    model = dbg.get_nondebug_quantized_model()
    it = tf.lite.Interpreter(model_content=model, num_threads=1)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    s_in, z_in = inp["quantization"]
    s_out, z_out = out["quantization"]
    # the shipped int8 input codes (the runtime's integer quantiser), dequantised with the shipped scale
    # when this model takes float input: its QUANTIZE op gives the same codes back
    s_in, z_in = inp["quantization"]
    pred = []
    for w in range(len(x_in)):
        it.reset_all_variables()
        it.set_tensor(inp["index"], x_in[w][None].astype(inp["dtype"]))
        it.invoke()
        pred.append(int(np.argmax(it.get_tensor(out["index"]))))
    return float(np.mean(np.array(pred) == zf.argmax(1)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", required=True, help="a bench/accuracy.py --out folder (kept fold models)")
    ap.add_argument("--pairs", default="0:0,1:0,2:0", help="SEED:FOLD,... of the fold models to diagnose")
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--max-windows", type=int, default=400, help="test windows per model (evenly spaced)")
    ap.add_argument("--results", default=str(RESULTS))
    args = ap.parse_args(argv)
    models = Path(args.models)
    res: dict = {"models": str(models), "pairs": args.pairs, "per_model": []}
    t0 = time.time()
    for pair in [p for p in args.pairs.split(",") if p]:
        seed, fold = (int(v) for v in pair.split(":"))
        name = f"ravdess_s{seed}_fold{fold}"
        model_bytes, exp, calib, X, x8 = _fold_inputs(models, name, args.data)
        if len(X) > args.max_windows:
            keep = np.linspace(0, len(X) - 1, args.max_windows).round().astype(int)
            X, x8 = X[keep], x8[keep]
        log(f"{name}: {len(X)} test windows [{time.time() - t0:.0f}s]")
        rows = per_tensor_error(model_bytes, exp, X, x8)
        zf = _float_activations(exp, X)["logits"]
        from edge_runtime.model_metadata import read_metadata

        md = read_metadata(model_bytes)
        x_deq = ((x8.astype(np.float64) - md.input_zero_point) * md.input_scale).astype(np.float32)
        float_stage = {}
        for label, deny, every in [("none", [], False), *[(f"{KEYS[s]}_float", [s], False) for s in STAGES],
                                   ("all_ops_float_input_only", None, True)]:
            float_stage[label] = agreement_with_float_stage(exp, calib, x_deq, zf, deny, every)
            log(f"  {label}: agreement {float_stage[label]:.4f} [{time.time() - t0:.0f}s]")
        res["per_model"].append({"name": name, "windows": int(len(X)), "per_tensor": rows,
                                 "agreement_with_stage_in_float": float_stage})
    # mean over models
    stages = [r["stage"] for r in res["per_model"][0]["per_tensor"] if r["stage"] != "top-1"]
    res["per_tensor_mean"] = {s: {k: float(np.mean([next(r for r in m["per_tensor"] if r["stage"] == s)[k]
                                                      for m in res["per_model"]]))
                                  for k in ("rel_rms_error", "rms_error_in_steps")} for s in stages}
    res["agreement_int8_shipped"] = float(np.mean([m["per_tensor"][-1]["agreement"] for m in res["per_model"]]))
    labels = list(res["per_model"][0]["agreement_with_stage_in_float"])
    res["agreement_with_stage_in_float_mean"] = {
        k: float(np.mean([m["agreement_with_stage_in_float"][k] for m in res["per_model"]])) for k in labels}
    res["windows_per_model"] = int(min(m["windows"] for m in res["per_model"]))
    res["seconds"] = round(time.time() - t0)
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(json.dumps(res, indent=1) + "\n")
    print("| stage | relative RMS error vs float | RMS error in int8 steps |\n|---|---|---|")
    for s, v in res["per_tensor_mean"].items():
        print(f"| {s} | {v['rel_rms_error']:.4f} | {v['rms_error_in_steps']:.2f} |")
    print(f"\nshipped int8 window top-1 agreement with float: {res['agreement_int8_shipped']:.4f}\n")
    print("| kept in float | window agreement with float |\n|---|---|")
    for k, v in res["agreement_with_stage_in_float_mean"].items():
        print(f"| {ROW_LABELS[k]} | {v:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
