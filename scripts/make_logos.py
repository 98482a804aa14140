#!/usr/bin/env python3
"""Draw the kernel's logos: kernel/kernelspec/logo-svg.svg, logo-32x32.png, logo-64x64.png.

One list of shapes (below) is written out as the SVG and rasterised, with pure
Python (a supersampling rasteriser and a zlib + struct PNG writer), into the
two PNGs, so the three files always show the same picture. The logos are
committed: run this only when the picture changes.

    python3 scripts/make_logos.py [OUTPUT_DIR]     # default: kernel/kernelspec

The picture: three stacked container layers, the front one a terminal with a
`>_` prompt (a shell inside a layered container).
"""

from __future__ import annotations

import itertools
import struct
import sys
import zlib
from pathlib import Path

VIEW = 64  # the SVG's viewBox is 0 0 VIEW VIEW
SAMPLES = 8  # supersamples per pixel along each axis

# Shapes, back to front. ("rect", x, y, w, h, rx, colour) is a filled rounded
# rectangle; ("stroke", [(x, y), ...], width, colour) a polyline with round caps
# and joins (the union of capsules around its segments).
SHAPES: list[tuple] = [
    ("rect", 14, 4, 46, 46, 7, "#93c5fd"),  # the bottom layer (back)
    ("rect", 9, 9, 46, 46, 7, "#3b82f6"),  # the middle layer
    ("rect", 4, 14, 46, 46, 7, "#1e293b"),  # the top layer: a terminal
    ("stroke", [(14, 28), (22, 36), (14, 44)], 5, "#4ade80"),  # the prompt `>`
    ("stroke", [(27, 45), (38, 45)], 5, "#f8fafc"),  # the cursor `_`
]


def _rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def svg() -> str:
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{VIEW}" height="{VIEW}" '
        f'viewBox="0 0 {VIEW} {VIEW}">',
        "  <title>Bash (sandbox)</title>",
    ]
    for shape in SHAPES:
        if shape[0] == "rect":
            _, x, y, w, h, r, colour = shape
            out.append(
                f'  <rect x="{x}" y="{y}" width="{w}" height="{h}" rx="{r}" fill="{colour}"/>'
            )
        else:
            _, points, width, colour = shape
            pts = " ".join(f"{px},{py}" for px, py in points)
            out.append(
                f'  <polyline points="{pts}" fill="none" stroke="{colour}" '
                f'stroke-width="{width}" stroke-linecap="round" stroke-linejoin="round"/>'
            )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _inside(shape: tuple, x: float, y: float) -> bool:
    if shape[0] == "rect":
        _, rx0, ry0, w, h, r, _ = shape
        if not (rx0 <= x <= rx0 + w and ry0 <= y <= ry0 + h):
            return False
        # Distance to the inner rectangle whose corners are the arcs' centres.
        cx = min(max(x, rx0 + r), rx0 + w - r)
        cy = min(max(y, ry0 + r), ry0 + h - r)
        return (x - cx) ** 2 + (y - cy) ** 2 <= r * r
    _, points, width, _ = shape
    half2 = (width / 2) ** 2
    for (ax, ay), (bx, by) in itertools.pairwise(points):
        dx, dy = bx - ax, by - ay
        t = ((x - ax) * dx + (y - ay) * dy) / (dx * dx + dy * dy)
        t = min(1.0, max(0.0, t))
        if (x - ax - t * dx) ** 2 + (y - ay - t * dy) ** 2 <= half2:
            return True
    return False


def raster(size: int) -> list[bytes]:
    """RGBA rows of the picture at size x size pixels (straight alpha)."""
    scale = VIEW / size
    colours = [_rgb(s[-1]) for s in SHAPES]
    n = SAMPLES * SAMPLES
    rows = []
    for py in range(size):
        row = bytearray()
        for px in range(size):
            r = g = b = hits = 0
            for sy in range(SAMPLES):
                y = (py + (sy + 0.5) / SAMPLES) * scale
                for sx in range(SAMPLES):
                    x = (px + (sx + 0.5) / SAMPLES) * scale
                    for i in range(len(SHAPES) - 1, -1, -1):  # the front-most shape wins
                        if _inside(SHAPES[i], x, y):
                            cr, cg, cb = colours[i]
                            r, g, b, hits = r + cr, g + cg, b + cb, hits + 1
                            break
            if hits:
                row += bytes((round(r / hits), round(g / hits), round(b / hits)))
                row.append(round(255 * hits / n))
            else:
                row += b"\0\0\0\0"
        rows.append(bytes(row))
    return rows


def png(rows: list[bytes]) -> bytes:
    height, width = len(rows), len(rows[0]) // 4

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)  # 8-bit RGBA
    data = zlib.compress(b"".join(b"\0" + row for row in rows), 9)  # filter 0 per row
    signature = b"\x89PNG\r\n\x1a\n"
    return signature + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def main() -> None:
    root = Path(__file__).resolve().parent.parent
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else root / "kernel" / "kernelspec"
    out.mkdir(parents=True, exist_ok=True)
    (out / "logo-svg.svg").write_text(svg())
    for size in (32, 64):
        (out / f"logo-{size}x{size}.png").write_bytes(png(raster(size)))
    print(f"wrote logo-svg.svg, logo-32x32.png and logo-64x64.png in {out}")


if __name__ == "__main__":
    main()
