"""Patch series: manifests, inputs, applying into a private worktree, ABI detection.

Public API (import from `harness.series`):
    SeriesSpec, load_manifest, load_ref, supported, TRANSPORTS      (spec.py)
    parse_series, collect, collect_mails, PatchFile                   (inputs.py)
    Cover, parse_cover, find_base                                     (cover.py)
    apply, apply_for_target, AppliedSeries, PatchResult, SeriesApplyError (apply.py)
    detect_abi, parse_abi, AbiProfile                                 (abi.py)
"""

from .abi import AbiProfile, detect_abi, parse_abi
from .apply import AppliedSeries, PatchResult, SeriesApplyError, apply, apply_for_target
from .cover import Cover, find_base, parse_cover
from .inputs import PatchFile, collect, collect_mails, parse_series
from .spec import TRANSPORTS, SeriesSpec, load_manifest, load_ref, supported

__all__ = [
    "TRANSPORTS",
    "AbiProfile",
    "AppliedSeries",
    "Cover",
    "PatchFile",
    "PatchResult",
    "SeriesApplyError",
    "SeriesSpec",
    "apply",
    "apply_for_target",
    "collect",
    "collect_mails",
    "detect_abi",
    "find_base",
    "load_manifest",
    "load_ref",
    "parse_abi",
    "parse_cover",
    "parse_series",
    "supported",
]
