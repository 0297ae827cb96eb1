"""ComfyUI nodes: thin adapters from ComfyUI types to `pbe_core`."""

NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}
