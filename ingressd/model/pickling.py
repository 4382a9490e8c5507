"""How the model's frozen dataclasses are pickled: built anew from their fields.

Compiled by mypyc, a frozen dataclass has no ``__setstate__`` that can get past
its frozen ``__setattr__``, so pickle's default (a bare instance, then each
field set) cannot load one. Called with the values of its ``init`` fields in
order, the class builds the same value on either build, ``__post_init__``
included. Registered with ``copyreg``, so the classes need no code of their own.
"""

from __future__ import annotations

import copyreg
from dataclasses import fields
from typing import Any


def by_fields(value: Any) -> tuple[type, tuple[object, ...]]:
    return type(value), tuple(getattr(value, f.name) for f in fields(value) if f.init)


def pickle_by_fields(*classes: type) -> None:
    for cls in classes:
        copyreg.pickle(cls, by_fields)
