"""Training Paint by Example: the paper's self-supervised recipe, full fine-tunes and LoRA.

    from pbe_core.checkpoint import load_models
    from pbe_core.train import TrainConfig, train_steps

    models = load_models("base.safetensors")             # float32 weights
    pairs = [(picture, object_mask), ...]                 # PIL RGB + PIL "L" (white = object) or a box
    result = train_steps(models, pairs, TrainConfig(steps=1000, resolution=512, batch_size=4))

`samples` builds one sample of the recipe, `loop` trains, `lora` adds and applies adapters.
"""

from .loop import Progress, TrainConfig
from .samples import Recipe, Sample, build_sample
from .trainer import Trainer, TrainResult, train_steps

__all__ = [
    "Progress", "Recipe", "Sample", "TrainConfig", "TrainResult", "Trainer", "build_sample", "train_steps",
]
