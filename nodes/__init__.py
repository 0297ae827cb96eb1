"""ComfyUI nodes: thin adapters from ComfyUI types to `pbe_core`, on ComfyUI's own machinery.

The V3 node API of `comfy_api.v0_0_2` (pinned: `latest` moves under the pack). Importing this
package changes nothing in ComfyUI; the extension's `on_load` registers the model folder.
"""

from __future__ import annotations

from comfy_api.v0_0_2 import ComfyExtension, io

from .conditioning import PaintByExampleInpaintConditioning
from .exemplar import PaintByExampleExemplarEncode
from .folders import register_model_folder
from .lora import PaintByExampleLoraLoader
from .model import PaintByExampleModelLoader
from .regions import (
    PaintByExampleCrop,
    PaintByExampleGrowMask,
    PaintByExampleMaskToBBox,
    PaintByExampleStitch,
)
from .results import PaintByExampleColourMatch, PaintByExampleRankByClipScore
from .sampler import PaintByExampleEdit

NODES: list[type[io.ComfyNode]] = [
    PaintByExampleModelLoader,
    PaintByExampleLoraLoader,
    PaintByExampleExemplarEncode,
    PaintByExampleInpaintConditioning,
    PaintByExampleEdit,
    PaintByExampleCrop,
    PaintByExampleStitch,
    PaintByExampleGrowMask,
    PaintByExampleMaskToBBox,
    PaintByExampleColourMatch,
    PaintByExampleRankByClipScore,
]


class PaintByExampleExtension(ComfyExtension):
    async def on_load(self) -> None:
        register_model_folder()

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        # ComfyUI 0.3.64 asks for the nodes without calling on_load (later versions call it
        # first); registering twice is harmless, and the loader's list needs the folder.
        await self.on_load()
        return NODES


async def comfy_entrypoint() -> PaintByExampleExtension:
    return PaintByExampleExtension()
