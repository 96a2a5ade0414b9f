"""Images in llama-cpp prompts: a multimodal projector (mmproj GGUF) run by
llama.cpp's libmtmd through llama-cpp-python's bindings (`llama_cpp.mtmd_cpp`).

The chat template is rendered with each image part replaced by the media
marker, so that an image sits where the template puts its message's
content; `mtmd_tokenize` then splits the prompt into text chunks (tokens)
and image chunks (preprocessed pixels that encode into a run of
embeddings, each taking one place in the context). An `ImagePrompt` keeps
the chunks until its request ends.

An image's places in a sequence's token list hold sentinel values: negative
(no vocabulary id), derived from the image's SHA-256 (libmtmd's bitmap id)
and the place's index. The engine's prefix matching then treats two
prompts as sharing an image only where they hold the same image bytes at
the same place, so the KV cache of one image is never served for another
(llama-server compares chunk ids the same way, server_tokens in
tools/server); and a prefix cut inside an image is moved back to its start,
since an image is evaluated whole (`ImagePrompt.aligned`).

The engine's decode thread evaluates an image (`Projector.evaluate`:
encode, then decode its embeddings into the sequence's cells with
`mtmd_helper_eval_chunk_single`) between its batch steps, one image a step,
so other sequences wait at most one image encode. Tokenizing and decoding
the image bytes happen on the request's own thread (libmtmd documents
both as thread-safe); encoding is not, and runs only on the decode thread.
"""

from __future__ import annotations

import ctypes
import logging
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelyard.adapters.base import BackendError, InvalidRequestError, ModelLoadError

log = logging.getLogger("modelyard.worker.llama_vision")

# ggml log levels (ggml.h): 2 warn, 3 error, 4 debug, 5 continue the previous line.
_GGML_ERROR = 3
_log_state = {"verbose": False, "last": 0}
_log_callback: Any = None  # the ctypes callback libmtmd calls; kept alive here


def _install_log(lib: Any, verbose: bool) -> None:
    """libmtmd logs every load and encode to stderr unless given a callback:
    pass its lines on only with options.verbose, and its errors always (as
    llama-cpp-python does for llama.cpp's own log)."""
    global _log_callback
    _log_state["verbose"] = verbose
    if _log_callback is not None:
        return
    import llama_cpp

    @llama_cpp.llama_log_callback  # type: ignore[misc]
    def forward(level: int, text: bytes, user_data: Any) -> None:
        if level != 5:
            _log_state["last"] = level
        if _log_state["verbose"] or _log_state["last"] == _GGML_ERROR:
            print(text.decode("utf-8", errors="replace"), end="", flush=True, file=sys.stderr)

    _log_callback = forward
    lib.mtmd_helper_log_set(forward, ctypes.c_void_p(0))


@dataclass
class ImageSpan:
    """Where one image's embeddings go in a sequence's context."""

    start: int
    count: int
    chunk: Any  # its mtmd_input_chunk (owned by the ImagePrompt's chunk list)


class ImagePrompt:
    """A tokenized prompt with images: its token list (sentinels at the
    images' places), the images' spans, and the libmtmd chunks behind them,
    freed by close() (once its request ends)."""

    def __init__(self, lib: Any, chunks: Any, tokens: list[int], spans: list[ImageSpan]) -> None:
        self.lib = lib
        self.chunks = chunks
        self.tokens = tokens
        self.spans = spans

    def at(self, position: int) -> ImageSpan | None:
        """The image whose first place is `position`, if one starts there."""
        for span in self.spans:
            if span.start == position:
                return span
        return None

    def next_start(self, position: int) -> int | None:
        """The first place of the next image at or after `position`."""
        starts = [span.start for span in self.spans if span.start >= position]
        return min(starts) if starts else None

    def aligned(self, keep: int) -> int:
        """`keep` moved back to the start of the image it cuts into, if any:
        a cache may hold an image whole or not at all."""
        for span in self.spans:
            if span.start < keep < span.start + span.count:
                return span.start
        return keep

    def close(self) -> None:
        if self.chunks is not None:
            self.lib.mtmd_input_chunks_free(self.chunks)
            self.chunks = None
            self.spans = []

    def __del__(self) -> None:  # a prompt dropped before it reached the engine
        self.close()


