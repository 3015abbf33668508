"""Typed JSON documents written and read as Go's encoding/json writes and reads the upstream structs: the one
convention of every JSON document the project speaks (the HCS schemas in hcsshim.hcs.schema1/schema2, the bridge's
guest resources in hcsshim.bridge.resources). Standard library only and cheap to import: the guest imports it on
a utility VM's boot path.

A document type is a `Struct` subclass with one `field(key, kind)` per Go struct field, in the Go declaration
order, under an ordinary annotation::

    class Attachment(Struct):
        type: str = field("Type", STR)
        path: str = field("Path", STR)
        read_only: bool = field("ReadOnly", BOOL)

The class gets __slots__, a keyword-only __init__ (every field optional, defaulting to its kind's zero), __eq__
and __repr__ (non-zero fields only). The kinds:

| kind | Go type | Python value, zero |
|---|---|---|
| STR, BOOL | string (and string enums), bool | str "", bool False |
| U8 U16 U32 U64 I8 I16 I32 I64 | the integer types (Go's int and uint are 64-bit) | int 0, range-checked |
| F32, F64 | float32, float64 | float 0.0 (an int is accepted) |
| BYTES | []byte (base64 on the wire) | bytes b"" |
| TIME | time.Time (RFC 3339) | str "0001-01-01T00:00:00Z"; never omitted (a struct) |
| GUID | go-winio's guid.GUID (its text) | str, written lowercase, NIL_GUID; never omitted (a struct) |
| ANY | interface{}, json.RawMessage | the decoded JSON as is, None |
| OBJECT | a struct of another project (OCI's), as a JSON object | dict, {} |
| a Struct class | *Struct (a pointer) | an instance, None |
| value(S) | Struct (not a pointer) | an instance, S(); never omitted (a struct) |
| opt(k) | *k, a pointer to a scalar | None (omitted) or a value, even a zero one |
| list_of(k) | []k | list, [] |
| list_of(k, nil=True) | []k whose nil (null) and empty ([]) differ | None (Go's nil, null) or a list |
| array_of(k, n) | [n]k | a list of n values, n zeros; never omitted (unless n is 0) |
| map_of(k), map_of(k, key=I64) | map[string]k, map[int]k (any integer key kind) | dict, {}; nil=True as list_of's |
| ref(name, get) | the kind `get()` returns, when first used | as that kind: a type that contains itself |

An array is read as Go reads one (missing elements zero, extra ones dropped), a GUID in either case. Map keys are
written sorted as text, as Go sorts them (int keys as decimal text: "10" before "2"); int keys are read by
strconv.ParseInt's (for unsigned keys ParseUint's) rules in the key kind's range. `ref` names a class not yet
defined where the field is: ``list_of(ref("ObjectDirectory", lambda: value(ObjectDirectory)))``.

Writing (`to_json`, `dumps`): fields in declaration order; an `omitempty` field (the default) at its zero value
("", 0, false, nil, an empty slice or map) is left out, as are None pointers; `dumps` gives Go's bytes: compact,
`<`, `>`, `&`, U+2028 and U+2029 escaped, floats formatted as strconv's shortest 'f' or 'e' form.

Reading (`from_json`, `loads`): as Go's decoder does: each key matched to a field exactly, else case-
insensitively; unknown keys ignored; null leaves the zero value; a wrong type or an out-of-range number raises
DecodeError naming the document and the field's path ("Attachment: field Lun: expected uint8, got 300";
"VirtualMachine.Devices.Scsi[\"0\"].Attachments[\"1\"]: field Path: expected string, got int").
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from typing import Any, ClassVar, Self, dataclass_transform

__all__ = [
    "ANY", "BOOL", "BYTES", "F32", "F64", "GUID", "I8", "I16", "I32", "I64", "NIL_GUID", "OBJECT", "STR", "TIME", "U8",
    "U16", "U32", "U64", "ZERO_TIME", "DecodeError", "Field", "Kind", "Struct", "array_of", "dumps", "field",
    "list_of", "loads", "map_of", "opt", "ref", "value",
]

ZERO_TIME = "0001-01-01T00:00:00Z"
NIL_GUID = "00000000-0000-0000-0000-000000000000"
_GUID_TEXT = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")
_DECIMAL = re.compile(r"([+-]?)0*([0-9]{1,20})\Z")  # strconv.ParseInt's base 10 (more digits: out of range)
_RFC3339 = re.compile(r"\d{4}-\d\d-\d\d[Tt]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)\Z")


class DecodeError(ValueError):
    """A JSON value that does not fit the document type; the message names the document and the field's path."""


