"""Turning generated token bytes into text to hand out, for any adapter
that runs its own decode loop.

`TextStream` takes each token's bytes as it is sampled and returns the text
that can be sent now: only complete UTF-8 characters (a character split
over several tokens waits for its last byte; bytes that can never form one
become U+FFFD at once), never a stop string (generation ends there and the
stop string is not returned), and never text that may still turn out to be
the start of a stop string (it is held back until it cannot).
"""

from __future__ import annotations

import codecs


def partial_stop_suffix(text: str, stops: list[str]) -> int:
    """Length of the longest end of `text` that begins some stop string
    (shorter than that stop string: a whole one is a match, not a prefix)."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if stop.startswith(text[-size:]):
                longest = size
                break
    return longest


def find_stop(text: str, stops: list[str]) -> tuple[int, str | None]:
    """Where the earliest stop string in `text` begins and which it is, or (-1, None)."""
    return min(((text.find(s), s) for s in stops if s in text), default=(-1, None))


def utf8_decoder() -> codecs.IncrementalDecoder:
    """Decodes token bytes as they come: a character split over several
    tokens waits for its last byte; bytes that can never form one become
    U+FFFD at once. `reset()` drops a character cut off at the end."""
    return codecs.getincrementaldecoder("utf-8")(errors="replace")


class TextStream:
    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in stops if s]
        self.stopped = False  # a stop string was found: the generation is over
        self.stop_string: str | None = None  # which one
        self._decoder = utf8_decoder()
        self._held = ""

    def feed(self, data: bytes) -> str:
        """Add one token's bytes; return the text that can be handed out now.
        Once a stop string is found, `stopped` is set and the text from the
        stop string on is dropped."""
        if self.stopped:
            return ""
        self._held += self._decoder.decode(data)
        hit, matched = find_stop(self._held, self.stops)
        if hit >= 0:
            out, self._held = self._held[:hit], ""
            self.stopped, self.stop_string = True, matched
            return out
        cut = len(self._held) - partial_stop_suffix(self._held, self.stops)
        out, self._held = self._held[:cut], self._held[cut:]
        return out

    def finish(self) -> str:
        """The text still held back, when the generation ends without a stop
        string. Bytes of a character cut off by the end (max_tokens) are
        dropped, not shown as U+FFFD."""
        out, self._held = self._held, ""
        self._decoder.reset()
        return "" if self.stopped else out
