"""Name -> builder registries for models, datasets, flow methods and explainers.

One flat registry per kind (no registries of registries). A builder is any callable; its keyword
arguments are the options a config may set, so an unknown option can be reported by name before
anything is built.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from typing import Any


class Registry:
    """A named table of builders, e.g. ``MODELS.register("cnn3d")(build_fn)``."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._builders: dict[str, Callable[..., Any]] = {}

    def register(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def decorator(builder: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._builders:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._builders[name] = builder
            return builder

        return decorator

    def names(self) -> list[str]:
        return sorted(self._builders)

    def __contains__(self, name: str) -> bool:
        return name in self._builders

    def get(self, name: str) -> Callable[..., Any]:
        try:
            return self._builders[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._builders, n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise KeyError(
                f"unknown {self.kind} {name!r}.{hint} Valid {self.kind}s: {', '.join(self.names())}"
            ) from None

    def options(self, name: str) -> dict[str, Any]:
        """Keyword options of a builder and their defaults (``inspect.Parameter.empty`` if required)."""
        sig = inspect.signature(self.get(name))
        return {
            p.name: p.default
            for p in sig.parameters.values()
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
        }

    def accepts_any(self, name: str) -> bool:
        sig = inspect.signature(self.get(name))
        return any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())

    def check_options(self, name: str, options: dict[str, Any], where: str = "model") -> None:
        """Raise ``ValueError`` naming every option the builder does not take."""
        if self.accepts_any(name):
            return
        known = self.options(name)
        unknown = [k for k in options if k not in known]
        if unknown:
            raise ValueError(
                f"{where}: {self.kind} {name!r} has no option(s) {', '.join(map(repr, unknown))}; "
                f"it takes: {', '.join(k for k in known if k not in ('num_classes', 'in_channels'))}"
            )


MODELS = Registry("model")
FLOW_METHODS = Registry("flow method")
EXPLAINERS = Registry("explainer")


def register_model(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: ``@register_model("cnn3d")`` on a builder ``(num_classes, in_channels, **opts)``."""
    return MODELS.register(name)
