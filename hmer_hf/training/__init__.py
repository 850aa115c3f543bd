"""Training: a YAML/JSON-configured accelerate loop for the HMER family (`hmer-hf train`, scripts/train.py).

See docs/training.md for the guide and the configuration keys.
"""

from .config import (
    DataConfig,
    EvalConfig,
    ModelConfig,
    OptimConfig,
    ScheduleConfig,
    TrainConfig,
    TrainingConfig,
    load_config,
    parse_overrides,
)
from .trainer import (
    BatchSeededAugmentation,
    HMERCollator,
    Trainer,
    TrainerState,
    list_checkpoints,
    resolve_resume,
    train,
)

__all__ = [
    "TrainingConfig", "ModelConfig", "DataConfig", "OptimConfig", "ScheduleConfig", "TrainConfig", "EvalConfig",
    "load_config", "parse_overrides",
    "Trainer", "TrainerState", "train", "HMERCollator", "BatchSeededAugmentation", "list_checkpoints",
    "resolve_resume",
]
