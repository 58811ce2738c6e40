"""File download end to end: real cloud, device and viewer over real ICE + QUIC in one loop.

The device serves ``<recordings_dir>/ch0/``; every transfer is checked byte for byte with
sha256 against the file on disk, and every refusal by its status code and reason.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.devices import IdleSource
from tests.support.stack import Stack
from tests.support.waiting import wait_until
from xp2p import ErrorCode, XP2PError
from xp2p.cloud.app import CloudServer
from xp2p.cloud.config import CloudConfig
from xp2p.device import ChannelConfig, DeviceAgent
from xp2p.link import LinkConfig, open_link
from xp2p.link.xp2pinfo import Xp2pInfo
from xp2p.viewer import P2PModule, StreamInfo
from xp2p.viewer.cloud_client import CloudClient
from xp2p.viewer.download import LocalDownloadResult

DEVICE = StreamInfo(product_id="DEMO", device_name="cam1")
MB = 1024 * 1024


@dataclass
class Files:
    stack: Stack
    folder: Path  #: <recordings_dir>/ch0
    module: P2PModule

    def write(self, name: str, size: int) -> str:
        """A file of random bytes in the channel's folder; returns its sha256."""
        data = os.urandom(size)
        (self.folder / name).write_bytes(data)
        return hashlib.sha256(data).hexdigest()


@pytest.fixture
async def files(cloud: tuple[CloudServer, CloudConfig], tmp_path: Path) -> AsyncIterator[Files]:
    server, config = cloud
    stack = Stack(server, config, device=None)  # type: ignore[arg-type]
    recordings = tmp_path / "recordings"
    (recordings / "ch0").mkdir(parents=True)
    device = DeviceAgent(
        stack.device_config(
            recordings_dir=recordings, channels={0: ChannelConfig(default=IdleSource)}
        )
    )
    await device.start()
    await device.wait_signed_in(timeout=10)
    stack.device = device
    module = P2PModule()
    await module.init(stack.app_params)
    await module.start_p2p_service("cam", DEVICE)
    yield Files(stack, recordings / "ch0", module)
    await module.destroy()
    await device.close()


@dataclass
class Outcome:
    """Every callback of one download, in order."""

    calls: list[str] = field(default_factory=list)
    headers: dict[str, Any] | None = None
    result: LocalDownloadResult | None = None
    digest: Any = field(default_factory=hashlib.sha256)
    received: int = 0
    complete: asyncio.Event = field(default_factory=asyncio.Event)
    on_chunk: Any = None  #: extra hook per chunk (stops mid-transfer)

    def callbacks(self) -> dict[str, Any]:
        def headers(info: dict[str, Any]) -> None:
            self.calls.append("headers")
            self.headers = info

        def chunk(data: bytes) -> None:
            if not self.calls or self.calls[-1] != "chunk":
                self.calls.append("chunk")
            self.digest.update(data)
            self.received += len(data)
            if self.on_chunk is not None:
                self.on_chunk(self)

        def final(name: str) -> Any:
            def record(result: LocalDownloadResult) -> None:
                self.calls.append(name)
                self.result = result

            return record

        def complete() -> None:
            self.calls.append("complete")
            self.complete.set()

        return {
            "on_headers_received": headers,
            "on_chunk_received": chunk,
            "on_success": final("success"),
            "on_failure": final("failure"),
            "on_error": final("error"),
            "on_complete": complete,
        }

    async def wait(self, timeout: float = 30.0) -> Outcome:
        await asyncio.wait_for(self.complete.wait(), timeout)
        return self


async def download(module: P2PModule, url_params: str, timeout: float = 30.0) -> Outcome:
    """One download on the service, whose link it keeps for the next (``keep_link``)."""
    outcome = Outcome()
    await module.start_local_download("cam", url_params, **outcome.callbacks(), keep_link=True)
    return await outcome.wait(timeout)


async def refused(module: P2PModule, url_params: str) -> tuple[int, str]:
    """(status, reason) of a download the device must refuse; checks the callback order."""
    outcome = await download(module, url_params)
    assert outcome.calls == ["headers", "failure", "complete"], outcome.calls
    assert outcome.result is not None and outcome.headers is not None
    assert outcome.headers["status"] == outcome.result.status
    assert outcome.result.errcode == ErrorCode.DOWNLOAD_FAILED
    assert outcome.result.bytes_received == 0
    return outcome.result.status, outcome.result.errmsg


