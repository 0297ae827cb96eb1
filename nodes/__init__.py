"""ComfyUI nodes: thin adapters from ComfyUI types to `pbe_core`, on ComfyUI's own machinery."""

from .conditioning import PaintByExampleInpaintConditioning
from .exemplar import PaintByExampleExemplarEncode
from .model import PaintByExampleModelLoader, register_model_folder
from .regions import (
    PaintByExampleCrop,
    PaintByExampleGrowMask,
    PaintByExampleMaskToBBox,
    PaintByExampleStitch,
)
from .sampler import PaintByExampleEdit

register_model_folder()

NODE_CLASS_MAPPINGS: dict[str, type] = {
    "PaintByExampleModelLoader": PaintByExampleModelLoader,
    "PaintByExampleExemplarEncode": PaintByExampleExemplarEncode,
    "PaintByExampleInpaintConditioning": PaintByExampleInpaintConditioning,
    "PaintByExampleEdit": PaintByExampleEdit,
    "PaintByExampleCrop": PaintByExampleCrop,
    "PaintByExampleStitch": PaintByExampleStitch,
    "PaintByExampleGrowMask": PaintByExampleGrowMask,
    "PaintByExampleMaskToBBox": PaintByExampleMaskToBBox,
}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {
    "PaintByExampleModelLoader": "Load Paint by Example Model",
    "PaintByExampleExemplarEncode": "Paint by Example Exemplar Encode",
    "PaintByExampleInpaintConditioning": "Paint by Example Inpaint Conditioning",
    "PaintByExampleEdit": "Paint by Example (all-in-one)",
    "PaintByExampleCrop": "Paint by Example Crop",
    "PaintByExampleStitch": "Paint by Example Stitch",
    "PaintByExampleGrowMask": "Paint by Example Grow Mask",
    "PaintByExampleMaskToBBox": "Paint by Example Mask to BBox",
}
