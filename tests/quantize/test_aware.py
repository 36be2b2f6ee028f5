"""Which precisions quantize in PyTorch, the QAT defaults, and which toolkit a model holds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeprune.errors import ConfigError
from edgeprune.quantize.aware import for_training, is_lowbit, is_quantized, qat_epochs, toolkit_of
from tests.nets import tiny_demo


@pytest.mark.parametrize("precision, lowbit", [("w4a8", True), ("int4", True), ("w2a2", True), ("int8", False),
                                                ("w8a8", False), ("fp32", False), ("fp16", False)])
def test_low_bit_is_every_integer_width_below_eight(precision, lowbit):
    assert is_lowbit(precision) is lowbit


def test_qat_defaults_and_refusals():
    assert qat_epochs("w4a8", None) == 1.0 and qat_epochs("int8", None) == 0.0
    assert qat_epochs("int8", 2.0) == 2.0 and qat_epochs("w2a2", 0.0) == 0.0  # the user's choice wins
    with pytest.raises(ConfigError, match="needs an integer --precision"):
        qat_epochs("fp32", 1.0)
    with pytest.raises(ConfigError, match=">= 0"):
        qat_epochs("int8", -1.0)


def test_the_copy_holds_the_requested_toolkit_and_the_float_model_is_untouched():
    pytest.importorskip("brevitas")
    model = tiny_demo().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batches = [np.random.default_rng(0).random((4, 1, 32, 32), dtype=np.float32)]
    qmodel, toolkit = for_training(model, "int8", batches, int8_toolkit="brevitas")
    assert toolkit == "brevitas" and toolkit_of(qmodel) == "brevitas" and is_quantized(qmodel)
    assert toolkit_of(model) is None and not is_quantized(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ConfigError, match="unknown QAT toolkit"):
        for_training(model, "int8", batches, int8_toolkit="aimet")
    with pytest.raises(ConfigError, match="integer precision"):
        for_training(model, "fp16", batches)
