"""Writing videos: H.264 through PyAV (libx264) when it is there, else OpenCV's MPEG-4.

Shared by the rendered row videos (:mod:`grape_instances.synthetic.row_video`) and the
annotated videos of :mod:`grape_instances.inference.row_count`.
"""

from __future__ import annotations

import os
from fractions import Fraction

import cv2
import numpy as np

from .errors import GrapeInputError


class VideoWriter:
    """H.264 through PyAV (libx264) when it is there, else OpenCV's MPEG-4 ('mp4v').

    ``write`` takes BGR uint8 frames of one size; ``close`` finishes the file.
    """

    def __init__(self, path: str | os.PathLike, fps: float, width: int, height: int,
                 crf: int = 23, codec: str = "auto") -> None:
        self.path = str(path)
        self.codec = None
        self._av = self._cv = None
        if codec in ("auto", "h264"):
            try:
                import av  # noqa: PLC0415  (optional: supervision brings it)

                self._av = av.open(self.path, "w", format="mp4")
                fps_q = _fps_fraction(fps)
                self._stream = self._av.add_stream("libx264", rate=fps_q)
                self._stream.width, self._stream.height = width + width % 2, height + height % 2
                self._stream.pix_fmt = "yuv420p"
                self._stream.options = {"crf": str(int(crf)), "preset": "veryfast"}
                self.codec = "h264"
            except Exception as e:  # noqa: BLE001  (no PyAV or no libx264: fall back)
                if self._av is not None:
                    self._av.close()
                    self._av = None
                if codec == "h264":
                    raise GrapeInputError(f"{path}: cannot write H.264 ({e})") from None
        if self._av is None:
            fourcc = {"auto": "mp4v", "mp4v": "mp4v", "mjpg": "MJPG"}.get(codec, "mp4v")
            self._cv = cv2.VideoWriter(self.path, cv2.VideoWriter_fourcc(*fourcc), fps,
                                       (width, height))
            if not self._cv.isOpened():
                raise GrapeInputError(f"{path}: OpenCV cannot write a {fourcc} video here "
                                      "(missing codec)")
            self.codec = fourcc

    def write(self, frame_bgr: np.ndarray) -> None:
        if self._av is not None:
            import av  # noqa: PLC0415

            h, w = frame_bgr.shape[:2]
            if (w, h) != (self._stream.width, self._stream.height):
                frame_bgr = cv2.copyMakeBorder(frame_bgr, 0, self._stream.height - h, 0,
                                               self._stream.width - w, cv2.BORDER_REPLICATE)
            frame = av.VideoFrame.from_ndarray(frame_bgr, format="bgr24")
            for packet in self._stream.encode(frame):
                self._av.mux(packet)
        else:
            self._cv.write(frame_bgr)

    def close(self) -> None:
        if self._av is not None:
            for packet in self._stream.encode():
                self._av.mux(packet)
            self._av.close()
            self._av = None
        if self._cv is not None:
            self._cv.release()
            self._cv = None


def _fps_fraction(fps: float) -> Fraction:
    return Fraction(fps).limit_denominator(1001)
