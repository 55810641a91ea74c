"""Helpers for the reliability tests: error-shape checks, mask decoding, an image-id model."""

from __future__ import annotations

import json

import numpy as np

from function.core.model import ImageFeatures, Segmentation
from function.core.prompts import POSITIVE, Prompt
from function.service.app import App, Reply

from .fakes import FakeModel
from .support import call, data_uri, encode_image, keypoint, predict_body, region_mask, sample_array

SMALL = sample_array(64, 48)
SMALL_URI = data_uri(encode_image(SMALL))


def assert_json_error(reply: Reply, *statuses: int) -> str:
    """The reply is `{"error": "<non-empty text>"}` with one of `statuses`; returns the text."""
    assert reply.status in statuses, (reply.status, reply.text)
    body = json.loads(reply.text)
    assert set(body) == {"error"}, body
    assert isinstance(body["error"], str) and body["error"].strip()
    return str(body["error"])


def predicted_mask(reply: Reply) -> np.ndarray:
    assert reply.status == 200, reply.text
    results = json.loads(reply.text)["results"]
    assert len(results) == 1 and len(results[0]["result"]) == 1, results
    return region_mask(results[0]["result"][0]) > 0


def assert_still_serves(app: App, x_pct: float = 50.0, y_pct: float = 50.0) -> None:
    """A valid click after a failure is answered with a mask that covers the click."""
    mask = predicted_mask(call(app, "POST", "/predict", predict_body(SMALL_URI, [keypoint(x_pct, y_pct)])))
    h, w = mask.shape
    assert (w, h) == (64, 48)
    assert mask[int(y_pct * h / 100), int(x_pct * w / 100)]


def id_radius(image_mean: float) -> int:
    """The disc radius `ImageIdModel` draws for an image: differs for every fill value 0-255."""
    return 2 + round(image_mean) % 23


def id_disc(width: int, height: int, cx: float, cy: float, image_mean: float) -> np.ndarray:
    yy, xx = np.ogrid[:height, :width]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= id_radius(image_mean) ** 2


class ImageIdModel(FakeModel):
    """Draws a disc around the first positive click whose radius encodes the image's mean
    colour, so an answer proves which image (features) and which click it was computed from."""

    def decode(self, features: ImageFeatures, prompt: Prompt) -> Segmentation:
        with self._lock:
            self.decode_calls += 1
        h, w = features.image_hw
        positive = prompt.points[prompt.labels == POSITIVE]
        if not len(positive):
            return Segmentation(np.zeros((h, w), bool), 0.0)
        cx, cy = positive[0]
        return Segmentation(id_disc(w, h, cx, cy, float(features.image_embed)), 0.9)
