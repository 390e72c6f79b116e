"""Checks a running service over HTTP with the standard library only (it runs on any python3, outside any
venv): the golden example's numbers, a clear 422 for a bad request, and the explorer page. Used by
scripts/container-smoke.sh."""

import json
import sys
import urllib.error
import urllib.request


def post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"{url}/attend", json.dumps(body).encode(), {"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def flat(value) -> list[float]:
    return [x for item in value for x in flat(item)] if isinstance(value, list) else [value]


def main(url: str, golden_path: str) -> None:
    with open(golden_path) as file:
        golden = json.load(file)
    weights = {f"w_{m}": golden[f"w_{m}_in_out"] for m in "qkv"}
    status, body = post(url, {"embeddings": golden["embeddings"], "weights": weights, "dtype": "float64"})
    assert status == 200, (status, body)
    for name, expected in golden["expected"].items():
        got = flat(body[name])
        worst = max(abs(a - b) for a, b in zip(got, flat(expected), strict=True))
        assert worst < 1e-9, f"{name}: off by {worst}"
    print(
        f"smoke: golden example matches to 1e-9 ({', '.join(golden['expected'])}); "
        f"device {body['meta']['device']}"
    )
    status, body = post(url, {"embeddings": [[1.0, 2.0], [3.0]]})
    message = body["detail"][0]["msg"]
    assert status == 422 and "ragged" in message, (status, body)
    print(f"smoke: bad request -> 422: {message}")
    for path, text in (("/", "Attention explorer"), ("/static/explorer.js", "POST /attend")):
        with urllib.request.urlopen(f"{url}{path}", timeout=30) as response:
            assert response.status == 200 and text in response.read().decode(), path
    print("smoke: the explorer page and its script are served")


if __name__ == "__main__":
    main(*sys.argv[1:])
