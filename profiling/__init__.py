"""profiling: what each quantizable layer costs, how much it matters, how much quantizing hurts.

    from profiling import profile_model
    profile = profile_model(model, calib_images)      # -> allocator.Profile
    profile.save("profile.json")

Pieces: `layer_costs` (params, MACs per sample), `lrp_importance` (AttnLRP relevance per
layer), `measure_sensitivity` (per layer x bits damage, suffix-cached, resumable, optionally
stopped early per pair: `EarlyStop`) and
`profile_model`, which combines them.
"""
from ._data import CalibSet, as_calib_set
from ._early_stop import EarlyStop
from ._heap import bounded_heap
from .costs import LayerCost, bops, layer_costs, size_bits
from .errors import CalibrationDataError, CheckpointMismatchError, LRPUnsupportedError, ProfilingError
from .joint import joint_damage, pair_damage
from .lrp import DEFAULT_EPSILON, ConservationReport, LRPResult, lrp_conservation, lrp_importance
from .metrics import METRICS, per_sample_damage
from .profile import library_version, profile_model
from .sensitivity import SensitivityResult, measure_sensitivity

__all__ = [
    "CalibSet",
    "as_calib_set",
    "profile_model",
    "layer_costs",
    "LayerCost",
    "size_bits",
    "bops",
    "lrp_importance",
    "lrp_conservation",
    "LRPResult",
    "ConservationReport",
    "DEFAULT_EPSILON",
    "measure_sensitivity",
    "EarlyStop",
    "bounded_heap",
    "joint_damage",
    "pair_damage",
    "SensitivityResult",
    "METRICS", "per_sample_damage",
    "library_version",
    "ProfilingError",
    "LRPUnsupportedError",
    "CheckpointMismatchError",
    "CalibrationDataError",
]
