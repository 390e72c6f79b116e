"""KServe's Python SDK, imported when a test first needs it, with the program name alone as sys.argv:
importing it parses sys.argv for its model server's flags, and pytest's own (`--co` reads as kserve's
`--configure_logging`) would end the whole session at collection."""

from __future__ import annotations

import functools
import importlib
import sys
from types import ModuleType
from unittest import mock


@functools.cache
def kserve() -> ModuleType:
    """KServe's SDK, its protocol types (kserve.protocol.infer_type) and data models
    (kserve.protocol.rest.v2_datamodels) imported."""
    with mock.patch.object(sys, "argv", sys.argv[:1]):
        for name in ("kserve", "kserve.protocol.infer_type", "kserve.protocol.rest.v2_datamodels"):
            importlib.import_module(name)
    return sys.modules["kserve"]
