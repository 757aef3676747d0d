"""A cheaper ``__init__`` for the frozen dataclasses built once per job (:func:`cheap_init`).

A frozen dataclass's generated ``__init__`` sets every field through
``object.__setattr__(self, name, value)``, a C call per field that costs about
as much as the rest of a small enqueue: building a 13-field ``NewJob`` took 5x
the time of storing the same values on a plain class. :func:`cheap_init`
replaces that ``__init__`` with one of the same signature (same names, order,
defaults and default factories, ``__post_init__`` called the same way) that
stores the fields as plain attribute writes on a *draft*: the object's class is
switched, for the length of ``__init__``, to a plain twin class with the same
layout (the same ``__slots__``, or an instance dict like the original), then
back. CPython allows ``__class__`` assignment between classes of the same
layout; the object that comes out is an ordinary instance of the public class,
so immutability, ``repr``, equality, hashing, pickling and
``dataclasses.replace`` are unchanged. A subclass, or an interpreter that
refuses the switch, gets the dataclass's own ``__init__``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")

_FACTORY = object()  # "not given" for a field with a default_factory


def cheap_init(cls: type[T]) -> type[T]:
    """Give the frozen dataclass ``cls`` the cheaper ``__init__`` described above."""
    fields = [f for f in dataclasses.fields(cls) if f.init]  # type: ignore[arg-type]
    if not all(f.name.isidentifier() for f in fields) or len(fields) != len(
        dataclasses.fields(cls)  # type: ignore[arg-type]
    ):
        return cls  # a field left out of __init__: keep the generated one
    slots = cls.__dict__.get("__slots__")
    draft: type = type(f"_{cls.__name__}Draft", (), {} if slots is None else {"__slots__": slots})
    probe: Any = object.__new__(draft)
    try:
        probe.__class__ = cls
    except TypeError:  # layouts differ (not CPython?): keep the generated __init__
        return cls
    names: dict[str, Any] = {
        "_cls": cls,
        "_draft": draft,
        "_set": object.__setattr__,
        "_slow": cls.__init__,
        "_FACTORY": _FACTORY,
    }
    params, resolve, stores = [], [], []
    for f in fields:
        if f.default is not dataclasses.MISSING:
            names[f"_d_{f.name}"] = f.default
            params.append(f"{f.name}=_d_{f.name}")
        elif f.default_factory is not dataclasses.MISSING:
            names[f"_f_{f.name}"] = f.default_factory
            params.append(f"{f.name}=_FACTORY")
        else:
            params.append(f.name)
        if f.default_factory is not dataclasses.MISSING:
            resolve.append(f"    if {f.name} is _FACTORY:\n        {f.name} = _f_{f.name}()\n")
        stores.append(f"    self.{f.name} = {f.name}\n")
    arguments = ", ".join(f.name for f in fields)
    post = "    self.__post_init__()\n" if hasattr(cls, "__post_init__") else ""
    source = (
        f"def __init__(self, {', '.join(params)}):\n"
        + "".join(resolve)
        + "    if type(self) is not _cls:\n"
        f"        return _slow(self, {arguments})\n"
        "    _set(self, '__class__', _draft)\n"
        + "".join(stores)
        + "    self.__class__ = _cls\n"
        + post
    )
    exec(source, names)  # the source is built from the dataclass's own field names
    init = names["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__doc__ = cls.__init__.__doc__
    cls.__init__ = init  # type: ignore[method-assign]
    return cls
