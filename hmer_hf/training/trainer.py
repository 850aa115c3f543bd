"""The training loop, on accelerate: one CPU process, or `accelerate launch --multi_gpu --num_processes N` unchanged.

Everything distributed goes through accelerate: `prepare` wraps the model in DDP and shards the DataLoaders (whose
`batch_sampler` is a [`PixelBudgetBatchSampler`] built with `num_replicas = num_processes`, so every process gets the
same number of batches), `gather_for_metrics` collects validation predictions, `save_state`/`load_state` checkpoint
model, optimizer, scheduler, trainer state and RNG states, and `skip_first_batches` resumes mid-epoch.

Output folder:

    config.yaml                 the resolved configuration
    log.jsonl                   one JSON record per logged step and per validation
    tensorboard/                TensorBoard events (train/loss, train/lr, val/exprate, ...)
    checkpoints/checkpoint-N/   accelerate state after optimizer step N (the newest `save_total_limit` are kept)
    best/                       save_pretrained model + processor + generation config with the best validation ExpRate
    last/                       the same for the latest epoch end / the end of training
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import shutil
import time
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..data import HMERAugmentation, PixelBudgetBatchSampler, build_augmentation, iter_captions
from ..evaluation import load_exprate, load_split
from .config import TrainingConfig

CHECKPOINTS_DIR = "checkpoints"
CHECKPOINT_PREFIX = "checkpoint-"
# Written last into a checkpoint folder: a folder without it is an interrupted save and is never resumed from.
STATE_FILE = "trainer_state.json"
LOG_FILE = "log.jsonl"


@dataclass
class TrainerState:
    """Loop counters saved in every checkpoint (registered with `accelerator.register_for_checkpointing`)."""

    global_step: int = 0  # optimizer steps done
    epoch: int = 0  # the epoch in progress (or next to start)
    batches_in_epoch: int = 0  # batches this process has consumed in `epoch`: where a resumed run continues
    samples_seen: int = 0  # training samples over all processes
    best_metric: float | None = None
    best_step: int | None = None
    last_eval_step: int | None = None

    def state_dict(self) -> dict[str, Any]:
        """The counters as a dict."""
        return dataclasses.asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the counters from `state_dict()`."""
        for key, value in state.items():
            setattr(self, key, value)


# ---------------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------------


