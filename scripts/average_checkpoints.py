"""Average the weights of several saved models of one architecture (SWA over the ends of cosine cycles).

    python scripts/average_checkpoints.py OUT_DIR MODEL_DIR [MODEL_DIR ...]

Every MODEL_DIR is a `save_pretrained` folder (e.g. RUN/best) of the same configuration. OUT_DIR gets the first
folder's files (config, processor, tokenizer, remote code; not its trainer_info.json) and a `model.safetensors`
whose floating-point tensors are the mean of all folders' (BatchNorm running statistics included; integer tensors
such as `num_batches_tracked` are the first folder's). Averaging the final weights of two consecutive cycles of
`configs/comer_crohme_cpu_continue.yaml` (the fifth started from the fourth's) raised greedy ExpRate on CROHME 2014
from 25.25/24.54% to 26.37% (README).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from hmer_hf.hub import TRAINER_INFO_FILE

WEIGHTS = "model.safetensors"


def average_checkpoints(out: str | Path, model_dirs: list[str | Path]) -> Path:
    """Write the weight average of `model_dirs` to `out` (see the module docstring); returns `out`."""
    import torch
    from safetensors.torch import load_file, save_file

    if not model_dirs:
        raise ValueError("give at least one model folder")
    dirs = [Path(d) for d in model_dirs]
    out = Path(out)
    if out.resolve() in {d.resolve() for d in dirs}:
        raise ValueError(f"{out} is one of the inputs; choose a new folder")
    for d in dirs:
        if not (d / WEIGHTS).is_file():
            raise FileNotFoundError(f"{d}: no {WEIGHTS} (expected a save_pretrained folder)")
    states = [load_file(d / WEIGHTS) for d in dirs]
    first = states[0]
    for d, state in zip(dirs[1:], states[1:]):
        if state.keys() != first.keys():
            raise ValueError(f"{d}: its weights have other names than {dirs[0]}'s: not the same architecture")
        bad = [k for k in first if state[k].shape != first[k].shape]
        if bad:
            raise ValueError(f"{d}: {bad[0]} has shape {tuple(state[bad[0]].shape)}, not {tuple(first[bad[0]].shape)}")
    averaged = {}
    for key, tensor in first.items():
        if tensor.is_floating_point():
            mean = torch.stack([s[key].double() for s in states]).mean(0)
            averaged[key] = mean.to(tensor.dtype).contiguous()
        else:
            averaged[key] = tensor
    shutil.copytree(dirs[0], out, dirs_exist_ok=True)
    (out / TRAINER_INFO_FILE).unlink(missing_ok=True)  # the first folder's step and score are not the average's
    save_file(averaged, out / WEIGHTS, metadata={"format": "pt"})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="new folder for the averaged model")
    parser.add_argument("model_dirs", type=Path, nargs="+", help="save_pretrained folders of one architecture")
    args = parser.parse_args(argv)
    try:
        out = average_checkpoints(args.out, args.model_dirs)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"averaged {len(args.model_dirs)} models -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
