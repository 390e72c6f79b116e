"""The Python examples of docs/oip.md, pointed at a real server: KServe's and NVIDIA Triton's clients, run as
written, get /attend's numbers for the same text (layer 2's weights, as float32)."""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from devtools.paths import ROOT
from devtools.servers import Server
from tests.support.kserve import kserve

OIP_GUIDE = ROOT / "docs" / "oip.md"
DOCUMENTED_ADDRESS = "127.0.0.1:8000"


def example(first_line: str) -> str:
    """The python block of docs/oip.md that starts with `first_line`."""
    found = re.search(rf"```python\n({re.escape(first_line)}.*?)```", OIP_GUIDE.read_text(), re.S)
    assert found, f"docs/oip.md: no python example starting {first_line!r}"
    return found.group(1)


def run(code: str, server: Server) -> dict[str, Any]:
    pointed = code.replace(DOCUMENTED_ADDRESS, server.url.removeprefix("http://"))
    assert pointed != code, "the example names no address of the service"
    scope: dict[str, Any] = {}
    exec(compile(pointed, str(OIP_GUIDE), "exec"), scope)
    return scope


def attend_layer_2_weights(server: Server) -> np.ndarray:
    answer = server.post({"text": ["The cat ate the fish"], "layer": 2, "include": ["weights"]})
    assert answer.status_code == 200, answer.text
    return np.array(answer.json()["layers"][0]["weights"], dtype=np.float32)


def test_the_kserve_example_runs(server):
    """KServe's REST client: its result is /attend's layer 2 weights."""
    kserve()  # the example's `import kserve` then finds it imported (under pytest's sys.argv it may fail)
    scope = run(example("import asyncio, numpy as np, kserve"), server)
    weights = scope["result"].get_output_by_name("layers.2.weights").as_numpy()
    np.testing.assert_array_equal(weights, attend_layer_2_weights(server))


def test_the_triton_client_example_runs(server):
    """NVIDIA's tritonclient: its result is /attend's layer 2 weights, and the tokens come back with it."""
    scope = run(example("import numpy as np, tritonclient.http as triton"), server)
    result = scope["result"]
    np.testing.assert_array_equal(result.as_numpy("layers.2.weights"), attend_layer_2_weights(server))
    assert result.as_numpy("tokens") is not None