class IndexedRows(Dataset):
    """A `datasets.Dataset` seen by a DataLoader as rows that also carry their index (for seeding and gathering)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return self.dataset.num_rows

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """The rows of a whole batch in one datasets call (decodes only these images)."""
        rows = self.dataset[list(indices)]
        return [{"index": int(i), "image": im, "latex": tex} for i, im, tex in zip(indices, rows["image"], rows["latex"])]


class BatchSeededAugmentation(HMERAugmentation):
    """An [`HMERAugmentation`] whose random stream is a function of (seed, epoch, the batch's sample indices).

    The data layer's augmentation draws from one stream per process/worker, so what a batch gets depends on the
    worker it lands on and on everything drawn before; after a mid-epoch resume that differs. Seeding per batch makes
    every batch's augmentation reproducible, whatever the worker count and wherever the run was resumed.
    """

    _batch_rng: np.random.Generator | None = None

    def seed_batch(self, seed: int, epoch: int, indices: Sequence[int]) -> None:
        """Select the random stream for the batch of these sample indices."""
        digest = zlib.crc32(np.asarray(indices, dtype=np.int64).tobytes())
        self._batch_rng = np.random.default_rng([int(seed), int(epoch), digest])

    @property
    def rng(self) -> np.random.Generator:
        """The current batch's generator (see `seed_batch`)."""
        if self._batch_rng is None:
            raise RuntimeError("call seed_batch() before augmenting")
        return self._batch_rng


class HMERCollator:
    """Rows -> model batch through the processor: `pixel_values`, `pixel_mask`, `labels` (+ `index` with `keep_index`).

    With an augmentation, training images are augmented first, seeded per batch (see [`BatchSeededAugmentation`]).
    """

    def __init__(self, processor, augmentation: BatchSeededAugmentation | None = None, seed: int = 0,
                 keep_index: bool = False):
        self.processor = processor
        self.augmentation = augmentation if augmentation is not None and augmentation.enabled else None
        self.seed = seed
        self.epoch = 0
        self.keep_index = keep_index

    def set_epoch(self, epoch: int) -> None:
        """Epoch used in the augmentation seed (DataLoader workers receive the collator at each iterator start)."""
        self.epoch = int(epoch)

    def __call__(self, rows: list[dict[str, Any]]):
        indices = [row["index"] for row in rows]
        images = [row["image"] for row in rows]
        if self.augmentation is not None:
            self.augmentation.seed_batch(self.seed, self.epoch, indices)
            images = self.augmentation({"image": images})["image"]
        batch = self.processor(images=images, text=[row["latex"] for row in rows])
        if self.keep_index:
            batch["index"] = torch.tensor(indices, dtype=torch.long)
        return batch


def to_test_script_order(dataset):
    """The dataset with its `latex` labels rewritten to subscript-before-superscript and no `\\limits`."""
    from ..data.latex import LatexParseError, normalize_latex

    def convert(latex: str) -> str:
        try:
            return normalize_latex(latex, sub_before_sup=True, keep_limits=False)
        except LatexParseError:
            return latex  # a canonical caption that does not parse is trained on as it is

    return dataset.map(lambda row: {"latex": convert(row["latex"])}, desc="labels to test script order")


def build_augmentation_for(name: str | None, canvas_prob: float = 0.0) -> BatchSeededAugmentation | None:
    """The configured augmentation preset (+ canvas restyling) as a batch-seeded augmentation (None for nothing)."""
    if (not name or name == "none") and canvas_prob <= 0:
        return None
    base = build_augmentation(name or "none", canvas_prob=canvas_prob)
    return BatchSeededAugmentation(base.transforms, enabled=base.enabled)


# ---------------------------------------------------------------------------------------------------------------
# Model, optimizer, schedule
# ---------------------------------------------------------------------------------------------------------------


def build_processor_and_model(cfg: TrainingConfig, train_dataset):
    """The processor and model to train: from `model.init_from`, or a fresh preset with the configured overrides."""
    from .. import HMERConfig, HMERForConditionalGeneration, HMERImageProcessor, HMERProcessor, HMERTokenizer

    if cfg.model.init_from:
        processor = HMERProcessor.from_pretrained(cfg.model.init_from)
        for key, value in cfg.model.image_processor.items():  # configured settings win over the saved ones
            if not hasattr(processor.image_processor, key):
                raise ValueError(f"model.image_processor: HMERImageProcessor has no setting {key!r}")
            setattr(processor.image_processor, key, value)
        model = HMERForConditionalGeneration.from_pretrained(cfg.model.init_from, **cfg.model.overrides)
        return processor, model
    if cfg.model.vocab_from_data:
        tokenizer = HMERTokenizer.from_captions(iter_captions(train_dataset))
    else:
        tokenizer = HMERTokenizer()
    processor = HMERProcessor(HMERImageProcessor(**cfg.model.image_processor), tokenizer)
    config = HMERConfig.from_preset(cfg.model.preset, **{"vocab_size": len(tokenizer), **cfg.model.overrides})
    # Token ids the model reads by role (decoding constraints, HMER-MTL's skeleton) follow this tokenizer's vocabulary.
    vocab = tokenizer.get_vocab()
    if "syntax_token_ids" not in cfg.model.overrides:
        config.syntax_token_ids = HMERConfig.syntax_ids_from_vocab(vocab)
    if config.skeleton_head and "skeleton_token_ids" not in cfg.model.overrides:
        config.skeleton_token_ids = HMERConfig.skeleton_ids_from_vocab(vocab)
    return processor, HMERForConditionalGeneration(config)


def build_optimizer(cfg: TrainingConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """SGD (CoMER: momentum 0.9, weight decay 1e-4), AdamW, or Adadelta (ABM: lr 1.0, eps 1e-6) over all parameters."""
    o = cfg.optim
    name = o.name.lower()
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay,
                               nesterov=o.nesterov)
    if name == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=o.lr, betas=tuple(o.betas), eps=o.eps,
                                 weight_decay=o.weight_decay)
    if name == "adadelta":
        return torch.optim.Adadelta(model.parameters(), lr=o.lr, rho=o.rho, eps=o.eps, weight_decay=o.weight_decay)
    raise ValueError(f"unknown optimizer {o.name!r}; choose sgd, adamw or adadelta")


