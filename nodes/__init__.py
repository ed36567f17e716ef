"""ComfyUI-Ovi nodes (ComfyUI V1 API). Importable without ComfyUI: the classes can be called directly."""

from . import bridge
from .decoders import OviAudioDecode, OviVideoDecode
from .loaders import OviAudioVAELoader, OviModelLoader, OviTextEncoderLoader, OviVideoVAELoader
from .output import OviMux
from .sampling import OviSampler
from .text import OviTextEncode, OviTextFromConditioning

bridge.register_model_folders()
bridge.install_interrupt_checker()

# Node ids never change once shipped (saved workflows refer to them).
NODE_CLASS_MAPPINGS = {
    "OviModelLoader": OviModelLoader,
    "OviTextEncoderLoader": OviTextEncoderLoader,
    "OviTextEncode": OviTextEncode,
    "OviTextFromConditioning": OviTextFromConditioning,
    "OviSampler": OviSampler,
    "OviVideoVAELoader": OviVideoVAELoader,
    "OviVideoDecode": OviVideoDecode,
    "OviAudioVAELoader": OviAudioVAELoader,
    "OviAudioDecode": OviAudioDecode,
    "OviMux": OviMux,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "OviModelLoader": "Ovi Model Loader",
    "OviTextEncoderLoader": "Ovi Text Encoder Loader",
    "OviTextEncode": "Ovi Text Encode",
    "OviTextFromConditioning": "Ovi Text From Conditioning",
    "OviSampler": "Ovi Sampler",
    "OviVideoVAELoader": "Ovi Video VAE Loader",
    "OviVideoDecode": "Ovi Video Decode",
    "OviAudioVAELoader": "Ovi Audio VAE Loader",
    "OviAudioDecode": "Ovi Audio Decode",
    "OviMux": "Ovi Mux (mp4)",
}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