def _got(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return repr(value)[:40]
    return {str: "string", dict: "object", list: "array"}.get(type(value), type(value).__name__)


class Kind:
    """How one Go type is written and read (see the module docstring's table)."""

    __slots__ = ("name",)
    always = False  # written even when omitempty (Go structs: omitempty does not apply to them)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name

    def zero(self) -> Any:
        raise NotImplementedError

    def empty(self, v: Any) -> bool:
        return not v

    def decode(self, v: Any, where: str) -> Any:
        raise NotImplementedError

    def encode(self, v: Any) -> Any:
        return v

    def bad(self, where: str, v: Any, expected: str | None = None) -> DecodeError:
        return DecodeError(f"{where}: expected {expected or self.name}, got {_got(v)}")


class _Str(Kind):
    __slots__ = ()

    def zero(self) -> str:
        return ""

    def decode(self, v: Any, where: str) -> str:
        if not isinstance(v, str):
            raise self.bad(where, v)
        return v


class _Bool(Kind):
    __slots__ = ()

    def zero(self) -> bool:
        return False

    def decode(self, v: Any, where: str) -> bool:
        if not isinstance(v, bool):
            raise self.bad(where, v)
        return v


class _Int(Kind):
    __slots__ = ("hi", "lo")

    def __init__(self, name: str, bits: int, signed: bool) -> None:
        super().__init__(name)
        self.lo, self.hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)

    def zero(self) -> int:
        return 0

    def decode(self, v: Any, where: str) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not self.lo <= v <= self.hi:
            raise self.bad(where, v)
        return v


class _Float(Kind):
    __slots__ = ()

    def zero(self) -> float:
        return 0.0

    def decode(self, v: Any, where: str) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self.bad(where, v)
        return float(v)


class _Bytes(Kind):
    __slots__ = ()

    def zero(self) -> bytes:
        return b""

    def decode(self, v: Any, where: str) -> bytes:
        if not isinstance(v, str):
            raise self.bad(where, v, "base64 string")
        try:
            return base64.b64decode(v, validate=True)
        except (binascii.Error, ValueError):
            raise self.bad(where, v, "base64 string") from None

    def encode(self, v: bytes) -> str:
        return base64.b64encode(v).decode()


class _Time(Kind):
    __slots__ = ()
    always = True

    def zero(self) -> str:
        return ZERO_TIME

    def decode(self, v: Any, where: str) -> str:
        if not isinstance(v, str) or not _RFC3339.match(v):
            raise self.bad(where, v, "RFC 3339 time")
        return v


class _Guid(Kind):
    """go-winio's guid.GUID: a struct marshalled as its text (as FromString reads it), so never omitted."""

    __slots__ = ()
    always = True

    def zero(self) -> str:
        return NIL_GUID

    def decode(self, v: Any, where: str) -> str:
        if not isinstance(v, str) or not _GUID_TEXT.match(v):
            raise self.bad(where, v, "GUID string")
        return v.lower()

    def encode(self, v: str) -> str:
        if not isinstance(v, str) or not _GUID_TEXT.match(v):
            raise ValueError(f"invalid GUID {v!r}")
        return v.lower()


class _Any(Kind):
    __slots__ = ()

    def zero(self) -> Any:
        return None

    def empty(self, v: Any) -> bool:
        return v is None

    def decode(self, v: Any, where: str) -> Any:
        return v

    def encode(self, v: Any) -> Any:
        return v.to_json() if isinstance(v, Struct) else v


class _Object(Kind):
    """A JSON object kept as a dict (a foreign struct the project does not type, e.g. an OCI one)."""

    __slots__ = ()

    def zero(self) -> dict[str, Any]:
        return {}

    def decode(self, v: Any, where: str) -> dict[str, Any]:
        if not isinstance(v, dict):
            raise self.bad(where, v)
        return v


