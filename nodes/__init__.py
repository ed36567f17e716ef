"""ComfyUI-Ovi nodes: ComfyUI V3 ``io.ComfyNode`` classes, served by ``comfy_entrypoint()``.

Importable without ComfyUI: the schema then comes from the pack's stand-in (nodes/schema.py) and a node is run by
calling its ``execute`` classmethod (``validate_inputs`` for the checks ComfyUI makes before a run). With ComfyUI,
the native-path nodes (nodes/native_nodes.py, which build on ComfyUI's model classes) are served too.
"""

import logging

from . import bridge
from .decoders import OviAudioDecode, OviVideoDecode
from .loaders import OviAudioVAELoader, OviModelLoader, OviTextEncoderLoader, OviVideoVAELoader
from .output import OviMux
from .sampling import OviSampler
from .text import OviTextEncode, OviTextFromConditioning

log = logging.getLogger(__name__)

bridge.register_model_folders()
bridge.install_interrupt_checker()

# Node ids never change once shipped (saved workflows refer to them).
NODES = [OviModelLoader, OviTextEncoderLoader, OviTextEncode, OviTextFromConditioning, OviSampler, OviVideoVAELoader,
         OviVideoDecode, OviAudioVAELoader, OviAudioDecode, OviMux]


def _native_nodes() -> list:
    """Ovi Empty Latent, Ovi Guider, Ovi Scheduler, Ovi Sampler Select, Ovi Noise: ComfyUI only."""
    if not (bridge.HAVE_COMFY and bridge.HAVE_COMFY_API):
        return []
    from .native_nodes import NATIVE_NODES  # builds on ComfyUI's classes: imported only with ComfyUI

    return list(NATIVE_NODES)


try:
    NATIVE_NODES = _native_nodes()
except Exception:  # never lose the pack's other nodes over these
    log.exception("ComfyUI-Ovi: the native-path nodes (Ovi Empty Latent, Ovi Guider, ...) failed to load")
    NATIVE_NODES = []

NODE_LIST = NODES + NATIVE_NODES
# For tests and tools (the root __init__.py serves NODE_LIST through comfy_entrypoint, not these mappings).
NODE_CLASS_MAPPINGS = {cls.define_schema().node_id: cls for cls in NODE_LIST}
NODE_DISPLAY_NAME_MAPPINGS = {node_id: cls.define_schema().display_name for node_id, cls in NODE_CLASS_MAPPINGS.items()}


class OviExtension(bridge.ComfyExtension):
    async def get_node_list(self) -> list:
        return list(NODE_LIST)


async def comfy_entrypoint() -> OviExtension:
    return OviExtension()


__all__ = ["NODE_LIST", "NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "comfy_entrypoint"]
