"""Training configuration: nested dataclasses read from YAML/JSON, with dotted command-line overrides.

```yaml
model: {preset: comer, overrides: {dropout: 0.3}}
data: {train: prepared/crohme, train_split: train, validation: ../shared/data/crohme/2014}
optim: {name: sgd, lr: 0.08, momentum: 0.9, weight_decay: 1.0e-4}
schedule: {name: plateau, factor: 0.25, patience: 10}
train: {output_dir: runs/comer, max_epochs: 300, max_pixels: 320000, max_batch_size: 8}
eval: {every_epochs: 2}
```

`--set optim.lr=0.1 train.max_epochs=3` overrides single keys; values are parsed as YAML (`3` is an int, `null` is
None, `[a, b]` a list). Unknown keys are errors, so a typo cannot silently fall back to a default.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# accelerate's precisions, plus auto: bf16 where the device computes it natively, else fp32 (trainer.py decides).
MIXED_PRECISIONS = ("no", "bf16", "fp16", "fp8", "auto")


@dataclass
class ModelConfig:
    """What to train: a preset of the HMER family plus `HMERConfig` overrides, or a saved model to fine-tune."""

    preset: str = "comer"
    overrides: dict[str, Any] = field(default_factory=dict)  # HMERConfig keyword arguments
    init_from: str | None = None  # a save_pretrained folder: start from its weights, config and processor
    image_processor: dict[str, Any] = field(default_factory=dict)  # HMERImageProcessor keyword arguments
    vocab_from_data: bool = False  # build the vocabulary from the training captions instead of the CROHME one


@dataclass
class DataConfig:
    """Where the data is: any layout `hmer_hf.data.load_hmer_dataset` reads, plus the split to use."""

    train: str | None = None
    train_split: str | None = None  # None: the only split, or "train" when there are several
    validation: str | None = None  # None: no validation (no best/ model)
    validation_split: str | None = None
    train_limit: int | None = None  # first N samples only (smoke runs)
    validation_limit: int | None = None
    # Rewrite the training labels to the CROHME 2014 test convention (subscript before superscript, no \limits):
    # 181 of the 8,835 canonical train captions differ from it only in that.
    test_script_order: bool = False
    augmentation: str = "comer"  # a hmer_hf.data.build_augmentation preset: comer, handwriting, elastic, san, none
    # Share of training images restyled as canvas drawings after the augmentation (hmer_hf.data.restyle.CanvasRestyle);
    # needs model.image_processor.normalize_ink "auto" or "always" so the processor brings them back to CROHME ink.
    canvas_prob: float = 0.0
    num_workers: int = 0  # DataLoader worker processes
    num_proc: int = 1  # processes for rendering InkML when the data is an unprepared CROHME/InkML folder


@dataclass
class OptimConfig:
    """The optimizer: SGD (CoMER), AdamW, or Adadelta (ABM)."""

    name: str = "adamw"  # sgd | adamw | adadelta
    lr: float = 1e-3
    momentum: float = 0.9  # sgd
    nesterov: bool = False  # sgd
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)  # adamw
    eps: float = 1e-8  # adamw, adadelta
    rho: float = 0.95  # adadelta


@dataclass
class ScheduleConfig:
    """The learning-rate schedule, stepped per optimizer step (warmup/cosine/...) or per validation (plateau)."""

    # constant | plateau | any transformers.get_scheduler name (linear, cosine, cosine_with_min_lr,
    # constant_with_warmup, ...) | onecycle (torch OneCycleLR: warmup then cosine annealing)
    name: str = "constant"
    warmup_steps: int = 0
    warmup_epochs: float = 0.0  # added to warmup_steps, converted with the measured steps per epoch
    min_lr_ratio: float = 0.0  # cosine_with_min_lr: final lr as a fraction of optim.lr
    # plateau: multiply the lr by `factor` after `patience` validations without an ExpRate improvement
    factor: float = 0.25
    patience: int = 10
    min_lr: float = 0.0


@dataclass
class TrainConfig:
    """The loop: length, batching, precision, checkpointing and logging."""

    output_dir: str = "runs/hmer"
    seed: int = 0
    max_epochs: int | None = 1  # None: as many epochs as max_steps needs (then max_steps is required)
    max_steps: int | None = None  # stop after this many optimizer steps (overrides max_epochs when reached first)
    max_pixels: int = 320_000  # padded pixels per batch (per process), CoMER's MAX_SIZE
    max_batch_size: int | None = 8
    gradient_accumulation_steps: int = 1
    max_grad_norm: float | None = None  # gradient clipping (global L2 norm); None = off
    mixed_precision: str = "no"  # no | bf16 | fp16 (fp16 needs a GPU) | auto (bf16 where native, else no)
    channels_last: bool = True  # convolution weights/activations in channels-last (measured ~1.5x faster on CPU)
    log_every_steps: int = 10
    save_every_steps: int | None = 1000  # mid-epoch checkpoint cadence in optimizer steps
    save_every_epochs: int = 1  # checkpoint (and last/) at every N-th epoch end; the end of training always saves
    save_total_limit: int = 3  # keep this many newest checkpoints
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])  # accelerate trackers; [] = JSONL only
    progress: bool = True  # tqdm bars (main process only)

    def __post_init__(self):
        if self.mixed_precision not in MIXED_PRECISIONS:
            raise ValueError(f"train.mixed_precision must be one of {', '.join(MIXED_PRECISIONS)}, "
                             f"got {self.mixed_precision!r}")
        if self.max_epochs is None and self.max_steps is None:
            raise ValueError("train.max_epochs: null (run until max_steps) needs train.max_steps")
        for key in ("max_epochs", "max_steps"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ValueError(f"train.{key} must be at least 1, got {value}")


@dataclass
class EvalConfig:
    """Validation: greedy ExpRate on the validation split; the best model goes to `<output_dir>/best/`."""

    every_epochs: int = 1  # 0 = never by epoch
    every_steps: int | None = None  # also every N optimizer steps
    max_pixels: int = 1_000_000
    max_batch_size: int = 32
    max_new_tokens: int = 200
    stop_at: float | None = None  # stop training once validation ExpRate reaches this value


@dataclass
class TrainingConfig:
    """The whole training configuration (one YAML/JSON file)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainingConfig":
        """Build from a nested dict (unknown sections or keys raise ValueError)."""
        return _from_dict(cls, values or {}, "")

    def to_dict(self) -> dict[str, Any]:
        """The nested dict form (what `save` writes)."""
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        """Write the configuration as YAML (the run's record of what it was trained with)."""
        Path(path).write_text(yaml.safe_dump(_plain(self.to_dict()), sort_keys=False), encoding="utf-8")


