"""Same-compute comparison of the model presets: train each with the same budget, evaluate on CROHME 2014, print a table.

Every preset is trained from scratch by the one training script (`hmer-hf train`) with one config
(configs/compare_presets.yaml: the shipped model's CPU recipe) for the same number of optimizer steps. The batch
sampler depends only on the data and the seed, so every preset sees the same batches in the same order: the budget is
the same samples, whatever a preset costs per sample. The only per-preset setting is the encoder's downsampling for
the half-resolution input (DenseNet: `transition_pooling=[True, False]`, ResNet: `resnet_pooling=[True, True, True,
False]`: stride 16 of the original image for both).

Each trained model is then evaluated with `hmer-hf evaluate`: greedy on all the validation images and beam search
(--num-beams, with the preset's own rescoring setting) on the first --beam-limit of them. The table (Markdown, also in
OUT/table.md, with OUT/results.json) gives ExpRate greedy and beam, <=1/<=2/<=3 (greedy), ExpRate of the short
expressions (1-5 and 6-10 reference tokens, greedy), parameters, training samples/s (the trainer's own measurement,
time spent validating and saving excluded) and decoding ms/expression (batched greedy evaluation, 1/throughput).

A preset whose training or evaluation fails is reported as failed in the table; the others go on. Finished steps are
reused when the script is run again, and an interrupted training continues from its newest checkpoint (delete
OUT/<preset> to redo one).

    python scripts/compare_presets.py --max-steps 400                 # all presets, CPU budget
    python scripts/compare_presets.py --presets comer,abm --max-steps 4000 --out runs/compare_gpu

A budget can be enlarged in stages: `--continue-from PREV` starts every preset from its final weights in an earlier
comparison (PREV/<preset>/last) instead of from scratch, with a new schedule (warmup, cosine) over --max-steps; give
it another seed (`--set train.seed=...`) so the new steps do not replay the earlier batches. The budget is then the
earlier one plus --max-steps, the same for every preset.

    python scripts/compare_presets.py --continue-from runs/compare_1ep --max-steps 2200 --out runs/compare_3ep \
        --set train.seed=8
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

PRESETS = ("comer", "bttr", "hmer-mtl", "abm", "san-da")
ENCODER_OVERRIDES = {
    "densenet": "model.overrides.transition_pooling=[true,false]",
    "resnet18": "model.overrides.resnet_pooling=[true,true,true,false]",
}


def run(cmd: list[str], log: Path, env: dict[str, str]) -> bool:
    """Run a command with its output in `log`; True when it succeeded."""
    print("$", " ".join(cmd), f"> {log}", flush=True)
    with open(log, "w") as f:
        code = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env).returncode
    if code:
        print(f"  failed with exit code {code}; see {log}", flush=True)
    return code == 0


def train_samples_per_second(run_dir: Path) -> float | None:
    """Samples per second over the whole run, from the trainer's log lines (validation/saving time excluded)."""
    samples = seconds = 0.0
    log = run_dir / "log.jsonl"
    if not log.exists():
        return None
    for line in log.read_text().splitlines():
        rec = json.loads(line)
        if "samples_per_second" in rec and rec["samples_per_second"]:
            # each line covers the samples since the previous one
            n = rec["samples_seen"] - samples
            seconds += n / rec["samples_per_second"]
            samples = rec["samples_seen"]
    return samples / seconds if seconds else None


