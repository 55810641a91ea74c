"""Image downloads are bounded in bytes and time, local files are refused unless allowed,
ALLOWED_IMAGE_HOSTS is enforced on every hop, and Label Studio credentials go only to the
Label Studio origin (scheme, host and port), redirects included."""

from __future__ import annotations

from pathlib import Path

import pytest

from function.service.app import App

from .fakes import FakeModel
from .image_host import Route, image_host
from .reliability_support import assert_json_error, assert_still_serves, predicted_mask
from .support import call, encode_image, keypoint, make_app, predict_body, sample_array

PNG = encode_image(sample_array(64, 48))
LEGACY = "0123456789abcdef0123456789abcdef01234567"


def click_on(image: str) -> dict[str, object]:
    return predict_body(image, [keypoint(50, 50)])


def app_with(tmp_path: Path, **overrides: object) -> App:
    base: dict[str, object] = {"connect_timeout_s": 0.5, "download_timeout_s": 0.5}
    return make_app(tmp_path, FakeModel(radius=5), **{**base, **overrides})


# -- size -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "route",
    [
        Route(b"\x89PNG" + b"\0" * 20_000),  # Content-Length over the limit
        Route(b"\x89PNG" + b"\0" * 20_000, send_length=False),  # no length: counted while streaming
        Route(b"\x89PNG" + b"\0" * 20_000, claimed_length=100, send_length=True),  # a lying length
    ],
    ids=["content-length", "streamed", "lying-length"],
)
def test_download_over_the_byte_limit_is_refused(tmp_path: Path, route: Route) -> None:
    app = app_with(tmp_path, max_download_bytes=10_000)
    with image_host({"/big.png": route}) as host:
        reply = call(app, "POST", "/predict", click_on(f"{host.url}/big.png"))
    # A lying short Content-Length ends the body early: a truncated, undecodable image.
    assert_json_error(reply, 422 if route.claimed_length == 100 else 413)
    assert_still_serves(app)


def test_download_limit_lets_smaller_images_through(tmp_path: Path) -> None:
    app = app_with(tmp_path, max_download_bytes=len(PNG) + 1)
    with image_host({"/ok.png": Route(PNG)}) as host:
        assert predicted_mask(call(app, "POST", "/predict", click_on(f"{host.url}/ok.png")))[24, 32]


# -- local files ----------------------------------------------------------------------------


@pytest.mark.parametrize("ref", ["file://{path}", "{path}"], ids=["file-url", "absolute-path"])
def test_local_files_are_refused_by_default_and_read_when_allowed(tmp_path: Path, ref: str) -> None:
    image = tmp_path / "cat.png"
    image.write_bytes(PNG)
    value = ref.format(path=image)
    refused = app_with(tmp_path / "a")
    assert "ALLOW_LOCAL_FILES" in assert_json_error(call(refused, "POST", "/predict", click_on(value)), 400)
    allowed = app_with(tmp_path / "b", allow_local_files=True)
    assert predicted_mask(call(allowed, "POST", "/predict", click_on(value)))[24, 32]


def test_local_files_document_root_cannot_be_escaped(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "secret.png").write_bytes(PNG)
    app = app_with(tmp_path, local_files_document_root=root, label_studio_url="http://127.0.0.1:9")
    reply = call(app, "POST", "/predict", click_on("/data/local-files/?d=../secret.png"))
    assert_json_error(reply, 400)


def test_a_redirect_to_a_file_url_is_not_followed_into_the_disk(tmp_path: Path) -> None:
    app = app_with(tmp_path, allow_local_files=True)
    secret = tmp_path / "secret.png"
    secret.write_bytes(PNG)
    with image_host({"/r": Route(status=302, location=f"file://{secret}")}) as host:
        reply = call(app, "POST", "/predict", click_on(f"{host.url}/r"))
    assert_json_error(reply, 400, 422, 502)


def test_redirect_loops_end(tmp_path: Path) -> None:
    app = app_with(tmp_path)
    with image_host() as host:
        host.routes["/loop"] = Route(status=302, location=f"{host.url}/loop")
        assert_json_error(call(app, "POST", "/predict", click_on(f"{host.url}/loop")), 422)
        assert len(host.requests) <= 6


# -- allowlist ------------------------------------------------------------------------------


def test_allowed_image_hosts_refuses_other_hosts_without_contacting_them(tmp_path: Path) -> None:
    app = app_with(tmp_path, allowed_image_hosts=("images.example.org",))
    with image_host({"/a.png": Route(PNG)}) as host:
        error = assert_json_error(call(app, "POST", "/predict", click_on(f"{host.url}/a.png")), 400)
        assert "ALLOWED_IMAGE_HOSTS" in error
        assert host.requests == []


def test_allowed_image_hosts_lets_listed_hosts_through(tmp_path: Path) -> None:
    app = app_with(tmp_path, allowed_image_hosts=("127.0.0.1",))
    with image_host({"/a.png": Route(PNG)}) as host:
        assert predicted_mask(call(app, "POST", "/predict", click_on(f"{host.url}/a.png")))[24, 32]


def test_allowlist_applies_to_every_redirect_hop(tmp_path: Path) -> None:
    app = app_with(tmp_path, allowed_image_hosts=("127.0.0.1",))
    with image_host({"/r": Route(status=302, location="http://localhost:9/a.png")}) as host:
        error = assert_json_error(call(app, "POST", "/predict", click_on(f"{host.url}/r")), 400)
        assert "localhost" in error


# -- credentials only to Label Studio -------------------------------------------------------


def test_credentials_go_to_label_studio_and_never_to_other_hosts(tmp_path: Path) -> None:
    with image_host({"/data/upload/1/a.png": Route(PNG)}) as ls, image_host({"/b.png": Route(PNG)}) as other:
        app = app_with(tmp_path, label_studio_url=ls.url, label_studio_api_key=LEGACY)
        assert predicted_mask(call(app, "POST", "/predict", click_on("/data/upload/1/a.png")))[24, 32]
        assert predicted_mask(call(app, "POST", "/predict", click_on(f"{other.url}/b.png")))[24, 32]
        # Same host, other port: another origin.
        assert ls.auth_headers_seen() == [f"Token {LEGACY}"]
        assert other.auth_headers_seen() == []


def test_credentials_are_dropped_when_label_studio_redirects_elsewhere(tmp_path: Path) -> None:
    with image_host({"/b.png": Route(PNG)}) as storage, image_host() as ls:
        ls.routes["/data/upload/1/a.png"] = Route(status=302, location=f"{storage.url}/b.png")
        app = app_with(tmp_path, label_studio_url=ls.url, label_studio_api_key=LEGACY)
        assert predicted_mask(call(app, "POST", "/predict", click_on("/data/upload/1/a.png")))[24, 32]
        assert ls.auth_headers_seen() == [f"Token {LEGACY}"]
        assert storage.paths_requested() == ["/b.png"]
        assert storage.auth_headers_seen() == []


def test_localhost_alias_of_label_studio_gets_no_credentials(tmp_path: Path) -> None:
    """`localhost` and `127.0.0.1` are different origins: no guessing, no credentials."""
    with image_host({"/data/upload/1/a.png": Route(PNG)}) as ls:
        app = app_with(tmp_path, label_studio_url=ls.url, label_studio_api_key=LEGACY)
        alias = ls.url.replace("127.0.0.1", "localhost")
        call(app, "POST", "/predict", click_on(f"{alias}/data/upload/1/a.png"))
        assert ls.auth_headers_seen() == []
