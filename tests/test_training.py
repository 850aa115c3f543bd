"""Training: config files and overrides, schedules, batch-seeded augmentation, exact resume after SIGKILL, and a
learning smoke run through the real entry point (`hmer-hf train configs/tiny_smoke.yaml`)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hmer_hf.training import (
    BatchSeededAugmentation,
    TrainingConfig,
    list_checkpoints,
    load_config,
    parse_overrides,
    resolve_resume,
)
from hmer_hf.training.trainer import STATE_FILE, build_optimizer, build_scheduler

from .conftest import REPO_ROOT, draw_formula_image

TINY = REPO_ROOT / "configs" / "tiny_smoke.yaml"
DRAWN_CAPTIONS = ["x", "y ^ { 2 }", "a + b", "1 2", "\\sqrt { 2 }", "x = 1", "\\pi", "3 - z"]


def caption_folder(root: Path, crohme: Path | None, count: int) -> tuple[Path, list[str]]:
    """A CoMER-layout folder (caption.txt + img/*.bmp) of `count` short CROHME 2014 expressions, or drawn images."""
    (root / "img").mkdir(parents=True)
    if crohme is not None:
        lines = sorted((crohme / "2014" / "caption.txt").read_text().splitlines())
        pairs = [line.split("\t", 1) for line in lines]
        chosen = [(name, cap) for name, cap in pairs if 3 <= len(cap.split()) <= 7][:count]
        for name, _ in chosen:
            shutil.copy(crohme / "2014" / "img" / f"{name}.bmp", root / "img" / f"{name}.bmp")
    else:
        chosen = [(f"drawn_{i}", DRAWN_CAPTIONS[i % len(DRAWN_CAPTIONS)]) for i in range(count)]
        for i, (name, _) in enumerate(chosen):
            Image.fromarray(draw_formula_image(100 + i)).save(root / "img" / f"{name}.bmp")
    (root / "caption.txt").write_text("".join(f"{name}\t{cap}\n" for name, cap in chosen))
    return root, [cap for _, cap in chosen]


# One intra-op thread per training process: on a shared, busy CPU two spinning OpenMP threads are far slower.
ONE_THREAD_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def run_train(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "hmer_hf.cli", "train", str(TINY), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT, env=ONE_THREAD_ENV)


def read_log(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["comer_crohme.yaml", "comer_crohme_adamw.yaml", "comer_crohme_cpu.yaml", "comer_crohme_cpu_continue.yaml",
     "compare_presets.yaml", "abm_crohme.yaml", "tiny_smoke.yaml"],
)
def test_shipped_configs_load_and_build(name):
    from hmer_hf import HMERConfig, HMERForConditionalGeneration

    cfg = load_config(REPO_ROOT / "configs" / name)
    config = HMERConfig.from_preset(cfg.model.preset, **cfg.model.overrides)
    if name == "tiny_smoke.yaml":  # build the tiny one fully: optimizer and schedule names must be valid
        model = HMERForConditionalGeneration(config)
        build_scheduler(cfg, build_optimizer(cfg, model), total_steps=10, steps_per_epoch=2)
    else:  # the optimizer and schedule of the full recipe, on a stand-in module (no full-size model needed)
        optimizer = build_optimizer(cfg, torch.nn.Linear(2, 2))
        assert type(optimizer).__name__.lower() == cfg.optim.name
        build_scheduler(cfg, optimizer, total_steps=10, steps_per_epoch=2)


def test_comer_recipe_values():
    cfg = load_config(REPO_ROOT / "configs" / "comer_crohme.yaml")
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay) == ("sgd", 0.08, 0.9, 1e-4)
    assert cfg.schedule.name == "plateau" and cfg.schedule.factor == 0.25
    adamw = load_config(REPO_ROOT / "configs" / "comer_crohme_adamw.yaml")
    assert adamw.optim.name == "adamw" and adamw.schedule.warmup_epochs > 0 and "cosine" in adamw.schedule.name


def test_labels_to_test_script_order():
    from datasets import Dataset

    from hmer_hf.training.trainer import to_test_script_order

    rows = ["x ^ { 2 } _ { i }", "\\sum \\limits _ { i = 1 } ^ { n } i", "a + b", "{ ^ broken"]
    out = to_test_script_order(Dataset.from_dict({"latex": rows}))["latex"]
    assert out == ["x _ { i } ^ { 2 }", "\\sum _ { i = 1 } ^ { n } i", "a + b", "{ ^ broken"]


def test_overrides_are_typed_and_checked(tmp_path):
    cfg = load_config(TINY, ["optim.lr=1e-2", "train.max_epochs=3", "model.overrides.d_model=64",
                             "train.max_steps=null", "train.report_to=[]", "optim.betas=[0.8, 0.9]"])
    assert cfg.optim.lr == 0.01 and isinstance(cfg.optim.lr, float)  # YAML alone would read "1e-2" as a string
    assert cfg.train.max_epochs == 3 and cfg.train.max_steps is None and cfg.train.report_to == []
    assert cfg.model.overrides["d_model"] == 64 and cfg.model.overrides["growth_rate"] == 8  # merged, not replaced
    assert cfg.optim.betas == (0.8, 0.9)
    assert load_config(TINY, ["train.mixed_precision=no"]).train.mixed_precision == "no"  # not YAML's False
    with pytest.raises(ValueError, match="unknown config key"):
        load_config(TINY, ["optim.learning_rate=0.1"])
    with pytest.raises(ValueError, match="must be an integer"):
        load_config(TINY, ["train.max_epochs=many"])
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_overrides(["optim.lr"])
    # JSON works too, and a saved config reads back to the same values.
    (tmp_path / "c.json").write_text(json.dumps({"optim": {"name": "sgd", "lr": 0.5}}))
    cfg = load_config(tmp_path / "c.json")
    cfg.save(tmp_path / "saved.yaml")
    assert load_config(tmp_path / "saved.yaml") == cfg
    assert TrainingConfig().optim.name == "adamw"


def test_mixed_precision_auto_follows_native_bf16(monkeypatch):
    import warnings

    from hmer_hf.training import trainer

    monkeypatch.setattr(trainer, "has_native_bf16", lambda device_type: device_type == "cuda")
    assert trainer.resolve_mixed_precision("auto", "cuda") == "bf16"
    assert trainer.resolve_mixed_precision("auto", "cpu") == "no"
    with pytest.warns(UserWarning, match="without native bf16"):
        assert trainer.resolve_mixed_precision("bf16", "cpu") == "bf16"  # an explicit choice is kept, with a warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert trainer.resolve_mixed_precision("bf16", "cuda") == "bf16"
        assert trainer.resolve_mixed_precision("no", "cpu") == "no"
    monkeypatch.setattr(trainer, "has_native_bf16", lambda device_type: True)
    assert trainer.resolve_mixed_precision("auto", "cpu") == "bf16"
    # This machine's answer is the oneDNN flag that decides whether bf16 kernels are native.
    monkeypatch.undo()
    assert trainer.has_native_bf16("cpu") == bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    with pytest.raises(ValueError, match="mixed_precision must be one of"):
        load_config(TINY, ["train.mixed_precision=bf32"])
    assert load_config(TINY, ["train.mixed_precision=auto"]).train.mixed_precision == "auto"


def test_step_budget_decides_when_max_epochs_is_null():
    """`train.max_epochs: null` plans as many epochs as `max_steps` needs; a set `max_epochs` that cannot reach
    `max_steps` caps it, and says so when the trainer starts (see the run test below)."""
    from hmer_hf.data import PixelBudgetBatchSampler
    from hmer_hf.training.trainer import planned_steps

    sampler = PixelBudgetBatchSampler([[10, 10]] * 16, max_pixels=10_000, max_batch_size=2, seed=0)  # 8 batches
    assert planned_steps(sampler, load_config(TINY, ["train.max_epochs=null", "train.max_steps=20"]), 1) == [8, 8, 8]
    assert planned_steps(sampler, load_config(TINY, ["train.max_epochs=null", "train.max_steps=16"]), 1) == [8, 8]
    assert planned_steps(sampler, load_config(TINY, ["train.max_epochs=1", "train.max_steps=20"]), 1) == [8]
    assert planned_steps(sampler, load_config(TINY, ["train.max_epochs=null", "train.max_steps=20",
                                                     "train.gradient_accumulation_steps=3"]), 2) == [2, 2, 2, 2, 2, 2,
                                                                                                     2, 2, 2, 2]
    with pytest.raises(ValueError, match="needs train.max_steps"):
        load_config(TINY, ["train.max_epochs=null", "train.max_steps=null"])
    with pytest.raises(ValueError, match="at least 1"):
        load_config(TINY, ["train.max_epochs=0"])


def test_schedules():
    model = torch.nn.Linear(2, 2)
    cfg = load_config(TINY, ["schedule.name=cosine", "schedule.warmup_steps=2", "optim.lr=1.0"])
    opt = build_optimizer(cfg, model)
    sched = build_scheduler(cfg, opt, total_steps=10, steps_per_epoch=5)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == 0.0 and lrs[2] == pytest.approx(1.0) and lrs[-1] < 0.05  # warmup, peak, cosine to ~0
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:]))

    cfg = load_config(TINY, ["optim.name=sgd", "optim.lr=0.08", "schedule.name=plateau", "schedule.patience=1"])
    opt = build_optimizer(cfg, model)
    sched = build_scheduler(cfg, opt, total_steps=10, steps_per_epoch=5)
    assert isinstance(opt, torch.optim.SGD) and isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau)
    for exprate in (0.1, 0.2, 0.2, 0.2):  # mode="max": two validations without improvement -> x0.25
        sched.step(exprate)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.02)


def test_batch_seeded_augmentation_is_a_function_of_the_batch():
    from hmer_hf.data import build_augmentation

    base = build_augmentation("handwriting")
    aug = BatchSeededAugmentation(base.transforms)
    image = Image.fromarray(draw_formula_image(1))

    def run(epoch, indices):
        aug.seed_batch(0, epoch, indices)
        return np.asarray(aug({"image": [image]})["image"][0])

    first = run(3, [4, 7])
    run(0, [1])  # anything drawn in between must not matter
    assert np.array_equal(run(3, [4, 7]), first)
    assert any(not np.array_equal(run(e, [4, 7]), first) for e in (4, 5, 6))


def test_resume_resolution_ignores_incomplete_checkpoints(tmp_path):
    root = tmp_path / "checkpoints"
    for step, complete in ((5, True), (10, True), (15, False)):
        (root / f"checkpoint-{step}").mkdir(parents=True)
        if complete:
            (root / f"checkpoint-{step}" / STATE_FILE).write_text("{}")
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-5", "checkpoint-10"]
    assert resolve_resume(True, tmp_path).name == "checkpoint-10"  # 15 was being written when the run died
    assert resolve_resume("latest", tmp_path).name == "checkpoint-10"
    assert resolve_resume(str(root / "checkpoint-5"), tmp_path).name == "checkpoint-5"
    assert resolve_resume(None, tmp_path) is None
    with pytest.raises(FileNotFoundError):
        resolve_resume(str(root / "checkpoint-15"), tmp_path)


# ---------------------------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------------------------


def test_sigkill_mid_epoch_then_resume_continues_exactly(tmp_path, crohme_or_none):
    """Kill a run right after its first mid-epoch checkpoint; the resumed run must continue the uninterrupted one."""
    data, _ = caption_folder(tmp_path / "data", crohme_or_none, 16)
    steps_per_epoch = 8  # 16 images, 2 per batch
    args = [
        "--set", f"data.train={data}", "data.augmentation=comer", "model.overrides.dropout=0.3",
        "train.max_batch_size=2", "train.max_epochs=2", "train.save_every_steps=3", "train.log_every_steps=1",
        "train.progress=false", "eval.every_epochs=0",
    ]
    reference = run_train(*args, "--output-dir", str(tmp_path / "reference"))
    assert reference.returncode == 0, reference.stderr[-3000:]
    ref_log = {r["step"]: r for r in read_log(tmp_path / "reference")}
    assert sorted(ref_log) == list(range(1, 2 * steps_per_epoch + 1))

    run_dir = tmp_path / "interrupted"
    cmd = [sys.executable, "-m", "hmer_hf.cli", "train", str(TINY), *args, "--output-dir", str(run_dir)]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=ONE_THREAD_ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 240

    def logged_past_checkpoint() -> bool:
        # Kill once a checkpoint exists *and* a later step was logged, so the resumed run must drop that record.
        done = list_checkpoints(run_dir)
        log = run_dir / "log.jsonl"
        return bool(done) and log.is_file() and len(log.read_text().splitlines()) > int(done[0].name.split("-")[1])

    try:
        while not logged_past_checkpoint():
            assert proc.poll() is None, "the run ended before writing a checkpoint"
            assert time.time() < deadline, "no checkpoint within the time limit"
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    checkpoint = list_checkpoints(run_dir)[-1]
    killed_at = int(checkpoint.name.split("-")[1])
    assert killed_at % steps_per_epoch != 0, f"checkpoint {killed_at} is not mid-epoch"

    resumed = run_train(*args, "--output-dir", str(run_dir), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from {checkpoint} (step {killed_at}, epoch 0, batch {killed_at})" in resumed.stdout

    log = read_log(run_dir)
    steps = [r["step"] for r in log]
    assert steps == list(range(1, 2 * steps_per_epoch + 1)), "steps must continue with no gap or repeat"
    for record in log:
        ref = ref_log[record["step"]]
        # Same data (position, order, augmentation), same dropout masks, same optimizer state: the same losses.
        assert record["samples_seen"] == ref["samples_seen"]
        assert record["epoch"] == ref["epoch"]
        assert record["lr"] == ref["lr"]
        assert record["loss"] == pytest.approx(ref["loss"], rel=1e-5, abs=1e-6), f"step {record['step']}"
    # The run finished normally after resuming: final checkpoint and models are there.
    assert list_checkpoints(run_dir)[-1].name == f"checkpoint-{2 * steps_per_epoch}"
    assert (run_dir / "last" / "model.safetensors").is_file()


def test_max_steps_runs_past_an_epoch_with_max_epochs_null_and_warns_when_capped(tmp_path, crohme_or_none):
    data, _ = caption_folder(tmp_path / "data", crohme_or_none, 8)  # 4 steps per epoch
    args = ["--set", f"data.train={data}", "train.max_batch_size=2", "train.log_every_steps=1",
            "train.progress=false", "eval.every_epochs=0", "train.save_every_steps=null", "train.max_steps=6"]
    free = run_train(*args, "train.max_epochs=null", "--output-dir", str(tmp_path / "free"))
    assert free.returncode == 0, free.stderr[-3000:]
    log = read_log(tmp_path / "free")
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6] and log[-1]["epoch"] == 1.5  # half way into epoch 2
    assert "is more than" not in free.stderr
    capped = run_train(*args, "train.max_epochs=1", "--output-dir", str(tmp_path / "capped"))
    assert capped.returncode == 0, capped.stderr[-3000:]
    assert [r["step"] for r in read_log(tmp_path / "capped")] == [1, 2, 3, 4]
    assert "train.max_steps=6 is more than the 4 steps of train.max_epochs=1: training stops after 4" in capped.stderr


def test_tiny_config_learns_real_images_through_the_entry_point(tmp_path, crohme_or_none, one_thread):
    """`hmer-hf train configs/tiny_smoke.yaml` on 8 images: the saved best/ model transcribes all of them (greedy)."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    data, captions = caption_folder(tmp_path / "data", crohme_or_none, 8)
    out = tmp_path / "run"
    proc = run_train("--output-dir", str(out), "--set", f"data.train={data}", f"data.validation={data}",
                     "train.progress=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads((out / "best" / "trainer_info.json").read_text())
    assert info["val_exprate"] == 1.0, proc.stdout[-2000:]
    assert (out / "best" / "generation_config.json").is_file() and (out / "tensorboard").is_dir()
    val = [r for r in read_log(out) if "val_exprate" in r]
    assert val[-1]["val_exprate"] == 1.0 and val[-1]["val_num_samples"] == 8

    model = AutoModelForImageTextToText.from_pretrained(out / "best").eval()
    processor = AutoProcessor.from_pretrained(out / "best")
    names = [line.split("\t")[0] for line in (data / "caption.txt").read_text().splitlines()]
    batch = processor(images=[str(data / "img" / f"{n}.bmp") for n in names])
    ids = model.generate(**batch, num_beams=1, max_new_tokens=40)
    assert processor.batch_decode(ids, skip_special_tokens=True) == captions

    from hmer_hf.evaluation import evaluate_model

    metrics = evaluate_model(out / "best", data, out=tmp_path / "eval", progress=False)
    assert metrics["exprate"] == 1.0 and metrics["num_samples"] == 8


def test_cli_reports_config_and_data_errors(tmp_path, capsys):
    from hmer_hf.cli import main

    assert main(["train", str(TINY)]) == 2  # no data.train
    assert "data.train is not set" in capsys.readouterr().err
    assert main(["train", str(TINY), "--set", f"data.train={tmp_path / 'missing'}"]) == 2
    assert main(["train", str(TINY), "--set", "optim.lr=fast"]) == 2
    assert "optim.lr must be a number" in capsys.readouterr().err


def test_loss_parts_of_a_member_are_logged(tmp_path, crohme_or_none):
    """HMER-MTL reports its skeleton loss next to the cross-entropy; the training log carries both."""
    data, _ = caption_folder(tmp_path / "data", crohme_or_none, 4)
    out = tmp_path / "run"
    proc = run_train("--output-dir", str(out), "--set", f"data.train={data}", f"data.validation={data}",
                     "model.preset=hmer-mtl", "train.max_steps=2", "train.log_every_steps=1", "train.progress=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    train_lines = [line for line in read_log(out) if "loss" in line]
    assert train_lines and all("ce_loss" in line and "skeleton_loss" in line for line in train_lines)
    assert all("mutual_kl_loss" not in line for line in train_lines)
    for line in train_lines:  # loss = ce + 1.0 * skeleton (averaged over the same batches)
        assert abs(line["loss"] - (line["ce_loss"] + line["skeleton_loss"])) < 1e-4


def test_fine_tuning_with_canvas_restyling_sets_the_processor(tmp_path, crohme_or_none):
    """init_from + model.image_processor settings: the saved processor carries them; canvas restyling needs ink
    normalisation and says so."""
    data, _ = caption_folder(tmp_path / "data", crohme_or_none, 4)
    base = tmp_path / "base"
    common = ("--set", f"data.train={data}", "data.validation=null", "train.max_steps=1", "train.progress=false")
    proc = run_train("--output-dir", str(base), *common)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((base / "last" / "processor_config.json").read_text())["image_processor"]["normalize_ink"] == "off"

    refused = run_train("--output-dir", str(tmp_path / "refused"), *common, f"model.init_from={base / 'last'}",
                        "data.canvas_prob=0.5")
    assert refused.returncode != 0 and "normalize_ink" in refused.stderr

    tuned = tmp_path / "tuned"
    proc = run_train("--output-dir", str(tuned), *common, f"model.init_from={base / 'last'}", "data.canvas_prob=0.5",
                     "model.image_processor.normalize_ink=auto")
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = json.loads((tuned / "last" / "processor_config.json").read_text())["image_processor"]
    assert saved["normalize_ink"] == "auto"
    bad = run_train("--output-dir", str(tmp_path / "bad"), *common, f"model.init_from={base / 'last'}",
                    "model.image_processor.no_such_setting=1")
    assert bad.returncode != 0 and "no_such_setting" in bad.stderr
