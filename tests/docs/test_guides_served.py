"""The guides of docs/ are served read-only by the running service, for a reader offline: /guides lists every
one, /guides/{name} sends each byte for byte as the repository holds it, nothing else is reachable there, and
the API's description (what /docs and /redoc show first) links to them."""

from __future__ import annotations

import re

from devtools.paths import ROOT

DOCS = sorted((ROOT / "docs").glob("*.md"))


def test_the_list_links_every_guide_by_its_title(server):
    answer = server.client.get("/guides")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in answer.headers["content-security-policy"]
    links = dict(re.findall(r'<a href="guides/([^"]+)">([^<]+)</a>', answer.text))
    assert sorted(links) == [path.name for path in DOCS]
    for path in DOCS:
        title = re.search(r"^# (.+)$", path.read_text(), re.M)
        assert title and links[path.name] == title.group(1).replace("`", ""), path.name


def test_each_guide_is_served_as_the_repository_holds_it(server):
    for path in DOCS:
        answer = server.client.get(f"/guides/{path.name}")
        assert answer.status_code == 200, path.name
        assert answer.headers["content-type"] == "text/plain; charset=utf-8"
        assert answer.content == path.read_bytes(), path.name


def test_nothing_but_the_guides_is_reachable_there(server):
    for name in ("README.md", "api", "guides.py"):
        answer = server.client.get(f"/guides/{name}")
        assert answer.status_code == 404, name
        assert f"found guide {name!r}; expected one of api.md" in answer.json()["detail"], name
    for escaping in ("/guides/..%2FREADME.md", "/guides/..%2F..%2Fsettings.py", "/guides/%2Fetc%2Fpasswd"):
        assert server.client.get(escaping).status_code == 404, escaping


def test_the_api_description_links_to_the_served_guides(server):
    description = server.client.get("/openapi.json").json()["info"]["description"]
    linked = re.findall(r"\]\((guides[^)]*)\)", description)
    assert "guides" in linked and "guides/api.md" in linked
    for link in linked:  # relative to /docs and /redoc
        assert server.client.get(f"/{link}").status_code == 200, link
