"""Payload codecs: how a job's arguments become the bytes a backend stores.

The default :class:`JSONCodec` is safe and readable by any process, with or
without the application's modules: tagged JSON for plain data. Values JSON has
no type for are written as ``{"$": tag, "v": value}``; a dict that could be
mistaken for a tag (a ``"$"`` key, or keys that are not strings) is written as
``{"$": "dict", "v": [[key, value], ...]}``, so every value round-trips exactly.

:class:`PickleCodec` encodes anything picklable and must be asked for by name:
use it only with trusted storage, since unpickling runs code.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import pickle
import uuid
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from exqueue.errors import SerializationError

Arguments = tuple[tuple[Any, ...], dict[str, Any]]


class Codec(Protocol):
    """Encodes ``(args, kwargs)`` to bytes and back."""

    name: str

    def encode(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes: ...

    def decode(self, data: bytes) -> Arguments: ...


_TAG = "$"
_PLAIN = (str, int, bool, type(None))
_SCALARS = frozenset({str, int, bool, type(None)})
_encode_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_decoder = json.JSONDecoder()
_decode_whole = _decoder.decode
# The scanner the decoder itself reads with (an attribute its __init__ sets).
_scan_json: Callable[[str, int], tuple[Any, int]] = vars(_decoder)["scan_once"]


def _decode_json(text: str) -> Any:
    """``json.loads(text)``, its common case without the decoder's two whitespace regexes.

    A payload this codec wrote is one JSON value and nothing around it: the
    scanner alone reads it (a small job's whole decode: 1.4 -> 0.8 µs). Anything
    else (whitespace around the value, extra data, an error) goes to the full
    decoder, which gives the same value or the same error as ever.
    """
    try:
        value, end = _scan_json(text, 0)
    except (StopIteration, ValueError):
        return _decode_whole(text)
    if end != len(text):
        return _decode_whole(text)
    return value


def _to_json(value: Any) -> Any:
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is float:
        if math.isfinite(value):
            return value
        return {_TAG: "float", "v": repr(value)}
    if kind is list:
        return [_to_json(item) for item in value]
    if kind is dict:
        if all(type(key) is str for key in value) and _TAG not in value:
            return {key: _to_json(item) for key, item in value.items()}
        return {_TAG: "dict", "v": [[_to_json(k), _to_json(v)] for k, v in value.items()]}
    if kind is tuple:
        return {_TAG: "tuple", "v": [_to_json(item) for item in value]}
    if kind is bytes:
        return {_TAG: "bytes", "v": base64.b64encode(value).decode("ascii")}
    if kind is set or kind is frozenset:
        items = [_to_json(item) for item in value]
        # Sort the encoded items so equal sets give equal payloads.
        items.sort(key=lambda item: json.dumps(item, sort_keys=True))
        return {_TAG: "set" if kind is set else "frozenset", "v": items}
    if kind is dt.datetime or kind is dt.time:
        return _clock_value(value)
    if kind is dt.date:
        return {_TAG: "date", "v": value.isoformat()}
    if kind is dt.timedelta:
        return {_TAG: "timedelta", "v": [value.days, value.seconds, value.microseconds]}
    if kind is Decimal:
        return {_TAG: "decimal", "v": str(value)}
    if kind is uuid.UUID:
        return {_TAG: "uuid", "v": str(value)}
    raise SerializationError(
        f"cannot encode a value of type {kind.__module__}.{kind.__qualname__} with the "
        "default JSON codec; pass plain data (str, int, float, bool, None, bytes, list, "
        "tuple, dict, set, frozenset, datetime, date, time, timedelta, Decimal, UUID) "
        "such as an id, or use PickleCodec with trusted storage"
    )


def _clock_value(value: dt.datetime | dt.time) -> Any:
    """A datetime or time: naive and fixed-offset ones as ISO text, named zones by key."""
    tag = "datetime" if type(value) is dt.datetime else "time"
    zone = value.tzinfo
    if zone is None:
        return {_TAG: tag, "v": value.isoformat()}
    if type(zone) is dt.timezone:
        offset = zone.utcoffset(None)
        plain = dt.timezone(offset)
        if offset % dt.timedelta(minutes=1) == dt.timedelta(0) and (
            zone.tzname(None) == plain.tzname(None)
        ):
            return {_TAG: tag, "v": value.isoformat()}
        # ISO text cannot carry sub-minute offsets exactly, nor a zone's own name.
        seconds = offset // dt.timedelta(microseconds=1)
        naive = value.replace(tzinfo=None).isoformat()
        return {_TAG: "o" + tag, "v": [naive, seconds, zone.tzname(None), value.fold]}
    key = getattr(zone, "key", None)
    if isinstance(zone, ZoneInfo) and key:
        return {_TAG: "z" + tag, "v": [value.replace(tzinfo=None).isoformat(), key, value.fold]}
    raise SerializationError(
        f"cannot encode a {tag} in time zone {zone!r}: use datetime.timezone offsets "
        "or zoneinfo.ZoneInfo zones"
    )


def _in_zone(tag: str, text: str, zone: dt.tzinfo, fold: int) -> Any:
    """``text`` (naive ISO) as the datetime or time its tag names, in ``zone``."""
    parse = dt.datetime.fromisoformat if tag.endswith("datetime") else dt.time.fromisoformat
    return parse(text).replace(tzinfo=zone, fold=fold)


def _zoned(tag: str, raw: Any) -> Any:
    text, key, fold = raw
    try:
        zone = ZoneInfo(key)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise SerializationError(f"unknown time zone {key!r} in stored payload") from exc
    return _in_zone(tag, text, zone, fold)


def _tagged(tag: str, raw: Any) -> Any:
    if tag == "tuple":
        return tuple(_from_json(item) for item in raw)
    if tag == "dict":
        return {_from_json(k): _from_json(v) for k, v in raw}
    if tag == "bytes":
        return base64.b64decode(raw.encode("ascii"), validate=True)
    if tag == "set":
        return {_from_json(item) for item in raw}
    if tag == "frozenset":
        return frozenset(_from_json(item) for item in raw)
    if tag == "float":
        return float(raw)
    if tag == "zdatetime" or tag == "ztime":
        return _zoned(tag, raw)
    if tag == "odatetime" or tag == "otime":
        text, micro, name, fold = raw
        return _in_zone(tag, text, dt.timezone(dt.timedelta(microseconds=micro), name), fold)
    if tag == "datetime":
        return dt.datetime.fromisoformat(raw)
    if tag == "date":
        return dt.date.fromisoformat(raw)
    if tag == "time":
        return dt.time.fromisoformat(raw)
    if tag == "timedelta":
        days, seconds, micro = raw
        return dt.timedelta(days=days, seconds=seconds, microseconds=micro)
    if tag == "decimal":
        return Decimal(raw)
    if tag == "uuid":
        return uuid.UUID(raw)
    raise SerializationError(f"unknown type tag {tag!r} in stored payload")


def _from_json(value: Any) -> Any:
    kind = type(value)
    if kind is list:
        return [_from_json(item) for item in value]
    if kind is dict:
        tag = value.get(_TAG)
        if tag is not None and len(value) == 2 and "v" in value:
            return _tagged(tag, value["v"])
        if tag is not None:
            raise SerializationError("malformed type tag in stored payload")
        return {key: _from_json(item) for key, item in value.items()}
    return value


def _all_scalars(values: Iterable[Any]) -> bool:
    for value in values:
        if type(value) not in _SCALARS:
            return False
    return True


class JSONCodec:
    """The safe default: tagged JSON, readable without the application's code."""

    name = "json"

    def encode(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
        for key in kwargs:
            if type(key) is not str:
                raise SerializationError("keyword argument names must be strings")
        try:
            # Most jobs take ids and names: those need no tagging walk.
            if _all_scalars(args) and (not kwargs or _all_scalars(kwargs.values())):
                return _encode_json([list(args), kwargs]).encode()
            body = [[_to_json(a) for a in args], {k: _to_json(v) for k, v in kwargs.items()}]
            return _encode_json(body).encode()
        except SerializationError:
            raise
        except (ValueError, TypeError, RecursionError) as exc:
            raise SerializationError(f"cannot encode arguments: {exc}") from exc

    def decode(self, data: bytes) -> Arguments:
        if data[:1] == b"\x80":
            raise SerializationError(
                "payload looks pickled; the default JSON codec never unpickles "
                "(use PickleCodec only with trusted storage)"
            )
        try:
            raw = _decode_json(data.decode())
        except (ValueError, UnicodeDecodeError) as exc:
            raise SerializationError(f"payload is not valid JSON: {exc}") from exc
        if (
            type(raw) is not list
            or len(raw) != 2
            or type(raw[0]) is not list
            or type(raw[1]) is not dict
        ):
            raise SerializationError("payload is not an [args, kwargs] pair")
        if b'"$"' not in data:
            # No type tags anywhere: the JSON values are the arguments as they are.
            return tuple(raw[0]), raw[1]
        try:
            args = tuple(_from_json(a) for a in raw[0])
            kwargs = {k: _from_json(v) for k, v in raw[1].items()}
        except SerializationError:
            raise
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
            raise SerializationError(f"payload has a malformed value: {exc}") from exc
        return args, kwargs


class PickleCodec:
    """Encodes anything picklable. Trusted storage only: decoding runs arbitrary code."""

    name = "pickle"

    def encode(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
        try:
            return pickle.dumps((args, kwargs), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # pickling raises many types; all mean "cannot encode"
            raise SerializationError(f"cannot pickle arguments: {exc}") from exc

    def decode(self, data: bytes) -> Arguments:
        try:
            args, kwargs = pickle.loads(data)
            return tuple(args), dict(kwargs)
        except Exception as exc:  # a corrupt pickle can raise nearly anything
            raise SerializationError(f"cannot unpickle payload: {exc}") from exc


def get_codec(name: str | Codec) -> Codec:
    """A codec by name (``"json"`` or ``"pickle"``), or the codec object itself."""
    if not isinstance(name, str):
        return name
    if name == "json":
        return JSONCodec()
    if name == "pickle":
        return PickleCodec()
    raise ValueError(f"unknown codec {name!r}: use 'json' (default) or 'pickle'")
