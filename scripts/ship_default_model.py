"""Copy a trained model into the package as the shipped default model (`hmer_hf.DEFAULT_MODEL`).

    python scripts/ship_default_model.py runs/comer_crohme_cpu/best \
        --eval-results runs/eval/eval_results.json --dtype float16

Writes `hmer_hf/pretrained/hmer-comer-crohme/` (or `--out`): the weights as safetensors in `--dtype` (float16 halves
the wheel; `config.json` still says float32, so `from_pretrained` computes in float32), the processor, tokenizer and
generation config (the image processor with `normalize_ink="auto"`), `trainer_info.json` (which checkpoint), `eval_results.json` and the model card (`hmer_hf.hub`).
The remote-code `.py` copies that `save_pretrained` adds are left out: inside the package the registered classes load
the folder, and `hmer-hf push` adds the current files when it assembles an upload. Check the half-precision copy with
`hmer-hf evaluate` before committing it (the model card reports what eval_results.json holds, nothing else).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch

import hmer_hf
from hmer_hf import HMERForConditionalGeneration, HMERProcessor
from hmer_hf.hub import TRAINER_INFO_FILE, read_eval_results, write_eval_results, write_model_card

TRAINING_DATA = (
    "CROHME 2014/2016 training set (8,834 InkML expressions; 2 malformed files skipped), rendered offline by "
    "`hmer_hf.data` with the renderer fitted to the canonical CROHME 2014 test images, labelled with the canonical "
    "normalised captions (`train_caption.txt`, script order converted to the 2014 test convention). Validation: the "
    "986 canonical CROHME 2014 test images. Trained on a 2-core CPU in cosine cycles: "
    "`configs/comer_crohme_cpu.yaml` (4,200 AdamW steps from scratch), then four times "
    "`configs/comer_crohme_cpu_continue.yaml` from the previous cycle's weights (4,400, 4,400, 4,000 and 4,800 "
    "steps, seeds 11, 13, 17 and 19; a quarter of the training images redrawn as canvas drawings and brought back by "
    "the processor's ink normalisation), then two 3,600-step cycles of the same recipe (seed 23) from the average of "
    "the fourth and fifth, one with the `comer` augmentation and one with `elastic` (smooth random warps), whose "
    "ends were averaged with the fourth and fifth cycles' (four weights: the fourth and fifth cycles' final weights, "
    "the `comer` sixth cycle at its best validation, the `elastic` sixth cycle's final weights); then two 3,600-step "
    "seventh cycles (seed 29) from that average, again one `comer` and one `elastic`, averaged with it (three "
    "weights); then two 3,600-step eighth cycles from that three-way average, both `elastic` (seeds 31 and 37), averaged "
    "with the seventh `elastic` cycle (three final weights); then two 3,600-step ninth cycles from that average, both "
    "`elastic` (seeds 41 and 43), averaged (two final weights); then two 3,600-step tenth cycles from that average, "
    "both `elastic` (seeds 47 and 53), averaged with it (three weights); then two 3,600-step eleventh cycles from "
    "that average, both `elastic` (seeds 59 and 61). The shipped weights are the uniform average "
    "(`scripts/average_checkpoints.py`) of the tenth round's average and the two eleventh cycles' final weights."
)


def ship(model_dir: Path, out: Path, dtype: str, eval_results: Path | None, normalize_ink: str = "auto") -> Path:
    """Write the shipped copy of `model_dir` to `out` (replacing it); returns `out`."""
    model = HMERForConditionalGeneration.from_pretrained(model_dir)
    processor = HMERProcessor.from_pretrained(model_dir)
    # Trained with "off" (augmented CROHME ink must stay as it is); for users "auto": drawings and scans are brought to
    # the CROHME geometry, CROHME-style images pass through bit-identical (docs/canvas.md).
    processor.image_processor.normalize_ink = normalize_ink
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    model.to(getattr(torch, dtype)).save_pretrained(out)
    processor.save_pretrained(out)
    config_path = out / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["dtype"] = "float32"  # stored in `dtype`, computed in float32 (from_pretrained follows config.dtype)
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    for code in out.glob("*.py"):
        code.unlink()
    if (model_dir / TRAINER_INFO_FILE).is_file():
        shutil.copy2(model_dir / TRAINER_INFO_FILE, out / TRAINER_INFO_FILE)
    entries = read_eval_results(eval_results) if eval_results else []
    if entries:
        write_eval_results(out, entries)
    write_model_card(out, eval_results=entries, training_data=TRAINING_DATA, datasets=())
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", type=Path, help="a save_pretrained folder (e.g. runs/comer_crohme_cpu/best)")
    parser.add_argument("--out", type=Path, default=Path(hmer_hf.DEFAULT_MODEL))
    parser.add_argument("--dtype", choices=["float16", "bfloat16", "float32"], default="float16")
    parser.add_argument("--eval-results", type=Path, default=None, help="eval_results.json to ship with the card")
    parser.add_argument("--normalize-ink", choices=["off", "auto", "always"], default="auto",
                        help="the shipped image processor's ink normalisation (docs/canvas.md)")
    args = parser.parse_args(argv)
    if not (args.model_dir / "config.json").is_file():
        print(f"error: {args.model_dir} is not a saved model folder (no config.json)", file=sys.stderr)
        return 2
    out = ship(args.model_dir, args.out, args.dtype, args.eval_results, args.normalize_ink)
    size = sum(f.stat().st_size for f in out.iterdir()) / 2**20
    print(f"shipped {args.model_dir} -> {out} ({size:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
