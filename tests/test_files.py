"""The Files API through the official openai SDK (client.files) and the
anthropic SDK (client.beta.files), against one store: upload, list and its
pages, retrieve, download, delete, expiry, owners, limits, bad input, and
persistence across a restart. No model is needed."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.conftest import scripted_model_toml

import anthropic
import httpx
import openai
import pytest

ALICE = "alice-files-key-1"
BOB = "bob-files-key-2"
MAX_FILE = 256 * 1024
MAX_PER_KEY = 600 * 1024
BODY_LIMIT = 64 * 1024  # below MAX_FILE: uploads are held to max_file_bytes, not body_limit


def config(storage: Path) -> str:
    keys = "".join(f'[[auth.keys]]\nname = "{n}"\nkey = "{k}"\nmetrics = true\n' for n, k in (("alice", ALICE), ("bob", BOB)))
    return (
        f'[server]\nbody_limit = {BODY_LIMIT}\n\n[storage]\npath = "{storage}"\nmax_file_bytes = {MAX_FILE}\n'
        f"max_bytes_per_key = {MAX_PER_KEY}\nmin_file_ttl_seconds = 1\n\n{keys}"
        + scripted_model_toml("painter", "image", extra="[models.image]\nurl_ttl_seconds = 2\n", options="image_steps = 1\n")
    )


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("storage") / "responses.sqlite3"


@pytest.fixture(scope="module")
def server(server_factory: Any, storage: Path) -> Any:
    return server_factory(config(storage), health_key=ALICE)


def client_for(server: Any, key: str = ALICE) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=key, max_retries=0, timeout=30)


@pytest.fixture(scope="module")
def client(server: Any) -> Iterator[openai.OpenAI]:
    with client_for(server) as c:
        yield c


@pytest.fixture(scope="module")
def bob(server: Any) -> Iterator[openai.OpenAI]:
    with client_for(server, BOB) as c:
        yield c


def files_on_disk(storage: Path) -> list[str]:
    return sorted(os.listdir(storage.parent / "files"))


def upload(client: openai.OpenAI, data: bytes, name: str = "notes.txt", purpose: Any = "user_data", **kw: Any) -> Any:
    return client.files.create(file=(name, data), purpose=purpose, **kw)


def test_round_trip(client: openai.OpenAI, storage: Path) -> None:
    data = os.urandom(100_000)  # over body_limit: uploads have their own limit
    before = time.time()
    made = upload(client, data, "data.bin", "assistants")
    assert made.id.startswith("file-") and made.object == "file" and made.bytes == len(data)
    assert made.filename == "data.bin" and made.purpose == "assistants" and made.status == "processed"
    assert before - 1 <= made.created_at <= time.time() + 1 and made.expires_at is None
    assert made.id in files_on_disk(storage)
    assert client.files.retrieve(made.id) == made
    content = client.files.with_raw_response.content(made.id)
    assert content.content == data
    assert content.headers["content-type"] == "application/octet-stream"
    deleted = client.files.delete(made.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (made.id, "file", True)
    assert made.id not in files_on_disk(storage)
    for call in (client.files.retrieve, client.files.content, client.files.delete):
        with pytest.raises(openai.NotFoundError) as caught:
            call(made.id)
        assert caught.value.body["code"] == "file_not_found"  # type: ignore[index]


def test_numbers_that_are_not_plain_digits_are_400s(server: Any, client: openai.OpenAI, storage: Path) -> None:
    headers = {"authorization": f"Bearer {ALICE}"}
    for limit in ("\u00b2", "--5", "9" * 40):
        got = httpx.get(f"{server.base_url}/v1/files", params={"limit": limit}, headers=headers)
        assert got.status_code == 400 and got.json()["error"]["param"] == "limit", got.text
    with pytest.raises(openai.BadRequestError):
        upload(client, b"x" * 5000, expires_after={"anchor": "created_at", "seconds": "\u00b2"})
    assert not list((storage.parent / "files").glob(".upload-*"))


def test_content_cannot_run_as_a_page_of_this_origin(client: openai.OpenAI) -> None:
    made = upload(client, b"<script>alert(1)</script>", "page.html")
    headers = client.files.with_raw_response.content(made.id).headers
    assert headers["content-type"].startswith("text/html")
    assert headers["x-content-type-options"] == "nosniff" and headers["content-security-policy"] == "sandbox"
    client.files.delete(made.id)


def test_content_type_is_guessed_from_the_name(client: openai.OpenAI) -> None:
    for name, expected in (("a.json", "application/json"), ("p.png", "image/png"), ("t.txt", "text/plain"), ("r.pdf", "application/pdf")):
        made = upload(client, b"x", name)
        assert client.files.with_raw_response.content(made.id).headers["content-type"].startswith(expected)
        client.files.delete(made.id)


def test_list_pages(server: Any) -> None:
    # Within a purpose no other test of this module uses.
    with client_for(server) as client:
        made = [upload(client, f"{i}".encode(), f"f{i}.jsonl", "evals").id for i in range(5)]
        newest_first = made[::-1]
        page = client.files.list(purpose="evals", limit=2)
        assert [f.id for f in page.data] == newest_first[:2] and page.has_more
        raw = client.files.with_raw_response.list(purpose="evals", limit=2).http_response.json()
        assert raw["object"] == "list" and raw["first_id"] == newest_first[0] and raw["last_id"] == newest_first[1]
        assert [f.id for f in client.files.list(purpose="evals", limit=2)] == newest_first  # the SDK follows `after`
        second = client.files.list(purpose="evals", limit=2, after=newest_first[1])
        assert [f.id for f in second.data] == newest_first[2:4] and second.has_more
        last = client.files.list(purpose="evals", limit=3, after=newest_first[1])
        assert [f.id for f in last.data] == newest_first[2:] and not last.has_more
        ascending = client.files.list(purpose="evals", order="asc", limit=10)
        assert [f.id for f in ascending.data] == made and not ascending.has_more
        assert [f.id for f in client.files.list(purpose="evals", order="asc", limit=2, after=made[1]).data] == made[2:4]
        empty = client.files.with_raw_response.list(purpose="batch").http_response.json()
        assert empty == {"object": "list", "data": [], "first_id": None, "last_id": None, "has_more": False}
        for file_id in made:
            client.files.delete(file_id)


def test_expiry(client: openai.OpenAI, storage: Path) -> None:
    made = upload(client, b"short-lived", expires_after={"anchor": "created_at", "seconds": 2})
    assert made.expires_at == made.created_at + 2
    assert client.files.retrieve(made.id).id == made.id
    time.sleep(3.1)
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(made.id)
    with pytest.raises(openai.NotFoundError):
        client.files.content(made.id)
    assert made.id not in [f.id for f in client.files.list()]


@pytest.mark.parametrize(
    "expires_after, param",
    [({"anchor": "created_at", "seconds": 2592001}, "expires_after.seconds"),
     ({"anchor": "created_at", "seconds": 0}, "expires_after.seconds"),
     ({"anchor": "last_active_at", "seconds": 3600}, "expires_after.anchor")],
)  # fmt: skip
def test_bad_expiry(client: openai.OpenAI, expires_after: Any, param: str, storage: Path) -> None:
    before = files_on_disk(storage)
    with pytest.raises(openai.BadRequestError) as caught:
        upload(client, b"x", expires_after=expires_after)
    assert caught.value.body["param"] == param  # type: ignore[index]
    assert files_on_disk(storage) == before


def test_other_keys_see_nothing(client: openai.OpenAI, bob: openai.OpenAI) -> None:
    made = upload(client, b"alice's")
    assert made.id not in [f.id for f in bob.files.list()]
    for call in (bob.files.retrieve, bob.files.content, bob.files.delete):
        with pytest.raises(openai.NotFoundError):
            call(made.id)
    assert client.files.content(made.id).read() == b"alice's"  # bob's delete did nothing
    client.files.delete(made.id)


def test_over_the_file_limit(client: openai.OpenAI, server: Any, storage: Path) -> None:
    before = files_on_disk(storage)
    with pytest.raises(openai.APIStatusError) as caught:
        upload(client, b"x" * (MAX_FILE + 1))
    assert caught.value.status_code == 413 and caught.value.body["code"] == "file_too_large"  # type: ignore[index]
    assert files_on_disk(storage) == before
    # Chunked (no Content-Length): refused while streaming, nothing left behind.
    def body() -> Iterator[bytes]:
        yield b'--b\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nuser_data\r\n'
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n\r\n'
        for _ in range(MAX_FILE // 65536 + 2):
            yield b"y" * 65536
        yield b"\r\n--b--\r\n"

    response = httpx.post(
        f"{server.base_url}/v1/files",
        content=body(),
        headers={"authorization": f"Bearer {ALICE}", "content-type": "multipart/form-data; boundary=b"},
    )
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "file_too_large"
    assert files_on_disk(storage) == before
    exact = upload(client, b"z" * MAX_FILE)  # the limit itself is allowed
    assert exact.bytes == MAX_FILE
    client.files.delete(exact.id)


def test_over_the_key_limit(client: openai.OpenAI, bob: openai.OpenAI, storage: Path) -> None:
    kept = [upload(client, b"k" * MAX_FILE).id for _ in range(2)]
    before = files_on_disk(storage)
    with pytest.raises(openai.APIStatusError) as caught:
        upload(client, b"k" * (MAX_PER_KEY - 2 * MAX_FILE + 1))
    assert caught.value.status_code == 413 and caught.value.body["code"] == "storage_limit_exceeded"  # type: ignore[index]
    assert "storage limit" in caught.value.message
    assert files_on_disk(storage) == before
    other = upload(bob, b"k" * MAX_FILE)  # the limit is per key
    fits = upload(client, b"k" * (MAX_PER_KEY - 2 * MAX_FILE))
    for file_id in [*kept, fits.id]:
        client.files.delete(file_id)
    bob.files.delete(other.id)


def raw_upload(server: Any, parts: list[tuple[bytes, bytes]], key: str = ALICE) -> httpx.Response:
    """A multipart body made by hand: (Content-Disposition parameters, value) per part."""
    body = b"".join(b"--b\r\nContent-Disposition: form-data; " + d + b"\r\n\r\n" + v + b"\r\n" for d, v in parts)
    return httpx.post(
        f"{server.base_url}/v1/files",
        content=body + b"--b--\r\n",
        headers={"authorization": f"Bearer {key}", "content-type": "multipart/form-data; boundary=b"},
    )


PURPOSE = (b'name="purpose"', b"user_data")


@pytest.mark.parametrize(
    "parts, param",
    [
        ([PURPOSE], "file"),
        ([(b'name="file"; filename="a.txt"', b"x")], "purpose"),
        ([PURPOSE, (b'name="file"; filename="../etc/passwd"', b"x")], "file"),
        ([PURPOSE, (b'name="file"; filename="dir\\\\a.txt"', b"x")], "file"),
        ([PURPOSE, (b'name="file"; filename="a\x00b.txt"', b"x")], "file"),
        ([PURPOSE, (b'name="file"; filename="caf\xe9.txt"', b"x")], "file"),
        ([PURPOSE, (b'name="file"; filename=""', b"x")], "file"),
        ([(b'name="purpose"', b"fine-tune-results"), (b'name="file"; filename="a.txt"', b"x")], "purpose"),
        ([PURPOSE, (b'name="model"', b"x"), (b'name="file"; filename="a.txt"', b"x")], "model"),
    ],
    ids=["no-file", "no-purpose", "slash", "backslash", "nul", "not-utf8", "empty-name", "bad-purpose", "unknown-field"],
)
def test_bad_uploads(server: Any, storage: Path, parts: list[tuple[bytes, bytes]], param: str) -> None:
    before = files_on_disk(storage)
    response = raw_upload(server, parts)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param, error
    assert files_on_disk(storage) == before


def test_unknown_purpose_through_the_sdk(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        upload(client, b"x", purpose="weights")
    assert caught.value.body["param"] == "purpose"  # type: ignore[index]


def test_not_multipart_and_broken_bodies(server: Any, storage: Path) -> None:
    headers = {"authorization": f"Bearer {ALICE}"}
    before = files_on_disk(storage)
    as_json = httpx.post(f"{server.base_url}/v1/files", json={"purpose": "user_data"}, headers=headers)
    assert as_json.status_code == 400 and as_json.json()["error"]["code"] == "invalid_content_type"
    cut = httpx.post(
        f"{server.base_url}/v1/files",
        content=b'--b\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\nabc',
        headers={**headers, "content-type": "multipart/form-data; boundary=b"},
    )
    assert cut.status_code == 400 and cut.json()["error"]["param"] == "file", cut.text
    for query in ("limit=0", "limit=abc", "order=up"):
        listed = httpx.get(f"{server.base_url}/v1/files?{query}", headers=headers)
        assert listed.status_code == 400 and listed.json()["error"]["param"] in ("limit", "order"), listed.text
    assert files_on_disk(storage) == before


def test_deleting_while_downloading(client: openai.OpenAI, server: Any) -> None:
    data = os.urandom(MAX_FILE)
    made = upload(client, data)
    with httpx.stream("GET", f"{server.base_url}/v1/files/{made.id}/content", headers={"authorization": f"Bearer {ALICE}"}) as r:
        chunks = r.iter_raw(1024)
        first = next(chunks)
        client.files.delete(made.id)
        rest = b"".join(chunks)
    assert first + rest == data
    with pytest.raises(openai.NotFoundError):
        client.files.content(made.id)


def test_anthropic_sdk(server: Any, client: openai.OpenAI) -> None:
    with anthropic.Anthropic(base_url=server.base_url, api_key=ALICE, max_retries=0) as claude:
        files = claude.beta.files
        made = files.upload(file=("report.pdf", b"%PDF-1.4 tiny", "application/pdf"))
        assert made.type == "file" and made.id.startswith("file-") and made.filename == "report.pdf"
        assert made.mime_type == "application/pdf" and made.size_bytes == 13 and made.downloadable
        assert abs(made.created_at.timestamp() - time.time()) < 60
        assert files.retrieve_metadata(made.id) == made
        assert files.download(made.id).read() == b"%PDF-1.4 tiny"
        second = files.upload(file=("b.txt", b"two"), expires_in_seconds=3600)
        assert second.expires_at is not None
        page = files.list(limit=1)
        assert [f.id for f in page.data] == [second.id] and page.has_next_page()
        assert [f.id for f in files.list(limit=1)][:2] == [second.id, made.id]  # follows next_page
        raw = claude.beta.files.with_raw_response.list(limit=1).http_response.json()
        assert raw["first_id"] == raw["last_id"] == second.id and raw["has_more"] is True
        after = httpx.get(
            f"{server.base_url}/v1/files",
            params={"after_id": second.id, "limit": 5},
            headers={"x-api-key": ALICE, "anthropic-version": "2023-06-01"},
        ).json()
        assert after["data"][0]["id"] == made.id
        before = httpx.get(
            f"{server.base_url}/v1/files",
            params={"before_id": made.id, "limit": 5},
            headers={"x-api-key": ALICE, "anthropic-version": "2023-06-01"},
        ).json()
        assert [f["id"] for f in before["data"]] == [second.id]
        assert [f.id for f in files.list(ids=[made.id]).data] == [made.id]  # sent as ids[]=...
        with pytest.raises(anthropic.BadRequestError):
            files.list(ids=[f"file-{i}" for i in range(101)])
        # The same store: what one SDK uploaded, the other sees.
        assert client.files.retrieve(made.id).bytes == 13
        deleted = files.delete(made.id)
        assert deleted.id == made.id and deleted.type == "file_deleted"
        with pytest.raises(anthropic.NotFoundError) as caught:
            files.retrieve_metadata(made.id)
        assert caught.value.body["type"] == "error"  # type: ignore[index]
        assert caught.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
        with pytest.raises(anthropic.BadRequestError) as bad:
            files.upload(file=("a.txt", b"x"), expires_in_seconds=10**9)
        assert bad.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
        files.delete(second.id)
    with anthropic.Anthropic(base_url=server.base_url, api_key=BOB, max_retries=0) as claude:
        with pytest.raises(anthropic.NotFoundError):
            claude.beta.files.download(second.id)
    with anthropic.Anthropic(base_url=server.base_url, api_key="wrong", max_retries=0) as claude:
        with pytest.raises(anthropic.AuthenticationError) as auth:
            claude.beta.files.list()
        assert auth.value.body["type"] == "error"  # type: ignore[index]


def test_url_images_are_files_of_their_key(client: openai.OpenAI, bob: openai.OpenAI, server: Any, storage: Path) -> None:
    made = client.images.generate(model="painter", prompt="a red square", response_format="url", size="64x64", n=2)
    urls = [item.url for item in made.data or []]
    assert len(urls) == 2 and all(u and u.startswith(f"{server.base_url}/v1/images/files/file-") for u in urls)
    assert urls[0] and urls[0].endswith(".png")
    image_id = urls[0].rsplit("/", 1)[1].removesuffix(".png")
    by_url = httpx.get(urls[0], headers={"authorization": f"Bearer {ALICE}"})
    assert by_url.status_code == 200 and by_url.headers["content-type"] == "image/png"
    assert by_url.content.startswith(b"\x89PNG") and "max-age=" in by_url.headers["cache-control"]
    stored = client.files.retrieve(image_id)
    assert stored.purpose == "vision" and stored.expires_at == stored.created_at + 2
    assert client.files.content(image_id).read() == by_url.content
    assert image_id in files_on_disk(storage)
    refused = httpx.get(urls[0], headers={"authorization": f"Bearer {BOB}"})
    assert refused.status_code == 404 and refused.json()["error"]["code"] == "image_not_found"
    with pytest.raises(openai.NotFoundError):
        bob.files.retrieve(image_id)
    wrong_ext = httpx.get(urls[0].replace(".png", ".webp"), headers={"authorization": f"Bearer {ALICE}"})
    assert wrong_ext.status_code == 404
    time.sleep(3.1)
    assert httpx.get(urls[0], headers={"authorization": f"Bearer {ALICE}"}).status_code == 404


def test_survives_a_restart(server_factory: Any, server: Any, client: openai.OpenAI, storage: Path) -> None:
    # Runs last: it stops the module's server.
    data = os.urandom(5000)
    kept = upload(client, data, "kept.bin")
    expiring = upload(client, b"soon gone", expires_after={"anchor": "created_at", "seconds": 1})
    stale = storage.parent / "files" / ".upload-stale"
    stale.write_bytes(b"half an upload")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    server.stop()
    assert "Traceback" not in server.log(), server.log()  # no bad input of this module made one
    time.sleep(1.1)
    restarted = server_factory(config(storage), health_key=ALICE)
    with client_for(restarted) as again:
        assert again.files.retrieve(kept.id) == kept
        assert again.files.content(kept.id).read() == data
    on_disk = files_on_disk(storage)
    assert kept.id in on_disk and expiring.id not in on_disk and stale.name not in on_disk  # swept at start
    with client_for(restarted, BOB) as other, pytest.raises(openai.NotFoundError):
        other.files.retrieve(kept.id)
