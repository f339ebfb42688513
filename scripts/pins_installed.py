"""Exit 0 when every `name==version` pin of the constraints file named by argv[1] is the
version installed in the running Python's environment, else 1 (a package missing or at
another version). Run with a virtualenv's python to check that virtualenv."""

import importlib.metadata
import sys

for line in open(sys.argv[1], encoding="utf-8"):
    pin = line.split("#")[0].strip()
    if not pin:
        continue
    name, version = pin.split("==")
    try:
        if importlib.metadata.version(name) != version:
            sys.exit(1)
    except importlib.metadata.PackageNotFoundError:
        sys.exit(1)
