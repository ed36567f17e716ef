"""ComfyUI-Ovi: ComfyUI entry point. Imports outside ComfyUI too (the node mappings are then still defined)."""

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
