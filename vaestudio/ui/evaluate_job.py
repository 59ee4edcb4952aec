"""The evaluation as the Evaluate tab runs it: the job, hints for unusable folders in the window's
terms, and the fresh output folder proposed for each run."""

from __future__ import annotations

import time
from pathlib import Path


def evaluate_job(settings: dict, *, progress, should_stop):
    """The evaluation generator, in a worker (its events go to the window as they come)."""
    from vaestudio.core.evaluate import EvaluationRequest, evaluate
    from vaestudio.core.evaluate.accumulators import default_accumulators
    from vaestudio.core.evaluate.store import StateError

    request = EvaluationRequest(**settings, mp_context="spawn", accumulators=default_accumulators())
    try:
        yield from evaluate(request, should_stop=should_stop)
    except StateError as exc:  # say how to fix it with the window's controls
        exc.reason += STATE_HINTS.get(exc.kind, "")
        raise


#: How to fix an unusable output folder, with this tab's controls.
STATE_HINTS = {
    "exists": ": press Resume to continue it, or choose another Output folder",
    "no-state": ": choose another Output folder",
    "columns": ": choose another Output folder",
    "protocol": " (use the same settings, or choose another Output folder)",
    "processes": "; or choose another Output folder",
}


def default_out_dir() -> Path:
    """A new folder for the next run under the user's documents (never one that exists)."""
    from platformdirs import user_documents_dir

    base = Path(user_documents_dir()) / "vaestudio" / "evaluations" / time.strftime("run-%Y%m%d-%H%M%S")
    out, k = base, 2
    while out.exists():
        out, k = base.with_name(f"{base.name}-{k}"), k + 1
    return out
