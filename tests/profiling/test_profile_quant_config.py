"""The profile measures sensitivity with the quantizer that will apply its plan, and says which."""
from __future__ import annotations

import numpy as np
from quant import QuantConfig

from profiling import profile_model

from _profiling_fixtures import images, tiny_vit


def test_profile_records_and_uses_its_quant_config():
    model = tiny_vit()
    nearest = QuantConfig(weight_rounding="nearest", softmax="log2")
    a = profile_model(model, images(4), bits=(2, 3), importance=False, activation=False, verbose=False)
    b = profile_model(model, images(4), bits=(2, 3), importance=False, activation=False, config=nearest, verbose=False)
    assert QuantConfig.from_dict(a.metadata["quant_config"]) == QuantConfig()
    assert QuantConfig.from_dict(b.metadata["quant_config"]) == nearest
    # the rounding switch reaches the sensitivity measurement: GPTQ's weight damage differs
    assert not np.allclose(a.weight_sensitivity, b.weight_sensitivity)
