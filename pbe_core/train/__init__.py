"""Training Paint by Example: the paper's self-supervised recipe, full fine-tunes and LoRA.

    from pbe_core.checkpoint import load_models, save_single_file, weights_of
    from pbe_core.train import TrainConfig, Trainer, read_dataset
    from pbe_core.train.lora import apply_lora, save_lora

    models = load_models("base.safetensors")              # float32 weights, any layout
    data = read_dataset("my-pictures/")                    # masks folder, COCO .json, Open Images
    trainer = Trainer(models, data, TrainConfig(steps=1000, resolution=512, batch_size=4))
    result = trainer.run(callback=print)                   # trains `models` in place
    if result.interrupted:                                 # Ctrl-C: stopped after a whole step
        trainer.save_state("run.state.pt")                 # Trainer.load_state resumes exactly
    save_single_file(weights_of(models), "tuned.safetensors")

With `TrainConfig(lora_rank=R)` the UNet stays frozen and gets adapters: write them with
`save_lora(result.adapters, models, "lora.safetensors", ENCODER_PARTS)` and apply them to
base weights with `apply_lora(models, "lora.safetensors", strength)`. A data set is any
sequence of (PIL picture, object mask or box); `build_sample` makes one sample of the recipe.
Modules: `samples` and `augment` (the recipe), `data` (readers), `loop` (loss, parts,
checkpointing), `trainer` (optimizer, stop, resume), `lora`, `preview`, `cli`.
"""

from .data import DataError, DataSet, read_dataset
from .loop import ENCODER_PARTS, Progress, TrainConfig
from .samples import Recipe, Sample, build_sample
from .trainer import StateError, Trainer, TrainResult, train_steps

__all__ = [
    "ENCODER_PARTS", "DataError", "DataSet", "Progress", "Recipe", "Sample", "StateError",
    "TrainConfig", "TrainResult", "Trainer", "build_sample", "read_dataset", "train_steps",
]
