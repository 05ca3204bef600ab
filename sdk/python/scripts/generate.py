#!/usr/bin/env python3
"""Generate the protobuf and gRPC modules of the SDK from proto/sandgate/v1/sandgate.proto.

The modules are checked in under src/sandgate/_proto/. Run this script after changing the proto
file, and run it with --check in tests to fail when the checked-in modules differ from what the
proto file generates.

The output depends on the grpcio-tools version, because its bundled protoc writes its version
into the modules and gRPC writes its own into the stub. GRPCIO_TOOLS_VERSION below must match the
pin of the "test" extra in pyproject.toml.
"""

from __future__ import annotations

import argparse
import difflib
import importlib.metadata
import shutil
import sys
import tempfile
from pathlib import Path

GRPCIO_TOOLS_VERSION = "1.85.1"

SDK_DIR = Path(__file__).resolve().parents[1]
REPO_DIR = SDK_DIR.parents[1]
PROTO_ROOT = REPO_DIR / "proto"
PROTO_FILE = "sandgate/v1/sandgate.proto"
OUTPUT_DIR = SDK_DIR / "src" / "sandgate" / "_proto"
GENERATED_FILES = ("sandgate_pb2.py", "sandgate_pb2.pyi", "sandgate_pb2_grpc.py")

# The gRPC stub imports the messages by their proto package path, which inside this SDK would
# resolve to the `sandgate` package itself, so the import is rewritten to a relative one.
ABSOLUTE_IMPORT = "from sandgate.v1 import sandgate_pb2 as"
RELATIVE_IMPORT = "from . import sandgate_pb2 as"


def check_tools_version() -> None:
    """Exit with a message unless the pinned grpcio-tools version is installed."""
    try:
        installed = importlib.metadata.version("grpcio-tools")
    except importlib.metadata.PackageNotFoundError:
        sys.exit(
            f"grpcio-tools is not installed: run `pip install grpcio-tools=={GRPCIO_TOOLS_VERSION}`"
        )
    if installed != GRPCIO_TOOLS_VERSION:
        sys.exit(
            f"grpcio-tools {installed} is installed, but the checked-in modules are generated "
            f"with {GRPCIO_TOOLS_VERSION}: run `pip install grpcio-tools=={GRPCIO_TOOLS_VERSION}`"
        )


def generate(destination: Path) -> None:
    """Write the generated modules, with the stub's import made relative, into `destination`."""
    from grpc_tools import protoc

    well_known_protos = Path(protoc.__file__).resolve().parent / "_proto"
    with tempfile.TemporaryDirectory(prefix="sandgate-proto-") as scratch:
        arguments = [
            "grpc_tools.protoc",
            f"--proto_path={PROTO_ROOT}",
            f"--proto_path={well_known_protos}",
            f"--python_out={scratch}",
            f"--pyi_out={scratch}",
            f"--grpc_python_out={scratch}",
            str(PROTO_ROOT / PROTO_FILE),
        ]
        status = protoc.main(arguments)
        if status != 0:
            sys.exit(f"protoc failed with status {status} on {PROTO_ROOT / PROTO_FILE}")
        generated_dir = Path(scratch) / Path(PROTO_FILE).parent
        for name in GENERATED_FILES:
            text = (generated_dir / name).read_text(encoding="utf-8")
            if name == "sandgate_pb2_grpc.py":
                if ABSOLUTE_IMPORT not in text:
                    sys.exit(f"the generated {name} has no line {ABSOLUTE_IMPORT!r} to rewrite")
                text = text.replace(ABSOLUTE_IMPORT, RELATIVE_IMPORT)
            (destination / name).write_text(text, encoding="utf-8")


def compare(expected_dir: Path) -> list[str]:
    """Return a unified diff of every checked-in module that differs from `expected_dir`."""
    differences = []
    for name in GENERATED_FILES:
        expected = (expected_dir / name).read_text(encoding="utf-8").splitlines(keepends=True)
        current_path = OUTPUT_DIR / name
        if current_path.exists():
            current = current_path.read_text(encoding="utf-8").splitlines(keepends=True)
        else:
            current = []
        diff = difflib.unified_diff(
            current, expected, fromfile=f"checked-in {name}", tofile=f"generated {name}"
        )
        differences.extend(diff)
    return differences


def main() -> int:
    """Generate the modules into the SDK, or with --check compare them and report differences."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="do not write; exit 1 if the checked-in modules differ from the generated ones",
    )
    options = parser.parse_args()
    check_tools_version()

    with tempfile.TemporaryDirectory(prefix="sandgate-generated-") as output:
        generate(Path(output))
        if options.check:
            differences = compare(Path(output))
            if differences:
                sys.stdout.writelines(differences[:200])
                print(
                    f"\nerror: the modules in {OUTPUT_DIR} do not match {PROTO_ROOT / PROTO_FILE}: "
                    f"run `python {Path(__file__).relative_to(REPO_DIR)}` and commit the result",
                    file=sys.stderr,
                )
                return 1
            print(f"generated modules in {OUTPUT_DIR} match {PROTO_ROOT / PROTO_FILE}")
            return 0
        for name in GENERATED_FILES:
            shutil.copyfile(Path(output) / name, OUTPUT_DIR / name)
    print(f"wrote {', '.join(GENERATED_FILES)} to {OUTPUT_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
