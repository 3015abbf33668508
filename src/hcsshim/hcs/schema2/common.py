"""The schema2 types every area uses: Version (a document's schema version)."""

from __future__ import annotations

from hcsshim.gojson import I32, Struct, field

__all__ = [
    "Version",
]


class Version(Struct):
    """A schema version: Major.Minor (2.1 for most documents)."""

    major: int = field("Major", I32)
    minor: int = field("Minor", I32)
