"""The in-memory store of the images `response_format = "url"` serves:
bounded in total bytes (the oldest go first), each image with an expiry.
One per server, owned by the application state (router/deps.py's Yard)."""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass

STORE_MAX_BYTES = 256 * 1024 * 1024


@dataclass
class StoredImage:
    data: bytes
    output_format: str
    expires: float  # time.monotonic()


class ImageStore:
    """Images served by URL: bounded in total bytes, each with an expiry."""

    def __init__(self, max_bytes: int = STORE_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self.items: OrderedDict[str, StoredImage] = OrderedDict()  # oldest first
        self.size = 0

    def put(self, data: bytes, output_format: str, ttl_seconds: float) -> str:
        self._drop_expired()
        while self.items and self.size + len(data) > self.max_bytes:
            self._remove(next(iter(self.items)))
        image_id = secrets.token_urlsafe(24)
        self.items[image_id] = StoredImage(data, output_format, time.monotonic() + ttl_seconds)
        self.size += len(data)
        return image_id

    def get(self, image_id: str) -> StoredImage | None:
        self._drop_expired()
        return self.items.get(image_id)

    def _drop_expired(self) -> None:
        now = time.monotonic()
        for image_id in [i for i, item in self.items.items() if item.expires <= now]:
            self._remove(image_id)

    def _remove(self, image_id: str) -> None:
        item = self.items.pop(image_id)
        self.size -= len(item.data)
