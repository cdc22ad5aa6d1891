"""What a run writes: the run record (result.json / eval.json), the JSONL metrics log and TensorBoard summaries.

The run record is one `RunRecord` with a format version: training and `--mode=eval` write it
the same way, and results, status and the figures read it through `RunRecord.from_json` and
nothing else. Accuracies are fractions in [0, 1]. It is committed as effscale.storage defines it (a
renamed temporary file locally, one object upload on gs://), so a reader never sees half a record
and a record's presence means the run finished. Only process 0 writes; the writers are no-ops elsewhere.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import math
import os
import platform
import shutil
import tempfile
import typing
from collections.abc import Mapping
from typing import Any

from effscale import storage

RESULT = "result.json"  # written by training
EVAL = "eval.json"  # written by --mode=eval
METRICS = "metrics.jsonl"
# A metrics-log event that carries a stopped run's unlogged train metrics to its resume, which removes it.
CARRY = "carry"
FORMAT_VERSION = 1  # records written before versions existed read as version 0 (the same field names)
STATUSES = ("finished", "evaluated")
FRACTIONS = (
    "eval_top1",
    "eval_top5",
    "eval_top1_ema",
    "eval_top5_ema",
    "best_eval_top1",
    "train_accuracy",
    "val_top1",
    "val_top1_ema",
    "best_val_top1",
    "test_top1",
    "test_top5",
    "test_top1_ema",
    "test_top1_best",
)
_PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "tensorflow", "tensorflow-datasets", "numpy")


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Writes `text` to `path` (local or gs://) atomically: readers see the old file or the new one, never a mix.

    See effscale.storage.write_atomic: locally a synced temporary file renamed over `path`, created
    with mode 0666 less the umask as `open` would (records on a shared cluster stay readable by the
    group); on gs:// one object upload.
    """
    storage.write_atomic(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Writes `obj` as indented JSON to `path` atomically (see `write_text`)."""
    write_text(path, json.dumps(_jsonable(obj), indent=2, sort_keys=True, default=json_default) + "\n")


def json_default(value: Any) -> Any:
    """What JSON cannot hold natively: arrays as lists, sets sorted, anything else as its str."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, set | frozenset):
        return sorted(value)
    return str(value)


def _jsonable(obj: Any) -> Any:
    """Plain JSON values; non-finite floats become None (JSON has no NaN)."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:  # numpy / jax scalars
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def package_versions() -> dict[str, str | None]:
    """Versions of the packages that decide the numbers, plus Python's."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


class MetricsWriter:
    """Appends metrics to `<workdir>/metrics.jsonl` and TensorBoard event files under `<workdir>/tb` (local or gs://).

    Each JSONL line is one event: {"step": ..., "kind": "train" | "eval" | CARRY, ...}.
    `enabled=False` (processes other than 0) makes every call a no-op. On gs://, which has no
    appends, the log is kept in memory and uploaded whole after each event, and TensorBoard writes
    to a local staging directory whose files are uploaded after each flush (tf.io.gfile's own GCS
    client is not used: it cannot be pointed at an emulator); each upload is all or nothing.
    """

    def __init__(self, workdir: str | os.PathLike[str], enabled: bool = True):
        self.enabled = enabled
        root = storage.path(workdir, "workdir")
        self._path = root / METRICS
        self._tb_dir = root / "tb"
        self._tb = None
        self._remote = storage.is_object_store(root)
        self._staging: str | None = None  # gs://: where TensorBoard writes before each upload
        self._lines: list[str] | None = None  # gs://: the log as uploaded last
        if enabled:
            storage.makedirs(root)

    def write(self, step: int, kind: str, metrics: Mapping[str, Any]) -> None:
        """Logs one event; its scalars also go to TensorBoard, except a CARRY event's (not a measurement)."""
        if not self.enabled:
            return
        line = json.dumps(_jsonable({"step": int(step), "kind": kind, **metrics}), sort_keys=True) + "\n"
        if self._remote:
            if self._lines is None:
                self._lines = self._read_lines()
            self._lines.append(line)
            storage.write_atomic(self._path, "".join(self._lines).encode("utf-8"))
        else:
            with open(self._path, "a") as f:
                f.write(line)
        if kind != CARRY:
            self._summaries(step, kind, metrics)

    def _read_lines(self) -> list[str]:
        try:
            text = storage.read_bytes(self._path).decode("utf-8", errors="replace")
        except FileNotFoundError:
            return []
        return text.splitlines(keepends=True)

    def _summaries(self, step: int, kind: str, metrics: Mapping[str, Any]) -> None:
        import tensorflow as tf
        from tensorflow.core.framework import summary_pb2

        if self._tb is None:
            if self._remote:
                self._staging = tempfile.mkdtemp(prefix="effscale-tb-")
            self._tb = tf.summary.create_file_writer(self._staging or os.fspath(self._tb_dir))
        # tf.summary.scalar lives in the tensorboard package (not installed); the core writer
        # plus the 'scalars' plugin tag produces the same events.
        meta = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))
        with self._tb.as_default():
            for name, value in metrics.items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    tf.summary.write(f"{kind}/{name}", tf.constant(float(value)), step=int(step), metadata=meta)
        self._tb.flush()
        self._upload_events()

    def _upload_events(self) -> None:
        """Copies the staged event files to `<workdir>/tb` (gs:// only)."""
        if self._staging is None:
            return
        for name in sorted(os.listdir(self._staging)):
            with open(os.path.join(self._staging, name), "rb") as f:
                storage.write_atomic(self._tb_dir / name, f.read())

    def rewind(self, step: int) -> list[dict[str, Any]]:
        """Drops the events after `step` (logged after the checkpoint a run resumes from) and returns the rest.

        A killed run may have logged steps past its last checkpoint; the resumed run logs
        them again, so the log reads as one uninterrupted run. CARRY events are returned
        but no longer kept: the resume takes over what they carry.
        """
        kept = []
        for line in self._read_lines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by kill -9
                continue
            if event.get("step", 0) <= step:
                kept.append(event)
        if not kept and not storage.exists(self._path):
            return []
        if self.enabled:
            lines = [json.dumps(e, sort_keys=True) + "\n" for e in kept if e.get("kind") != CARRY]
            storage.write_atomic(self._path, "".join(lines).encode("utf-8"))
            self._lines = lines
        return kept

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._upload_events()
            self._tb = None
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None


