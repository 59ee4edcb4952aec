"""The window's session: what the tabs share, in one model that emits a signal per kind of change.

Every tab is a view of one ``Session``: it reads the state below, subscribes to the signals in one
``_connect_session(connect: bool)`` method (so wiring and unwiring stay symmetric) and never reads
another tab. A tab can be built and tested with a bare ``Session()``.

State (read the attributes; change them through the methods, which emit the signals)

- ``runner``: the ``JobRunner`` every tab starts its jobs on; ``prefs``: the ``Preferences``.
- ``images``, ``index``: the image files (or clipboard bytes) being stepped through, and where;
  ``image``: the current ``LoadedImage`` (``None`` before the first, or when the current file could
  not be read); ``source()``: ``images[index]``.
- ``vae``, ``vae_b``: VAE A and the optional B of the A/B comparison; ``lent_vaes()``: both by source
  (other tabs use them as they are, and never close them).
- ``encoded``: VAE A's encoding of the image; ``result``, ``result_b``: the last complete
  reconstructions by A and B; ``preview_vae``: the tiny decoder that previews A's latents, if any.
- ``recent_vaes``: the recently loaded VAE sources, newest first; ``devices``: what this machine offers.
- ``clip``: the current clip (``core.video.Clip``) when ``images[index]`` is a video (``image`` is then
  None); ``clip_encoded``: its ``ClipEncoded`` by VAE A; ``clip_result``: the ``ClipProgress`` of its
  reconstruction, filled chunk by chunk by the "clip" job (``reconstruct_clip``; ui/clip_jobs.py);
  ``clip_part``: the (start seconds, frames or None) the clip was read with (``choose_clip_part``).

Signals

- ``images_changed()``: ``images`` or ``index`` changed.
- ``image_changed()``: ``image`` changed; ``encoded``, ``result`` and ``result_b`` were cleared with it
  (and the clip state: a clip opened emits it too, with ``image`` None, then ``clip_changed``).
- ``clip_changed()``: ``clip`` changed (``clip_encoded`` and ``clip_result`` cleared with it);
  ``clip_encoding_changed()``; ``clip_frames_changed()``: ``clip_result`` was replaced or gained frames.
- ``vae_changed(slot)``: VAE ``"a"`` or ``"b"`` was set or cleared (a family change counts); for A,
  ``encoded``, ``result`` and ``preview_vae`` were cleared with it, for B ``result_b``.
- ``vae_loading(what, done, total)``: a VAE load is under way (``what`` is "Loading" or
  "Downloading"; ``total`` 0 when unknown); ``what`` is "" when it ended, however it ended.
- ``vae_loaded(source)``: a VAE was loaded from ``source`` (for the recent list).
- ``encoding_changed()``, ``result_changed(slot)``, ``preview_decoder_changed()``,
  ``prefs_changed()``, ``recent_vaes_changed()``, ``devices_changed()``: that attribute changed.
- ``message(text)``: a status-bar line; ``error(text)``: a non-blocking error message.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import fields
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from vaestudio.ui import clip_jobs, jobs
from vaestudio.ui.settings import Preferences
from vaestudio.ui.workers import JobRunner

ENCODE_CACHE_SIZE = 8
#: Jobs of other tabs that use VAE A: its family (scaling) must not change under them.
JOBS_USING_THE_VAE = ("analysis", "evaluate")
_TOKENS = itertools.count(1)


def source_name(src) -> str:
    """How an image or VAE source is named to the user."""
    return "clipboard image" if isinstance(src, bytes) else Path(str(src)).name


def wire(connections: Iterable[tuple[object, Callable]], connect: bool) -> None:
    """Connect (or disconnect) each ``(signal, slot)``: one list serves both, so they stay symmetric."""
    for signal, slot in connections:
        if connect:
            signal.connect(slot)
        else:
            signal.disconnect(slot)


class Session(QObject):
    images_changed = Signal()
    image_changed = Signal()
    vae_changed = Signal(str)
    vae_loading = Signal(str, int, int)
    vae_loaded = Signal(str)
    encoding_changed = Signal()
    result_changed = Signal(str)
    preview_decoder_changed = Signal()
    prefs_changed = Signal()
    recent_vaes_changed = Signal()
    devices_changed = Signal()
    clip_changed = Signal()
    clip_encoding_changed = Signal()
    clip_frames_changed = Signal()
    message = Signal(str)
    error = Signal(str)

    def __init__(self, runner: JobRunner | None = None, prefs: Preferences | None = None,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.runner = runner if runner is not None else JobRunner(self)
        self.prefs = prefs if prefs is not None else Preferences()
        self.images: list = []
        self.index = 0
        self.image = None
        self.vae = None
        self.vae_b = None
        self.encoded = None
        self.result = None
        self.result_b = None
        self.preview_vae = None
        self.clip = self.clip_encoded = self.clip_result = None
        self.clip_part: tuple[float, int | None] = (0.0, None)
        self.recent_vaes: list[str] = []
        self.devices: list[str] = ["auto", "cpu"]
        self._tokens = {"a": 0, "b": 0}  # per VAE set: id() of a freed VAE can be reused by the next one
        self._cache: OrderedDict = OrderedDict()

    # -- images ---------------------------------------------------------------------------------
    def source(self):
        """The current image's file (or clipboard bytes), or None."""
        return self.images[self.index] if self.images else None

    def open_images(self, images: list) -> None:
        """Open a new list of images; if the first cannot be read, the previous list stays."""
        if images:
            self._load(list(images), 0, keep_on_failure=True)

    def step(self, delta: int) -> None:
        """The next (or previous) image of the list, round."""
        if len(self.images) > 1:
            self._load(self.images, (self.index + delta) % len(self.images), keep_on_failure=False)

    def choose_clip_part(self, start: float, frames: int | None) -> None:
        """Read the current clip again: from ``start`` seconds, at most ``frames`` frames (None: all), as the
        CLI's ``--start``/``--frames``; it is reconstructed again when it comes (latest request wins). On a
        bad part the clip shown stays and the error says why."""
        if self.clip is not None:
            self._load(self.images, self.index, keep_on_failure=True, part=(float(start), frames))

    def _load(self, images: list, index: int, keep_on_failure: bool, part=(0.0, None)) -> None:
        def loaded(image) -> None:
            self.clip_part = part
            self._set_images(images, index, image)  # a LoadedImage, or a clip (core.video.Clip)
            for note in image.notes:
                self.message.emit(note)

        def failed(msg: str) -> None:
            self.error.emit(msg)
            if not keep_on_failure:  # stepping onto a broken file: say so, show nothing stale
                self._set_images(images, index, None)

        self.runner.start("image", jobs.load_media_job, images[index], *part, on_result=loaded, on_error=failed)

    def _set_images(self, images: list, index: int, image) -> None:
        from vaestudio.core.video.clip import Clip  # light: no PyAV on the UI thread

        had_clip = self.clip is not None
        self.runner.drop("clip")
        self.runner.drop("clip_preview")
        self.clip = image if isinstance(image, Clip) else None
        self.clip_encoded = self.clip_result = None
        self.images, self.index = images, index
        self.image = None if self.clip is not None else image
        self.encoded = self.result = self.result_b = None
        self.images_changed.emit()
        self.image_changed.emit()
        if had_clip or self.clip is not None:
            self.clip_changed.emit()

    # -- VAEs -----------------------------------------------------------------------------------
    def lent_vaes(self) -> dict[str, object]:
        """The loaded VAEs A and B by source: other tabs use them as they are and never close them."""
        return {v.info.source: v for v in (self.vae, self.vae_b) if v is not None}

    def load_vae(self, source, family: str = "", *, slot: str = "a") -> None:
        """Load a VAE (file, folder, Hugging Face id) in a worker and make it VAE ``slot``."""
        label = str(source)
        self.message.emit(f"Loading VAE {source_name(label)} ...")
        self.vae_loading.emit("Loading", 0, 0)

        def done(vae) -> None:
            self.vae_loading.emit("", 0, 0)
            self.set_vae(vae, slot)
            self.vae_loaded.emit(label)

        def failed(msg: str) -> None:
            self.vae_loading.emit("", 0, 0)
            self.error.emit(msg)

        def cancelled() -> None:
            self.vae_loading.emit("", 0, 0)
            self.message.emit("Loading cancelled")

        self.runner.start("vae", jobs.load_vae_job, source, family, self.prefs, on_result=done, on_error=failed,
                          on_cancel=cancelled,
                          on_progress=lambda d, t, _s: self.vae_loading.emit("Downloading", d, t))

    def cancel_vae_load(self) -> None:
        self.runner.cancel("vae")

    def set_vae(self, vae, slot: str = "a") -> None:
        """Make ``vae`` (or None) VAE ``slot``.

        The previous VAE is not closed here: a job (a decode, an analysis, an evaluation) may still be
        using it; it is freed when the last reference goes.
        """
        self._tokens[slot] = next(_TOKENS)
        if slot == "b":
            self.vae_b, self.result_b = vae, None
            self.vae_changed.emit("b")
            return
        self.runner.drop("preview_vae")  # nothing of the old VAE's may arrive after this
        self.runner.drop("clip")
        self.runner.drop("clip_preview")
        self.vae, self.encoded, self.result, self.preview_vae = vae, None, None, None
        self.clip_encoded = self.clip_result = None
        if vae is not None:
            self.message.emit(f"VAE ready: {source_name(vae.info.source)}")
        self.vae_changed.emit("a")
        self.load_preview_decoder()

    def set_family(self, name: str) -> bool:
        """Switch VAE A to another family of its shape; False (and an error) when it may not."""
        if self.vae is None or not name or name == self.vae.family.name:
            return True
        busy = [k for k in JOBS_USING_THE_VAE if k in self.runner.running]
        if busy:
            self.error.emit(f"the {busy[0]} in progress uses this VAE: change its family when it has finished")
            return False
        choices = {f.name: f for f in self.vae.family_choices()}
        if name not in choices:
            from vaestudio.core.families import get_family

            fam = get_family(name)
            self.error.emit(f"{fam.label} VAEs have {fam.latent_channels} latent channels; this one has "
                            f"{self.vae.info.latent_channels}")
            return False
        self.vae.set_family(choices[name])
        self._cache.clear()
        self.set_vae(self.vae)
        return True

    def load_preview_decoder(self) -> None:
        """Find and load the tiny decoder for VAE A's family (Preferences > Preview decoder)."""
        self.runner.drop("preview_vae")
        if self.preview_vae is not None:
            self.set_preview_decoder(None)
        location = self.prefs.preview_decoder
        if not location or self.vae is None or self.vae.previews_itself:
            return
        token = self._tokens["a"]

        def done(tiny) -> None:
            if token == self._tokens["a"] and tiny is not None:
                self.set_preview_decoder(tiny)
                self.message.emit(f"Previews by {source_name(tiny.info.source)}")

        self.runner.start("preview_vae", jobs.load_preview_decoder_job, location, self.vae.family.name,
                          on_result=done, on_error=lambda m: self.message.emit(f"No preview decoder: {m}"))

    def set_preview_decoder(self, tiny) -> None:
        self.preview_vae = tiny
        self.preview_decoder_changed.emit()

    # -- encodings and results --------------------------------------------------------------------
    def encode_key(self, slot: str = "a") -> tuple | None:
        """The cache key of the current image by VAE ``slot``, or None without one of them."""
        vae = self.vae if slot == "a" else self.vae_b
        src = self.source()
        if vae is None or src is None:
            return None
        return (self._tokens[slot], vae.info.family, src if isinstance(src, str) else hash(src))

    @property
    def cache_entries(self) -> int:
        """How many encodings the cache holds (the soak script follows it)."""
        return len(self._cache)

    def cached(self, key: tuple | None):
        """A cached encoding (as its job returned it), or None; a hit counts as a use."""
        if key is None or key not in self._cache:
            return None
        self._cache.move_to_end(key)
        return self._cache[key]

    def cache_put(self, key: tuple, value) -> None:
        """Keep an encoding; the least recently used goes beyond ``ENCODE_CACHE_SIZE``."""
        self._cache[key] = value
        self._cache.move_to_end(key)
        while len(self._cache) > ENCODE_CACHE_SIZE:
            self._cache.popitem(last=False)

    def set_encoded(self, encoded) -> None:
        self.encoded = encoded
        self.encoding_changed.emit()

    def set_result(self, result, slot: str = "a") -> None:
        if slot == "b":
            self.result_b = result
        else:
            self.result = result
        self.result_changed.emit(slot)

    # -- clips ----------------------------------------------------------------------------------
    def reconstruct_clip(self, noise=None) -> None:
        """Run the clip through VAE A in the "clip" job (encoding it unless ``clip_encoded`` holds it),
        with ``noise`` (a NoiseSpec) on its latent; frames arrive in ``clip_result`` chunk by chunk."""
        if self.vae is None or self.clip is None:
            return
        enc = self.clip_encoded

        def item(x) -> None:
            if isinstance(x, clip_jobs.ClipEncoded):  # (after the frames when the round trip streamed)
                self.clip_encoded = x
                r = self.clip_result
                if r is not None and x.snr_db is not None:
                    r.snr_db = x.snr_db
                for note in x.encoding.notes:
                    self.message.emit(note)
                self.clip_encoding_changed.emit()
                if r is not None and r.decoded < r.total:  # encode-then-decode: the decode begins
                    self._preview_clip(x.latent)
            elif isinstance(x, clip_jobs.ClipStart):
                self.clip_result = clip_jobs.ClipProgress(x.frames, x.snr_db)
                self._preview_clip(x.latent)
                self.message.emit(f"Decoding {x.frames} frames ...")
                self.clip_frames_changed.emit()
            else:
                self.clip_result.add(x)
                self.clip_frames_changed.emit()

        def done(seconds: float) -> None:
            self.runner.drop("clip_preview")
            r = self.clip_result
            r.seconds, r.complete = seconds, r.decoded == r.total
            self.message.emit(f"Clip reconstructed: {r.total} frames, mean PSNR {r.psnr_mean:.2f} dB, "
                              f"flicker {r.flicker:.4f}")
            self.clip_frames_changed.emit()

        def cancelled() -> None:
            r = self.clip_result
            kept = f"kept {r.decoded} of {r.total} decoded frames" if r is not None else "nothing decoded yet"
            self.message.emit(f"Cancelled; {kept}")
            self.clip_frames_changed.emit()

        def progress(done: int, total: int, _what: str) -> None:
            if self.clip_result is None:  # chunks of the encode (the decode's arrive as frames)
                self.message.emit(f"Encoding the clip: chunk {done} of {total}")

        self.message.emit("Decoding the clip ..." if enc is not None else "Encoding the clip ...")
        self.runner.start("clip", clip_jobs.clip_job, self.vae, self.clip.frames, enc.encoding if enc else None,
                          noise, self.prefs.tile, on_yield=item, on_result=done, on_error=self.error.emit,
                          on_cancel=cancelled, on_progress=progress)

    def _preview_clip(self, latent) -> None:
        """The preview decoder's frames (Preferences > Preview decoder) stand in until the VAE's arrive."""
        self.runner.drop("clip_preview")
        tiny, r = self.preview_vae, self.clip_result
        if tiny is None or latent is None or self.clip_encoded is None:
            return
        enc = self.clip_encoded.encoding

        def chunk(item) -> None:
            start, frames = item
            for i, f in enumerate(frames):
                if start + i < r.total:
                    r.previews[start + i] = f
            self.clip_frames_changed.emit()

        self.runner.start("clip_preview", clip_jobs.preview_clip_job, tiny, latent, enc.height, enc.width,
                          on_yield=chunk, on_error=lambda m: self.message.emit(f"No preview: {m}"))

    # -- preferences, recent VAEs, devices ----------------------------------------------------------
    def set_prefs(self, new: Preferences) -> None:
        """Take the values of ``new`` (the same ``prefs`` object stays, jobs hold it)."""
        preview_changed = new.preview_decoder != self.prefs.preview_decoder
        for f in fields(Preferences):
            setattr(self.prefs, f.name, getattr(new, f.name))
        self.prefs_changed.emit()
        if preview_changed:
            self.load_preview_decoder()

    def set_recent_vaes(self, sources: list[str]) -> None:
        self.recent_vaes = list(sources)
        self.recent_vaes_changed.emit()

    def set_devices(self, devices: list[str]) -> None:
        self.devices = list(devices)
        self.devices_changed.emit()
