"""extra_params schema: every option, its default, strict validation with the key path."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from function.adapters.errors import BadRequest
from function.adapters.labelstudio.interface import parse_label_config
from function.adapters.labelstudio.params import Options, ReturnFormat, decode_extra_params, parse_options
from function.core.geometry import PatchSpec, ResizeSpec
from function.core.masks import PostprocessSpec

from .fakes import FakeModel
from .support import LABEL_CONFIG, call, make_app

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SPEC_EXAMPLE = {
    "subpatching": {"patch-size": 1024},
    "return_format": {"type": "PolygonLabels", "epsilon": 1, "max_points": 100},
    "postprocess": {"mask_size_threshold": 1},
}


def bad(raw: Any, path: str, fragment: str = "") -> None:
    with pytest.raises(BadRequest) as info:
        parse_options(raw)
    message = info.value.message
    assert message.startswith(path + ":"), message
    assert fragment in message, message


def test_empty_params_are_stock_behaviour() -> None:
    options = parse_options({})
    assert options == Options()
    assert options.return_format == ReturnFormat("BrushLabels", 1.0, 100)
    assert options.fullframe_resize is None and options.subpatching is None
    assert options.postprocess.is_noop and options.return_type == "BrushLabels"


def test_the_spec_example_validates() -> None:
    options = parse_options(SPEC_EXAMPLE)
    assert options.subpatching == PatchSpec((1024, 1024), "default", (0, 0, 0), True, 0.05)
    assert options.return_format == ReturnFormat("PolygonLabels", 1.0, 100)
    assert options.postprocess == PostprocessSpec(1.0, True, 0)


@pytest.mark.parametrize("name", ["brush-subpatching", "polygon-postprocess"])
def test_each_example_file_validates_and_its_config_has_the_output_tag(name: str) -> None:
    raw = decode_extra_params((EXAMPLES / f"{name}.json").read_text())
    options = parse_options(raw)
    config = parse_label_config((EXAMPLES / f"{name}.xml").read_text())
    assert config is not None and config.control(options.return_type, "image") is not None
    assert parse_options(json.loads((EXAMPLES / f"{name}.json").read_text())) == options


def test_every_option_with_a_value() -> None:
    options = parse_options(
        {
            "fullframe_resize": [1600, 1200],
            "subpatching": {
                "patch_size": [800, 600],
                "mode": "Padding",
                "padding_fill": "#808080",
                "allow_oversize": False,
                "oversize_padding": 0.1,
            },
            "postprocess": {"mask_size_threshold": 0.5, "fill_holes": True, "dilate": 0.25},
            "return_format": {"type": "polygon", "epsilon": 0.01, "max_points": 50},
        }
    )
    assert options.fullframe_resize == ResizeSpec(size=(1600, 1200))
    assert options.subpatching == PatchSpec((800, 600), "padding", (128, 128, 128), False, 0.1)
    assert options.postprocess == PostprocessSpec(0.5, True, 0.25)
    assert options.return_format == ReturnFormat("Polygon", 0.01, 50)


# -- keys ----------------------------------------------------------------------------------


def test_dash_and_underscore_keys_are_the_same_key() -> None:
    dashed = parse_options({"subpatching": {"patch-size": 512, "allow-oversize": False}})
    under = parse_options({"subpatching": {"patch_size": 512, "allow_oversize": False}})
    assert dashed == under and dashed.subpatching is not None and dashed.subpatching.size == (512, 512)
    assert parse_options({"fullframe-resize": 0.5}).fullframe_resize == ResizeSpec(scale=0.5)
    assert parse_options({"return-format": {"type": "Brush"}}).return_type == "Brush"


def test_both_spellings_of_one_key_are_an_error() -> None:
    bad({"subpatching": {"patch-size": 512, "patch_size": 512}}, "extra_params.subpatching", "patch_size")
    bad({"fullframe-resize": 0.5, "fullframe_resize": 0.5}, "extra_params", "one spelling")


@pytest.mark.parametrize(
    ("raw", "path", "key"),
    [
        ({"points_per_side": 32}, "extra_params", "points_per_side"),
        ({"patch_size": 1024}, "extra_params", "patch_size"),  # misplaced: belongs in subpatching
        ({"subpatching": {"size": 1024}}, "extra_params.subpatching", "size"),
        ({"subpatching": {"dilate": 3}}, "extra_params.subpatching", "dilate"),
        ({"postprocess": {"erode": 3}}, "extra_params.postprocess", "erode"),
        ({"return_format": {"colour": "red"}}, "extra_params.return_format", "colour"),
    ],
)
def test_unknown_and_misplaced_keys_name_their_path(raw: Any, path: str, key: str) -> None:
    bad(raw, path, repr(key))


@pytest.mark.parametrize("key", ["epsilon", "max_points"])
def test_polygon_keys_with_another_type_are_misplaced(key: str) -> None:
    bad({"return_format": {"type": "Brush", key: 5}}, f"extra_params.return_format.{key}", "polygon")
    bad({"return_format": {key: 5}}, f"extra_params.return_format.{key}", "polygon")  # default brush


def test_sections_must_be_objects() -> None:
    bad({"return_format": "PolygonLabels"}, "extra_params.return_format", "object")
    bad({"postprocess": [1]}, "extra_params.postprocess", "object")
    bad({"subpatching": 1024}, "extra_params.subpatching", "object")


# -- fullframe_resize ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "spec"),
    [
        (2048, ResizeSpec(size=(2048, 2048))),
        ([2048, 1024], ResizeSpec(size=(2048, 1024))),
        (0.5, ResizeSpec(scale=0.5)),
        (1.0, ResizeSpec(scale=1.0)),
        (None, None),
    ],
)
def test_fullframe_resize_accepts(value: Any, spec: ResizeSpec | None) -> None:
    assert parse_options({"fullframe_resize": value}).fullframe_resize == spec


@pytest.mark.parametrize(
    ("value", "where", "fragment"),
    [
        (0, "", "square"),
        (-1, "", "square"),
        (1, "", "for a scale write a float"),  # int 1 is a 1x1 square in SAM2Plus: refused here
        (1.2, "", "(0, 1]"),
        (0.0, "", "(0, 1]"),
        (float("nan"), "", "(0, 1]"),
        (True, "", "boolean"),
        ("0.5", "", "string"),
        ([2048], "", "[width, height]"),
        ([2048, True], "[1]", "boolean"),
        ([2048.0, 1024], "[0]", "integer"),
        ([2048, 8], "[1]", "between"),
    ],
)
def test_fullframe_resize_rejects(value: Any, where: str, fragment: str) -> None:
    bad({"fullframe_resize": value}, "extra_params.fullframe_resize" + where, fragment)


# -- subpatching ---------------------------------------------------------------------------


def test_subpatching_presence_enables_it_with_defaults() -> None:
    assert parse_options({"subpatching": {}}).subpatching == PatchSpec()
    assert parse_options({"subpatching": True}).subpatching == PatchSpec()
    assert parse_options({"subpatching": False}).subpatching is None
    assert parse_options({"subpatching": None}).subpatching is None


@pytest.mark.parametrize(
    ("sub", "path", "fragment"),
    [
        ({"patch_size": True}, "patch_size", "boolean"),
        ({"patch_size": 0}, "patch_size", "between"),
        ({"patch_size": 1024.0}, "patch_size", "number"),
        ({"patch_size": [512, 0]}, "patch_size[1]", "between"),
        ({"mode": "reflect"}, "mode", "'default' or 'padding'"),
        ({"padding_fill": "blurple"}, "padding_fill", "unknown colour"),
        ({"padding_fill": [0, 0, 0]}, "padding_fill", "colour"),
        ({"allow_oversize": "no"}, "allow_oversize", "true or false"),
        ({"allow_oversize": 0}, "allow_oversize", "true or false"),
        ({"oversize_padding": -0.1}, "oversize_padding", "between"),
        ({"oversize_padding": True}, "oversize_padding", "boolean"),
    ],
)
def test_subpatching_rejects(sub: dict[str, Any], path: str, fragment: str) -> None:
    bad({"subpatching": sub}, f"extra_params.subpatching.{path}", fragment)


@pytest.mark.parametrize(
    ("fill", "rgb"),
    [("black", (0, 0, 0)), ("White", (255, 255, 255)), ("#ff8000", (255, 128, 0)), ("rgb(1,2,3)", (1, 2, 3))],
)
def test_padding_fill_takes_pil_colours(fill: str, rgb: tuple[int, int, int]) -> None:
    spec = parse_options({"subpatching": {"padding_fill": fill}}).subpatching
    assert spec is not None and spec.fill == rgb


# -- return_format -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given_type", "canonical"),
    [
        ("brushlabels", "BrushLabels"),
        ("BRUSH", "Brush"),
        ("polygonLabels", "PolygonLabels"),
        ("Polygon", "Polygon"),
        ("rectanglelabels", "RectangleLabels"),
        ("rectangle", "Rectangle"),
    ],
)
def test_return_type_is_case_insensitive(given_type: str, canonical: str) -> None:
    assert parse_options({"return_format": {"type": given_type}}).return_type == canonical


@pytest.mark.parametrize("given_type", ["BrushLabel", "PolygonLabel", "RectangleLabel", "mask", 3, None])
def test_singular_and_other_return_types_are_invalid(given_type: Any) -> None:
    bad({"return_format": {"type": given_type}}, "extra_params.return_format.type", "BrushLabels, Brush")


@pytest.mark.parametrize(
    ("fmt", "path", "fragment"),
    [
        ({"epsilon": 0}, "epsilon", "> 0"),
        ({"epsilon": -1}, "epsilon", "between"),
        ({"epsilon": True}, "epsilon", "boolean"),
        ({"max_points": 2}, "max_points", "between 3"),
        ({"max_points": 10.0}, "max_points", "integer"),
        ({"max_points": True}, "max_points", "boolean"),
    ],
)
def test_polygon_settings_rejects(fmt: dict[str, Any], path: str, fragment: str) -> None:
    bad({"return_format": {"type": "PolygonLabels", **fmt}}, f"extra_params.return_format.{path}", fragment)


# -- postprocess ---------------------------------------------------------------------------


def test_fill_holes_is_forced_on_for_polygons_and_off_by_default_otherwise() -> None:
    assert parse_options({"return_format": {"type": "Polygon"}}).postprocess.fill_holes
    assert not parse_options({}).postprocess.fill_holes
    assert not parse_options({"postprocess": {"fill_holes": False}}).postprocess.fill_holes
    bad(
        {"return_format": {"type": "PolygonLabels"}, "postprocess": {"fill_holes": False}},
        "extra_params.postprocess.fill_holes",
        "PolygonLabels",
    )


def test_dilate_int_is_pixels_and_float_a_fraction() -> None:
    as_int = parse_options({"postprocess": {"dilate": 3}}).postprocess.dilate
    as_float = parse_options({"postprocess": {"dilate": 0.5}}).postprocess.dilate
    assert isinstance(as_int, int) and as_int == 3
    assert isinstance(as_float, float) and as_float == 0.5


@pytest.mark.parametrize(
    ("post", "path", "fragment"),
    [
        ({"mask_size_threshold": 1.5}, "mask_size_threshold", "between 0 and 1"),
        ({"mask_size_threshold": -0.1}, "mask_size_threshold", "between"),
        ({"mask_size_threshold": False}, "mask_size_threshold", "boolean"),
        ({"fill_holes": 1}, "fill_holes", "true or false"),
        ({"dilate": True}, "dilate", "boolean"),
        ({"dilate": -2}, "dilate", "between"),
        ({"dilate": "3px"}, "dilate", "string"),
    ],
)
def test_postprocess_rejects(post: dict[str, Any], path: str, fragment: str) -> None:
    bad({"postprocess": post}, f"extra_params.postprocess.{path}", fragment)


# -- decoding and robustness ---------------------------------------------------------------


def test_decode_accepts_object_string_empty_and_null() -> None:
    assert decode_extra_params(None) == {} and decode_extra_params("  ") == {}
    assert decode_extra_params('{"a": 1}') == {"a": 1} and decode_extra_params({"a": 1}) == {"a": 1}
    with pytest.raises(BadRequest, match=r"valid JSON.*line 1 column"):
        decode_extra_params("{nope")
    with pytest.raises(BadRequest, match="JSON object"):
        decode_extra_params("[1]")


scalars = st.none() | st.booleans() | st.integers(-5000, 5000) | st.floats() | st.text(max_size=8)
json_values = scalars | st.lists(scalars, max_size=3)
keys = st.sampled_from(
    ["fullframe_resize", "subpatching", "postprocess", "return_format", "patch-size", "type", "dilate", "x"]
)


@given(st.dictionaries(keys, json_values | st.dictionaries(keys, json_values, max_size=4), max_size=4))
def test_any_input_either_parses_or_is_a_400(raw: dict[str, Any]) -> None:
    try:
        parse_options(raw)
    except BadRequest as exc:
        assert re.match(r"^extra_params(\.[a-z_]+)*(\[\d\])?: ", exc.message), exc.message


# -- through /setup ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "path"),
    [
        ({"subpatching": {"patch_size": True}}, "extra_params.subpatching.patch_size"),
        ('{"return_format": {"type": "BrushLabel"}}', "extra_params.return_format.type"),
        ({"postprocess": {"mask_size_threshold": 2}}, "extra_params.postprocess.mask_size_threshold"),
        ({"fullframe_resize": True}, "extra_params.fullframe_resize"),
        ({"surprise": 1}, "extra_params"),
    ],
)
def test_setup_answers_400_naming_the_key(tmp_path: Path, params: Any, path: str) -> None:
    app = make_app(tmp_path, FakeModel())
    reply = call(app, "POST", "/setup", {"project": "3.1", "schema": LABEL_CONFIG, "extra_params": params})
    assert reply.status == 400
    assert reply.body["error"].startswith(path + ":")


@pytest.mark.parametrize("params", [SPEC_EXAMPLE, json.dumps(SPEC_EXAMPLE), "", None, {}])
def test_setup_accepts_valid_params_in_every_form(tmp_path: Path, params: Any) -> None:
    app = make_app(tmp_path, FakeModel())
    reply = call(app, "POST", "/setup", {"project": "3.1", "schema": LABEL_CONFIG, "extra_params": params})
    assert reply.status == 200 and reply.body["model_version"]
