"""Fetch task images: Label Studio URLs with credentials, other hosts without, data: URIs.

Credentials go only to the Label Studio origin (scheme, host and port equal), and are
dropped when a redirect leaves it. Downloads are bounded in bytes and time; local files are
refused unless explicitly allowed.
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import parse_qs, quote, unquote, urljoin, urlsplit

import requests
import urllib3

from function.core.errors import ExpectedError, ImageTooLarge
from function.core.images import ImageCache, LoadedImage
from function.core.tracking.errors import VideoTooLarge
from function.settings import Settings

from ..errors import BadRequest, InvalidInput, UpstreamFailed, UpstreamTimeout
from .auth import LabelStudioAuth

log = logging.getLogger(__name__)

_CLOUD_SCHEMES = ("s3://", "gs://", "azure-blob://")
_MAX_REDIRECTS = 5


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port


def decode_data_uri(value: str) -> bytes:
    head, _, payload = value.partition(",")
    if ";base64" not in head:
        return unquote(payload).encode("latin-1")
    try:
        # Strict: garbage is a 400, not silently skipped into an empty "image" (line breaks ok).
        return base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("data: URI is not valid base64") from None


class MediaFetcher:
    """Turns a task's image value into a `LoadedImage`, caching by source and content."""

    def __init__(
        self,
        settings: Settings,
        images: ImageCache,
        auth: LabelStudioAuth | None,
        session: requests.Session | None = None,
    ) -> None:
        self.settings = settings
        self.images = images
        self.auth = auth
        self.session = session or requests.Session()
        self.host = auth.host if auth else settings.label_studio_url
        self.fetch_count = 0

    def load(self, value: str, task_id: int | None = None) -> LoadedImage:
        if not isinstance(value, str) or not value.strip():
            raise InvalidInput("task image value must be a non-empty string")
        value = value.strip()
        source = value if not value.startswith(_CLOUD_SCHEMES) else f"{task_id}|{value}"
        cached = self.images.by_source(source) if not value.startswith("data:") else None
        if cached is not None:
            return cached
        data = self._read(value, task_id)
        image = LoadedImage.from_bytes(data, self.settings.max_image_pixels)
        return self.images.add(image, None if value.startswith("data:") else source)

    def _read(self, value: str, task_id: int | None) -> bytes:
        kind, where = self._locate(value, task_id)
        if kind == "data":
            return decode_data_uri(where)
        if kind in ("local", "trusted"):
            return self._read_local(where, trusted_root=kind == "trusted")
        return self._download(where)

    def video_file(self, value: Any, task_id: int | None, folder: Path) -> Path:
        """A local path to the task's video: the file itself when it is local, else a download
        streamed into `folder` (never held in memory), at most MAX_VIDEO_MB."""
        if not isinstance(value, str) or not value.strip():
            raise InvalidInput("task video value must be a non-empty string")
        limit = self.settings.max_video_bytes
        kind, where = self._locate(value.strip(), task_id)
        if kind in ("local", "trusted"):
            if not (kind == "trusted" or self.settings.allow_local_files):
                raise BadRequest("local file paths are refused (set ALLOW_LOCAL_FILES=true to allow)")
            path = Path(where)
            if not path.is_file():
                raise InvalidInput("local video file cannot be read")
            if path.stat().st_size > limit:
                raise VideoTooLarge(f"video is larger than the {limit // 2**20} MiB limit (MAX_VIDEO_MB)")
            return path
        target = folder / "video"
        with target.open("wb") as sink:
            if kind == "data":
                data = decode_data_uri(where)
                if len(data) > limit:
                    raise VideoTooLarge(f"video is larger than the {limit // 2**20} MiB limit (MAX_VIDEO_MB)")
                sink.write(data)
            else:
                self._download(where, sink, limit, VideoTooLarge)
        return target

    def _locate(self, value: str, task_id: int | None) -> tuple[str, str]:
        """Where a task's media is: ("data", uri), ("local" | "trusted", path) or ("url", url)."""
        if value.startswith("data:"):
            return "data", value
        if value.startswith(_CLOUD_SCHEMES):
            if task_id is None:
                raise InvalidInput("cloud storage URIs need the task id to be presigned")
            encoded = base64.urlsafe_b64encode(value.encode()).decode()
            return "url", self._ls_url(f"/tasks/{task_id}/presign/?fileuri={quote(encoded)}")
        if value.startswith("file://") or (value.startswith("/") and not self._is_ls_path(value)):
            return "local", value.removeprefix("file://")
        if value.startswith("/"):
            local = self._local_files_path(value)
            if local is not None:
                return "trusted", str(local)
            return "url", self._ls_url(value)
        if value.startswith(("http://", "https://")):
            return "url", value
        raise InvalidInput(f"unsupported image reference scheme in {value.split(':', 1)[0]!r}")

    @staticmethod
    def _is_ls_path(value: str) -> bool:
        return value.startswith(("/data/", "/storage-data/", "/tasks/"))

    def _ls_url(self, path: str) -> str:
        if not self.host:
            raise InvalidInput("task image is a Label Studio path but LABEL_STUDIO_URL is not set")
        # Join keeping a subpath deployment (https://host/label-studio + /data/upload/...).
        return urljoin(self.host + "/", path.lstrip("/"))

    def _local_files_path(self, value: str) -> Path | None:
        root = self.settings.local_files_document_root
        if root is None or not value.startswith("/data/local-files/"):
            return None
        rel = parse_qs(urlsplit(value).query).get("d", [""])[0]
        path = (root / rel).resolve()
        if not path.is_relative_to(root.resolve()):
            raise BadRequest("local-files path escapes LOCAL_FILES_DOCUMENT_ROOT")
        return path

    def _read_local(self, path: str, trusted_root: bool = False) -> bytes:
        if not (trusted_root or self.settings.allow_local_files):
            raise BadRequest("local file paths are refused (set ALLOW_LOCAL_FILES=true to allow)")
        p = Path(path)
        try:
            if p.stat().st_size > self.settings.max_download_bytes:
                raise ImageTooLarge("local image is larger than MAX_DOWNLOAD_MB")
            return p.read_bytes()
        except OSError:
            raise InvalidInput("local image file cannot be read") from None

    def _is_ls_origin(self, url: str) -> bool:
        return bool(self.host) and _origin(url) == _origin(self.host)

    def _check_host_allowed(self, url: str) -> None:
        allowed = self.settings.allowed_image_hosts
        if allowed and not self._is_ls_origin(url) and _origin(url)[1] not in allowed:
            raise BadRequest(f"image host {_origin(url)[1]!r} is not in ALLOWED_IMAGE_HOSTS")

    def _download(
        self,
        url: str,
        sink: BinaryIO | None = None,
        limit: int | None = None,
        too_large: type[ExpectedError] = ImageTooLarge,
    ) -> bytes:
        """The body of `url` (or b"" once streamed into `sink`), at most `limit` bytes."""
        retried = False
        hops = 0
        while True:
            self._check_host_allowed(url)
            headers = self.auth.headers() if self.auth and self._is_ls_origin(url) else {}
            resp = self._get(url, headers)
            if resp.is_redirect and hops < _MAX_REDIRECTS:
                hops += 1
                url = urljoin(url, resp.headers.get("Location", ""))
                resp.close()
                continue
            if resp.status_code == 401 and headers and not retried and self.auth:
                retried = self.auth.invalidate(headers)
                resp.close()
                if retried:
                    continue
            return self._body(resp, url, sink, limit or self.settings.max_download_bytes, too_large)

    def _get(self, url: str, headers: dict[str, str]) -> requests.Response:
        s = self.settings
        host = _origin(url)[1]
        self.fetch_count += 1
        try:
            return self.session.get(
                url,
                headers=headers,
                stream=True,
                allow_redirects=False,
                timeout=(s.connect_timeout_s, s.download_timeout_s),
                verify=s.label_studio_verify_ssl,
            )
        except requests.Timeout:
            raise UpstreamTimeout(f"image host {host} timed out") from None
        except requests.RequestException as exc:
            raise UpstreamFailed(f"cannot reach image host {host} ({type(exc).__name__})") from None

    def _body(
        self,
        resp: requests.Response,
        url: str,
        sink: BinaryIO | None,
        limit: int,
        too_large: type[ExpectedError],
    ) -> bytes:
        host = _origin(url)[1]
        with resp:
            if resp.status_code in (401, 403):
                raise UpstreamFailed(
                    f"image host {host} refused access (HTTP {resp.status_code}); check LABEL_STUDIO_API_KEY"
                )
            if resp.status_code >= 500:
                raise UpstreamFailed(f"image host {host} failed with HTTP {resp.status_code}")
            if resp.status_code != 200:
                raise InvalidInput(f"image URL answered HTTP {resp.status_code}")
            if "text/html" in resp.headers.get("Content-Type", ""):
                raise InvalidInput("image URL returned an HTML page, not an image")
            what = "video" if too_large is VideoTooLarge else "image"
            length = resp.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > limit:
                raise too_large(f"{what} is larger than the {limit // 2**20} MiB download limit")
            # DOWNLOAD_TIMEOUT_S bounds each read and also the whole body: a host trickling
            # bytes would otherwise hold the worker for as long as it likes. read1 returns
            # what has arrived, so the deadline is checked at least once per read timeout.
            deadline = time.monotonic() + self.settings.download_timeout_s
            chunks, total = [], 0
            try:
                while chunk := resp.raw.read1(1 << 16, decode_content=True):
                    total += len(chunk)
                    if total > limit:
                        raise too_large(f"{what} is larger than the {limit // 2**20} MiB download limit")
                    if sink is None:
                        chunks.append(chunk)
                    else:
                        sink.write(chunk)
                    if time.monotonic() > deadline:
                        raise UpstreamTimeout(
                            f"image download from {host} took over {self.settings.download_timeout_s:g} s"
                        )
            except (requests.Timeout, urllib3.exceptions.TimeoutError):
                raise UpstreamTimeout(f"image host {host} timed out") from None
            except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
                raise UpstreamFailed(f"image download from {host} broke off ({type(exc).__name__})") from None
            return b"".join(chunks)