def planned_steps(sampler: PixelBudgetBatchSampler, cfg: TrainingConfig, num_processes: int) -> list[int]:
    """Optimizer steps of each epoch, computed from the sampler's deterministic batches (no data is loaded)."""
    accum = cfg.train.gradient_accumulation_steps

    def steps(epoch: int) -> int:
        # Each process gets ceil(batches / processes) batches; a partial accumulation at epoch end still steps.
        return math.ceil(math.ceil(len(sampler.batches(epoch)) / num_processes) / accum)

    if cfg.train.max_epochs is not None:
        return [steps(e) for e in range(cfg.train.max_epochs)]
    # max_epochs None: the epochs that max_steps reaches (the last one may be cut short).
    planned: list[int] = []
    while sum(planned) < cfg.train.max_steps:
        planned.append(steps(len(planned)))
        if not planned[-1]:
            raise ValueError("the training data gives no batches: train.max_steps can never be reached")
    return planned


def build_scheduler(cfg: TrainingConfig, optimizer: torch.optim.Optimizer, total_steps: int, steps_per_epoch: int):
    """The lr scheduler: ReduceLROnPlateau on validation ExpRate (`plateau`), OneCycleLR, or transformers' schedules."""
    s = cfg.schedule
    name = s.name.lower()
    warmup = s.warmup_steps + round(s.warmup_epochs * steps_per_epoch)
    if name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=s.factor, patience=s.patience, min_lr=s.min_lr
        )
    if name == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=cfg.optim.lr, total_steps=max(total_steps, 1),
            pct_start=min(max(warmup / max(total_steps, 1), 1e-3), 0.999), anneal_strategy="cos",
        )
    from transformers import get_scheduler

    specific = {"min_lr_rate": s.min_lr_ratio} if name == "cosine_with_min_lr" else None
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps,
                         scheduler_specific_kwargs=specific)


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints and logs
# ---------------------------------------------------------------------------------------------------------------


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints in an output folder, oldest first (a folder without trainer_state.json is ignored)."""
    root = Path(output_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = [p for p in root.glob(f"{CHECKPOINT_PREFIX}*") if (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]))


def resolve_resume(resume: str | bool | None, output_dir: str | Path) -> Path | None:
    """The checkpoint to resume from: a given folder, or the newest in `output_dir` for `True`/"latest"."""
    if not resume:
        return None
    if resume is True or str(resume) == "latest":
        found = list_checkpoints(output_dir)
        return found[-1] if found else None
    path = Path(resume)
    if (path / CHECKPOINTS_DIR).is_dir() and not (path / STATE_FILE).is_file():  # a run folder: its newest
        found = list_checkpoints(path)
        return found[-1] if found else None
    if not (path / STATE_FILE).is_file():
        raise FileNotFoundError(f"{path} is not a complete checkpoint (no {STATE_FILE})")
    return path


class JsonlLog:
    """Append-only JSONL log on the main process; on resume, records after the checkpoint's step are dropped."""

    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled = path, enabled

    def truncate_after(self, step: int) -> None:
        """Drop records of steps after `step` (written by an interrupted run after its last checkpoint)."""
        if not self.enabled or not self.path.is_file():
            return
        lines = self.path.read_text(encoding="utf-8").splitlines()
        kept = [line for line in lines if line.strip() and json.loads(line).get("step", 0) <= step]
        self.path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        """Append one record."""
        if self.enabled:
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")