class _Ptr(Kind):
    """*Struct: None when absent."""

    __slots__ = ("cls",)

    def __init__(self, cls: type[Struct]) -> None:
        super().__init__(cls.__name__)
        self.cls = cls

    def zero(self) -> None:
        return None

    def empty(self, v: Any) -> bool:
        return v is None

    def decode(self, v: Any, where: str) -> Struct:
        return self.cls._read(v, where)

    def encode(self, v: Struct) -> dict[str, Any]:
        return v.to_json()


class _Value(_Ptr):
    """Struct (not a pointer): always there, always written."""

    __slots__ = ()
    always = True

    def zero(self) -> Struct:
        return self.cls()

    def empty(self, v: Any) -> bool:
        return False


class _Opt(Kind):
    """*scalar: None (omitted) or a value, written even when it is its kind's zero."""

    __slots__ = ("inner",)

    def __init__(self, inner: Kind) -> None:
        super().__init__(f"*{inner.name}")
        self.inner = inner

    def zero(self) -> None:
        return None

    def empty(self, v: Any) -> bool:
        return v is None

    def decode(self, v: Any, where: str) -> Any:
        return self.inner.decode(v, where)

    def encode(self, v: Any) -> Any:
        return self.inner.encode(v)


class _List(Kind):
    __slots__ = ("item", "nil")

    def __init__(self, item: Kind, nil: bool = False) -> None:
        super().__init__(f"[]{item.name}")
        self.item = item
        self.nil = nil

    def zero(self) -> list[Any] | None:
        return None if self.nil else []

    def decode(self, v: Any, where: str) -> list[Any]:
        if not isinstance(v, list):
            raise self.bad(where, v, f"array of {self.item.name}")
        item = self.item
        return [item.zero() if x is None else item.decode(x, f"{where}[{i}]") for i, x in enumerate(v)]

    def encode(self, v: list[Any]) -> list[Any]:
        item = self.item
        return [None if x is None else item.encode(x) for x in v]


class _Array(_List):
    """[n]T: n values on the wire; omitempty drops it only when n is 0 (Go's isEmptyValue: its length)."""

    __slots__ = ("length",)

    def __init__(self, item: Kind, length: int) -> None:
        super().__init__(item)
        self.name = f"[{length}]{item.name}"
        self.length = length

    def zero(self) -> list[Any]:
        return [self.item.zero() for _ in range(self.length)]

    def empty(self, v: Any) -> bool:
        return self.length == 0

    def decode(self, v: Any, where: str) -> list[Any]:  # Go drops the extra elements and zeroes the missing ones
        out = super().decode(v[:self.length] if isinstance(v, list) else v, where)
        return out + self.zero()[len(out):]

    def encode(self, v: list[Any]) -> list[Any]:
        if len(v) != self.length:
            raise ValueError(f"{self.name}: expected {self.length} elements, got {len(v)}")
        return super().encode(v)


class _Map(Kind):
    __slots__ = ("item", "key", "nil")

    def __init__(self, item: Kind, key: Kind, nil: bool) -> None:
        super().__init__(f"map[{key.name}]{item.name}")
        self.item = item
        self.key = key
        self.nil = nil

    def zero(self) -> dict[Any, Any] | None:
        return None if self.nil else {}

    def decode(self, v: Any, where: str) -> dict[Any, Any]:
        if not isinstance(v, dict):
            raise self.bad(where, v, f"object of {self.item.name}")
        item, key = self.item, self.key
        out: dict[Any, Any] = {}
        for k, x in v.items():
            if isinstance(key, _Int):
                k = self._int_key(key, k, where)
            out[k] = item.zero() if x is None else item.decode(x, f"{where}[{json.dumps(k)}]")
        return out

    @staticmethod
    def _int_key(key: _Int, text: str, where: str) -> int:
        """strconv.ParseInt(text, 10, 64) (ParseUint: no sign) and the key kind's range, as Go's decoder reads it."""
        m = _DECIMAL.match(text)
        if m and not (m[1] and key.lo == 0):  # ParseUint takes no sign
            n = -int(m[2]) if m[1] == "-" else int(m[2])
            if key.lo <= n <= key.hi:
                return n
        raise DecodeError(f"{where}: expected {key.name} key, got {json.dumps(text[:40])}")

    def encode(self, v: dict[Any, Any]) -> dict[str, Any]:
        item = self.item
        return {str(k): None if v[k] is None else item.encode(v[k]) for k in sorted(v, key=str)}  # Go sorts the text


