"""Property-based fuzzing: arbitrary JSON values and bytes, on every route, unknown paths and
methods, through App.handle and through handler.handler as Nuclio calls it. Client input
never gets a 5xx, no exception escapes, every answer is valid JSON, and errors are
`{"error": "<text>"}`."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from typing import Any

import nuclio_sdk
import nuclio_sdk.test
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import handler
from function.service.app import ROUTES, App, Reply, Request
from function.service.server import make_event

from .fakes import FakeModel
from .reliability_support import SMALL_URI, assert_still_serves
from .support import (
    LABEL_CONFIG,
    examples,
    make_app,
)

# CI budget (a fifth of it under the quick hypothesis profile); FUZZ_EXAMPLES=2000 for a deeper
# run (the structured tests get 3/4 of it).
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", examples(200)))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Deeper, slower paths (label config parsing, project files): fewer examples.
STRUCTURED = settings(FUZZ, max_examples=EXAMPLES * 3 // 4)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=25,
)
route_paths = st.sampled_from(
    [f"/{name}" for name in ROUTES] + ["/", "/sam2/predict/", "/PREDICT"]
) | st.text(max_size=20).map(lambda s: "/" + s)
methods = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "brew"])


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    app = make_app(tmp_path_factory.mktemp("fuzz"), FakeModel(radius=4), max_image_pixels=1_000_000)
    yield app
    app.close()


def check(reply: Reply, request: Request) -> None:
    body = json.loads(reply.text)  # valid JSON (NaN and Infinity are not)
    assert isinstance(body, dict)
    assert reply.status < 500, (reply.status, reply.text, request)
    if reply.status >= 400:
        assert isinstance(body.get("error"), str) and body["error"], body


@FUZZ
@given(method=methods, path=route_paths, body=json_values)
def test_arbitrary_json_on_any_route(app: App, method: str, path: str, body: Any) -> None:
    request = Request(method, path, body if isinstance(body, (dict, list)) else json.dumps(body))
    check(app.handle(request), request)


@FUZZ
@given(method=methods, path=route_paths, raw=st.binary(max_size=300))
def test_arbitrary_bytes_on_any_route(app: App, method: str, path: str, raw: bytes) -> None:
    request = Request(method, path, raw)
    check(app.handle(request), request)


# -- structured fuzzing of /predict: valid shape, arbitrary leaves ---------------------------

numbers = st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(10**6), 10**6) | json_scalars
in_range = st.floats(-10, 110)
percent = st.one_of(in_range, in_range, in_range, numbers)  # mostly plausible, sometimes junk
known_types = st.sampled_from(["keypointlabels", "rectanglelabels", "keypoint", "rectangle", "brushlabels"])
region_extras = {
    "is_positive": json_values,
    "to_name": json_values,
    "original_width": numbers | st.text(max_size=4),
    "original_height": numbers | st.text(max_size=4),
}
# Mostly valid regions (every coordinate present), so the fuzzing gets past the first check.
near_valid_regions = st.fixed_dictionaries(
    {
        "type": known_types,
        "value": st.fixed_dictionaries(
            {"x": percent, "y": percent, "width": percent, "height": percent},
            optional={"rotation": percent, "keypointlabels": json_values, "positive": json_values},
        ),
    },
    optional=region_extras,
)
arbitrary_regions = st.fixed_dictionaries(
    {
        "type": known_types | json_scalars,
        "value": st.dictionaries(
            st.sampled_from(["x", "y", "width", "height", "rotation", "rectanglelabels", "labels"]), numbers
        )
        | json_values,
    },
    optional=region_extras,
)
regions = near_valid_regions | arbitrary_regions
images = (
    st.sampled_from(
        [
            SMALL_URI,
            "data:image/png;base64,",
            "data:,",
            "data:image/png;base64,%%%",
            "ftp://x",
            "/etc/passwd",
            "",
        ]
    )
    | json_scalars
)


@STRUCTURED
@given(
    result=st.lists(regions, max_size=6),
    image=images,
    label_config=st.sampled_from([LABEL_CONFIG, "", "<View>", "<View><Image name='i' value='$i'/></View>"])
    | json_scalars,
    extra=st.dictionaries(st.sampled_from(["project", "model_version", "params"]), json_values, max_size=2),
)
def test_predict_with_arbitrary_regions(
    app: App, result: list[Any], image: Any, label_config: Any, extra: dict[str, Any]
) -> None:
    body: dict[str, Any] = {
        "tasks": [{"id": 1, "data": {"image": image}}],
        "label_config": label_config,
        "params": {"context": {"result": result}},
        **{k: v for k, v in extra.items() if k != "params"},
    }
    request = Request("POST", "/predict", body)
    reply = app.handle(request)
    check(reply, request)
    if reply.status == 200:
        for prediction in json.loads(reply.text)["results"]:
            assert math.isfinite(prediction["score"])


@STRUCTURED
@given(extra_params=json_values, project=json_values, schema=json_values)
def test_setup_with_arbitrary_fields(app: App, extra_params: Any, project: Any, schema: Any) -> None:
    body = {"project": project, "schema": schema, "extra_params": extra_params}
    request = Request("POST", "/setup", body)
    check(app.handle(request), request)


# -- through handler.handler, the Nuclio entry point -------------------------------------------


@pytest.fixture(scope="module")
def platform(app: App) -> nuclio_sdk.test.Platform:
    platform = nuclio_sdk.test.Platform()
    context = nuclio_sdk.Context(platform._logger, platform)
    context.user_data.app = app
    # The model is already built: skip init_context (it would load SAM2).
    platform._handler_contexts[handler.handler] = context
    return platform


content_types = st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain", ""])


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    method=methods,
    path=route_paths,
    raw=st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()),
    ctype=content_types,
)
def test_nuclio_handler_with_arbitrary_events(
    platform: nuclio_sdk.test.Platform, method: str, path: str, raw: bytes, ctype: str
) -> None:
    event = make_event(method, path.replace("?", "%3F").replace("#", "%23"), {"Content-Type": ctype}, raw)
    response = platform.call_handler(handler.handler, event)
    assert isinstance(response, nuclio_sdk.Response)
    assert response.content_type == "application/json"
    body = json.loads(response.body)
    assert response.status_code < 500, (response.status_code, response.body, path)
    if response.status_code >= 400:
        assert isinstance(body.get("error"), str)


def test_fuzz_app_still_serves_a_real_click(app: App) -> None:
    """After all the fuzzing above, the module's app answers a valid click correctly."""
    assert_still_serves(app)