def image_sentinels(image_id: str, count: int) -> list[int]:
    """The values an image's `count` places hold in a token list: negative,
    unique to the image's bytes (its id is their SHA-256) and place."""
    base = int(image_id[:16], 16) if image_id else secrets.randbits(64)
    return [-(1 + (base << 20) + i) for i in range(count)]


class Projector:
    """A loaded mmproj file: an mtmd context over the text model."""

    def __init__(
        self, path: Path, model: Any, *, n_threads: int, n_batch: int, flash_attn: bool, use_gpu: bool, verbose: bool
    ) -> None:
        import llama_cpp
        from llama_cpp import mtmd_cpp

        self.lib = mtmd_cpp
        self.n_batch = n_batch
        _install_log(mtmd_cpp, verbose)
        params = mtmd_cpp.mtmd_context_params_default()
        params.use_gpu = use_gpu
        params.print_timings = verbose
        params.n_threads = n_threads
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attn else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        # A marker of our own, as llama-server makes one: text a user writes
        # (libmtmd's default "<__media__>", say) can never stand for an image.
        self.marker = f"<__media_{secrets.token_hex(8)}__>"
        self._marker_bytes = self.marker.encode()
        params.media_marker = self._marker_bytes
        self.ctx = mtmd_cpp.mtmd_init_from_file(str(path).encode(), model, params)
        if not self.ctx:
            raise ModelLoadError(
                f"llama.cpp could not load the multimodal projector {path} (options.mmproj): not an mmproj GGUF, a "
                "projector type this llama.cpp does not know, or one made for another text model (its embedding size "
                "must match the model's); set options.verbose = true to see llama.cpp's reason"
            )
        if not mtmd_cpp.mtmd_support_vision(self.ctx):
            self.close()
            raise ModelLoadError(f"the multimodal projector {path} (options.mmproj) has no vision encoder (an audio one?)")
        if mtmd_cpp.mtmd_decode_use_mrope(self.ctx):
            # Their images take fewer positions than context places (M-RoPE),
            # which the engine's one-position-per-place bookkeeping cannot express.
            self.close()
            raise ModelLoadError(
                f"the multimodal projector {path} is for a model with M-RoPE positions (Qwen2-VL and its successors), "
                "which this server cannot run yet"
            )

    def tokenize(self, text: str, images: list[bytes], add_special: bool) -> ImagePrompt:
        """Tokenize a rendered prompt holding one marker per image, in order.
        Raises InvalidRequestError for an image libmtmd cannot read."""
        lib = self.lib
        bitmaps = []
        try:
            for index, data in enumerate(images):
                buffer = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
                bitmap = lib.mtmd_helper_bitmap_init_from_buf(self.ctx, buffer, len(data), False)
                if not bitmap:
                    raise InvalidRequestError(f"image {index + 1} of the request could not be decoded", "messages")
                bitmaps.append(bitmap)
            chunks = lib.mtmd_input_chunks_init()
            if not chunks:
                raise BackendError("libmtmd could not allocate input chunks")
            prompt = ImagePrompt(lib, chunks, [], [])
            encoded = text.encode("utf-8")
            given = lib.mtmd_input_text()
            given.text = encoded
            given.text_len = len(encoded)
            given.add_special = add_special
            given.parse_special = True
            array = (lib.mtmd_bitmap_p_ctypes * max(1, len(bitmaps)))(*bitmaps)
            result = lib.mtmd_tokenize(self.ctx, chunks, ctypes.byref(given), array, len(bitmaps))
        finally:
            for bitmap in bitmaps:
                lib.mtmd_bitmap_free(bitmap)
        if result != 0:
            prompt.close()
            if result == 1:
                raise InvalidRequestError(
                    f"the rendered prompt places {text.count(self.marker)} images, the request has {len(images)}", "messages"
                )
            raise InvalidRequestError("an image of the request could not be prepared for this model", "messages")
        self._read_chunks(prompt)
        return prompt

    def _read_chunks(self, prompt: ImagePrompt) -> None:
        lib = self.lib
        for index in range(lib.mtmd_input_chunks_size(prompt.chunks)):
            chunk = lib.mtmd_input_chunks_get(prompt.chunks, index)
            kind = lib.mtmd_input_chunk_get_type(chunk)
            if kind == lib.MTMD_INPUT_CHUNK_TYPE_TEXT:
                n = ctypes.c_size_t()
                tokens = lib.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(n))
                prompt.tokens.extend(tokens[i] for i in range(n.value))
                continue
            count = int(lib.mtmd_input_chunk_get_n_tokens(chunk))
            if count > self.n_batch and lib.mtmd_decode_use_non_causal(self.ctx, chunk):
                # libmtmd decodes an image in n_batch pieces; attending both ways (Gemma 3), each piece
                # would see only itself: a wrong answer given without a word, so refused instead.
                raise InvalidRequestError(
                    f"an image takes {count} tokens, more than this model's n_batch ({self.n_batch}); its projector "
                    f"must see a whole image in one batch: raise [models.options] n_batch to {count} or more", "messages"
                )
            raw_id = lib.mtmd_input_chunk_get_id(chunk)
            image_id = raw_id.decode() if raw_id else ""
            prompt.spans.append(ImageSpan(len(prompt.tokens), count, chunk))
            prompt.tokens.extend(image_sentinels(image_id, count))

    def evaluate(self, llama_ctx: Any, span: ImageSpan, seq_id: int, n_past: int, n_batch: int) -> None:
        """Encode the image and decode its embeddings into sequence `seq_id`
        from position `n_past` (the decode thread only: not thread-safe)."""
        import llama_cpp

        new_n_past = llama_cpp.llama_pos(0)
        result = self.lib.mtmd_helper_eval_chunk_single(
            self.ctx, llama_ctx, span.chunk, n_past, seq_id, n_batch, False, ctypes.byref(new_n_past)
        )
        if result != 0:
            raise BackendError(f"llama.cpp could not evaluate an image of the prompt (libmtmd returned {result})")

    def close(self) -> None:
        if self.ctx:
            self.lib.mtmd_free(self.ctx)
            self.ctx = None