STR: Kind = _Str("string")
BOOL: Kind = _Bool("bool")
U8: Kind = _Int("uint8", 8, False)
U16: Kind = _Int("uint16", 16, False)
U32: Kind = _Int("uint32", 32, False)
U64: Kind = _Int("uint64", 64, False)
I8: Kind = _Int("int8", 8, True)
I16: Kind = _Int("int16", 16, True)
I32: Kind = _Int("int32", 32, True)
I64: Kind = _Int("int64", 64, True)
F32: Kind = _Float("float32")
F64: Kind = _Float("float64")
BYTES: Kind = _Bytes("[]byte")
TIME: Kind = _Time("time.Time")
GUID: Kind = _Guid("guid.GUID")
ANY: Kind = _Any("interface{}")
OBJECT: Kind = _Object("object")


def _kind(k: Kind | type[Struct]) -> Kind:
    if isinstance(k, Kind):
        return k
    if isinstance(k, type) and issubclass(k, Struct):
        return _Ptr(k)
    raise TypeError(f"not a gojson kind: {k!r}")


def value(cls: type[Struct]) -> Kind:
    """A struct field that is not a pointer: always present (S() when empty) and always written."""
    return _Value(cls)


def opt(kind: Kind) -> Kind:
    """A pointer to a scalar: None when absent; a value, even a zero one, is written."""
    return _Opt(_kind(kind))


def list_of(kind: Kind | type[Struct], *, nil: bool = False) -> Kind:
    """[]kind; nil=True keeps Go's nil slice (None, the zero: null without omitempty) apart from an empty one."""
    return _List(_kind(kind), nil)


def array_of(kind: Kind | type[Struct], length: int) -> Kind:
    """[length]kind: a list of exactly `length` values (ValueError when written with another length)."""
    return _Array(_kind(kind), length)


def map_of(kind: Kind | type[Struct], *, key: Kind = STR, nil: bool = False) -> Kind:
    """map[key]kind, key STR or an integer kind (int keys); nil=True as for list_of."""
    if key is not STR and not isinstance(key, _Int):
        raise TypeError(f"map_of: a key is STR or an integer kind, not {key!r}")
    return _Map(_kind(kind), key, nil)


class _Ref(Kind):
    """A kind resolved when first used (see `ref`)."""

    __slots__ = ("_get", "_kind")

    def __init__(self, name: str, get: Callable[[], Kind | type[Struct]]) -> None:
        super().__init__(name)
        self._get = get
        self._kind: Kind | None = None

    @property
    def kind(self) -> Kind:
        if self._kind is None:
            self._kind = _kind(self._get())
        return self._kind

    @property  # type: ignore[override]
    def always(self) -> bool:
        return self.kind.always

    def zero(self) -> Any:
        return self.kind.zero()

    def empty(self, v: Any) -> bool:
        return self.kind.empty(v)

    def decode(self, v: Any, where: str) -> Any:
        return self.kind.decode(v, where)

    def encode(self, v: Any) -> Any:
        return self.kind.encode(v)


def ref(name: str, get: Callable[[], Kind | type[Struct]]) -> Kind:
    """The kind (or *Struct) `get()` returns, called when the kind is first used: for a type that contains itself,
    ``ref("ObjectDirectory", lambda: value(ObjectDirectory))``; `name` is what errors call it."""
    return _Ref(name, get)


