"""File suffixes vaestudio recognises (no heavy imports: the window uses them before torch loads)."""

WEIGHT_SUFFIXES = frozenset({".safetensors", ".ckpt", ".pt", ".pth", ".bin"})
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"})


def file_filter(label: str, suffixes) -> str:
    """A file dialog filter: 'VAE weights (*.bin *.ckpt ...);;All files (*)'."""
    return f"{label} ({' '.join('*' + s for s in sorted(suffixes))});;All files (*)"


IMAGE_FILTER = file_filter("Images", IMAGE_SUFFIXES)
WEIGHT_FILTER = file_filter("VAE weights", WEIGHT_SUFFIXES)