class RecordError(ValueError):
    """A run record that does not parse or lacks a field of its schema."""


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """What one run trained, on what, and what it measured: the schema of result.json and eval.json.

    One name per field; accuracies are fractions. Counts are the analytic ones of the network the
    run trained (effscale.complexity on the resolved config, the dataset's class count included).
    Optional fields are None when the run could not measure them (e.g. xla_flops when not asked for).
    """

    # What was trained.
    status: str  # one of STATUSES
    dataset: str
    num_classes: int
    width: float
    depth: float
    resolution: int
    params: int
    macs: int
    activations: int
    batch_size: int
    steps: int
    steps_per_epoch: int
    epochs: float
    # The final evaluation (raw and EMA weights) on the evaluation split (config.data.eval_split: the test split).
    eval_top1: float
    eval_top5: float
    eval_top1_ema: float
    eval_top5_ema: float
    eval_loss: float
    eval_loss_ema: float
    eval_examples: int
    # Optional: phi only for compound-scaled networks; measurements a run may lack.
    phi: float | None = None
    xla_flops: float | None = None
    eval_images_per_sec: float | None = None
    # Training: the eval split's top-1 of the weights chosen on validation (test_top1_best); without a validation
    # split (data.validation='none', or records written before it existed), the best in-run eval-split top-1.
    best_eval_top1: float | None = None
    # The held-out validation split (config.data.validation): the final weights (raw, EMA), and the best in-run
    # evaluation (top-1 of raw or EMA weights) and its step. None without a validation split.
    val_top1: float | None = None
    val_top1_ema: float | None = None
    val_examples: int | None = None
    best_val_top1: float | None = None
    best_val_step: int | None = None
    # The test split (config.data.eval_split) at the end: the final weights (the same as eval_*), their EMA, and
    # the better (raw or EMA) weights of the best validation step.
    test_top1: float | None = None
    test_top5: float | None = None
    test_top1_ema: float | None = None
    test_top1_best: float | None = None
    train_loss: float | None = None
    train_accuracy: float | None = None
    train_images_per_sec: float | None = None
    step_time_s: float | None = None
    # Of the train loop's wall time, the fraction blocked on the input pipeline (near 1: host-bound).
    input_wait_fraction: float | None = None
    resumed_from_step: int | None = None
    compile_time_s: float | None = None
    compile_cache_hits: int | None = None  # compiles JAX's persistent cache served (effscale.compile_cache)
    wall_time_s: float | None = None
    # Peak memory (effscale.training.memory): the largest device allocation (None where the backend keeps no
    # statistics, as XLA:CPU) and the host process's resident set, since the run started where the OS allows.
    peak_memory_bytes: int | None = None
    peak_host_memory_bytes: int | None = None
    # Where it ran and with what.
    device_kind: str | None = None
    platform: str | None = None
    device_count: int | None = None
    local_device_count: int | None = None
    process_count: int | None = None
    packages: dict[str, str | None] = dataclasses.field(default_factory=dict)
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def to_json(self) -> dict[str, Any]:
        """The record as plain JSON values (what result.json holds)."""
        return _jsonable(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, obj: Any) -> RunRecord:
        """Parses a record of this version or an older one; raises RecordError naming what is wrong."""
        if not isinstance(obj, Mapping):
            raise RecordError(f"a run record is a JSON object, got {type(obj).__name__}")
        version = obj.get("format_version", 0)
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise RecordError(
                f"format_version {version!r} is newer than this effscale reads ({FORMAT_VERSION}): upgrade effscale"
            )
        fields = {f.name: f for f in dataclasses.fields(cls)}
        required = [n for n, f in fields.items() if _required(f)]
        missing = [n for n in required if obj.get(n) is None]
        if missing:
            raise RecordError(f"missing fields {', '.join(missing)}")
        if obj["status"] not in STATUSES:
            raise RecordError(f"status must be one of {STATUSES}, got {obj['status']!r}")
        values = {n: obj[n] for n in fields if n in obj}
        _check_values(values, _numeric_fields(cls))
        values["format_version"] = FORMAT_VERSION
        return cls(**values)


