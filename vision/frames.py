"""Frame intake: JPEG decoding and frame checks that turn bad input into ``InvalidFrame``.

Nothing here crashes on hostile bytes: every problem becomes
``ioc.errors.InvalidFrame(reason, message)`` with one of the reason codes in
``SKIP_REASONS``, which the analyzer counts.
"""

from __future__ import annotations

from typing import Final

import cv2
import numpy as np

from ioc.errors import InvalidFrame

__all__ = [
    "MAX_JPEG_BYTES",
    "MAX_SIDE",
    "MIN_SIDE",
    "SKIP_REASONS",
    "check_frame",
    "decode_jpeg",
    "fit_width",
]

MIN_SIDE: Final = 16
"""Smallest accepted width and height; smaller frames (1xN strips...) are ``bad_size``."""
MAX_SIDE: Final = 8192
MAX_JPEG_BYTES: Final = 32 * 1024 * 1024

SKIP_REASONS: Final = (
    "empty",          # no bytes / zero-size array
    "too_large",      # more bytes or pixels than any camera sends
    "not_jpeg",       # no JPEG start-of-image marker
    "truncated",      # no end-of-image marker: the stream was cut
    "corrupt_jpeg",   # libjpeg could not decode it
    "bad_size",       # under MIN_SIDE or over MAX_SIDE
    "bad_channels",   # not gray, BGR or BGRA
    "bad_dtype",      # not 8-bit
    "bad_ts",         # timestamp not a finite number
    "out_of_order",   # timestamp older than the previous frame's
    "error",          # an analyzer failed unexpectedly (logged with the camera id)
    "stale",          # shed by the stream agent before analysis: older than its max lag
)

_REDUCE_FLAGS: Final = {
    1: cv2.IMREAD_COLOR,
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}


def decode_jpeg(data: bytes, *, reduce: int = 1) -> np.ndarray:
    """Decode JPEG bytes to a BGR ``uint8`` array of shape ``(h, w, 3)``.

    ``reduce`` (1, 2, 4 or 8) lets libjpeg decode straight to 1/reduce of the size,
    which is much cheaper than decoding and resizing.

    Raises:
        InvalidFrame: reasons ``empty``, ``too_large`` (bytes, or a frame header that
            declares a side over ``MAX_SIDE``, checked before libjpeg allocates),
            ``not_jpeg``, ``truncated``, ``corrupt_jpeg`` or ``bad_size``.
        ValueError: ``reduce`` is not 1, 2, 4 or 8 (a programming error, not bad input).
    """
    flag = _REDUCE_FLAGS.get(reduce)
    if flag is None:
        raise ValueError(f"reduce must be 1, 2, 4 or 8, got {reduce!r}")
    n = len(data)
    if n == 0:
        raise InvalidFrame("empty", "frame has 0 bytes, expected a JPEG image")
    if n > MAX_JPEG_BYTES:
        raise InvalidFrame("too_large", f"frame has {n} bytes, expected at most {MAX_JPEG_BYTES}")
    if data[:2] != b"\xff\xd8":
        raise InvalidFrame(
            "not_jpeg", f"frame starts with {bytes(data[:4]).hex()}, expected JPEG marker ffd8"
        )
    # libjpeg fills a cut-off image with gray and only warns, so a truncated frame would
    # decode "fine": require the end-of-image marker (some encoders pad with zeros).
    if bytes(data[-64:]).rstrip(b"\x00")[-2:] != b"\xff\xd9":
        raise InvalidFrame(
            "truncated", f"JPEG of {n} bytes has no end-of-image marker ffd9 (stream cut?)"
        )
    side = _declared_side(data)
    if side > MAX_SIDE:  # a "JPEG bomb": libjpeg would allocate and decode it all first
        raise InvalidFrame("too_large", f"JPEG of {n} bytes declares a side of {side} px, "
                           f"expected at most {MAX_SIDE}")
    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        img = cv2.imdecode(buf, flag)
    except cv2.error as exc:  # pragma: no cover - imdecode returns None on bad data
        raise InvalidFrame("corrupt_jpeg", f"JPEG of {n} bytes failed to decode: {exc}") from exc
    if img is None or img.size == 0:
        raise InvalidFrame("corrupt_jpeg", f"JPEG of {n} bytes could not be decoded")
    return check_frame(img)


# Start-of-frame markers (baseline, progressive, ...); C4/C8/CC are other segments.
_SOF_MARKERS: Final = tuple(bytes([0xFF, m]) for m in range(0xC0, 0xD0)
                            if m not in (0xC4, 0xC8, 0xCC))


def _declared_side(data: bytes) -> int:
    """The largest height or width any start-of-frame header in ``data`` declares.

    Scans for every SOFn marker (libjpeg skips bytes before a marker too; entropy-coded
    data cannot hold one, 0xFF is stuffed there), so a bomb cannot hide its header.
    """
    side = 0
    view = bytes(data)
    for marker in _SOF_MARKERS:
        i = view.find(marker)
        while i >= 0:
            if i + 9 <= len(view):
                side = max(side, int.from_bytes(view[i + 5:i + 7], "big"),
                           int.from_bytes(view[i + 7:i + 9], "big"))
            i = view.find(marker, i + 2)
    return side


def check_frame(frame: object) -> np.ndarray:
    """Return ``frame`` as a C-contiguous BGR ``uint8`` array, or raise ``InvalidFrame``.

    Gray ``(h, w)`` / ``(h, w, 1)`` and BGRA ``(h, w, 4)`` frames are converted to BGR.

    Raises:
        InvalidFrame: reasons ``empty``, ``bad_dtype``, ``bad_channels``, ``bad_size``,
            ``too_large``.
    """
    if not isinstance(frame, np.ndarray):
        raise InvalidFrame("bad_dtype", f"frame is a {type(frame).__name__}, expected numpy.ndarray")
    if frame.size == 0:
        raise InvalidFrame("empty", f"frame has shape {frame.shape}, expected non-empty (h, w, 3)")
    if frame.dtype != np.uint8:
        raise InvalidFrame("bad_dtype", f"frame dtype is {frame.dtype}, expected uint8")
    if frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] == 1):
        frame = cv2.cvtColor(frame.reshape(frame.shape[:2]), cv2.COLOR_GRAY2BGR)
    elif frame.ndim == 3 and frame.shape[2] == 4:
        frame = cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    elif not (frame.ndim == 3 and frame.shape[2] == 3):
        raise InvalidFrame(
            "bad_channels", f"frame has shape {frame.shape}, expected (h, w), (h, w, 3) or (h, w, 4)"
        )
    h, w = frame.shape[:2]
    if h > MAX_SIDE or w > MAX_SIDE:
        raise InvalidFrame("too_large", f"frame is {w}x{h}, expected at most {MAX_SIDE} px a side")
    if h < MIN_SIDE or w < MIN_SIDE:
        raise InvalidFrame("bad_size", f"frame is {w}x{h}, expected at least {MIN_SIDE} px a side")
    return np.ascontiguousarray(frame)


def fit_width(frame: np.ndarray, width: int) -> np.ndarray:
    """Downscale ``frame`` to ``width`` px wide (aspect kept); never upscales."""
    h, w = frame.shape[:2]
    if w <= width:
        return frame
    height = max(1, round(h * width / w))
    return cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)
