"""ComfyUI entry point of the Paint by Example node pack.

Outside ComfyUI (pytest collecting this folder, a plain `import`), the nodes, which need ComfyUI's
modules, are not loaded and the pack registers nothing.
"""

import importlib.util

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
WEB_DIRECTORY = "./web"

if importlib.util.find_spec("comfy") is not None:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: F811

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
