"""Label Studio credentials: PAT -> access token exchange, refresh, 401 retry, legacy tokens,
and credentials that never leave the Label Studio origin."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from function.adapters.errors import UpstreamFailed
from function.adapters.labelstudio.auth import LabelStudioAuth, is_personal_access_token, jwt_claims
from function.adapters.labelstudio.media import MediaFetcher
from function.core.images import ImageCache

from .fakes import FakeModel
from .support import (
    FakeLabelStudio,
    call,
    encode_image,
    fake_label_studio,
    keypoint,
    make_app,
    make_settings,
    predict_body,
    running,
    sample_array,
)

PNG = encode_image(sample_array(64, 48))
FILES = {f"/data/upload/1/img{i}.png": encode_image(sample_array(64 + i, 48)) for i in range(8)}


@pytest.fixture
def ls() -> Iterator[FakeLabelStudio]:
    with fake_label_studio(FakeLabelStudio(files=dict(FILES))) as server:
        yield server


def fetcher(tmp_path: Path, auth: LabelStudioAuth | None, url: str) -> MediaFetcher:
    return MediaFetcher(make_settings(tmp_path, label_studio_url=url), ImageCache(2**30), auth)


def gets(ls: FakeLabelStudio) -> list[tuple[str, str, dict[str, str]]]:
    return [r for r in ls.requests if r[0] == "GET"]


def test_pat_and_legacy_are_told_apart(ls: FakeLabelStudio) -> None:
    assert is_personal_access_token(ls.pat)
    assert not is_personal_access_token(ls.legacy)
    assert not is_personal_access_token("a.b.c")


def test_one_refresh_for_many_requests(tmp_path: Path, ls: FakeLabelStudio) -> None:
    media = fetcher(tmp_path, LabelStudioAuth(ls.url, ls.pat), ls.url)
    for path in FILES:
        media.load(path)
    assert ls.refreshes == 1
    assert len(gets(ls)) == len(FILES)
    assert all(h["Authorization"].startswith("Bearer ") for _, _, h in gets(ls))
    refresh = next(r for r in ls.requests if r[1] == "/api/token/refresh/")
    assert "Authorization" not in refresh[2]  # the refresh call itself carries no header


def test_one_refresh_with_eight_concurrent_requests(tmp_path: Path, ls: FakeLabelStudio) -> None:
    ls.delay_s = 0.05
    media = fetcher(tmp_path, LabelStudioAuth(ls.url, ls.pat), ls.url)
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(FILES))

    def load(path: str) -> None:
        try:
            barrier.wait(10)
            media.load(path)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=load, args=(p,)) for p in FILES]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert ls.refreshes == 1 and len(gets(ls)) == len(FILES)


def test_refresh_again_after_expiry(ls: FakeLabelStudio) -> None:
    now = [time.time()]
    auth = LabelStudioAuth(ls.url, ls.pat, clock=lambda: now[0])
    first = auth.headers()
    assert auth.headers() == first and ls.refreshes == 1
    expires = float((jwt_claims(first["Authorization"][7:]) or {})["exp"])
    now[0] = expires - 31  # still more than the 30 s leeway left
    assert auth.headers() == first and ls.refreshes == 1
    now[0] = expires - 29  # inside the leeway: refreshed before it expires
    second = auth.headers()
    assert second != first and ls.refreshes == 2
    now[0] = float((jwt_claims(second["Authorization"][7:]) or {})["exp"]) - 60
    assert auth.headers() == second and ls.refreshes == 2


def test_short_lived_tokens_are_refreshed(tmp_path: Path, ls: FakeLabelStudio) -> None:
    ls.access_ttl_s = 5  # under the leeway: every use needs a fresh one
    media = fetcher(tmp_path, LabelStudioAuth(ls.url, ls.pat), ls.url)
    for path in list(FILES)[:3]:
        media.load(path)
    assert ls.refreshes == 3


def test_401_refreshes_once_and_retries_once(tmp_path: Path, ls: FakeLabelStudio) -> None:
    auth = LabelStudioAuth(ls.url, ls.pat)
    media = fetcher(tmp_path, auth, ls.url)
    paths = list(FILES)
    media.load(paths[0])
    ls.valid_access.clear()  # Label Studio no longer accepts the cached access token
    media.load(paths[1])
    assert ls.refreshes == 2
    assert [r[1] for r in gets(ls)] == [paths[0], paths[1], paths[1]]


def test_401_again_after_the_retry_gives_up(tmp_path: Path, ls: FakeLabelStudio) -> None:
    ls.authorized = lambda headers: False  # type: ignore[method-assign]
    media = fetcher(tmp_path, LabelStudioAuth(ls.url, ls.pat), ls.url)
    with pytest.raises(UpstreamFailed) as info:
        media.load(next(iter(FILES)))
    assert len(gets(ls)) == 2 and ls.refreshes == 2  # one retry, not a loop
    assert "LABEL_STUDIO_API_KEY" in info.value.message and ls.pat not in info.value.message


def test_legacy_token_is_sent_as_token(tmp_path: Path, ls: FakeLabelStudio) -> None:
    media = fetcher(tmp_path, LabelStudioAuth(ls.url, ls.legacy), ls.url)
    media.load(next(iter(FILES)))
    assert gets(ls)[0][2]["Authorization"] == f"Token {ls.legacy}"
    assert ls.refreshes == 0 and not any(r[0] == "POST" for r in ls.requests)


def test_legacy_access_token_variable_is_used(tmp_path: Path, ls: FakeLabelStudio) -> None:
    app = make_app(tmp_path, FakeModel(), label_studio_url=ls.url, label_studio_access_token=ls.legacy)
    reply = call(app, "POST", "/predict", predict_body(next(iter(FILES)), [keypoint(50, 50)]))
    assert reply.status == 200
    assert gets(ls)[0][2]["Authorization"] == f"Token {ls.legacy}"


@pytest.mark.parametrize("status", [500, 401])
def test_refresh_failure_is_a_502_without_secrets_and_is_retried_later(
    tmp_path: Path, ls: FakeLabelStudio, status: int
) -> None:
    app = make_app(tmp_path, FakeModel(), label_studio_url=ls.url, label_studio_api_key=ls.pat)
    paths = list(FILES)
    ls.refresh_status = status
    reply = call(app, "POST", "/predict", predict_body(paths[0], [keypoint(50, 50)]))
    assert reply.status == 502
    assert ls.pat not in reply.text and ls.pat.split(".")[1] not in reply.text
    assert "refresh" in reply.body["error"]
    ls.refresh_status = 200  # Label Studio is back: no permanent downgrade to legacy mode
    reply = call(app, "POST", "/predict", predict_body(paths[0], [keypoint(50, 50)]))
    assert reply.status == 200
    assert gets(ls)[-1][2]["Authorization"].startswith("Bearer ")


def test_unreachable_label_studio_is_a_502(tmp_path: Path) -> None:
    with fake_label_studio() as gone:
        url = gone.url
    auth = LabelStudioAuth(url, FakeLabelStudio().pat, timeout_s=2)
    with pytest.raises(UpstreamFailed):
        auth.headers()


# -- credentials stay on the Label Studio origin ---------------------------------------------

Route = Callable[[dict[str, str]], tuple[int, dict[str, str], bytes]]


@contextmanager
def http_server(routes: dict[str, Route]) -> Iterator[tuple[str, list[tuple[str, dict[str, str]]]]]:
    seen: list[tuple[str, dict[str, str]]] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            headers = dict(self.headers.items())
            seen.append((self.path, headers))
            route = routes.get(urlsplit(self.path).path)
            status, extra, body = route(headers) if route else (404, {}, b"")
            self.send_response(status)
            for key, value in extra.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with running(ThreadingHTTPServer(("127.0.0.1", 0), Handler)) as url:
        yield url, seen


def png(_: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    return 200, {"Content-Type": "image/png"}, PNG


def test_no_credentials_to_another_host(tmp_path: Path, ls: FakeLabelStudio) -> None:
    with http_server({"/img.png": png}) as (other, seen):
        media = fetcher(tmp_path, LabelStudioAuth(ls.url, ls.pat), ls.url)
        media.load(f"{other}/img.png")
        media.load(f"{other}/img.png?again")
    assert len(seen) == 2 and all("Authorization" not in h for _, h in seen)
    assert ls.refreshes == 0


def test_no_credentials_to_same_host_other_port_or_name(tmp_path: Path, ls: FakeLabelStudio) -> None:
    with http_server({"/img.png": png}) as (other, seen):
        media = fetcher(tmp_path, LabelStudioAuth(ls.url, ls.legacy), ls.url)
        other_port = other.rsplit(":", 1)[1]
        media.load(f"http://localhost:{other_port}/img.png")
        media.load(f"{other}/img.png")
    assert len(seen) == 2 and all("Authorization" not in h for _, h in seen)


def test_redirect_from_label_studio_to_another_host_drops_credentials(tmp_path: Path) -> None:
    legacy = "f" * 40
    with http_server({"/signed/img.png": png}) as (storage, storage_seen):

        def presign(headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
            if headers.get("Authorization") != f"Token {legacy}":
                return 401, {}, b""
            return 302, {"Location": f"{storage}/signed/img.png"}, b""

        with http_server({"/data/upload/1/img.png": presign}) as (ls_url, ls_seen):
            media = fetcher(tmp_path, LabelStudioAuth(ls_url, legacy), ls_url)
            image = media.load("/data/upload/1/img.png")
    assert (image.width, image.height) == (64, 48)
    assert ls_seen[0][1]["Authorization"] == f"Token {legacy}"
    assert len(storage_seen) == 1 and "Authorization" not in storage_seen[0][1]
