"""Evaluation and analysis (extra ``nosink[eval]``): the paper's protocols, sweeps, sink diagnostics.

>>> from nosink.eval import evaluate_sts, run_sweep, attention_maps, sink_scores

The names below are imported on first use, so ``import nosink.eval`` stays cheap and does not need
scikit-learn, matplotlib or mteb until a function that uses them is asked for.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "evaluate_sts": "nosink.eval.sts",
    "evaluate_classification": "nosink.eval.classification",
    "evaluate_domain": "nosink.eval.classification",
    "ner_probe": "nosink.eval.ner",
    "run_sweep": "nosink.eval.sweep",
    "attention_maps": "nosink.eval.sink",
    "sink_scores": "nosink.eval.sink",
    "detect_sinks": "nosink.eval.sink",
    "NosinkMTEBModel": "nosink.eval.mteb_adapter",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'nosink.eval' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
