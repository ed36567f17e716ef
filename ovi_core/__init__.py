"""ovi_core: a pure-PyTorch implementation of Ovi (twin-backbone audio+video generation).

Nothing in this package imports ComfyUI. The ComfyUI nodes in ``nodes/`` are a thin layer over it.
"""

__version__ = "0.1.0"
