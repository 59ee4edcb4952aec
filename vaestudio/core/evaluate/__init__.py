"""Evaluate VAEs on a whole dataset: per-image metrics, rFID, a report; on one process or many.

The command (``vaestudio evaluate``), ``vaestudio compare`` and the window's Evaluate tab all consume
the same generator::

    from vaestudio.core.evaluate import EvaluationRequest, evaluate
    from vaestudio.core.evaluate import Started, Row, Progress, VaeLoadFailed, VaeSummary, Finished

    request = EvaluationRequest(data=["photos/"], vaes=["org/vae", "my_vae.safetensors"], out=Path("eval"))
    for event in evaluate(request, should_stop=lambda: cancelled):
        match event:
            case Started():        # images, pending_images, resumed_rows, vaes (VaeRef: name, source...)
            case VaeLoadFailed():  # source, name, reason: that VAE is skipped (the CLI exits 4)
            case Row():            # one image through one VAE (rows.csv's columns); error set if it failed
            case Progress():       # done / total images, images_per_s, eta_s
            case VaeSummary():     # at the end, one per VAE: to_dict() is its summary.json entry
            case Finished():       # summary (summary.json's content), outputs {"rows", "summary", "report"}

In a Qt worker: run the loop in a QThread, emit a signal per event (rows arrive a batch at a time,
progress at most every ``request.progress_every`` seconds), and pass ``should_stop`` reading a flag
that Cancel sets: ``evaluate`` then raises ``vaestudio.core.errors.Cancelled`` between batches, or within
a batch at the VAE's next block. Everything committed so far stays in ``out``; Resume is the same
request with ``resume=True``. ``request.preloaded`` lends VAEs the window already has (by source
string; they are not closed), and ``request.mp_context="spawn"`` keeps the image-reading worker
processes from forking a process that runs Qt threads. Errors before the run starts (unknown
metric, nothing in DATA, an output folder that holds another run or another protocol) are
``VaeStudioError`` subclasses with ``exit_code`` 2 and a one-line ``reason``.

Per-batch analyses plug in through ``request.accumulators`` (see ``vaestudio.core.evaluate.accumulators``):
factories called per VAE whose objects are fed (original, reconstruction, raw latent) batches and
asked for a JSON-able ``result()`` (summary.json ``vaes[i].analyses``) and an ``html()`` fragment
for the report; the sums they expose are added across torchrun ranks and saved for resuming.

Modules: ``run`` (the loop), ``state`` (per VAE: round trip, update, restore, reduce, summary; and
what one process holds), ``finish`` (the end: summaries, summary.json, report), ``data`` (DATA
listing, resize, DataLoader dataset), ``measure`` (per-batch metrics, versions, hardware), ``fid``
(Inception features, streaming statistics), ``store`` (rows, sidecars, resume), ``summary``
(statistics), ``report`` (report.html), ``dist`` (torchrun), ``types`` (the records above).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "evaluate": "run", "UsageError": "types",
    "EvaluationRequest": "types", "EvaluationProtocol": "types", "Started": "types", "VaeLoadFailed": "types", "Row": "types",
    "Progress": "types", "VaeSummary": "types", "Finished": "types", "VaeRef": "types", "Event": "types",
    "DEFAULT_METRICS": "types", "KNOWN_METRICS": "types", "ROW_FIELDS": "types", "parse_metrics": "types",
    "default_workers": "types",
    "Accumulator": "accumulators", "AccumulatorFactory": "types",
    "list_data": "data", "short_names": "data", "DataListError": "data",
    "StateError": "store",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # pragma: no cover
    from vaestudio.core.evaluate.accumulators import Accumulator  # noqa: F401
    from vaestudio.core.evaluate.data import DataListError, list_data, short_names  # noqa: F401
    from vaestudio.core.evaluate.run import evaluate  # noqa: F401
    from vaestudio.core.evaluate.store import StateError  # noqa: F401
    from vaestudio.core.evaluate.types import (  # noqa: F401
        DEFAULT_METRICS,
        KNOWN_METRICS,
        ROW_FIELDS,
        AccumulatorFactory,
        EvaluationProtocol,
        EvaluationRequest,
        Event,
        Finished,
        Progress,
        Row,
        Started,
        UsageError,
        VaeLoadFailed,
        VaeRef,
        VaeSummary,
        default_workers,
        parse_metrics,
    )


def __getattr__(name: str) -> Any:
    # lazy, so that `vaestudio.core.evaluate.types` (no torch) can be imported by the CLI parser
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(name)
