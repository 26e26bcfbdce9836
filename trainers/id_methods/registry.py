"""The registries of this package, one kind of registry for both: ID methods (`lmindexer index --method NAME`) and
the quantisers of the two-stage methods.

A class joins with the `register(name)` decorator. Built-in entries live in modules of this package, named in
`builtin` and imported on first lookup, so that a name resolves (and a saved quantiser loads) without importing
every method first, and so that importing this package costs nothing.
"""

from __future__ import annotations

import importlib


class Registry:
    def __init__(self, kind: str, plural: str, builtin: dict[str, str]):
        self.kind = kind  # "ID method": how an error message names one entry
        self.plural = plural
        self.builtin = builtin  # name -> module of this package that registers it
        self.classes: dict[str, type] = {}

    def register(self, name: str):
        """Class decorator: `@QUANTIZERS.register("rqkmeans")` makes the class available under `name`."""

        def add(cls: type) -> type:
            if self.classes.get(name, cls) is not cls:
                raise ValueError(f"A {self.kind} named {name!r} is registered already ({self.classes[name].__name__}).")
            self.classes[name] = cls
            return cls

        return add

    def get(self, name: str) -> type:
        """The class registered under `name`, importing a built-in module on first use."""
        if name not in self.classes and name in self.builtin:
            importlib.import_module(f"{__package__}.{self.builtin[name]}")
        if name not in self.classes:
            raise ValueError(f"Unknown {self.kind} {name!r}; the {self.plural} are {', '.join(self.names())}.")
        return self.classes[name]

    def names(self) -> list[str]:
        return sorted(set(self.classes) | set(self.builtin))

    def __iter__(self):
        return iter(self.names())

    def __contains__(self, name: object) -> bool:
        return name in self.classes or name in self.builtin


QUANTIZERS = Registry(
    "quantizer", "quantizers", {"rqkmeans": "rqkmeans", "rqvae": "rqvae", "hkmeans": "hkmeans", "random": "random_ids"}
)
# Every quantiser is also a two-stage method of the same name: sentence embeddings, then that quantiser.
ID_METHODS = Registry(
    "ID method", "methods", {"lmindexer": "lmindexer_method", **dict.fromkeys(QUANTIZERS.builtin, "two_stage")}
)
