"""Task image values -> pixels: data: URIs, Label Studio paths (also under a subpath), cloud
URIs through presign, local files refused by default, EXIF orientation, colour modes, caching."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from PIL import Image

from function.adapters.labelstudio.auth import LabelStudioAuth
from function.adapters.labelstudio.media import MediaFetcher
from function.core.errors import ExpectedError
from function.core.images import ImageCache, LoadedImage
from function.service.errors import status_for

from .fakes import FakeModel
from .support import (
    FakeLabelStudio,
    call,
    data_uri,
    encode_image,
    fake_label_studio,
    keypoint,
    make_app,
    make_settings,
    predict_body,
    rle_mask,
    sample_array,
)

PNG = encode_image(sample_array(64, 48))


def media(tmp_path: Path, url: str = "", token: str = "", **settings: Any) -> MediaFetcher:
    s = make_settings(tmp_path, label_studio_url=url, **settings)
    auth = LabelStudioAuth(url, token) if url and token else None
    return MediaFetcher(s, ImageCache(2**30), auth)


@pytest.fixture
def ls() -> Iterator[FakeLabelStudio]:
    with fake_label_studio(FakeLabelStudio(files={"/data/upload/3/a.png": PNG})) as server:
        yield server


def test_data_uri(tmp_path: Path) -> None:
    m = media(tmp_path)
    image = m.load(data_uri(PNG))
    assert (image.width, image.height) == (64, 48)
    assert np.array_equal(image.pixels(), sample_array(64, 48))
    assert m.fetch_count == 0


def test_upload_path_is_joined_to_label_studio_url(tmp_path: Path, ls: FakeLabelStudio) -> None:
    m = media(tmp_path, ls.url, ls.legacy)
    image = m.load("/data/upload/3/a.png")
    assert (image.width, image.height) == (64, 48)
    assert [r[1] for r in ls.requests] == ["/data/upload/3/a.png"]


def test_upload_path_under_a_subpath_deployment(tmp_path: Path) -> None:
    fake = FakeLabelStudio(files={"/label-studio/data/upload/3/a.png": PNG})
    with fake_label_studio(fake) as ls:
        m = media(tmp_path, f"{ls.url}/label-studio", ls.legacy)
        image = m.load("/data/upload/3/a.png")
    assert image.width == 64
    assert [r[1] for r in ls.requests] == ["/label-studio/data/upload/3/a.png"]


def test_label_studio_path_without_label_studio_url_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ExpectedError) as info:
        media(tmp_path).load("/data/upload/3/a.png")
    assert status_for(info.value) == 422 and "LABEL_STUDIO_URL" in info.value.message


def test_cloud_uri_is_presigned_with_the_task_id(tmp_path: Path) -> None:
    uri = "s3://bucket/images/a.png"

    with fake_label_studio() as ls:
        encoded = base64.urlsafe_b64encode(uri.encode()).decode()
        # The fake serves the image at the presign URL itself (real LS redirects to the bucket).
        for candidate in (
            f"/tasks/7/presign/?fileuri={encoded}",
            f"/tasks/7/presign/?fileuri={encoded.replace('=', '%3D')}",
        ):
            ls.files[candidate] = PNG
        m = media(tmp_path, ls.url, ls.legacy)
        image = m.load(uri, task_id=7)
        assert image.width == 64
        (request,) = ls.requests
        path = urlsplit(request[1])
        assert path.path == "/tasks/7/presign/"
        assert base64.urlsafe_b64decode(parse_qs(path.query)["fileuri"][0]).decode() == uri
        assert request[2]["Authorization"] == f"Token {ls.legacy}"
        with pytest.raises(ExpectedError) as info:
            m.load("gs://bucket/b.png", task_id=None)
        assert status_for(info.value) == 422 and "task id" in info.value.message


def test_file_uri_refused_by_default(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(PNG)
    for value in (f"file://{path}", str(path)):
        with pytest.raises(ExpectedError) as info:
            media(tmp_path).load(value)
        assert status_for(info.value) == 400 and "ALLOW_LOCAL_FILES" in info.value.message
    assert media(tmp_path, allow_local_files=True).load(f"file://{path}").width == 64


def test_local_files_under_document_root(tmp_path: Path) -> None:
    root = tmp_path / "media"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.png").write_bytes(PNG)
    m = media(tmp_path, "http://ls.invalid", "k" * 40, local_files_document_root=root)
    assert m.load("/data/local-files/?d=sub/a.png").width == 64
    with pytest.raises(ExpectedError) as info:
        m.load("/data/local-files/?d=../../etc/passwd")
    assert status_for(info.value) == 400


def test_second_load_of_the_same_url_does_no_fetch(tmp_path: Path, ls: FakeLabelStudio) -> None:
    m = media(tmp_path, ls.url, ls.legacy)
    first = m.load("/data/upload/3/a.png")
    second = m.load("/data/upload/3/a.png")
    assert second is first
    assert m.fetch_count == 1 and len(ls.requests) == 1


def exif_jpeg(pixels: np.ndarray, orientation: int) -> bytes:
    img = Image.fromarray(pixels)
    exif = img.getexif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif, quality=95)
    return buf.getvalue()


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    pixels = sample_array(64, 48)
    pixels[:4, :8] = 255  # a bright mark in the stored image's top-left corner
    image = LoadedImage.from_bytes(exif_jpeg(pixels, 6), 10**8)
    assert (image.width, image.height) == (48, 64)
    decoded = image.pixels()
    assert decoded.shape == (64, 48, 3)
    # Orientation 6 = rotate 90° clockwise for display: the top-left mark ends top-right.
    assert decoded[:6, -3:].mean() > 200 and decoded[:6, :3].mean() < 100


def test_exif_rotated_image_rle_uses_the_decoded_size(tmp_path: Path) -> None:
    app = make_app(tmp_path, FakeModel(radius=5))
    body = predict_body(
        data_uri(exif_jpeg(sample_array(64, 48), 6), "image/jpeg"), [keypoint(50, 50, w=48, h=64)]
    )
    reply = call(app, "POST", "/predict", body)
    assert reply.status == 200, reply.body
    region = reply.body["results"][0]["result"][0]
    assert (region["original_width"], region["original_height"]) == (48, 64)
    assert rle_mask(region["value"]["rle"], 48, 64)[32, 24] == 255


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("mode", ["RGBA", "L", "P", "LA", "I;16", "1", "CMYK-as-jpeg"])
def test_colour_modes_become_rgb(mode: str) -> None:
    base = Image.fromarray(sample_array(64, 48))
    if mode == "I;16":
        gray = np.asarray(base.convert("L"), np.uint16) * 257  # full 16-bit range
        data = png_bytes(Image.fromarray(gray))
    elif mode == "CMYK-as-jpeg":
        buf = io.BytesIO()
        base.convert("CMYK").save(buf, "JPEG")
        data = buf.getvalue()
    else:
        data = png_bytes(base.convert(mode))
    pixels = LoadedImage.from_bytes(data, 10**8).pixels()
    assert pixels.shape == (48, 64, 3) and pixels.dtype == np.uint8
    # The light rectangle (x 20-39, y 15-32 at this size) stays lighter than the background.
    assert pixels[24, 30].mean() > pixels[5, 5].mean() + 100


def test_rgba_transparency_does_not_break_decoding() -> None:
    rgba = np.dstack([sample_array(64, 48), np.zeros((48, 64), np.uint8)])
    pixels = LoadedImage.from_bytes(encode_image(rgba), 10**8).pixels()
    assert pixels.shape == (48, 64, 3)


def test_not_an_image_is_a_422(tmp_path: Path) -> None:
    with pytest.raises(ExpectedError) as info:
        media(tmp_path).load(data_uri(b"hello", "image/png"))
    assert status_for(info.value) == 422