def flatten_images(messages: list[dict[str, Any]], marker: str | None) -> tuple[list[dict[str, Any]], list[bytes]]:
    """Messages with content parts (adapters/base.py ChatRequest) as messages
    with string content: text parts joined as they are (as Hugging Face's
    chat templates join them), each image part replaced by `marker`; and the
    images' PNG bytes in the order their markers come. With `marker` None
    (a model without a projector) an image part is refused."""
    out: list[dict[str, Any]] = []
    images: list[bytes] = []
    for message in messages:
        content = message.get("content")
        if not isinstance(content, list):
            out.append(message)
            continue
        pieces = []
        for part in content:
            if part.get("type") == "image":
                if marker is None:
                    raise InvalidRequestError(
                        "this model takes no images: it is loaded without a multimodal projector (options.mmproj)", "messages"
                    )
                images.append(part["image"].png)
                pieces.append(marker)
            else:
                pieces.append(part.get("text") or "")
        out.append({**message, "content": "".join(pieces)})
    return out, images


def typed_content(messages: list[dict[str, Any]], marker: str | None) -> list[dict[str, Any]]:
    """String contents as lists of text parts, each marker a part of its own:
    for chat templates that read a message's content as typed parts (a list)
    rather than a string, as llama.cpp renders them."""
    out = []
    for message in messages:
        content = message.get("content")
        if not isinstance(content, str):
            out.append(message)
            continue
        parts: list[dict[str, str]] = []
        for index, piece in enumerate(content.split(marker) if marker else [content]):
            if index:
                parts.append({"type": "text", "text": marker})
            if piece:
                parts.append({"type": "text", "text": piece})
        out.append({**message, "content": parts or [{"type": "text", "text": ""}]})
    return out
