"""The local server hands handler.py the events Nuclio would: body decoded only for exactly
application/json, canonical header names, path without query; concurrent clients; 413."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nuclio_sdk
import pytest
import requests

import handler
from function.service.server import LocalServer, canonical_header, make_event

from .fakes import FakeModel
from .support import (
    data_uri,
    encode_image,
    keypoint,
    make_app,
    predict_body,
    rle_mask,
    running,
    sample_array,
)


class Spy:
    """A handler that records each event and delegates to the real handler."""

    def __init__(self) -> None:
        self.events: list[nuclio_sdk.Event] = []

    def handler(self, context: Any, event: nuclio_sdk.Event) -> Any:
        self.events.append(event)
        return handler.handler(context, event)


def fake_context(tmp_path: Path, model: FakeModel, **settings: Any) -> Any:
    context = nuclio_sdk.Context(nuclio_sdk.Logger(10, "test"), worker_id=0)
    context.user_data.app = make_app(tmp_path, model, **settings)
    return context


@pytest.fixture
def model() -> FakeModel:
    return FakeModel()


@pytest.fixture
def spy() -> Spy:
    return Spy()


@pytest.fixture
def server(tmp_path: Path, model: FakeModel, spy: Spy) -> Iterator[LocalServer]:
    s = LocalServer(("127.0.0.1", 0), spy.handler, fake_context(tmp_path, model), max_body_bytes=2**20)
    with running(s):
        yield s


def test_canonical_header() -> None:
    assert canonical_header("content-type") == "Content-Type"
    assert canonical_header("X-API-KEY") == "X-Api-Key"
    assert canonical_header("authorization") == "Authorization"


def test_make_event_semantics() -> None:
    raw = b'{"a": 1}'
    ev = make_event("POST", "/predict?x=1&y=two", {"content-type": "application/json", "x-foo": "b"}, raw)
    assert ev.body == {"a": 1} and ev.path == "/predict" and ev.fields == {"x": "1", "y": "two"}
    assert ev.headers == {"Content-Type": "application/json", "X-Foo": "b"}
    for ctype in ("text/plain", "application/json; charset=utf-8", ""):
        assert make_event("POST", "/p", {"Content-Type": ctype}, raw).body == raw
    assert make_event("POST", "/p", {"Content-Type": "application/json"}, b"{oops").body == b"{oops"


@pytest.mark.parametrize(
    ("content_type", "is_dict"),
    [("application/json", True), ("application/json; charset=utf-8", False), ("text/plain", False)],
)
def test_body_is_a_dict_only_for_exactly_application_json(
    server: LocalServer, spy: Spy, content_type: str, is_dict: bool
) -> None:
    body = {"project": "1.2", "schema": "", "extra_params": {}}
    resp = requests.post(
        f"{server.url}/setup?ignored=1",
        data=json.dumps(body),
        headers={"content-type": content_type, "x-trace-id": "abc"},
        timeout=10,
    )
    assert resp.status_code == 200 and resp.headers["Content-Type"] == "application/json"
    assert set(resp.json()) == {"model_version"}
    (event,) = spy.events
    assert isinstance(event.body, dict) is is_dict
    if not is_dict:
        assert event.body == json.dumps(body).encode()
    assert event.path == "/setup" and event.fields == {"ignored": "1"}
    assert event.headers["X-Trace-Id"] == "abc" and "Content-Type" in event.headers
    assert event.method == "POST"


def test_predict_over_http_covers_the_click(server: LocalServer) -> None:
    body = predict_body(data_uri(encode_image(sample_array())), [keypoint(46.9, 50.0)])
    resp = requests.post(f"{server.url}/predict", json=body, timeout=30)
    assert resp.status_code == 200
    region = resp.json()["results"][0]["result"][0]
    mask = rle_mask(region["value"]["rle"], 640, 480)
    assert mask[240, 300] == 255 and mask[10, 10] == 0


def test_errors_are_json_over_http(server: LocalServer) -> None:
    resp = requests.get(f"{server.url}/nope", timeout=10)
    assert resp.status_code == 404 and resp.headers["Content-Type"] == "application/json"
    assert "error" in resp.json()
    resp = requests.delete(f"{server.url}/predict", timeout=10)
    assert resp.status_code == 405 and "error" in resp.json()


def test_body_over_the_limit_is_413(server: LocalServer, spy: Spy) -> None:
    resp = requests.post(
        f"{server.url}/predict",
        data=b"x" * (2**20 + 1),
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert resp.status_code == 413 and "error" in resp.json()
    assert spy.events == []  # refused before the handler, like Nuclio's maxRequestBodySize
    assert requests.get(f"{server.url}/live", timeout=10).status_code == 200  # still serving


def test_concurrent_clients(tmp_path: Path) -> None:
    model = FakeModel(encode_seconds=0.05)
    s = LocalServer(("127.0.0.1", 0), handler.handler, fake_context(tmp_path, model))
    s.start_background()
    sizes = [(320 + 16 * i, 240 + 8 * i) for i in range(8)]
    results: dict[int, Any] = {}

    def client(i: int) -> None:
        w, h = sizes[i]
        body = predict_body(
            data_uri(encode_image(sample_array(w, h))), [keypoint(10 + 10 * i, 50.0, w=w, h=h)]
        )
        resp = requests.post(f"{s.url}/predict", json=body, timeout=60)
        results[i] = (resp.status_code, resp.json())

    try:
        threads = [threading.Thread(target=client, args=(i,)) for i in range(len(sizes))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        # A health check is answered while predictions run.
        assert requests.get(f"{s.url}/health", timeout=10).status_code == 200
    finally:
        s.shutdown()
        s.server_close()
    assert sorted(results) == list(range(len(sizes)))
    for i, (status, body) in results.items():
        assert status == 200, body
        region = body["results"][0]["result"][0]
        w, h = sizes[i]
        assert (region["original_width"], region["original_height"]) == (w, h)
        mask = rle_mask(region["value"]["rle"], w, h)
        assert mask[h // 2, int((10 + 10 * i) * w / 100)] == 255  # each got its own image's mask
    assert model.encode_calls == len(sizes)


def test_basic_auth_header_reaches_the_client(tmp_path: Path) -> None:
    context = fake_context(tmp_path, FakeModel(), basic_auth_user="u", basic_auth_pass="p")
    s = LocalServer(("127.0.0.1", 0), handler.handler, context)
    s.start_background()
    try:
        resp = requests.get(f"{s.url}/health", timeout=10)
        assert resp.status_code == 401 and resp.headers["WWW-Authenticate"].startswith("Basic")
        token = base64.b64encode(b"u:p").decode()
        assert requests.get(f"{s.url}/health", headers={"Authorization": f"Basic {token}"}, timeout=10).ok
        assert requests.get(f"{s.url}/live", timeout=10).ok
    finally:
        s.shutdown()
        s.server_close()
