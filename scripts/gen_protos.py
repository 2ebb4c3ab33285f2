"""Regenerate (or, with --check, verify) the Python code for proto/artifex/v1/*.proto."""

from __future__ import annotations

import argparse
import filecmp
import re
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
OUT_PACKAGE = ROOT / "artifex_agent" / "proto"
# grpc_tools writes absolute imports ("from artifex.v1 import x_pb2"); the generated
# code lives inside our package, so those are rewritten to package imports.
_IMPORT = re.compile(r"^from artifex\.v1 import", re.MULTILINE)


def generate(out: Path) -> None:
    from grpc_tools import protoc  # dev dependency; not needed at run time

    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    args = ["protoc", f"-I{PROTO_ROOT}", f"-I{include}", f"--python_out={out}",
            f"--pyi_out={out}", f"--grpc_python_out={out}", *protos]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for path in out.rglob("*.py*"):
        text = _IMPORT.sub("from artifex_agent.proto.artifex.v1 import", path.read_text())
        path.write_text(text)
    for pkg in (out / "artifex", out / "artifex" / "v1"):
        (pkg / "__init__.py").write_text("")
    (out / "__init__.py").write_text('"""Generated protobuf and gRPC code (scripts/gen_protos.py); do not edit."""\n')


def _same_tree(a: Path, b: Path) -> list[str]:
    files_a = {p.relative_to(a) for p in a.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    files_b = {p.relative_to(b) for p in b.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    diff = sorted(str(p) for p in files_a ^ files_b)
    diff += sorted(str(p) for p in files_a & files_b if not filecmp.cmp(a / p, b / p, shallow=False))
    return diff


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the checked-in code is stale")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "proto"
        out.mkdir()
        generate(out)
        if args.check:
            stale = _same_tree(out, OUT_PACKAGE)
            if stale:
                print("generated protobuf code is stale; run scripts/gen_protos.py:", *stale, sep="\n  ")
                return 1
            print("generated protobuf code is up to date")
            return 0
        shutil.rmtree(OUT_PACKAGE, ignore_errors=True)
        shutil.copytree(out, OUT_PACKAGE)
    print(f"wrote {OUT_PACKAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
