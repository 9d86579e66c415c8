"""Turn a drawing or a photo of a digit into a 28x28 image prepared the way MNIST's were.

MNIST digits were size-normalized to fit a 20x20 box (aspect ratio kept) and then centred in the
28x28 field by their centre of mass. A raw downscale of a canvas drawing looks nothing like that
(thin, off-centre, touching the edges), and a model trained on MNIST misreads it; doing the same
preprocessing makes drawn digits land in the training distribution.
"""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image, ImageOps

BOX = 20  # MNIST's digit box inside the 28x28 field
SIZE = 28


def decode_data_url(data_url: str) -> Image.Image:
    """``data:image/png;base64,...`` -> PIL image."""
    _, _, payload = data_url.partition(",")
    return Image.open(io.BytesIO(base64.b64decode(payload)))


def to_gray(image: Image.Image, *, invert_light_background: bool = True) -> np.ndarray:
    """Grayscale float array in [0, 1] with the digit bright on dark, as MNIST stores it."""
    if image.mode in ("RGBA", "LA") or "transparency" in image.info:
        # Transparent pixels count as background (black) behind the strokes.
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    gray = np.asarray(ImageOps.grayscale(image), dtype=np.float32) / 255.0
    if invert_light_background and float(np.median(gray)) > 0.5:
        gray = 1.0 - gray  # dark ink on white paper -> white on black
    return gray


def mnistify(image: Image.Image | np.ndarray) -> np.ndarray:
    """(28, 28) float32 in [0, 1]: digit cropped, fit into 20x20, centred by mass."""
    gray = image if isinstance(image, np.ndarray) else to_gray(image)
    gray = np.clip(gray.astype(np.float32), 0.0, 1.0)
    ys, xs = np.nonzero(gray > 0.1)
    if len(ys) == 0:
        return np.zeros((SIZE, SIZE), np.float32)
    crop = gray[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1]
    h, w = crop.shape
    scale = BOX / max(h, w)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    small = Image.fromarray((crop * 255).astype(np.uint8)).resize(
        (new_w, new_h), Image.Resampling.LANCZOS)
    digit = np.asarray(small, dtype=np.float32) / 255.0
    out = np.zeros((SIZE, SIZE), np.float32)
    top, left = (SIZE - new_h) // 2, (SIZE - new_w) // 2
    out[top: top + new_h, left: left + new_w] = digit
    # Shift so the centre of mass sits at the field's centre (MNIST's final step).
    total = out.sum()
    if total > 0:
        cy = (out.sum(1) * np.arange(SIZE)).sum() / total
        cx = (out.sum(0) * np.arange(SIZE)).sum() / total
        dy, dx = round(SIZE / 2 - 0.5 - cy), round(SIZE / 2 - 0.5 - cx)
        out = np.roll(out, (dy, dx), axis=(0, 1))
    return out


def to_png(pixels: np.ndarray, scale: int = 6) -> bytes:
    """A (28, 28) [0, 1] array as an upscaled PNG for display."""
    img = Image.fromarray((np.clip(pixels, 0, 1) * 255).astype(np.uint8))
    img = img.resize((pixels.shape[1] * scale, pixels.shape[0] * scale), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
