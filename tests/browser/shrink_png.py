"""Shrink wall screenshots for docs/img: a 256-colour palette PNG (about a third of the size).

    python -m tests.browser.shrink_png artifacts/wall-operator-1920x1080.png ... --out docs/img

The palette is k-means (OpenCV) over a sample of the pixels; each pixel takes the nearest
palette colour through a 32x32x32 lookup table. No dithering: the wall is flat colours and
text, where dithering only adds noise (and bytes).
"""

from __future__ import annotations

import argparse
import struct
import zlib
from pathlib import Path

import numpy as np

__all__ = ["palette_png"]

_SAMPLE = 60_000


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def palette_png(src: Path, dst: Path, *, colors: int = 256, seed: int = 7) -> tuple[int, int]:
    """Write ``src`` as an indexed PNG of at most ``colors`` colours to ``dst``; (bytes in, out)."""
    import cv2

    img = cv2.imread(str(src), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"expected a readable image at {src}, got nothing")
    bgr = np.asarray(img, dtype=np.uint8)
    h, w = bgr.shape[:2]
    px = bgr.reshape(-1, 3)
    rng = np.random.default_rng(seed)
    sample = px[rng.choice(len(px), min(_SAMPLE, len(px)), replace=False)].astype(np.float32)
    cv2.setRNGSeed(seed)
    labels = np.zeros((len(sample), 1), np.int32)
    _, _, found = cv2.kmeans(sample, colors, labels,
                               (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 0.5),
                               2, cv2.KMEANS_PP_CENTERS)
    centers = np.asarray(found, dtype=np.float32)
    # Nearest palette colour of every 5-bit-per-channel colour, then a table lookup per pixel.
    grid = (np.stack(np.meshgrid(*[np.arange(32)] * 3, indexing="ij"), -1).reshape(-1, 3) * 8 + 4)
    d = ((grid[:, None, :].astype(np.float32) - centers[None, :, :]) ** 2).sum(-1)
    lut = d.argmin(1).astype(np.uint8)
    q = (px >> 3).astype(np.int32)
    idx = lut[(q[:, 0] << 10) | (q[:, 1] << 5) | q[:, 2]].reshape(h, w)
    rgb = np.clip(np.rint(centers[:, ::-1]), 0, 255).astype(np.uint8)  # BGR -> RGB
    raw = np.hstack([np.zeros((h, 1), np.uint8), idx]).tobytes()  # filter 0 on every row
    png = (b"\x89PNG\r\n\x1a\n"
           + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 3, 0, 0, 0))
           + _chunk(b"PLTE", rgb.tobytes())
           + _chunk(b"IDAT", zlib.compress(raw, 9))
           + _chunk(b"IEND", b""))
    dst.write_bytes(png)
    return src.stat().st_size, len(png)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("images", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, required=True, help="directory for the shrunk images")
    ap.add_argument("--colors", type=int, default=256)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for src in args.images:
        before, after = palette_png(src, args.out / src.name, colors=args.colors)
        print(f"{src} -> {args.out / src.name}: {before // 1024} KiB -> {after // 1024} KiB")


if __name__ == "__main__":
    main()