class Field:
    """One struct field: its attribute, JSON key, kind, omitempty and default (see `field`)."""

    __slots__ = ("attr", "default", "key", "kind", "omitempty")

    def __init__(self, key: str, kind: Kind, omitempty: bool, default: Any) -> None:
        self.attr = ""
        self.key = key
        self.kind = kind
        self.omitempty = omitempty
        self.default = default

    def initial(self) -> Any:
        d = self.default
        if d is _ZERO:
            return self.kind.zero()
        return d() if callable(d) else d

    def __repr__(self) -> str:
        return f"field({self.key!r}, {self.kind!r}{'' if self.omitempty else ', omitempty=False'})"


_ZERO = object()


def field(key: str, kind: Kind | type[Struct], *, omitempty: bool = True, default: Any = _ZERO) -> Any:
    """Declares a struct field with JSON key `key` (upstream's exact name) of `kind`; `default` (a value or a
    callable making one) replaces the kind's zero as the constructor's default, not as Go's decoding default."""
    return Field(key, _kind(kind), omitempty, default)


@dataclass_transform(kw_only_default=True, field_specifiers=(field,))
class _StructMeta(type):
    def __new__(mcls, name: str, bases: tuple[type, ...], ns: dict[str, Any], **kw: Any) -> _StructMeta:
        own = []
        for attr, v in list(ns.items()):
            if isinstance(v, Field):
                v.attr = attr
                own.append(v)
                del ns[attr]
        ns["__slots__"] = tuple(f.attr for f in own)
        cls = super().__new__(mcls, name, bases, ns, **kw)
        inherited: tuple[Field, ...] = getattr(cls, "_FIELDS", ())
        fields = inherited + tuple(own)
        cls._FIELDS = fields
        cls._BY_KEY = {f.key: f for f in fields}
        folded: dict[str, Field] = {}
        for f in fields:
            folded.setdefault(f.key.casefold(), f)
        cls._BY_FOLD = folded
        cls._NAMES = frozenset(f.attr for f in fields)
        if "NAME" not in ns:
            cls.NAME = name
        return cls


class Struct(metaclass=_StructMeta):
    """A Go struct as a typed JSON document (see the module docstring)."""

    NAME: ClassVar[str] = ""  # how errors name the document (the class name unless set)
    _FIELDS: ClassVar[tuple[Field, ...]] = ()
    _BY_KEY: ClassVar[dict[str, Field]] = {}
    _BY_FOLD: ClassVar[dict[str, Field]] = {}
    _NAMES: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, **kw: Any) -> None:
        for f in self._FIELDS:
            setattr(self, f.attr, kw.pop(f.attr) if f.attr in kw else f.initial())
        if kw:
            raise TypeError(f"{type(self).__name__}: no field {', '.join(sorted(kw))}")

    def to_json(self) -> dict[str, Any]:
        """The JSON object Go's encoder writes for the struct."""
        out: dict[str, Any] = {}
        for f in self._FIELDS:
            v = getattr(self, f.attr)
            kind = f.kind
            if v is None:
                if not f.omitempty:
                    out[f.key] = None
                continue
            if f.omitempty and not kind.always and kind.empty(v):
                continue
            out[f.key] = kind.encode(v)
        return out

    @classmethod
    def from_json(cls, obj: Any, *, where: str | None = None) -> Self:
        """Reads a decoded JSON object as Go's decoder does (DecodeError naming the field's path)."""
        return cls._read(obj, where or cls.NAME)

    @classmethod
    def _read(cls, obj: Any, where: str) -> Self:
        """from_json's work; what nested documents are read with (a subclass may change from_json's errors)."""
        if not isinstance(obj, dict):
            raise DecodeError(f"{where}: expected a JSON object, got {_got(obj)}")
        self = cls.__new__(cls)
        for f in cls._FIELDS:
            setattr(self, f.attr, f.kind.zero())
        by_key, by_fold = cls._BY_KEY, cls._BY_FOLD
        for k, v in obj.items():
            f = by_key.get(k) or by_fold.get(k.casefold())
            if f is None or v is None:
                continue
            try:
                setattr(self, f.attr, f.kind.decode(v, f"{where}.{f.key}"))
            except DecodeError as e:
                raise _scalar_message(e, where, f.key) from None
        return self

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, f.attr) == getattr(other, f.attr) for f in self._FIELDS)

    __hash__ = None  # type: ignore[assignment]  # mutable, like the Go structs

    def __repr__(self) -> str:
        shown = ", ".join(f"{f.attr}={getattr(self, f.attr)!r}" for f in self._FIELDS
                          if getattr(self, f.attr) != f.kind.zero())
        return f"{type(self).__name__}({shown})"


