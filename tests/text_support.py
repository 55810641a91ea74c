"""Helpers for text-prompt tests: label configs with a TextArea and the results Label Studio sends."""

from __future__ import annotations

from typing import Any


def text_config(
    output: str = "BrushLabels", rectangles: bool = True, labels: tuple[str, ...] = ("Car", "Cat")
) -> str:
    values = "".join(f'<Label value="{v}"/>' for v in labels)
    rect = f'<RectangleLabels name="label" toName="image">{values}</RectangleLabels>' if rectangles else ""
    out = "" if output == "RectangleLabels" else f'<{output} name="mask" toName="image">{values}</{output}>'
    return (
        '<View><Image name="image" value="$image"/>'
        '<TextArea name="prompt" toName="image" editable="true" rows="2" maxSubmissions="1" '
        'showSubmitButton="true"/>'
        '<Number name="box_threshold" toName="image" min="0" max="1" step="0.01"/>'
        f"{rect}{out}</View>"
    )


def textarea(*texts: str, from_name: str = "prompt") -> dict[str, Any]:
    return {
        "id": "t1",
        "from_name": from_name,
        "to_name": "image",
        "type": "textarea",
        "origin": "manual",
        "value": {"text": list(texts)},
    }


def number(name: str, value: Any) -> dict[str, Any]:
    return {"id": "n1", "from_name": name, "to_name": "image", "type": "number", "value": {"number": value}}


def text_body(
    image: str, regions: list[dict[str, Any]] | None, config: str, tasks: int = 1
) -> dict[str, Any]:
    return {
        "tasks": [{"id": i + 1, "data": {"image": image}} for i in range(tasks)],
        "project": "7.1795445671",
        "label_config": config,
        "params": {
            "login": None,
            "password": None,
            "context": None if regions is None else {"result": regions},
        },
    }