def _from_dict(cls, values: dict[str, Any], prefix: str):
    if not isinstance(values, dict):
        raise ValueError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"unknown config key(s) {[prefix + k for k in unknown]}; known: {sorted(fields)}")
    kwargs = {}
    for name, value in values.items():
        default = fields[name].default_factory() if fields[name].default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(default):
            kwargs[name] = _from_dict(type(default), value, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(hints[name], value, prefix + name)
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, key: str) -> Any:
    # YAML reads `1e-3` (no dot) as a string and `3` as an int; convert to the declared number type, reject the rest.
    if value is None:
        return None
    allowed = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if str in allowed and isinstance(value, bool):
        # YAML 1.1 reads a bare `no` (mixed_precision: no) as False.
        return "yes" if value else "no"
    if float in allowed and not isinstance(value, bool):
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{key} must be a number, got {value!r}") from None
    if int in allowed and not isinstance(value, bool):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, int) or (isinstance(value, str) and value.strip().lstrip("-").isdigit()):
            return int(value)
        raise ValueError(f"{key} must be an integer, got {value!r}")
    if typing.get_origin(hint) is tuple:
        return tuple(float(v) for v in value)
    return value


def _plain(value: Any) -> Any:
    # YAML has no tuples; write lists so the file reads back with safe_load.
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """`["optim.lr=0.1", "train.max_epochs=3"]` -> nested dict `{"optim": {"lr": 0.1}, "train": {"max_epochs": 3}}`."""
    nested: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"override {item!r} is not KEY=VALUE (e.g. optim.lr=0.1)")
        value = yaml.safe_load(raw) if raw.strip() else None
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r} conflicts with another override of {part}")
        node[parts[-1]] = value
    return nested


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge: `update` wins, nested dicts are merged key by key (model.overrides included)."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainingConfig:
    """Read a YAML or JSON config file (or start from the defaults) and apply `KEY=VALUE` overrides."""
    values: dict[str, Any] = {}
    if path is not None:
        text = Path(path).read_text(encoding="utf-8")
        values = json.loads(text) if str(path).endswith(".json") else (yaml.safe_load(text) or {})
    return TrainingConfig.from_dict(merge(values, parse_overrides(overrides)))
