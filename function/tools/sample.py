"""What the probe and the demo page bring along: a sample picture and a label config.

The picture is drawn here (flat-coloured shapes with clear edges, something SAM2 segments
cleanly), so the repository carries no binary and the same bytes come out everywhere.
"""

from __future__ import annotations

import functools
import io

import numpy as np
from PIL import Image, ImageDraw

SAMPLE_SIZE = (640, 480)
# Shapes of the sample, in pixels: the probe's default prompt clicks the ball.
BALL_CENTRE, BALL_RADIUS = (468, 318), 70
HOUSE_BOX = (90, 210, 300, 400)  # x0, y0, x1, y1 of the walls
SUN_CENTRE, SUN_RADIUS = (540, 90), 45

# Every output type the function can answer with, plus the two smart prompt controls, all
# bound to one image; the same labels everywhere (Label Studio copies none between them).
LABEL_CONFIG = """<View>
  <Image name="image" value="$image" zoom="true"/>
  <KeyPointLabels name="point" toName="image" smart="true"><Label value="object"/></KeyPointLabels>
  <RectangleLabels name="box" toName="image" smart="true"><Label value="object"/></RectangleLabels>
  <BrushLabels name="brush" toName="image"><Label value="object"/></BrushLabels>
  <PolygonLabels name="polygon" toName="image"><Label value="object"/></PolygonLabels>
  <Brush name="brush_plain" toName="image"/>
  <Polygon name="polygon_plain" toName="image"/>
  <Rectangle name="box_plain" toName="image"/>
</View>"""


def sample_pixels() -> np.ndarray:
    """(480, 640, 3) uint8 RGB: sky and grass, a sun, a house with a roof and door, a ball."""
    w, h = SAMPLE_SIZE
    sky = np.linspace((120, 170, 230), (200, 225, 245), 300).astype(np.uint8)
    img = np.empty((h, w, 3), np.uint8)
    img[:300] = sky[:, None, :]
    img[300:] = (96, 160, 72)
    canvas = Image.fromarray(img)
    draw = ImageDraw.Draw(canvas)
    sx, sy = SUN_CENTRE
    draw.ellipse((sx - SUN_RADIUS, sy - SUN_RADIUS, sx + SUN_RADIUS, sy + SUN_RADIUS), fill=(250, 210, 60))
    x0, y0, x1, y1 = HOUSE_BOX
    draw.rectangle(HOUSE_BOX, fill=(200, 90, 70))
    draw.polygon([(x0 - 20, y0), ((x0 + x1) // 2, y0 - 100), (x1 + 20, y0)], fill=(110, 60, 50))
    draw.rectangle((x0 + 85, y1 - 90, x0 + 125, y1), fill=(90, 60, 40))
    draw.rectangle((x0 + 25, y0 + 35, x0 + 65, y0 + 75), fill=(235, 240, 250))
    bx, by = BALL_CENTRE
    r = BALL_RADIUS
    draw.ellipse((bx - r, by - r, bx + r, by + r), fill=(40, 90, 200))
    draw.ellipse((bx - r // 2, by - r // 2, bx - r // 6, by - r // 6), fill=(110, 150, 235))
    return np.asarray(canvas)


@functools.lru_cache(maxsize=1)
def sample_png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(sample_pixels()).save(buf, "PNG", optimize=True)
    return buf.getvalue()