def compare(args: argparse.Namespace) -> list[dict]:
    from hmer_hf import HMERConfig
    from hmer_hf.hub import count_parameters

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    results = []
    for preset in args.presets:
        run_dir = out / preset
        model_dir = run_dir / "last"
        row: dict = {"preset": preset, "status": "ok"}
        if not (model_dir / "config.json").exists():
            # --resume: an interrupted run continues from its newest checkpoint (a new one starts from scratch).
            if args.continue_from:
                earlier = Path(args.continue_from) / preset / "last"
                if not (earlier / "config.json").exists():
                    results.append({**row, "status": f"no earlier model in {earlier}"})
                    continue
                start = f"model.init_from={earlier}"  # its config (encoder settings included) and weights
            else:
                start = ENCODER_OVERRIDES[HMERConfig.from_preset(preset).encoder_type]
            cmd = ["hmer-hf", "train", args.config, "--resume", "--set", f"model.preset={preset}", start,
                   f"train.output_dir={run_dir}", f"train.max_steps={args.max_steps}", "data.validation=null",
                   *args.set]
            run_dir.mkdir(parents=True, exist_ok=True)
            if not run(cmd, run_dir / "train.log", env):
                results.append({**row, "status": "training failed"})
                continue
        evals = {"greedy": (1, None), "beam": (args.num_beams, args.beam_limit)}
        metrics = {}
        for name, (beams, limit) in evals.items():
            eval_dir = run_dir / f"eval_{name}"
            if not (eval_dir / "metrics.json").exists():
                cmd = ["hmer-hf", "evaluate", "--model", str(model_dir), "--data", args.data, "--num-beams",
                       str(beams), "--out", str(eval_dir), "--no-progress"]
                if limit:
                    cmd += ["--limit", str(limit)]
                if not run(cmd, run_dir / f"eval_{name}.log", env):
                    row["status"] = f"{name} evaluation failed"
                    continue
            metrics[name] = json.loads((eval_dir / "metrics.json").read_text())
        greedy, beam = metrics.get("greedy"), metrics.get("beam")
        row.update(
            parameters=count_parameters(model_dir),
            train_samples_per_second=train_samples_per_second(run_dir),
            steps=args.max_steps,
        )
        if greedy:
            buckets = greedy.get("length_buckets", {})
            row.update(
                greedy=greedy["exprate"], greedy_le1=greedy["exprate_le1"], greedy_le2=greedy["exprate_le2"],
                greedy_le3=greedy["exprate_le3"], greedy_num_samples=greedy["num_samples"],
                greedy_1_5=buckets.get("1-5", {}).get("exprate"), greedy_6_10=buckets.get("6-10", {}).get("exprate"),
                greedy_ms_per_expression=1000.0 / greedy["expressions_per_second"],
                syntax_constraints=greedy.get("syntax_constraints", False),  # not recorded: before they existed
            )
        if beam:
            row.update(beam=beam["exprate"], beam_num_samples=beam["num_samples"],
                       beam_ms_per_expression=1000.0 / beam["expressions_per_second"])
        results.append(row)
        (out / "results.json").write_text(json.dumps(results, indent=2))
    return results


def pct(value) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def table(results: list[dict], args: argparse.Namespace) -> str:
    beam_n = next((r.get("beam_num_samples") for r in results if r.get("beam_num_samples")), args.beam_limit)
    greedy_n = next((r.get("greedy_num_samples") for r in results if r.get("greedy_num_samples")), "all")
    used = {r["syntax_constraints"] for r in results if "syntax_constraints" in r}
    constraints = {frozenset({True}): "on", frozenset({False}): "off"}.get(frozenset(used), "mixed (see results.json)")
    lines = [
        f"Budget: {args.max_steps} optimizer steps each (the same batches)"
        + (f", continued from the final weights of {args.continue_from}" if args.continue_from else "")
        + f", {args.threads} CPU thread(s); "
        f"greedy on {greedy_n} images, beam {args.num_beams} on the first {beam_n}; syntax constraints {constraints}.",
        "",
        "| preset | params | greedy ExpRate | ≤1 | ≤2 | ≤3 | 1-5 tokens | 6-10 tokens | "
        f"beam {args.num_beams} ExpRate | train samples/s | greedy ms/expr | beam ms/expr |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if "parameters" not in r:
            lines.append(f"| {r['preset']} | {r['status']} |" + " |" * 10)
            continue
        sps = r.get("train_samples_per_second")
        gms, bms = r.get("greedy_ms_per_expression"), r.get("beam_ms_per_expression")
        lines.append(
            f"| {r['preset']} | {r['parameters'] / 1e6:.2f} M | {pct(r.get('greedy'))} | {pct(r.get('greedy_le1'))} "
            f"| {pct(r.get('greedy_le2'))} | {pct(r.get('greedy_le3'))} | {pct(r.get('greedy_1_5'))} "
            f"| {pct(r.get('greedy_6_10'))} | {pct(r.get('beam'))} | {'–' if sps is None else f'{sps:.2f}'} "
            f"| {'–' if gms is None else f'{gms:.0f}'} | {'–' if bms is None else f'{bms:.0f}'} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default=",".join(PRESETS), help="comma-separated presets")
    parser.add_argument("--config", default="configs/compare_presets.yaml")
    parser.add_argument("--max-steps", type=int, default=400, help="optimizer steps per preset (the budget)")
    parser.add_argument("--data", default="../shared/data/crohme/2014", help="labelled validation data")
    parser.add_argument("--num-beams", type=int, default=10)
    parser.add_argument("--beam-limit", type=int, default=100, help="beam search on the first N images (0: all)")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the training/evaluation runs")
    parser.add_argument("--out", default="runs/compare")
    parser.add_argument("--continue-from", default=None,
                        help="an earlier comparison's output folder: start each preset from its final weights there")
    parser.add_argument("--set", nargs="*", default=[], help="extra config overrides for every run (KEY=VALUE)")
    args = parser.parse_args(argv)
    args.presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    unknown = [p for p in args.presets if p not in PRESETS]
    if unknown:
        parser.error(f"unknown preset(s) {unknown}; choose from {PRESETS}")
    results = compare(args)
    text = table(results, args)
    Path(args.out, "table.md").write_text(text)
    print(text)
    return 0 if all(r["status"] == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
