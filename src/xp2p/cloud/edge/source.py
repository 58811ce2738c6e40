"""Pulling one HTTP(S)-FLV stream: any server that answers a GET with an FLV body (our
``xp2p origin``, ffmpeg ``-listen 1``, nginx-http-flv, SRS, a CDN)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urljoin

import aiohttp

from xp2p.cloud.config import ConfigError
from xp2p.flv.header import SIGNATURE
from xp2p.swarm.edge_messages import MessageError, check_source_url

from .policy import SourcePolicy, SourceRefused, SourceUnresolved, describe

#: Bytes read from the source per call: a few frames of a typical stream.
READ_SIZE = 64 * 1024


class SourceError(Exception):
    """The source could not be pulled. ``message`` is the detail for the edge's log (never a
    URL or an object repr); a joining viewer is told only "source refused" (``refused``: the
    policy said no) or "source unavailable" (anything else), which maps nothing."""

    def __init__(self, message: str, *, not_flv: bool = False, refused: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.not_flv = not_flv
        self.refused = refused


class SourceStalled(SourceError):
    """The source sent nothing for ``stall_timeout`` seconds."""


def source_ssl_context(ca_file: Path | None) -> ssl.SSLContext:
    """The system trust store, plus ``ca_file`` (an origin's self-signed certificate)."""
    context = ssl.create_default_context()
    if ca_file is not None:
        try:
            context.load_verify_locations(cafile=str(ca_file))
        except (OSError, ssl.SSLError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConfigError(f"edge.source_ca_file: cannot load {ca_file}: {reason}") from None
    return context


#: Redirects followed at most, each checked against the policy like the first URL.
MAX_REDIRECTS = 3
_REDIRECTS = {301, 302, 303, 307, 308}


async def pull_flv(
    session: aiohttp.ClientSession,
    url: str,
    *,
    connect_timeout: float,
    stall_timeout: float,
    ssl_context: ssl.SSLContext | None = None,
    policy: SourcePolicy | None = None,
) -> AsyncIterator[bytes]:
    """The source's body, as it arrives; the first piece starts with the FLV signature.

    Raises SourceError when it cannot connect or answers something else than FLV within
    ``connect_timeout`` (``refused`` when ``policy`` refuses the URL or a redirect's
    target), and SourceStalled after ``stall_timeout`` s without a byte.
    Ends when the source closes the stream."""
    policy = policy or SourcePolicy()
    timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout)
    try:
        async with asyncio.timeout(connect_timeout):
            for hop in range(MAX_REDIRECTS + 1):
                try:
                    check_source_url(url)
                    await policy.check(url)
                except (SourceRefused, MessageError) as exc:
                    where = "the source" if hop == 0 else f"redirect {hop}"
                    raise SourceError(f"{where} refused: {exc}", refused=True) from None
                except SourceUnresolved as exc:
                    raise SourceError(str(exc)) from None
                response = await session.get(
                    url,
                    timeout=timeout,
                    ssl=ssl_context if ssl_context is not None else True,
                    allow_redirects=False,
                    headers={"Accept": "video/x-flv, */*", "Icy-MetaData": "0"},
                )
                location = response.headers.get("Location")
                if response.status not in _REDIRECTS or location is None:
                    break
                response.close()
                url = urljoin(url, location)
            else:
                raise SourceError(f"more than {MAX_REDIRECTS} redirects")
    except TimeoutError:
        raise SourceError(f"no answer from the source within {connect_timeout:g} s") from None
    except aiohttp.ClientSSLError as exc:
        raise SourceError(f"TLS with the source failed: {describe(exc)}") from None
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        raise SourceError(f"cannot reach the source: {describe(exc)}") from None
    try:
        if response.status != 200:
            raise SourceError(f"the source answered HTTP {response.status}")
        head = b""
        try:
            async with asyncio.timeout(connect_timeout):
                while len(head) < len(SIGNATURE):
                    data = await response.content.read(READ_SIZE)
                    if not data:
                        break
                    head += data
        except TimeoutError:
            raise SourceError(
                f"no FLV header from the source within {connect_timeout:g} s"
            ) from None
        if not head.startswith(SIGNATURE):
            # The source's own text goes to the log: printable characters only, bounded.
            kind = "".join(
                c for c in (response.content_type or "unknown type")[:64] if c.isprintable()
            )
            raise SourceError(f"the source is not FLV (it sent {kind})", not_flv=True)
        yield head
        while True:
            try:
                async with asyncio.timeout(stall_timeout):
                    data = await response.content.read(READ_SIZE)
            except TimeoutError:
                raise SourceStalled(f"no data from the source for {stall_timeout:g} s") from None
            if not data:
                return
            yield data
    except (aiohttp.ClientError, OSError) as exc:
        raise SourceError(f"the source connection failed: {describe(exc)}") from None
    finally:
        response.close()