# ---- whole files -------------------------------------------------------------------------------


async def test_the_link_closes_after_a_download_as_in_the_seed(files: Files) -> None:
    """Without keep_link, on_complete is followed by the link closing (``disconnect``, no
    NAT re-probe); a failure's result carries the device's body as ``data``."""
    module = files.module
    expected = files.write("clip.flv", MB)
    notifies: list[tuple[str, Any]] = []
    module.update_service_callbacks("cam", lambda e, s, d: notifies.append((s, d)))
    outcome = Outcome()
    await module.start_local_download("cam", "file_name=clip.flv", **outcome.callbacks())
    await outcome.wait()
    assert outcome.calls == ["headers", "chunk", "success", "complete"]
    assert outcome.digest.hexdigest() == expected
    link = module._service("cam").link
    await asyncio.wait_for(link.wait_closed(), 5)
    assert link.close_reason == "download success: the link closes after a download"
    await wait_until(lambda: ("disconnect", {"reason": link.close_reason}) in notifies, 5)
    with pytest.raises(XP2PError) as e:
        await module.start_local_download("cam", "file_name=clip.flv")
    assert e.value.code == ErrorCode.DOWNLOAD_FAILED and "lost its link" in e.value.message
    # -2401 until the app stops it, as the seed's "stop the previous one first".
    with pytest.raises(XP2PError) as e:
        await module.start_p2p_service("cam", DEVICE)
    assert e.value.code == ErrorCode.SERVICE_ALREADY_STARTED

    # A failure closes it too (on_failure disconnects), and carries the body.
    await module.stop_p2p_service("cam")
    await module.start_p2p_service("cam", DEVICE)
    failed = Outcome()
    await module.start_local_download("cam", "file_name=missing.bin", **failed.callbacks())
    await failed.wait()
    assert failed.calls == ["headers", "failure", "complete"]
    assert failed.result is not None and failed.result.status == 404
    assert failed.result.data is not None
    assert failed.result.data.decode().strip() == failed.result.errmsg
    link = module._service("cam").link
    await asyncio.wait_for(link.wait_closed(), 5)
    assert link.close_reason.startswith("download failure")

    # keep_link keeps it: the next download runs on the same link.
    await module.stop_p2p_service("cam")
    await module.start_p2p_service("cam", DEVICE)
    link = module._service("cam").link
    kept = Outcome()
    await module.start_local_download(
        "cam", "file_name=clip.flv", **kept.callbacks(), keep_link=True
    )
    await kept.wait()
    assert kept.calls[-2:] == ["success", "complete"] and not link.closed
    again = await download(module, "file_name=clip.flv")
    assert again.digest.hexdigest() == expected and module._service("cam").link is link


async def test_download_is_byte_exact_with_headers(files: Files) -> None:
    size = 3 * MB + 12345
    expected = files.write("clip.flv", size)
    outcome = await download(files.module, "channel=0&file_name=clip.flv&offset=0")
    assert outcome.calls == ["headers", "chunk", "success", "complete"]
    assert outcome.digest.hexdigest() == expected
    assert outcome.headers is not None and outcome.headers["status"] == 200
    headers = outcome.headers["headers"]
    assert headers["content-type"] == "application/octet-stream"
    assert headers["content-length"] == str(size)
    assert headers["x-file-size"] == str(size)
    assert headers["x-offset"] == "0"
    assert headers["x-content-sha256"] == expected
    assert outcome.result == LocalDownloadResult(200, headers, size, 0, "")


@pytest.mark.timeout(120)
async def test_20mb_download_then_resume_after_a_random_stop(files: Files) -> None:
    """The whole file byte-exact; then stopped after a random number of bytes and resumed
    with ``offset``: byte-exact again."""
    await _download_stop_resume(files, 20 * MB, seed=20, whole_first=True)


