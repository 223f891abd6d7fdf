"""scikit-learn's estimator parameter API (``get_params`` / ``set_params`` / ``repr``), shared by every probe."""

from __future__ import annotations

import inspect

from ..exceptions import ConfigError


class ParamsMixin:
    """Parameters are the ``__init__`` arguments, stored under the same names (scikit-learn's convention)."""

    def get_params(self, deep: bool = True) -> dict:
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {n: getattr(self, n) for n in names}

    def set_params(self, **params):
        valid = self.get_params()
        for k, v in params.items():
            if k not in valid:
                raise ConfigError(f"{type(self).__name__} has no parameter {k!r}; valid: {', '.join(valid)}")
            setattr(self, k, v)
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"