def _scalar_message(e: DecodeError, where: str, key: str) -> DecodeError:
    """"Doc.Key[2]: expected x, got y" (the field's own value, or an element of it) reads
    "Doc: field Key[2]: expected x, got y"; a nested document's message stays as it is."""
    text = str(e)
    prefix = f"{where}.{key}"
    if text.startswith(prefix):
        m = _INDEXED.match(text, len(prefix))
        if m:
            return DecodeError(f"{where}: field {key}{m.group(1)}: {text[m.end():]}")
    return e


_INDEXED = re.compile(r'((?:\[(?:-?\d+|"(?:[^"\\]|\\.)*")\])*): (?=expected )')


# -- text -------------------------------------------------------------------------------------------------------

_HTML = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def _go_float(x: float) -> str:
    """strconv.FormatFloat(x, 'f' or 'e', -1, 64) as encoding/json picks them."""
    if x != x or x in (float("inf"), float("-inf")):
        raise ValueError(f"json: unsupported value: {x!r}")
    if x == 0:
        return "-0" if str(x).startswith("-") else "0"
    r = repr(x)
    if 1e-6 <= abs(x) < 1e21:
        if "e" in r or "E" in r:
            mant, _, exp = r.partition("e")
            sign = "-" if mant.startswith("-") else ""
            digits = mant.lstrip("-").replace(".", "")
            point = (mant.lstrip("-").find(".") if "." in mant else len(mant.lstrip("-"))) + int(exp)
            digits = digits.rstrip("0") or "0"
            if point <= 0:
                return f"{sign}0.{'0' * -point}{digits}"
            if point >= len(digits):
                return f"{sign}{digits}{'0' * (point - len(digits))}"
            return f"{sign}{digits[:point]}.{digits[point:]}"
        return r[:-2] if r.endswith(".0") else r
    mant, _, exp = (r if "e" in r else f"{x:e}").partition("e")
    if "." in mant:
        mant = mant.rstrip("0").rstrip(".")
    sign, digits = (exp[0], exp[1:]) if exp[0] in "+-" else ("+", exp)
    return f"{mant}e{sign}{digits.lstrip('0') or '0'}"


def _text(v: Any, out: list[str]) -> None:
    if isinstance(v, str):
        out.append(json.dumps(v, ensure_ascii=False))
    elif v is True:
        out.append("true")
    elif v is False:
        out.append("false")
    elif v is None:
        out.append("null")
    elif isinstance(v, int):
        out.append(str(int(v)))
    elif isinstance(v, float):
        out.append(_go_float(v))
    elif isinstance(v, Struct):
        _text(v.to_json(), out)
    elif isinstance(v, dict):
        out.append("{")
        for i, (k, x) in enumerate(v.items()):
            if i:
                out.append(",")
            out.append(json.dumps(str(k), ensure_ascii=False))
            out.append(":")
            _text(x, out)
        out.append("}")
    elif isinstance(v, (list, tuple)):
        out.append("[")
        for i, x in enumerate(v):
            if i:
                out.append(",")
            _text(x, out)
        out.append("]")
    else:
        raise TypeError(f"json: unsupported type: {type(v).__name__}")


def dumps(v: Any) -> str:
    """The text Go's json.Marshal writes for `v` (a Struct, or JSON-like data whose dicts keep their order)."""
    out: list[str] = []
    _text(v, out)
    return "".join(out).translate(_HTML)


def loads(text: str | bytes, cls: type[Struct], *, where: str | None = None) -> Any:
    """Parses `text` as a `cls` document (DecodeError, naming the document, for bad JSON or a bad field)."""
    try:
        obj = json.loads(text)
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise DecodeError(f"{where or cls.NAME}: invalid JSON: {e}") from None
    return cls.from_json(obj, where=where)
