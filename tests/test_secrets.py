"""With every secret set to a known marker, requests on every route (the captured Label Studio
bodies with markers substituted, error paths included) never put a secret in a log line or a
response: not in caplog at DEBUG, not on the local server's stderr, not in any reply."""

from __future__ import annotations

import base64
import copy
import io
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from function.service.app import App, Reply, Request
from function.service.nuclio import configure_logging
from function.service.redact import Redactor
from function.settings import SECRET_ENV, Settings

from .fakes import FakeModel
from .image_host import Route, image_host
from .support import (
    FakeLabelStudio,
    encode_image,
    fake_label_studio,
    fixture,
    keypoint,
    make_app,
    predict_body,
    sample_array,
)
from .test_concurrency import running_server

UPLOAD = fixture("predict_interactive_keypointlabels.json")["body"]["tasks"][0]["data"]["image"]
USER = "labeler"
BASIC_PASS = "sEcReT-basic-pass-4c1d9e"
LEGACY = "sEcReT-legacy-token-0b7e1d5a"
SETUP_TOKEN = "sEcReT-setup-access-token-77aa"
PROJECT_TOKEN = "sEcReT-project-token-5d5d"
PARAMS_PASSWORD = "sEcReT-params-password-e3e3"
WRONG_PASS = "sEcReT-wrong-pass-9f9f"
QUERY_TOKEN = "sEcReT-query-token-1a2b"

FIXTURES = (
    "health.json",
    "versions.json",
    "setup_extra_params_object.json",
    "setup_extra_params_string_basic_auth.json",
    "predict_interactive_keypointlabels.json",
    "predict_interactive_rectanglelabels.json",
    "predict_no_context_test.json",
    "predict_no_context_batch_retrieve.json",
    "webhook_start_training.json",
    "webhook_annotation_created.json",
)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def with_markers(name: str) -> tuple[str, str, Any, dict[str, str]]:
    """A fixture request with every redacted placeholder replaced by a marker secret."""
    captured = fixture(name)
    text = json.dumps(captured["body"])
    text = text.replace("<LEGACY_TOKEN>", SETUP_TOKEN).replace("<PROJECT_TOKEN>", PROJECT_TOKEN)
    body = json.loads(text)
    if isinstance(body, dict) and isinstance(body.get("params"), dict):
        body["params"]["password"] = PARAMS_PASSWORD
    headers = {k: v for k, v in captured["headers"].items() if k != "Authorization"}
    headers["Authorization"] = basic(USER, BASIC_PASS)
    return captured["method"], captured["path"], body, headers


def requests_for(image_host_url: str) -> Iterator[tuple[str, str, Any, dict[str, str]]]:
    """Every fixture, then error paths that carry secrets in their input."""
    yield from (with_markers(name) for name in FIXTURES)
    ok = {"Authorization": basic(USER, BASIC_PASS)}
    yield (
        "POST",
        "/predict",
        with_markers("predict_interactive_keypointlabels.json")[2],
        {"Authorization": basic(USER, WRONG_PASS)},
    )
    yield "GET", "/health", None, {"Authorization": f"Bearer {BASIC_PASS}"}
    yield "GET", "/live", None, {"Authorization": basic(USER, WRONG_PASS)}
    bad = copy.deepcopy(with_markers("setup_extra_params_object.json")[2])
    bad["extra_params"] = '{"password": "' + PARAMS_PASSWORD + '", '  # invalid JSON holding a secret
    yield "POST", "/setup", bad, ok
    for path in ("/missing.png", "/broken.png", "/html"):
        url = f"{image_host_url}{path}?token={QUERY_TOKEN}&access_token={QUERY_TOKEN}"
        yield "POST", "/predict", predict_body(url, [keypoint(50, 50)]), ok
    yield "POST", "/predict", predict_body(UPLOAD, [keypoint(150, 50)]), ok  # outside: 422
    yield "POST", "/predict", b'{"tasks": [', ok
    yield "POST", "/nowhere", {"password": PARAMS_PASSWORD}, ok


