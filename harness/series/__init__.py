"""Patch series: manifests, inputs, applying into a private worktree, ABI detection.

Public API (import from `harness.series`):
    SeriesSpec, load_manifest, load_ref, supported, TRANSPORTS      (spec.py)
    parse_series, collect, PatchFile                                  (inputs.py)
    apply, apply_for_target, AppliedSeries, PatchResult, SeriesApplyError (apply.py)
    detect_abi, parse_abi, AbiProfile                                 (abi.py)
"""

from .abi import AbiProfile, detect_abi, parse_abi
from .apply import AppliedSeries, PatchResult, SeriesApplyError, apply, apply_for_target
from .inputs import PatchFile, collect, parse_series
from .spec import TRANSPORTS, SeriesSpec, load_manifest, load_ref, supported

__all__ = [
    "TRANSPORTS",
    "AbiProfile",
    "AppliedSeries",
    "PatchFile",
    "PatchResult",
    "SeriesApplyError",
    "SeriesSpec",
    "apply",
    "apply_for_target",
    "collect",
    "detect_abi",
    "load_manifest",
    "load_ref",
    "parse_abi",
    "parse_series",
    "supported",
]
