"""Charts drawn with Pillow primitives (matplotlib is not a dependency)."""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont


def bar_chart(
    values: dict, mean: float, path: str, title: str = "", width: int = 900, height: int = 420
) -> None:
    """A vertical bar chart of ``{name: value or None}`` with a dashed line at ``mean`` (paper Fig. 4)."""
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    left, right, top, bottom = 60, 20, 40, 110
    names = list(values)
    finite = [v for v in values.values() if v is not None]
    vmax = max(finite + [mean if mean == mean else 0.0, 1e-9]) * 1.1
    d.text((left, 10), title, fill="black", font=font)
    d.line([(left, top), (left, height - bottom), (width - right, height - bottom)], fill="black")
    for i in range(5):
        v = vmax * i / 4
        y = height - bottom - (height - bottom - top) * i / 4
        d.line([(left - 4, y), (left, y)], fill="black")
        d.text((5, y - 6), f"{v:.2f}", fill="black", font=font)
    slot = (width - left - right) / max(len(names), 1)
    for i, name in enumerate(names):
        v = values[name]
        x0 = left + i * slot + slot * 0.15
        x1 = left + (i + 1) * slot - slot * 0.15
        if v is not None:
            y = height - bottom - (height - bottom - top) * v / vmax
            d.rectangle([x0, y, x1, height - bottom], fill=(70, 110, 180))
        label = Image.new("RGBA", (100, 14), (255, 255, 255, 0))
        ImageDraw.Draw(label).text((0, 0), name[:15], fill="black", font=font)
        label = label.rotate(90, expand=True)
        img.paste(label, (int((x0 + x1) / 2) - 7, height - bottom + 4), label)
    if mean == mean:
        y = height - bottom - (height - bottom - top) * mean / vmax
        for x in range(left, width - right, 12):
            d.line([(x, y), (x + 6, y)], fill=(200, 40, 40), width=2)
        d.text((width - right - 90, y - 14), f"mean {mean:.3f}", fill=(200, 40, 40), font=font)
    img.save(path)
