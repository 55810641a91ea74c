"""Label Studio down, token refresh failing, slow hosts: bounded by timeouts, answered with
502/504 JSON that says what failed and holds no secret; a failed refresh does not switch
authentication off for later requests."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from function.service.app import App

from .fakes import FakeModel
from .reliability_support import assert_json_error, assert_still_serves, predicted_mask
from .support import (
    FakeLabelStudio,
    call,
    encode_image,
    fake_label_studio,
    keypoint,
    make_app,
    predict_body,
    sample_array,
)

UPLOAD = "/data/upload/1/cat.png"
PNG = encode_image(sample_array(64, 48))


def closed_port_url() -> str:
    """An address on 127.0.0.1 where nothing listens (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def ls_app(tmp_path: Path, url: str, token: str, **overrides: object) -> App:
    return make_app(
        tmp_path,
        FakeModel(radius=5),
        label_studio_url=url,
        label_studio_api_key=token,
        connect_timeout_s=0.5,
        download_timeout_s=0.5,
        **overrides,
    )


def click_on(image: str) -> dict[str, object]:
    return predict_body(image, [keypoint(50, 50)])


@pytest.mark.parametrize("kind", ["pat", "legacy"])
def test_label_studio_down_is_502_naming_it_without_the_token(tmp_path: Path, kind: str) -> None:
    ls = FakeLabelStudio()
    token = ls.pat if kind == "pat" else ls.legacy
    url = closed_port_url()
    app = ls_app(tmp_path, url, token)
    error = assert_json_error(call(app, "POST", "/predict", click_on(UPLOAD)), 502)
    assert "127.0.0.1" in error
    assert token not in error
    assert_still_serves(app)


@pytest.mark.parametrize("refresh_status", [401, 500])
def test_refresh_failure_is_502_and_auth_recovers_on_the_next_request(
    tmp_path: Path, refresh_status: int
) -> None:
    with fake_label_studio(FakeLabelStudio(files={UPLOAD: PNG}, refresh_status=refresh_status)) as ls:
        app = ls_app(tmp_path, ls.url, ls.pat)
        error = assert_json_error(call(app, "POST", "/predict", click_on(UPLOAD)), 502)
        assert "refresh" in error and f"HTTP {refresh_status}" in error
        assert ls.pat not in error
        # No image request went out without credentials, or with the PAT itself.
        assert [r for r in ls.requests if r[0] == "GET"] == []

        ls.refresh_status = 200  # Label Studio is back
        mask = predicted_mask(call(app, "POST", "/predict", click_on(UPLOAD)))
        assert mask[24, 32]
        gets = [r for r in ls.requests if r[0] == "GET"]
        assert len(gets) == 1
        assert gets[0][2]["Authorization"].startswith("Bearer ")
        assert ls.pat not in gets[0][2]["Authorization"]


def test_refresh_that_returns_no_access_token_is_502(tmp_path: Path) -> None:
    with fake_label_studio(FakeLabelStudio(files={UPLOAD: PNG})) as ls:
        app = ls_app(tmp_path, ls.url, ls.pat)
        ls.issue_access = lambda: None  # type: ignore[assignment,method-assign,return-value]
        error = assert_json_error(call(app, "POST", "/predict", click_on(UPLOAD)), 502)
        assert "access token" in error and ls.pat not in error


def test_slow_label_studio_image_is_504(tmp_path: Path) -> None:
    with fake_label_studio(FakeLabelStudio(files={UPLOAD: PNG}, delay_s=2.0)) as ls:
        app = ls_app(tmp_path, ls.url, ls.legacy)
        error = assert_json_error(call(app, "POST", "/predict", click_on(UPLOAD)), 504)
        assert "timed out" in error and ls.legacy not in error
        ls.delay_s = 0.0
        assert predicted_mask(call(app, "POST", "/predict", click_on(UPLOAD)))[24, 32]


def test_rejected_credentials_are_502_pointing_at_the_key(tmp_path: Path) -> None:
    """Label Studio refusing our token is a configuration fault upstream, not the client's."""
    with fake_label_studio(FakeLabelStudio(files={UPLOAD: PNG})) as ls:
        wrong = "f" * 40
        app = ls_app(tmp_path, ls.url, wrong)
        error = assert_json_error(call(app, "POST", "/predict", click_on(UPLOAD)), 502)
        assert "LABEL_STUDIO_API_KEY" in error and wrong not in error


def test_missing_file_on_label_studio_is_422(tmp_path: Path) -> None:
    with fake_label_studio(FakeLabelStudio(files={UPLOAD: PNG})) as ls:
        app = ls_app(tmp_path, ls.url, ls.legacy)
        assert_json_error(call(app, "POST", "/predict", click_on("/data/upload/1/missing.png")), 422)


def test_expired_access_token_is_refreshed_once_and_retried(tmp_path: Path) -> None:
    with fake_label_studio(FakeLabelStudio(files={UPLOAD: PNG})) as ls:
        app = ls_app(tmp_path, ls.url, ls.pat)
        assert predicted_mask(call(app, "POST", "/predict", click_on(UPLOAD)))[24, 32]
        ls.valid_access.clear()  # Label Studio restarted / the token expired early
        app.images._sources.clear()  # force a new download of the same URL
        assert predicted_mask(call(app, "POST", "/predict", click_on(UPLOAD)))[24, 32]
        assert ls.refreshes == 2