def secrets_of(ls: FakeLabelStudio) -> list[str]:
    return [
        ls.pat,
        LEGACY,
        BASIC_PASS,
        SETUP_TOKEN,
        PROJECT_TOKEN,
        PARAMS_PASSWORD,
        WRONG_PASS,
        QUERY_TOKEN,
        base64.b64encode(f"{USER}:{BASIC_PASS}".encode()).decode(),
        *ls.valid_access,  # access tokens Label Studio issued during the run
    ]


def assert_clean(texts: list[str], secrets: list[str]) -> None:
    for secret in secrets:
        for text in texts:
            assert secret not in text, f"secret {secret[:12]}... leaked in: {text[:300]}"


@pytest.fixture
def production_log(tmp_path: Path) -> Iterator[io.StringIO]:
    """What the function's own log handler (redacting, as in production) writes."""
    root = logging.getLogger()
    saved = (root.level, list(root.handlers), logging.getLogger("function").level)
    factory = logging.getLogRecordFactory()
    stream = io.StringIO()
    yield stream
    logging.setLogRecordFactory(factory)
    root.setLevel(saved[0])
    for handler in [h for h in root.handlers if h not in saved[1]]:
        root.removeHandler(handler)
    logging.getLogger("function").setLevel(saved[2])


def test_secret_env_names_cover_every_setting_secret() -> None:
    assert set(SECRET_ENV) == {
        "LABEL_STUDIO_API_KEY",
        "LABEL_STUDIO_ACCESS_TOKEN",
        "BASIC_AUTH_PASS",
        "CVAT_FUNCTIONS_REDIS_PASSWORD",
        "UPSTREAM_PASS",
    }
    settings = Settings.from_env(
        {
            "LABEL_STUDIO_API_KEY": "a" * 8,
            "LABEL_STUDIO_ACCESS_TOKEN": "b" * 8,
            "BASIC_AUTH_USER": "u",
            "BASIC_AUTH_PASS": "c" * 8,
            "CVAT_FUNCTIONS_REDIS_HOST": "redis",
            "CVAT_FUNCTIONS_REDIS_PASSWORD": "d" * 8,
            "UPSTREAM_URL": "http://gpu:9090",
            "UPSTREAM_USER": "u",
            "UPSTREAM_PASS": "e" * 8,
        }
    )
    assert set(settings.secrets) == {"a" * 8, "b" * 8, "c" * 8, "d" * 8, "e" * 8}
    assert all(secret not in repr(settings) for secret in settings.secrets)
    # A password inside FEATURE_STORE_URL is a secret too (the URL is not).
    in_url = Settings.from_env({"FEATURE_STORE_URL": "redis://:" + "f" * 8 + "@redis:6379/0"})
    assert set(in_url.secrets) == {"f" * 8} and "f" * 8 not in repr(in_url)


@pytest.mark.parametrize("auth_kind", ["pat", "legacy"])
def test_no_secret_in_logs_or_replies_across_every_route(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    production_log: io.StringIO,
    auth_kind: str,
) -> None:
    png = encode_image(sample_array(640, 480))
    ls = FakeLabelStudio(files={UPLOAD: png}, legacy=LEGACY)
    routes = {
        "/broken.png": Route(b"\x89PNG broken", 500, "image/png"),
        "/html": Route(b"<html/>", 200, "text/html"),
    }
    replies: list[str] = []
    with fake_label_studio(ls), image_host(routes) as host:
        settings_kw: dict[str, Any] = {
            "label_studio_url": ls.url,
            "label_studio_api_key": ls.pat if auth_kind == "pat" else "",
            "label_studio_access_token": LEGACY,
            "basic_auth_user": USER,
            "basic_auth_pass": BASIC_PASS,
            "log_level": "DEBUG",
            "download_timeout_s": 2.0,
        }
        app = make_app(tmp_path, FakeModel(), **settings_kw)
        configure_logging(app.settings, logging.StreamHandler(production_log))
        caplog.set_level(logging.DEBUG)

        # Directly through App.handle ...
        for method, path, body, headers in requests_for(host.url):
            reply = app.handle(Request(method, path, body, headers))
            replies += [reply.text, json.dumps(reply.headers)]
        # ... a refresh failure on the way ...
        ls.refresh_status = 500
        issued = set(ls.valid_access)
        ls.valid_access.clear()  # the cached access token is now refused: refresh, which fails
        app.labelstudio.media.images._sources.clear()
        method, path, body, headers = with_markers("predict_interactive_keypointlabels.json")
        failed = app.handle(Request(method, path, body, headers))
        replies.append(failed.text)
        ls.refresh_status = 200
        # ... and over HTTP through the local server and handler.handler.
        with running_server(app, log_to_context=True) as url:
            for method, path, body, headers in requests_for(host.url):
                replies += http_call(url, method, path, body, headers)
        app.close()  # stop the prewarm worker, so no thread outlives the test

    statuses = [json.loads(text) for text in replies[::2] if text.startswith("{")]
    assert any("results" in s and s["results"] and s["results"][0]["result"] for s in statuses), (
        "no mask served"
    )
    assert any(s.get("error") for s in statuses), "no error path exercised"
    assert failed.status == 502 or auth_kind == "legacy"
    out, err = capfd.readouterr()
    logs = [caplog.text, production_log.getvalue(), out, err]
    assert "/predict" in caplog.text and "/predict" in err  # the logs were captured at all
    assert_clean(replies + logs, [*secrets_of(ls), *issued])


