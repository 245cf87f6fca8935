"""The validation rows run through the runtime: the int8 row's clip labels are exactly what
`StreamingClassifier` (what `ser-edge run` uses) gives; the float rows share the policy and gate."""
from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def clips():
    from edge_runtime.test_signals import nonspeech_signals
    from tests.test_runtime_helpers import speechlike

    audio = [speechlike(s, seed=i) for i, s in enumerate((0.7, 1.3, 2.2, 3.1))]
    audio.append(nonspeech_signals(seconds=2.0, levels_dbfs=(-25.0,))["white@-25"])  # no label
    return audio


def test_int8_row_is_the_runtime(tiny_model_build, tiny_model_path, clips):
    from edge_runtime.classifier import StreamingClassifier
    from model_build.evaluate import EvalInputs, NO_LABEL, validate

    labels = list(tiny_model_build.metadata["labels"])
    y = np.array([0, 1, 2, 3, 0])
    val = validate(tiny_model_build.keras_model, tiny_model_build.model_bytes, EvalInputs(clips, y), labels,
                   run_tflm=True)
    assert val["eval_path"] == "runtime"
    clf = StreamingClassifier.from_model(tiny_model_path, backend="litert")
    want = []
    for x in clips:
        s = clf.classify_clip(x)[2]
        want.append(NO_LABEL if s.label_index is None else s.label_index)
    rows = val["rows"]
    assert rows["int8_litert"]["clips_without_label"] == 1 and want[-1] == NO_LABEL
    pred = [int(p) for p in np.asarray(val["rows"]["int8_litert"]["confusion"]).sum(0)]
    assert sum(pred) == len(clips) - 1  # the white-noise clip is a miss, not a class
    # the int8 row's accuracy is exactly what the runtime's labels give
    assert rows["int8_litert"]["accuracy"] == pytest.approx(np.mean(np.array(want) == y))
    for name in ("keras_float_twin", "keras_float_fixed", "int8_tflm"):
        assert rows[name]["clips_without_label"] == 1, name  # same gate and policy in every row
    assert val["tflm_vs_litert"]["max_abs_lsb"] <= 2


def test_batched_keras_rows_equal_window_by_window(tiny_model_build, clips):
    """The float rows classify all windows in one Keras batch; the result equals one call per window."""
    from edge_runtime.model_metadata import read_metadata
    from model_build.evaluate import KerasWindowModel, _runtime_pass, runtime_eval
    from edge_runtime.classifier import StreamingClassifier

    km = KerasWindowModel(tiny_model_build.keras_model, read_metadata(tiny_model_build.model_bytes))
    batched = runtime_eval(km, clips)
    single = _runtime_pass(StreamingClassifier(km), clips, None, None)
    assert np.array_equal(batched.pred, single.pred)
    np.testing.assert_allclose(batched.window_scores, single.window_scores, rtol=1e-4, atol=1e-5)
