"""Training factors of diffused redundancy and a small, resumable training harness.

Loss modules for your own loop (:class:`DeCov`, :class:`MatryoshkaLoss`, :class:`PenultimateDropout`,
:class:`WidthProjection`, :class:`PGD` adversarial examples, :class:`Penultimate`) and :func:`train`,
behind ``critmass train CONFIG.yaml``: a timm backbone trained on an upstream task with a seed,
checkpoints as safetensors that load back with ``critmass.models.load_model(spec, weights=FILE)``.
"""

from ._adversarial import NORMS, PGD
from ._config import TrainConfig, load_train_config
from ._harness import TrainResult, build_model, train
from ._losses import DeCov, MatryoshkaLoss, Penultimate, PenultimateDropout, WidthProjection, nested_dims

__all__ = ["DeCov", "MatryoshkaLoss", "PenultimateDropout", "WidthProjection", "Penultimate", "nested_dims", "PGD",
           "NORMS", "TrainConfig", "load_train_config", "train", "TrainResult", "build_model"]
