"""Which shipped model a command runs: a name (``small``, ``pi``), a path, or ``auto`` for this device.

Up to two int8 models ship in ``edge_runtime/models/`` (this release: ``small`` only):

* ``small`` (alias ``mcu``) = ``default.tflite``: <= 64 KB, fits a microcontroller; the firmware and
  C-export default, and the default everywhere but on a Raspberry Pi.
* ``pi`` = ``pi.tflite``: a larger model for a Raspberry Pi (an ensemble of trainings of the same
  recipe in one graph, docs/model_card.md), shipped only when it beats the small one in CV.

``auto`` (the default of ``ser-edge run`` / ``serve``): ``$SER_EDGE_MODEL`` when set (a name or a
path), else on a Raspberry Pi the ``pi`` model if it is installed, else ``small``. Whether this
is a Raspberry Pi is read from the device tree (``/proc/device-tree/model``, e.g.
``Raspberry Pi 4 Model B Rev 1.4``), a pure function of that text (:func:`is_raspberry_pi`).

Every choice carries one line saying which model and why (:meth:`ModelChoice.describe`), printed
by the commands so a log shows what ran. Standard library only: this is read before any model loads.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, TypeVar

T = TypeVar("T")

_SOURCE_ROOT = Path(__file__).resolve().parent.parent  # shipped files are named relative to it
MODELS_DIR = _SOURCE_ROOT / "edge_runtime" / "models"
# name -> file in MODELS_DIR; "mcu" is an alias of "small" (the model that fits a microcontroller)
NAMED_MODELS = {"small": "default.tflite", "mcu": "default.tflite", "pi": "pi.tflite"}
AUTO = "auto"
ENV_VAR = "SER_EDGE_MODEL"
DEVICE_TREE_MODEL = Path("/proc/device-tree/model")


class ModelSelectionError(ValueError):
    """A model name or path that names no model file (one line: what was asked and what is missing)."""


@dataclass(frozen=True)
class ModelChoice:
    """A resolved model: the file, the shipped name it was chosen by (or ``None`` for a path), and why."""

    path: Path
    name: str | None
    reason: str
    auto: bool = False  # chosen by ``auto`` (then a pi model that cannot load here falls back to small)

    def describe(self) -> str:
        """One line for a log: ``model pi (edge_runtime/models/pi.tflite, 183,512 bytes): <reason>``."""
        size = f", {self.path.stat().st_size:,} bytes" if self.path.is_file() else ", missing"
        return f"model {self.name or self.path.name} ({_short(self.path)}{size}): {self.reason}"


def _short(p: Path) -> str:
    """``edge_runtime/models/x.tflite`` for a shipped file, else the path as given."""
    try:
        return str(p.resolve().relative_to(_SOURCE_ROOT))
    except ValueError:
        return str(p)


def is_raspberry_pi(device_tree_model: str | None) -> bool:
    """Whether a device-tree ``model`` string (NUL-terminated as the kernel gives it) is a Raspberry Pi
    board: every Pi, Pi Zero and Compute Module names itself ``Raspberry Pi ...``; other ARM boards
    (``Radxa ROCK 4``...), x86 (no device tree: ``None``) and empty text are not."""
    if not device_tree_model:
        return False
    return device_tree_model.strip("\x00 \t\r\n").startswith("Raspberry Pi")


def read_device_model(path: str | os.PathLike | None = None) -> str | None:
    """The device-tree model string at ``path`` (default :data:`DEVICE_TREE_MODEL`), or ``None`` when
    there is none (not a device-tree system, or unreadable)."""
    try:
        return Path(DEVICE_TREE_MODEL if path is None else path).read_bytes().decode("utf-8", "replace").strip("\x00 \t\r\n")
    except OSError:
        return None


def shipped_models(models_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    """Names of the shipped models installed in ``models_dir`` (default :data:`MODELS_DIR`) -> files."""
    d = Path(MODELS_DIR if models_dir is None else models_dir)
    return {n: d / f for n, f in NAMED_MODELS.items() if (d / f).is_file()}


def _named(spec: str, models_dir: Path, why: str) -> ModelChoice:
    path = models_dir / NAMED_MODELS[spec]
    if not path.is_file():
        have = ", ".join(sorted(shipped_models(models_dir))) or "none"
        raise ModelSelectionError(f"{why}{spec}: this install ships no such model ({_short(path)} is missing; "
                                  f"installed: {have})")
    return ModelChoice(path, spec, f"{why}named model {spec!r}" if why else f"--model {spec}")


def _path(spec: str, why: str) -> ModelChoice:
    p = Path(spec)
    if p.is_dir():
        raise ModelSelectionError(f"{why}{spec}: is a folder, expected a .tflite file")
    if not p.is_file():
        names = "/".join(n for n in NAMED_MODELS) + "/" + AUTO
        raise ModelSelectionError(f"{why}{spec}: no such file (and not a model name: {names})")
    if not os.access(p, os.R_OK):
        raise ModelSelectionError(f"{why}{spec}: not readable (permission denied)")
    return ModelChoice(p, None, f"{why}path" if why else "--model path")


def resolve_model(spec: str | None = AUTO, *, device_tree: str | os.PathLike | None = None,
                  env: Mapping[str, str] | None = None,
                  models_dir: str | os.PathLike | None = None) -> ModelChoice:
    """The model ``spec`` names: a shipped name (:data:`NAMED_MODELS`), a path to a .tflite, or
    ``auto``/``None`` (``$SER_EDGE_MODEL`` if set, else the pi model on a Raspberry Pi when installed,
    else the small one). Raises :class:`ModelSelectionError` when a named or given model is missing.

    ``device_tree`` (default :data:`DEVICE_TREE_MODEL`), ``env`` (default ``os.environ``) and
    ``models_dir`` (default :data:`MODELS_DIR`) are injectable for tests.
    """
    env = os.environ if env is None else env
    models_dir = Path(MODELS_DIR if models_dir is None else models_dir)
    if spec is None or spec == AUTO:
        forced = env.get(ENV_VAR, "").strip()
        if forced and forced != AUTO:
            why = f"${ENV_VAR}="
            return _named(forced, models_dir, why) if forced in NAMED_MODELS else _path(forced, why)
        board = read_device_model(device_tree)
        small = models_dir / NAMED_MODELS["small"]
        if is_raspberry_pi(board):
            pi = models_dir / NAMED_MODELS["pi"]
            if pi.is_file():
                return ModelChoice(pi, "pi", f"auto: {board} is a Raspberry Pi", auto=True)
            return ModelChoice(small, "small", f"auto: {board} is a Raspberry Pi, but this install ships no "
                                               f"pi model ({NAMED_MODELS['pi']})", auto=True)
        where = f"{board} is not a Raspberry Pi" if board else "not a Raspberry Pi (no device-tree model)"
        return ModelChoice(small, "small", f"auto: {where}", auto=True)
    if spec in NAMED_MODELS:
        return _named(spec, models_dir, "")
    return _path(spec, "")


def load_choice(choice: ModelChoice, load: Callable[[Path], T]) -> tuple[ModelChoice, T]:
    """``(choice, load(choice.path))``; when ``auto`` picked the pi model and it does not load with
    this install's interpreter (``ValueError``: e.g. tflite-runtime 2.14, the 32-bit OS's only
    interpreter, has no int8 ``LOG`` kernel), the small model instead, its reason saying why. A model
    named or given explicitly is never replaced: its error stands."""
    try:
        return choice, load(choice.path)
    except ValueError as e:
        if not (choice.auto and choice.name == "pi"):
            raise
        small = choice.path.with_name(NAMED_MODELS["small"])
        why = " ".join(str(e).split())
        fallback = ModelChoice(small, "small", f"{choice.reason}, but the pi model does not load here ({why})",
                               auto=True)
        return fallback, load(small)