def _flat_hparams(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    # TensorBoard hparams take scalars only.
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(_flat_hparams(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float, str, bool)):
            out[f"{prefix}{key}"] = value
        else:
            out[f"{prefix}{key}"] = str(value)
    return out


def has_native_bf16(device_type: str) -> bool:
    """Whether `device_type` ("cpu", "cuda", ...) computes in bf16 natively (else bf16 autocast is emulated, slowly)."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device_type != "cpu":
        return True  # let accelerate decide (and complain) on other accelerators
    # oneDNN's bf16 kernels need AVX512-BF16/AMX on x86 (or bf16 instructions on Arm); without them autocast still
    # runs, emulated: measured 10x slower than fp32 on a Zen 3 core (0.17 vs 1.66 samples/s, scripts/benchmark.py).
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)())


def resolve_mixed_precision(requested: str, device_type: str) -> str:
    """The precision to run: `auto` becomes bf16 where the device has native bf16, else fp32 ("no"); an explicit
    `bf16` on a CPU without native bf16 is kept but warned about (it trains about 10x slower than fp32 there)."""
    if requested == "auto":
        return "bf16" if has_native_bf16(device_type) else "no"
    if requested == "bf16" and not has_native_bf16(device_type):
        warnings.warn(f"train.mixed_precision=bf16 on a {device_type} without native bf16 support: autocast is "
                      "emulated and much slower than fp32 (measured 10x on a Zen 3 CPU); set train.mixed_precision "
                      "to auto or no", stacklevel=2)
    return requested


# ---------------------------------------------------------------------------------------------------------------
# The trainer
# ---------------------------------------------------------------------------------------------------------------


class Trainer:
    """Trains an HMER model as configured; `Trainer(cfg).train(resume=...)`."""

    def __init__(self, cfg: TrainingConfig):
        from accelerate import Accelerator, PartialState
        from accelerate.utils import ProjectConfiguration, set_seed

        if not cfg.data.train:
            raise ValueError("data.train is not set: give a dataset folder (e.g. --set data.train=prepared/crohme)")
        self.cfg = cfg
        self.output_dir = Path(cfg.train.output_dir)
        report_to = list(cfg.train.report_to)
        if "tensorboard" in report_to:
            from accelerate.utils import is_tensorboard_available

            if not is_tensorboard_available():  # the JSONL log is always written; TensorBoard is optional
                warnings.warn("tensorboard is not installed: logging to log.jsonl only (pip install tensorboard)")
                report_to.remove("tensorboard")
        self.report_to = report_to
        # The shared process state (made here once, reused by Accelerator) knows the device before the precision
        # is chosen: ACCELERATE_USE_CPU, launch settings and what is installed all count.
        self.mixed_precision = resolve_mixed_precision(cfg.train.mixed_precision, PartialState().device.type)
        self.accelerator = Accelerator(
            mixed_precision=self.mixed_precision,
            gradient_accumulation_steps=cfg.train.gradient_accumulation_steps,
            log_with=report_to or None,
            project_config=ProjectConfiguration(project_dir=str(self.output_dir), logging_dir=str(self.output_dir)),
        )
        acc = self.accelerator
        set_seed(cfg.train.seed)  # identical initial weights on every process

        verbose = acc.is_local_main_process
        self.train_dataset = load_split(cfg.data.train, cfg.data.train_split, cfg.data.train_limit, prefer="train",
                                        num_proc=cfg.data.num_proc, verbose=verbose)
        if cfg.data.test_script_order:
            self.train_dataset = to_test_script_order(self.train_dataset)
        self.val_dataset = None
        if cfg.data.validation:
            self.val_dataset = load_split(cfg.data.validation, cfg.data.validation_split, cfg.data.validation_limit,
                                          num_proc=cfg.data.num_proc, verbose=verbose)
        self.processor, model = build_processor_and_model(cfg, self.train_dataset)
        if cfg.data.canvas_prob > 0 and self.processor.image_processor.normalize_ink == "off":
            raise ValueError(
                "data.canvas_prob > 0 restyles training images as canvas drawings, which only a processor with "
                "ink normalisation brings back to CROHME ink: set model.image_processor.normalize_ink to auto"
            )

        self.sampler = PixelBudgetBatchSampler.from_dataset(
            self.train_dataset, cfg.train.max_pixels, max_batch_size=cfg.train.max_batch_size, shuffle=True,
            seed=cfg.train.seed, num_replicas=acc.num_processes,
        )
        self.collator = HMERCollator(
            self.processor, build_augmentation_for(cfg.data.augmentation, cfg.data.canvas_prob), cfg.train.seed
        )
        train_loader = DataLoader(
            IndexedRows(self.train_dataset), batch_sampler=self.sampler, collate_fn=self.collator,
            num_workers=cfg.data.num_workers,
            # Its own generator: creating an iterator then draws worker seeds from it, not from the global torch RNG,
            # so dropout randomness does not depend on where a run was (re)started.
            generator=torch.Generator().manual_seed(cfg.train.seed),
        )
        val_loader = None
        if self.val_dataset is not None:
            val_sampler = PixelBudgetBatchSampler.from_dataset(
                self.val_dataset, cfg.eval.max_pixels, max_batch_size=cfg.eval.max_batch_size, shuffle=False,
                num_replicas=acc.num_processes,
            )
            val_loader = DataLoader(IndexedRows(self.val_dataset), batch_sampler=val_sampler,
                                    collate_fn=HMERCollator(self.processor, keep_index=True),
                                    num_workers=cfg.data.num_workers)

        if cfg.train.channels_last:
            model = model.to(memory_format=torch.channels_last)
        optimizer = build_optimizer(cfg, model)
        self.epoch_steps = planned_steps(self.sampler, cfg, acc.num_processes)
        self.total_steps = sum(self.epoch_steps)
        if cfg.train.max_steps is not None:
            if cfg.train.max_steps > self.total_steps:
                warnings.warn(f"train.max_steps={cfg.train.max_steps} is more than the {self.total_steps} steps of "
                              f"train.max_epochs={cfg.train.max_epochs}: training stops after {self.total_steps} "
                              "(set train.max_epochs: null to let max_steps decide)")
            self.total_steps = min(self.total_steps, cfg.train.max_steps)
        self.scheduler = build_scheduler(cfg, optimizer, self.total_steps, self.epoch_steps[0] if self.epoch_steps
                                         else 1)
        self.per_validation = isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)

        if val_loader is not None:
            self.model, self.optimizer, self.train_loader, self.val_loader = acc.prepare(
                model, optimizer, train_loader, val_loader)
        else:
            self.model, self.optimizer, self.train_loader = acc.prepare(model, optimizer, train_loader)
            self.val_loader = None
        # The scheduler is not prepared: accelerate would step it once per process per step and cannot feed
        # ReduceLROnPlateau its metric. It is stepped here once per optimizer step (or per validation) and
        # checkpointed like the trainer state.
        self.state = TrainerState()
        acc.register_for_checkpointing(self.scheduler, self.state)
        self.metric = load_exprate() if self.val_dataset is not None else None
        self.log = JsonlLog(self.output_dir / LOG_FILE, acc.is_main_process)

    # -- checkpoints -------------------------------------------------------------------------------------------------

    def save_checkpoint(self) -> Path:
        """Save the accelerate state after the current optimizer step; keep the newest `save_total_limit`."""
        acc = self.accelerator
        path = self.output_dir / CHECKPOINTS_DIR / f"{CHECKPOINT_PREFIX}{self.state.global_step}"
        acc.save_state(str(path))
        acc.wait_for_everyone()
        if acc.is_main_process:
            (path / STATE_FILE).write_text(json.dumps(self.state.state_dict(), indent=2), encoding="utf-8")
            for old in list_checkpoints(self.output_dir)[: -max(1, self.cfg.train.save_total_limit)]:
                shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()
        return path

    def save_model(self, folder: str, metrics: dict[str, Any] | None = None) -> None:
        """save_pretrained the model (config, weights, generation config) and the processor into `<out>/<folder>`."""
        acc = self.accelerator
        acc.wait_for_everyone()
        if acc.is_main_process:
            path = self.output_dir / folder
            acc.unwrap_model(self.model).save_pretrained(path, save_function=acc.save)
            self.processor.save_pretrained(path)
            info = {"step": self.state.global_step, "epoch": self.state.epoch, **(metrics or {})}
            (path / "trainer_info.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
        acc.wait_for_everyone()

    # -- validation --------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def validate(self) -> dict[str, Any]:
        """Greedy ExpRate on the validation split (all processes decode their shard; predictions are gathered)."""
        from tqdm.auto import tqdm

        acc = self.accelerator
        model = acc.unwrap_model(self.model)
        was_training = model.training
        model.eval()
        pairs: list[tuple[int, str]] = []
        start = time.perf_counter()
        bar = tqdm(self.val_loader, desc="validating", leave=False,
                   disable=not (self.cfg.train.progress and acc.is_local_main_process))
        for batch in bar:
            with acc.autocast():
                ids = model.generate(pixel_values=batch["pixel_values"], pixel_mask=batch["pixel_mask"], num_beams=1,
                                     max_new_tokens=self.cfg.eval.max_new_tokens)
            texts = self.processor.batch_decode(ids, skip_special_tokens=True)
            pairs.extend(zip(batch["index"].tolist(), texts))
        gathered = acc.gather_for_metrics(pairs, use_gather_object=True)
        # accelerate may hand a process a repeated batch to even out the shards; keep one prediction per sample.
        predictions = dict(gathered)
        order = sorted(predictions)
        references = self.val_dataset.select_columns(["latex"])["latex"]
        result = self.metric.compute(predictions=[predictions[i] for i in order],
                                     references=[references[i] for i in order])
        result["seconds"] = round(time.perf_counter() - start, 3)
        if len(order) != self.val_dataset.num_rows:
            raise RuntimeError(f"validation covered {len(order)} of {self.val_dataset.num_rows} samples")
        model.train(was_training)
        return result

    def run_validation(self) -> bool:
        """Validate, log, step a plateau schedule, save `best/` on improvement; True when `eval.stop_at` is reached."""
        if self.val_loader is None or self.state.last_eval_step == self.state.global_step:
            return False
        result = self.validate()
        exprate = result["exprate"]
        self.state.last_eval_step = self.state.global_step
        if self.per_validation:
            self.scheduler.step(exprate)
        improved = self.state.best_metric is None or exprate > self.state.best_metric
        if improved:
            self.state.best_metric, self.state.best_step = exprate, self.state.global_step
            self.save_model("best", {f"val_{k}": v for k, v in result.items()})
        values = {f"val/{k}": v for k, v in result.items() if isinstance(v, (int, float))}
        self.accelerator.log(values, step=self.state.global_step)
        self.log.write({"step": self.state.global_step, "epoch": self.state.epoch,
                        **{f"val_{k}": v for k, v in result.items()}, "best": improved})
        self.accelerator.print(
            f"step {self.state.global_step}: validation ExpRate {100 * exprate:.2f}% "
            f"(best {100 * self.state.best_metric:.2f}% at step {self.state.best_step})"
        )
        stop_at = self.cfg.eval.stop_at
        return stop_at is not None and exprate >= stop_at

    # -- training ----------------------------------------------------------------------------------------------------

    def train(self, resume: str | bool | None = None) -> TrainerState:
        """Run the training loop (optionally resuming from a checkpoint); returns the final trainer state."""
        from tqdm.auto import tqdm

        acc, cfg = self.accelerator, self.cfg
        if acc.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            cfg.save(self.output_dir / "config.yaml")
        checkpoint = resolve_resume(resume, self.output_dir)
        if checkpoint is not None:
            acc.load_state(str(checkpoint))
            self.log.truncate_after(self.state.global_step)
            # best/ may have been written after the checkpoint: never replace it by a worse model.
            best_info = self.output_dir / "best" / "trainer_info.json"
            if best_info.is_file():
                info = json.loads(best_info.read_text(encoding="utf-8"))
                saved = info.get("val_exprate")
                if saved is not None and (self.state.best_metric is None or saved > self.state.best_metric):
                    self.state.best_metric, self.state.best_step = saved, info.get("step")
            acc.print(f"resumed from {checkpoint} (step {self.state.global_step}, epoch {self.state.epoch}, "
                      f"batch {self.state.batches_in_epoch})")
        elif resume:
            acc.print(f"no checkpoint in {self.output_dir}; starting from scratch")
        if cfg.train.mixed_precision == "auto":
            acc.print(f"train.mixed_precision=auto: {self.mixed_precision} on {acc.device.type} "
                      f"({'native' if self.mixed_precision == 'bf16' else 'no native'} bf16)")
        if self.report_to:
            # A resumed run rewrites TensorBoard from the checkpoint's step on, like the JSONL log.
            init_kwargs = {"tensorboard": {"purge_step": self.state.global_step + 1}} if checkpoint else {}
            acc.init_trackers("tensorboard", config=_flat_hparams(cfg.to_dict()), init_kwargs=init_kwargs)

        bar = tqdm(total=self.total_steps, initial=self.state.global_step, desc="training", unit="step",
                   disable=not (cfg.train.progress and acc.is_local_main_process), dynamic_ncols=True)
        stop = self.state.global_step >= self.total_steps
        window = _Window()
        while not stop and self.state.epoch < len(self.epoch_steps):
            stop = self._train_epoch(bar, window)
        bar.close()
        if self.state.batches_in_epoch:
            # Cut short mid-epoch (max_steps, stop_at): validate (no-op if just done) and save; epoch ends already did.
            self.run_validation()
            self.save_checkpoint()
            self.save_model("last")
        acc.end_training()
        return self.state

    def _train_epoch(self, bar, window: "_Window") -> bool:
        """One (possibly resumed) epoch; returns True when training should stop."""
        acc, cfg, state = self.accelerator, self.cfg, self.state
        epoch = state.epoch
        self.sampler.set_epoch(epoch)
        self.collator.set_epoch(epoch)
        self.train_loader.set_epoch(epoch)
        loader = self.train_loader
        if state.batches_in_epoch:
            loader = acc.skip_first_batches(self.train_loader, state.batches_in_epoch)
        self.model.train()
        window.restart()
        target_reached = False  # eval.stop_at met by a step-cadence validation
        for batch in loader:
            with acc.accumulate(self.model):
                out = self.model(**batch)
                loss = out.loss
                acc.backward(loss)
                grad_norm = None
                if acc.sync_gradients and cfg.train.max_grad_norm:
                    grad_norm = acc.clip_grad_norm_(self.model.parameters(), cfg.train.max_grad_norm)
                self.optimizer.step()
                self.optimizer.zero_grad()
            state.batches_in_epoch += 1
            window.add(loss.detach(), batch["labels"].shape[0], out)
            if not acc.sync_gradients:
                continue
            lr = self.optimizer.param_groups[0]["lr"]  # the lr this step used
            state.global_step += 1
            if not self.per_validation:
                self.scheduler.step()
            bar.update(1)
            end_of_epoch = acc.gradient_state.end_of_dataloader
            stop = state.global_step >= self.total_steps
            # Mid-epoch checkpoints only: the epoch end is saved below, after its validation.
            save = bool(cfg.train.save_every_steps) and state.global_step % cfg.train.save_every_steps == 0 \
                and not end_of_epoch and not stop
            # A checkpoint step is always logged, so the log and samples_seen a resumed run continues are complete.
            if state.global_step % cfg.train.log_every_steps == 0 or end_of_epoch or save or stop:
                self._log_train(window, lr, grad_norm, bar)
            if cfg.eval.every_steps and state.global_step % cfg.eval.every_steps == 0:
                with window.paused():  # an epoch-end validation at this same step is then skipped
                    target_reached = self.run_validation() or target_reached
            if (stop or target_reached) and not end_of_epoch:
                return True
            if save:
                with window.paused():
                    self.save_checkpoint()
        state.epoch += 1
        state.batches_in_epoch = 0
        last = state.epoch == len(self.epoch_steps) or state.global_step >= self.total_steps
        stop = target_reached
        if cfg.eval.every_epochs and state.epoch % cfg.eval.every_epochs == 0 or last:
            stop = self.run_validation() or stop
        if state.epoch % max(cfg.train.save_every_epochs, 1) == 0 or last or stop:
            self.save_checkpoint()
            self.save_model("last")
        return stop or last

    def _log_train(self, window: "_Window", lr: float, grad_norm, bar) -> None:
        acc, state = self.accelerator, self.state
        # loss sum, batches, samples, then the loss parts' sums, over processes
        totals = acc.reduce(window.totals(acc.device), reduction="sum")
        loss = (totals[0] / totals[1].clamp(min=1)).item()
        samples = int(totals[2].item())
        parts = {name: (totals[3 + i] / totals[1].clamp(min=1)).item() for i, name in enumerate(LOSS_PARTS)
                 if window.seen_parts[name]}
        state.samples_seen += samples
        seconds = window.seconds()
        record = {
            "step": state.global_step,
            "epoch": round(state.epoch + state.batches_in_epoch / max(len(self.train_loader), 1), 4),
            "loss": loss,
            **parts,
            "lr": lr,
            "samples_per_second": samples / seconds if seconds > 0 else None,
            "samples_seen": state.samples_seen,
        }
        if grad_norm is not None:
            record["grad_norm"] = float(grad_norm)
        self.log.write(record)
        acc.log({f"train/{k}": v for k, v in record.items() if k != "step" and v is not None}, step=state.global_step)
        bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.3g}")
        window.restart()


# Parts of the loss that some family members report next to `loss` (HMER-MTL: skeleton; ABM: mutual KL).
LOSS_PARTS = ("ce_loss", "skeleton_loss", "mutual_kl_loss")


class _Window:
    """Loss/sample sums and wall time since the last log line (time spent validating/saving is excluded)."""

    def __init__(self):
        self.seen_parts = dict.fromkeys(LOSS_PARTS, False)  # which parts this model reports (same on every process)
        self.restart()

    def restart(self) -> None:
        self.loss, self.batches, self.samples, self.start = 0.0, 0, 0, time.perf_counter()
        self.parts = dict.fromkeys(LOSS_PARTS, 0.0)

    @contextlib.contextmanager
    def paused(self):
        """Leave the time spent inside out of the throughput."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.start += time.perf_counter() - start

    def add(self, loss: torch.Tensor, samples: int, output=None) -> None:
        self.loss += float(loss)
        self.batches += 1
        self.samples += samples
        for name in LOSS_PARTS:
            part = getattr(output, name, None)
            if part is not None:
                self.parts[name] += float(part.detach())
                self.seen_parts[name] = True

    def totals(self, device) -> torch.Tensor:
        values = [self.loss, self.batches, self.samples, *(self.parts[name] for name in LOSS_PARTS)]
        return torch.tensor(values, dtype=torch.float64, device=device)

    def seconds(self) -> float:
        return time.perf_counter() - self.start


def train(cfg: TrainingConfig, resume: str | bool | None = None) -> TrainerState:
    """Train as configured (see [`Trainer`]); `resume` is a checkpoint folder, or True/"latest" for the newest."""
    return Trainer(cfg).train(resume=resume)