def http_call(url: str, method: str, path: str, body: Any, headers: dict[str, str]) -> list[str]:
    data = body if isinstance(body, bytes) else (json.dumps(body).encode() if body is not None else None)
    headers = {k: v for k, v in headers.items() if k.lower() not in ("host", "content-length", "connection")}
    request = urllib.request.Request(f"{url}{path}", data, headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return [resp.read().decode(), json.dumps(dict(resp.headers.items()))]
    except urllib.error.HTTPError as err:
        return [err.read().decode(), json.dumps(dict(err.headers.items()))]


# -- the redactor itself --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "secret"),
    [
        ("GET http://ls:8080/data/upload/1/a.png?token=abcdef123456&x=1", "abcdef123456"),
        ("GET http://ls/x?access_token=eyJhbGciOi.eyJzdWIi.c2ln", "eyJhbGciOi.eyJzdWIi.c2ln"),
        ("headers {'Authorization': 'Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig'}", "eyJhbGciOiJIUzI1NiJ9.e30.sig"),
        ("Authorization: Token 0123456789abcdef0123", "0123456789abcdef0123"),
        ("Authorization: Basic bGFiZWxlcjpodW50ZXIy", "bGFiZWxlcjpodW50ZXIy"),
        ('body {"access_token": "s3cr3t-value", "x": 1}', "s3cr3t-value"),
        ('{"refresh": "eyJ.refresh.tok"}', "eyJ.refresh.tok"),
        ("password=hunter2hunter2", "hunter2hunter2"),
        ("known secret anywhere: zz-MARKER-zz", "zz-MARKER-zz"),
    ],
)
def test_redactor_removes_tokens_from_urls_headers_and_bodies(line: str, secret: str) -> None:
    redacted = Redactor(["zz-MARKER-zz"])(line)
    assert secret not in redacted
    assert "[REDACTED]" in redacted


def test_production_log_handler_redacts_arguments_and_tracebacks(production_log: io.StringIO) -> None:
    settings = Settings(label_studio_api_key="sEcReT-in-settings", log_level="DEBUG")
    configure_logging(settings, logging.StreamHandler(production_log))
    log = logging.getLogger("function.test")
    log.info("fetching %s", "http://h/a.png?token=sEcReT-query")
    try:
        raise ValueError("bad key sEcReT-in-settings")
    except ValueError:
        log.exception("failed")
    text = production_log.getvalue()
    assert "fetching http://h/a.png?token=[REDACTED]" in text
    assert "ValueError" in text
    assert "sEcReT" not in text


def test_error_replies_are_redacted_even_when_a_message_holds_a_secret(tmp_path: Path) -> None:
    app: App = make_app(tmp_path, FakeModel(), label_studio_api_key="sEcReT-key-123")
    reply: Reply = app.error_reply(502, "upstream said: invalid key sEcReT-key-123")
    assert "sEcReT" not in reply.text