@pytest.mark.timeout(180)
async def test_200mb_download_stopped_at_random_and_resumed(files: Files) -> None:
    """200 MB in two parts, checked as one whole (24 s on a busy 2-core machine with device
    and viewer in one process, so it stays in the default set)."""
    await _download_stop_resume(files, 200 * MB, seed=200, whole_first=False)


async def _download_stop_resume(files: Files, size: int, seed: int, whole_first: bool) -> None:
    expected = files.write("big.bin", size)
    if whole_first:
        started = time.monotonic()
        whole = await download(files.module, "channel=0&file_name=big.bin", timeout=240)
        seconds = time.monotonic() - started
        assert whole.calls == ["headers", "chunk", "success", "complete"]
        assert whole.received == size and whole.digest.hexdigest() == expected
        print(f"{size / MB:.0f} MiB in {seconds:.1f} s ({size / MB / seconds:.1f} MiB/s)")

    # Interrupted at a random point: keep what arrived, stop from inside the transfer.
    stop_at = random.Random(seed).randrange(size // 10, size * 9 // 10)
    first = Outcome()
    kept = bytearray()
    stopping: list[asyncio.Task[None]] = []

    def on_chunk(data: bytes) -> None:
        if not stopping:
            kept.extend(data)
            if len(kept) >= stop_at:
                stopping.append(asyncio.ensure_future(files.module.stop_local_download("cam")))

    callbacks = first.callbacks()
    inner = callbacks["on_chunk_received"]
    callbacks["on_chunk_received"] = lambda data: (inner(data), on_chunk(data))
    await files.module.start_local_download(
        "cam", "channel=0&file_name=big.bin", **callbacks, keep_link=True
    )
    await first.wait(240)
    await stopping[0]
    assert first.calls == ["headers", "chunk", "error", "complete"], first.calls
    assert first.result is not None and first.result.errmsg == "stopped"
    assert first.result.errcode == ErrorCode.DOWNLOAD_FAILED
    assert stop_at <= len(kept) < size

    # Resume from what we kept: its digest continues over what arrives now.
    rest = Outcome(digest=hashlib.sha256(kept))
    await files.module.start_local_download(
        "cam", f"channel=0&file_name=big.bin&offset={len(kept)}", **rest.callbacks(), keep_link=True
    )
    await rest.wait(240)
    assert rest.calls == ["headers", "chunk", "success", "complete"], rest.calls
    assert rest.headers is not None
    headers = rest.headers["headers"]
    assert headers["x-offset"] == str(len(kept))
    assert headers["content-length"] == str(size - len(kept))
    assert headers["x-content-sha256"] == expected
    assert rest.received == size - len(kept)
    assert rest.digest.hexdigest() == expected


async def test_offset_at_the_end_is_an_empty_200(files: Files) -> None:
    expected = files.write("clip.flv", 1000)
    outcome = await download(files.module, "channel=0&file_name=clip.flv&offset=1000")
    assert outcome.calls == ["headers", "success", "complete"]
    assert outcome.headers is not None
    headers = outcome.headers["headers"]
    assert (headers["content-length"], headers["x-offset"]) == ("0", "1000")
    assert headers["x-content-sha256"] == expected
    assert outcome.result is not None and outcome.result.bytes_received == 0


async def test_empty_file(files: Files) -> None:
    expected = files.write("empty.flv", 0)
    outcome = await download(files.module, "channel=0&file_name=empty.flv")
    assert outcome.calls == ["headers", "success", "complete"]
    assert outcome.headers is not None
    assert (
        outcome.headers["headers"]["x-content-sha256"] == expected == hashlib.sha256().hexdigest()
    )


async def test_symlink_to_a_sibling_is_served(files: Files) -> None:
    expected = files.write("real.flv", 5000)
    (files.folder / "latest.flv").symlink_to("real.flv")
    outcome = await download(files.module, "channel=0&file_name=latest.flv")
    assert outcome.calls == ["headers", "chunk", "success", "complete"]
    assert outcome.digest.hexdigest() == expected


async def test_two_viewers_download_at_once(files: Files, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two links, the same file at once: both byte-exact, and the digest computed once."""
    from xp2p.device import files as device_files

    hashed: list[int] = []
    original = device_files.hash_file

    def counting(fd: int, size: int) -> str:
        hashed.append(size)
        return original(fd, size)

    monkeypatch.setattr(device_files, "hash_file", counting)
    expected = files.write("clip.flv", 8 * MB)
    other = P2PModule()
    await other.init(files.stack.app_params)
    try:
        await other.start_p2p_service("cam", DEVICE)
        one, two = await asyncio.gather(
            download(files.module, "file_name=clip.flv"), download(other, "file_name=clip.flv")
        )
    finally:
        await other.destroy()
    for outcome in (one, two):
        assert outcome.calls == ["headers", "chunk", "success", "complete"]
        assert outcome.digest.hexdigest() == expected
    assert hashed == [8 * MB]


# ---- refusals ----------------------------------------------------------------------------------

SLASH = "bad file name: it must not contain '/' or '\\'"
SECRET = b"outside-the-recordings-folder-" + b"s3cr3t" * 10


REFUSED_NAMES = [
    ("../x", 400, SLASH),
    ("/etc/passwd", 400, SLASH),
    ("a/b", 400, SLASH),
    ("%2e%2e%2fx", 400, SLASH),
    ("%2e%2e%2f..%2fsecret.txt", 400, SLASH),
    ("..%5csecret.txt", 400, SLASH),
    ("..", 400, "bad file name: '.' and '..' are not files"),
    ("%2e%2e", 400, "bad file name: '.' and '..' are not files"),
    (".", 400, "bad file name: '.' and '..' are not files"),
    ("x%00.flv", 400, "bad file name: it must not contain NUL or control characters"),
    ("x%0a.flv", 400, "bad file name: it must not contain NUL or control characters"),
    ("x" * 256, 400, "bad file name: longer than 255 bytes"),
    ("missing.flv", 404, "no such file: missing.flv"),
    ("%252e%252e%252fx", 404, "no such file: %2e%2e%2fx"),  # decoded once: a plain name
    ("escape.flv", 404, "no such file: escape.flv"),  # symlink to ../../secret.txt
    ("dangling.flv", 404, "no such file: dangling.flv"),  # symlink to nowhere
    ("abs.flv", 404, "no such file: abs.flv"),  # symlink to an absolute path outside
    ("subdir", 404, "no such file: subdir"),  # a directory
    ("pipe", 404, "no such file: pipe"),  # a FIFO: must not hang the device
]


async def test_file_names_refused(files: Files) -> None:
    """Traversal and every other unservable name, each refused on the same link; the device
    keeps serving that viewer (and so everyone else) after each one."""
    secret = files.folder.parent.parent / "secret.txt"
    secret.write_bytes(SECRET)
    (files.folder / "escape.flv").symlink_to("../../secret.txt")
    (files.folder / "dangling.flv").symlink_to("nowhere.flv")
    (files.folder / "abs.flv").symlink_to(secret)
    (files.folder / "subdir").mkdir()
    os.mkfifo(files.folder / "pipe")
    files.write("ok.flv", 100)
    for file_name, status, reason in REFUSED_NAMES:
        outcome = await download(files.module, f"channel=0&file_name={file_name}&offset=0")
        assert outcome.calls == ["headers", "failure", "complete"], (file_name, outcome.calls)
        assert outcome.result is not None
        assert (outcome.result.status, outcome.result.errmsg) == (status, reason), file_name
        assert outcome.received == 0 and outcome.result.bytes_received == 0
        assert b"s3cr3t" not in outcome.result.errmsg.encode()
        good = await download(files.module, "channel=0&file_name=ok.flv")
        assert good.calls == ["headers", "chunk", "success", "complete"], file_name


BAD_OFFSETS = [
    ("-1", "offset must be a non-negative integer, got '-1'"),
    ("abc", "offset must be a non-negative integer, got 'abc'"),
    ("1.5", "offset must be a non-negative integer, got '1.5'"),
    ("%2B1", "offset must be a non-negative integer, got '+1'"),
    ("+1", "offset must be a non-negative integer, got ' 1'"),  # '+' is a space in a query
    ("%201", "offset must be a non-negative integer, got ' 1'"),
    ("%EF%BC%91", "offset must be a non-negative integer, got '\uff11'"),  # fullwidth digit 1
    ("", "offset must be a non-negative integer, got ''"),
    ("9" * 30, "offset must be a non-negative integer, got '" + "9" * 30 + "'"),
    ("1001", "offset 1001 is beyond the end of the file (1000)"),
]


async def test_bad_offsets_are_400(files: Files) -> None:
    files.write("clip.flv", 1000)
    for offset, reason in BAD_OFFSETS:
        query = f"channel=0&file_name=clip.flv&offset={offset}"
        assert await refused(files.module, query) == (400, reason), offset


async def test_missing_or_empty_name_on_the_wire(files: Files) -> None:
    """The viewer API refuses these itself (-2000); the device must too, for other clients."""
    link = files.module._services["cam"].link
    for query in ("action=download&channel=0", "action=download&file_name=&offset=0"):
        response = await link.request("GET", f"/ipc.flv?{query}")
        assert response.status == 400
        assert await response.read() == b"bad file name: file_name is required"


async def test_channels(files: Files) -> None:
    (files.folder.parent / "ch1").mkdir()
    (files.folder.parent / "ch1" / "other.flv").write_bytes(b"x" * 10)
    assert await refused(files.module, "channel=0&file_name=other.flv") == (
        404,
        "no such file: other.flv",
    )
    assert await refused(files.module, "channel=1&file_name=other.flv") == (404, "no channel 1")
    assert await refused(files.module, "channel=x&file_name=other.flv") == (
        400,
        "channel must be a small non-negative integer, got 'x'",
    )


async def test_device_without_recordings_is_404(module: P2PModule) -> None:
    await module.start_p2p_service("cam", DEVICE)
    assert await refused(module, "channel=0&file_name=x.flv") == (
        404,
        "this device keeps no recordings",
    )


async def test_grant_without_download_is_403(files: Files) -> None:
    """A link opened with a grant for live video only: the device refuses the download."""
    stack = files.stack
    app = stack.config.apps[0]
    client = CloudClient(stack.cloud.url, app.key, app.secret, timeout=5)
    files.write("clip.flv", 1000)
    try:
        info = Xp2pInfo.parse((await client.get_p2p_info("DEMO", "cam1")).xp2p_info or "")
        grant, _ = await client.get_grant("DEMO", "cam1", permissions=["live", "command"])

        async def signal(offer: dict[str, Any]) -> dict[str, Any]:
            return await client.connect("DEMO", "cam1", offer)

        link = await open_link(
            LinkConfig(), signal, fingerprint=info.fingerprint, grant=grant, peer_label="cam"
        )
        try:
            response = await link.request("GET", "/ipc.flv?action=download&file_name=clip.flv")
            assert response.status == 403
            assert await response.read() == b"the access grant does not allow download"
        finally:
            await link.close()
    finally:
        await client.close()


# ---- the viewer's API --------------------------------------------------------------------------


BAD_URL_PARAMS: list[Any] = [
    "",
    "channel=0&offset=0",
    "channel=0&file_name=&offset=0",
    "file_name=x.flv&" + "pad=" + "x" * 3000,
    "file_name=x.flv&&&",
    "file_name",
    "action=live&file_name=x.flv",
    None,
    42,
]


async def test_bad_url_params_are_2000(files: Files) -> None:
    files.write("x.flv", 10)
    for url_params in BAD_URL_PARAMS:
        outcome = Outcome()
        with pytest.raises(XP2PError) as e:
            await files.module.start_local_download(
                "cam", url_params, **outcome.callbacks(), keep_link=True
            )
        assert e.value.code == ErrorCode.BAD_PARAM, url_params
        assert outcome.calls == []
    # Nothing was started: a good download goes right after.
    assert (await download(files.module, "file_name=x.flv")).calls[-2:] == ["success", "complete"]


async def test_raw_characters_in_url_params_cannot_break_the_link(files: Files) -> None:
    """Spaces, control characters and non-ASCII text go percent-encoded: a raw newline or an
    edge space in the request target would make the device's HTTP/3 layer close the link."""
    for name in ("a b.flv", "\u00e9t\u00e9.flv", "x.flv "):
        expected = files.write(name, 1000)
        outcome = await download(files.module, f"file_name={name}")
        assert outcome.calls == ["headers", "chunk", "success", "complete"], name
        assert outcome.digest.hexdigest() == expected
    assert await refused(files.module, "file_name=a\nb") == (
        400,
        "bad file name: it must not contain NUL or control characters",
    )
    assert await refused(files.module, "file_name=a\x00b") == (
        400,
        "bad file name: it must not contain NUL or control characters",
    )
    assert not files.module._services["cam"].link.closed


async def test_query_of_exactly_3000_bytes_is_accepted(files: Files) -> None:
    files.write("x.flv", 10)
    head = "file_name=x.flv&pad="
    params = head + "p" * (3000 - len("action=download&") - len(head))
    assert len(("action=download&" + params).encode()) == 3000
    outcome = await download(files.module, params)
    assert outcome.calls == ["headers", "chunk", "success", "complete"]


async def test_one_download_per_service(files: Files) -> None:
    files.write("big.bin", 8 * MB)
    gate = asyncio.Event()
    first = Outcome()
    callbacks = first.callbacks()
    inner = callbacks["on_chunk_received"]

    async def slow_chunk(data: bytes) -> None:
        inner(data)
        await gate.wait()  # hold the transfer: the reader's window stops the device

    callbacks["on_chunk_received"] = slow_chunk
    await files.module.start_local_download("cam", "file_name=big.bin", **callbacks, keep_link=True)
    second = Outcome()
    with pytest.raises(XP2PError) as e:
        await files.module.start_local_download(
            "cam", "file_name=big.bin", **second.callbacks(), keep_link=True
        )
    assert e.value.code == ErrorCode.DOWNLOAD_FAILED
    assert "already downloading" in e.value.message
    assert second.calls == []
    gate.set()
    await first.wait()
    assert first.calls[-2:] == ["success", "complete"] and first.received == 8 * MB
    # The slot is free again once the first one ended.
    assert (await download(files.module, "file_name=big.bin")).received == 8 * MB


async def test_stopping_stops_the_device_reading(
    files: Files, monkeypatch: pytest.MonkeyPatch
) -> None:
    from xp2p.device import files as device_files

    files.write("big.bin", 64 * MB)
    routes = files.stack.device.routes
    served = routes.requests_served
    # Digest first (cached), so that only the transfer's reads are counted below.
    assert (await download(files.module, f"file_name=big.bin&offset={64 * MB}")).calls[1] == (
        "success"
    )
    read = {"bytes": 0}
    original = device_files.read_exactly

    def counting(fd: int, size: int, offset: int) -> bytes:
        data = original(fd, size, offset)
        read["bytes"] += len(data)
        return data

    monkeypatch.setattr(device_files, "read_exactly", counting)
    outcome = Outcome()
    stopped: list[Any] = []

    def on_chunk(o: Outcome) -> None:
        if o.received >= 2 * MB and not stopped:
            stopped.append(asyncio.ensure_future(files.module.stop_local_download("cam")))

    outcome.on_chunk = on_chunk
    await files.module.start_local_download(
        "cam", "file_name=big.bin", **outcome.callbacks(), keep_link=True
    )
    await outcome.wait()
    await stopped[0]
    assert outcome.calls == ["headers", "chunk", "error", "complete"]
    assert outcome.result is not None and outcome.result.errmsg == "stopped"
    # Both handlers have ended (and with them the reads in flight): count from there.
    await wait_until(lambda: routes.requests_served >= served + 2, what="the downloads' end")
    after_stop = read["bytes"]
    await asyncio.sleep(1.0)
    assert read["bytes"] == after_stop, "the device kept reading after the viewer left"
    # What was read: what arrived, plus what the link could hold in flight, plus read-ahead.
    config = LinkConfig()
    slack = config.max_stream_data + config.send_buffer + 2 * device_files.READ_CHUNK
    assert after_stop <= outcome.received + slack
    assert after_stop < 64 * MB


async def test_stop_p2p_service_stops_the_download(files: Files) -> None:
    files.write("big.bin", 32 * MB)
    outcome = Outcome()
    stopping: list[Any] = []
    outcome.on_chunk = lambda o: (
        stopping or stopping.append(asyncio.ensure_future(files.module.stop_p2p_service("cam")))
    )
    await files.module.start_local_download(
        "cam", "file_name=big.bin", **outcome.callbacks(), keep_link=True
    )
    await outcome.wait()
    await stopping[0]
    assert outcome.calls == ["headers", "chunk", "error", "complete"]
    assert outcome.result is not None and outcome.result.errmsg == "stopped"
    await files.module.stop_local_download("cam") if files.module.has_service("cam") else None


async def test_stop_without_a_download_is_a_no_op(files: Files) -> None:
    await files.module.stop_local_download("cam")
    with pytest.raises(XP2PError) as e:
        await files.module.stop_local_download("nobody")
    assert e.value.code == ErrorCode.SERVICE_NOT_STARTED


async def test_callback_that_raises_ends_with_on_error(files: Files) -> None:
    files.write("clip.flv", 2 * MB)
    outcome = Outcome()
    callbacks = outcome.callbacks()

    def broken(data: bytes) -> None:
        raise ValueError("disk full")

    callbacks["on_chunk_received"] = broken
    await files.module.start_local_download(
        "cam", "file_name=clip.flv", **callbacks, keep_link=True
    )
    await outcome.wait()
    assert outcome.calls == ["headers", "error", "complete"]
    assert outcome.result is not None
    assert outcome.result.errmsg == "on_chunk_received raised ValueError: disk full"
    assert (await download(files.module, "file_name=clip.flv")).received == 2 * MB


async def test_file_that_shrinks_is_an_error_not_a_short_success(
    files: Files, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The device resets the stream instead of ending a body shorter than it announced."""
    from xp2p.device import files as device_files

    files.write("clip.flv", 4 * MB)
    # Digest first (cached), so that the failing read below is one of the transfer's.
    assert (await download(files.module, f"file_name=clip.flv&offset={4 * MB}")).calls[1] == (
        "success"
    )
    original = device_files.read_exactly
    calls = {"n": 0}

    def truncating(fd: int, size: int, offset: int) -> bytes:
        calls["n"] += 1
        if calls["n"] == 4:
            raise device_files.FileTruncated("file ended early")
        return original(fd, size, offset)

    monkeypatch.setattr(device_files, "read_exactly", truncating)
    outcome = await download(files.module, "file_name=clip.flv")
    assert outcome.calls == ["headers", "chunk", "error", "complete"]
    assert outcome.result is not None and outcome.result.status == 200
    assert 0 < outcome.result.bytes_received < 4 * MB
    assert outcome.result.errmsg.startswith(
        f"the device broke off the transfer after {outcome.result.bytes_received} bytes"
    )
    monkeypatch.setattr(device_files, "read_exactly", original)
    # The link survived (a short FIN would have closed it with an HTTP/3 error).
    assert (await download(files.module, "file_name=clip.flv")).received == 4 * MB


async def test_digest_is_cached_and_follows_changes(
    files: Files, monkeypatch: pytest.MonkeyPatch
) -> None:
    from xp2p.device import files as device_files

    hashed: list[int] = []
    original = device_files.hash_file

    def counting(fd: int, size: int) -> str:
        hashed.append(size)
        return original(fd, size)

    monkeypatch.setattr(device_files, "hash_file", counting)
    first = files.write("clip.flv", 100_000)
    for _ in range(3):
        outcome = await download(files.module, "file_name=clip.flv&offset=99000")
        assert outcome.headers is not None
        assert outcome.headers["headers"]["x-content-sha256"] == first
    assert hashed == [100_000]
    second = files.write("clip.flv", 100_001)  # rewritten: another size and mtime
    outcome = await download(files.module, "file_name=clip.flv")
    assert outcome.headers is not None
    assert outcome.headers["headers"]["x-content-sha256"] == second
    assert outcome.digest.hexdigest() == second
    assert hashed == [100_000, 100_001]


# ---- the device's checks, as functions ----------------------------------------------------------


def test_check_file_name_and_offset() -> None:
    from xp2p.device.files import check_file_name, check_offset
    from xp2p.device.request import BadRequest

    for good in ("a.flv", "20240101-120000.flv", ".hidden", "..a", "a..", "é.mp4", "x" * 255):
        assert check_file_name(good) == good
    for bad in (None, "", ".", "..", "a/b", "/x", "a\\b", "a\x00", "a\x7f", "é" * 128):
        with pytest.raises(BadRequest) as e:
            check_file_name(bad)
        assert e.value.status == 400 and e.value.reason.startswith("bad file name: ")
    assert check_offset(None) == 0
    assert check_offset("0") == 0 and check_offset("123") == 123
    for bad in ("", "-1", "1e3", "0x10", " 1", "1 ", "\u0661", "9" * 20):
        with pytest.raises(BadRequest) as e:
            check_offset(bad)
        assert e.value.status == 400


# ---- download_to_file: the SDK's resumable, verified download into a file ------------------


async def test_download_to_file_saves_verifies_and_reports_progress(
    files: Files, tmp_path: Path
) -> None:
    size = 3 * MB + 5
    digest = files.write("clip.flv", size)
    out = tmp_path / "out"
    out.mkdir()
    seen: list[tuple[int, int]] = []
    saved = await files.module.download_to_file(
        "cam", "clip.flv", out, on_progress=lambda done, total: seen.append((done, total))
    )
    assert (saved.path, saved.size, saved.sha256) == (out / "clip.flv", size, digest)
    assert saved.verified and saved.resumed_from == 0
    assert hashlib.sha256(saved.path.read_bytes()).hexdigest() == digest
    assert seen[0] == (0, 0) and seen[-1] == (size, size)  # kept so far, then the device's size
    assert sorted(os.listdir(out)) == ["clip.flv"]


async def test_download_to_file_cancelled_keeps_a_partial_that_resumes(
    files: Files, tmp_path: Path
) -> None:
    digest = files.write("big.bin", 20 * MB)
    out = tmp_path / "out"
    out.mkdir()
    task: asyncio.Task[Any] | None = None

    def progress(done: int, total: int) -> None:
        if done >= 2 * MB and task is not None:
            task.cancel()  # lands at the download's next await: no race with the transfer

    task = asyncio.ensure_future(
        files.module.download_to_file("cam", "big.bin", out, on_progress=progress)
    )
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 30)
    part = out / "big.bin.part"
    kept = part.stat().st_size
    assert 2 * MB <= kept < 20 * MB and not (out / "big.bin").exists()
    assert part.read_bytes() == (files.folder / "big.bin").read_bytes()[:kept]
    notices: list[str] = []
    saved = await files.module.download_to_file("cam", "big.bin", out, on_notice=notices.append)
    assert notices == [f"resuming {part} at byte {kept}"]
    assert saved.resumed_from == kept and saved.verified and saved.sha256 == digest
    assert hashlib.sha256(saved.path.read_bytes()).hexdigest() == digest
    assert sorted(os.listdir(out)) == ["big.bin"]


async def test_download_to_file_failures_are_2701(files: Files, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(XP2PError) as refused:
        await files.module.download_to_file("cam", "nope.flv", out)
    assert refused.value.code == ErrorCode.DOWNLOAD_FAILED
    assert refused.value.message == "the device refused (404): no such file: nope.flv"
    # A partial with one flipped byte: the whole file's sha256 catches it, the partial goes.
    digest = files.write("clip.flv", 2 * MB)
    good = (files.folder / "clip.flv").read_bytes()
    bad = bytearray(good[:MB])
    bad[1234] ^= 0xFF
    (out / "clip.flv.part").write_bytes(bytes(bad))
    source = {"device": "DEMO/cam1", "channel": 0, "file": "clip.flv"}
    note = {"source": source, "sha256": digest, "size": len(good)}
    (out / "clip.flv.part.json").write_text(json.dumps(note))
    with pytest.raises(XP2PError) as mismatch:
        await files.module.download_to_file("cam", "clip.flv", out)
    assert mismatch.value.code == ErrorCode.DOWNLOAD_FAILED
    assert mismatch.value.message.startswith("sha256 mismatch: got ")
    assert os.listdir(out) == []
    with pytest.raises(XP2PError) as bad_name:
        await files.module.download_to_file("cam", "", out)
    assert bad_name.value.code == ErrorCode.BAD_PARAM
