"""linkstyle: link a classifier's penultimate layer to a generator's latent space.

The package, by concept (each subpackage's docstring says more):

- `core`: errors, configs, atomic IO, HDF5, checkpoints, runtime, the stage shell
- `world`: the built-in procedural world and its HDF5 store
- `models`: generator and classifier interfaces, the model seam (`models.registry`),
  the default architectures and their training, quality checks
- `link`: paired data, W-R similarity, link kinds, the cycle, the INN link (a density of w given r)
- `measure`: the few-shot part segmenter, part metrics, quantification of renders
- `explain`: unit tuning (open and closed loop) and its faithfulness; what R is invariant to
  (samples through the INN); counterfactuals; feature visualisation baselines scored beside the link
- `analyze`: unit selectivity, sparsity, clustering
- `report`: every figure (reads results, computes nothing new)

The public API below is importable from the top level. It is resolved lazily, so
`import linkstyle` stays cheap and a stage imports (and depends on) only what it uses.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_API = {
    "UserError": "core.errors",
    "save_module": "core.checkpoint", "load_module": "core.checkpoint", "fingerprint": "core.checkpoint",
    "resolve_device": "core.runtime",
    "WorldConfig": "world.procedural", "write_world": "world.store", "load_world": "world.store",
    "Generator": "models.generator", "Classifier": "models.classifier",
    "GeneratorSpec": "models.registry", "ClassifierSpec": "models.registry",
    "load_generator": "models.registry", "load_classifier": "models.registry",
    "PairsConfig": "link.pairs", "sample_pairs": "link.pairs", "load_pairs": "link.pairs",
    "LINK_KINDS": "link.fit", "fit_link": "link.fit", "link_metrics": "link.fit", "predict_w": "link.fit",
    "save_link": "link.store", "load_link": "link.store", "load_linked": "link.bundle",
    "run_similarity": "link.similarity", "run_cycle": "link.cycle",
    "ConditionalINN": "link.inn", "INNConfig": "link.inn", "fit_inn": "link.inn", "evaluate_inn": "link.inn",
    "save_inn": "link.inn", "load_inn": "link.inn",
    "fit_segmenter": "measure.segmenter_training", "load_segmenter": "measure.segmenter",
    "segment_w": "measure.segmenter", "measure_parts": "measure.parts", "quantify_tuning": "measure.quantify",
    "MotionConfig": "measure.motion", "estimate_motion": "measure.motion", "motion_table": "measure.motion",
    "quantify_motion": "measure.quantify_motion", "field_panels": "measure.quantify_motion",
    "TuningConfig": "explain.tuning", "tune_units": "explain.tuning",
    "ClosedLoopConfig": "explain.closed_loop", "ClosedLoop": "explain.closed_loop",
    "faithfulness_table": "explain.faithfulness", "compare_modes": "explain.faithfulness",
    "InvarianceConfig": "explain.invariances", "run_invariances": "explain.invariances",
    "summarize_invariances": "explain.invariances",
    "attribution_ready": "models.attribution_ready", "make_method": "explain.attribution",
    "METHODS": "explain.attribution", "AttributeUnitsConfig": "explain.attribution.study",
    "attribute_units": "explain.attribution.study",
    "build_page": "report.page", "write_report": "report.page",
    "CounterfactualConfig": "explain.counterfactuals", "run_counterfactuals": "explain.counterfactuals",
    "quantify_counterfactuals": "explain.counterfactual_changes",
    "AnalysisConfig": "analyze.units", "analyze": "analyze.units", "motion_tables": "analyze.units", "hoyer": "analyze.sparsity",
}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'linkstyle' has no attribute {name!r}")
    return getattr(importlib.import_module(f"linkstyle.{_API[name]}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
