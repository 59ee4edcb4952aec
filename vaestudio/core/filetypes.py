"""File suffixes vaestudio recognises (no heavy imports: the window uses them before torch loads)."""

WEIGHT_SUFFIXES = frozenset({".safetensors", ".ckpt", ".pt", ".pth", ".bin"})
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"})
