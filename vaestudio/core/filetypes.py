"""File suffixes vaestudio recognises (no heavy imports: the window uses them before torch loads)."""

WEIGHT_SUFFIXES = frozenset({".safetensors", ".ckpt", ".pt", ".pth", ".bin"})
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"})
#: Video containers (read through PyAV, which opens more: these name a clip by their suffix alone).
VIDEO_SUFFIXES = frozenset({".mp4", ".webm", ".mov", ".mkv", ".avi", ".m4v", ".ts", ".mpg", ".mpeg", ".ogv",
                            ".flv", ".wmv", ".3gp"})
#: Images that may be animated (read through Pillow): a clip when they hold more than one frame.
ANIMATED_SUFFIXES = frozenset({".gif", ".webp", ".png", ".apng"})
CLIP_SUFFIXES = VIDEO_SUFFIXES | ANIMATED_SUFFIXES


def is_clip(path) -> bool:
    """Whether ``path`` is read as a clip: a video suffix, or an animated GIF/WebP/PNG (more than one
    frame; a still one, or one Pillow cannot open, is left to the image reader)."""
    from pathlib import Path

    suffix = Path(path).suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return True
    if suffix not in ANIMATED_SUFFIXES:
        return False
    from PIL import Image  # only here: the window lists files before anything heavy loads

    try:
        with Image.open(path) as im:
            return int(getattr(im, "n_frames", 1)) > 1
    except Exception:  # noqa: BLE001 - not readable: the image reader says why
        return False


def file_filter(label: str, suffixes) -> str:
    """A file dialog filter: 'VAE weights (*.bin *.ckpt ...);;All files (*)'."""
    return f"{label} ({' '.join('*' + s for s in sorted(suffixes))});;All files (*)"


IMAGE_FILTER = file_filter("Images", IMAGE_SUFFIXES)
CLIP_FILTER = file_filter("Video clips", CLIP_SUFFIXES)
#: images and clips together first, then each kind alone
MEDIA_FILTER = ";;".join((file_filter("Images and clips", IMAGE_SUFFIXES | CLIP_SUFFIXES).split(";;")[0],
                          IMAGE_FILTER.split(";;")[0], CLIP_FILTER))
WEIGHT_FILTER = file_filter("VAE weights", WEIGHT_SUFFIXES)