def _required(field: dataclasses.Field) -> bool:
    return field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING


def _numeric_fields(cls: type) -> frozenset[str]:
    """The fields typed int or float (optional or not)."""
    hints = typing.get_type_hints(cls)
    return frozenset(n for n, h in hints.items() if {int, float} & {h, *typing.get_args(h)})


def _check_values(values: Mapping[str, Any], numeric: frozenset[str]) -> None:
    """Raises RecordError on a number field holding something else, or an accuracy outside [0, 1]."""
    for name in sorted(numeric & set(values)):
        value = values[name]
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise RecordError(f"{name} must be a number, got {value!r}")
        if name in FRACTIONS and not 0.0 <= value <= 1.0:
            raise RecordError(f"{name} is an accuracy, a fraction in [0, 1]; got {value!r}")


def write_record(path: str | os.PathLike[str], run: RunRecord) -> None:
    """Writes `run` to `path` atomically (see `write_text`)."""
    write_json(path, run.to_json())


def read_record(path: str | os.PathLike[str]) -> RunRecord:
    """The record at `path` (local or gs://); raises FileNotFoundError when absent, RecordError when damaged."""
    text = storage.read_bytes(path).decode("utf-8")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise RecordError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from e
    try:
        return RunRecord.from_json(obj)
    except RecordError as e:
        raise RecordError(f"{path}: {e}") from e
