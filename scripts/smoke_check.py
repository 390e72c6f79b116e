"""Checks a running service over HTTP with the standard library only (it runs on any python3, outside any
venv): the golden example's numbers, a clear 422 for a bad request, and the explorer page with its security
headers. With --api-key KEY: POST /attend and GET /models answer 401 without the key and with a wrong one, and
every request sends KEY. Used by scripts/container-smoke.sh and scripts/compose-smoke.sh.

    python3 scripts/smoke_check.py URL GOLDEN_JSON [--api-key KEY]"""

import argparse
import json
import urllib.error
import urllib.request


def request(url: str, path: str, body: dict | None = None, key: str | None = None):
    """(status, headers, body bytes); an HTTP error status is an answer too."""
    headers = {"content-type": "application/json"} if body is not None else {}
    if key is not None:
        headers["x-api-key"] = key
    data = None if body is None else json.dumps(body).encode()
    sent = urllib.request.Request(f"{url}{path}", data, headers)
    try:
        with urllib.request.urlopen(sent, timeout=30) as answer:
            return answer.status, answer.headers, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def check_api_key(url: str, key: str, golden_body: dict) -> None:
    for sent, what in ((None, "without a key"), (key + "-wrong", "with a wrong key")):
        for path, body in (("/attend", golden_body), ("/models", None)):
            status, headers, text = request(url, path, body, sent)
            assert status == 401 and headers["www-authenticate"] == "ApiKey", (path, what, status, text[:300])
    status, _, text = request(url, "/attend", golden_body, key)
    assert status == 200, (status, text[:300])
    print("smoke: API key enforced: /attend and /models 401 without it or with a wrong one, 200 with it")


def flat(value) -> list[float]:
    return [x for item in value for x in flat(item)] if isinstance(value, list) else [value]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("golden")
    parser.add_argument("--api-key", help="a key of the service's ATTENTION_API_KEYS: check it is enforced")
    args = parser.parse_args()
    url, key = args.url.rstrip("/"), args.api_key
    with open(args.golden) as file:
        golden = json.load(file)
    weights = {f"w_{m}": golden[f"w_{m}_in_out"] for m in "qkv"}
    golden_body = {"embeddings": golden["embeddings"], "weights": weights, "dtype": "float64"}
    if key is not None:
        check_api_key(url, key, golden_body)
    status, _, text = request(url, "/attend", golden_body, key)
    assert status == 200, (status, text[:300])
    body = json.loads(text)
    for name, expected in golden["expected"].items():
        got = flat(body[name])
        worst = max(abs(a - b) for a, b in zip(got, flat(expected), strict=True))
        assert worst < 1e-9, f"{name}: off by {worst}"
    print(
        f"smoke: golden example matches to 1e-9 ({', '.join(golden['expected'])}); "
        f"device {body['meta']['device']}"
    )
    status, _, text = request(url, "/attend", {"embeddings": [[1.0, 2.0], [3.0]]}, key)
    message = json.loads(text)["detail"][0]["msg"]
    assert status == 422 and "ragged" in message, (status, text[:300])
    print(f"smoke: bad request -> 422: {message}")
    for path, expected in (("/", "Attention explorer"), ("/static/explorer.js", "POST /attend")):
        status, headers, text = request(url, path)
        assert status == 200 and expected in text.decode(), path
        assert headers["x-content-type-options"] == "nosniff", (path, dict(headers))
        assert "frame-ancestors 'none'" in headers["content-security-policy"], (path, dict(headers))
    print("smoke: the explorer page and its script are served, with their CSP and nosniff")


if __name__ == "__main__":
    main()
