"""ComfyUI entry point of the Paint by Example node pack (V3 node API).

Outside ComfyUI (pytest collecting this folder, a plain `import`), the nodes, which need ComfyUI's
modules, are not loaded. In a ComfyUI older than the one the nodes need, nothing is registered
and the log says which version to update to.
"""

import importlib.util
import logging

MINIMUM_COMFYUI = (0, 3, 64)  # keep equal to requires-comfyui in pyproject.toml
WEB_DIRECTORY = "./web"


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for part in text.split("."):
        digits = "".join(c for c in part if c.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def too_old_message(version: str | None, has_v3_api: bool) -> str | None:
    """Why this ComfyUI cannot load the nodes, or None when it can."""
    if has_v3_api and version is not None and _version(version) >= MINIMUM_COMFYUI:
        return None
    needed = ".".join(map(str, MINIMUM_COMFYUI))
    return (
        f"Paint by Example needs ComfyUI {needed} or newer (its V3 node API, comfy_api.v0_0_2); "
        f"this ComfyUI is {version or 'older than 0.3 (no version number)'}. Update ComfyUI "
        "(git pull in its folder, or ComfyUI-Manager > Update ComfyUI) and restart it. The "
        "Paint by Example nodes are not loaded."
    )


def _host_problem() -> str | None:
    try:
        from comfyui_version import __version__ as version
    except ImportError:
        version = None
    try:
        has_v3_api = importlib.util.find_spec("comfy_api.v0_0_2") is not None
    except ImportError:  # no comfy_api package at all
        has_v3_api = False
    return too_old_message(version, has_v3_api)


def _in_comfyui() -> bool:
    # ComfyUI's own top-level modules (a plain "comfy" could be this very folder under pytest)
    try:
        return (
            importlib.util.find_spec("folder_paths") is not None
            and importlib.util.find_spec("comfy.model_management") is not None
        )
    except ImportError:
        return False


if _in_comfyui():
    _problem = _host_problem()
    if _problem is None:
        from .nodes import comfy_entrypoint  # noqa: F401  (what ComfyUI looks for)
    else:
        logging.error(_problem)
