#!/usr/bin/env python3
"""Generates the checked-in protobuf modules (``*_pb2.py`` and ``*_pb2.pyi``) from the .proto files.

The .proto files live beside their generated modules under src/hcsshim/api; protoc runs with ``-I src`` so
that generated imports read ``from hcsshim.api... import ..._pb2``. ``--out DIR`` writes elsewhere (the
up-to-date test generates into a temporary directory and compares).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
SRC = ROOT / "src"


def proto_files() -> list[str]:
    return sorted(str(p.relative_to(SRC)) for p in (SRC / "hcsshim" / "api").rglob("*.proto"))


def generate(out: pathlib.Path) -> None:
    from grpc_tools import protoc  # test-only dependency: regeneration is a developer task

    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    out.mkdir(parents=True, exist_ok=True)
    args = ["protoc", f"-I{SRC}", f"-I{include}", f"--python_out={out}", f"--pyi_out={out}", *proto_files()]
    if protoc.main(args) != 0:
        raise SystemExit("genproto: protoc failed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=SRC, help="output root (default: src)")
    args = parser.parse_args()
    generate(args.out)
    print(f"genproto: {len(proto_files())} files -> {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
