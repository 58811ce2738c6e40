"""``GET /command``: the inner_define command table and the user_define handler.

The commands and their replies are in docs/protocol.md §10.

``GET /command?action=inner_define&channel=N&cmd=NAME&k=v...`` runs the command NAME of
``INNER_COMMANDS`` (the table at the end of this file names every one and the module that
serves it); ``action=user_define&channel=N&cmd=TEXT`` hands TEXT to the device maker's
handler (``DeviceAgent.user_command``, else ``DeviceConfig.user_command_handler``, else
the PTZ simulator of ``xp2p.device.ptz``). Every answer is JSON text:

* a reply: HTTP 200 and the handler's JSON (a user handler's str goes as it is, as text);
  inner_define replies have their numbers turned into strings (``{"progress": 1200}`` leaves
  as ``{"progress":"1200"}``), as the seed's devices send them, so command modules may return
  plain ints;
* an error: the HTTP status is the error code and the body ``{"status":"<code>","errmsg":"…"}``
  with the same code: 400 malformed (bad query, no ``cmd``, bad action), 403 the grant lacks
  ``command``, 404 no such channel, 406 unknown command, 500 the handler raised, 504 it took
  longer than ``HANDLER_TIMEOUT``. A viewer maps every non-2xx answer to a failure result whose
  errcode is that code (``xp2p.viewer.command``). Errors found before a command runs (an
  oversize or malformed query, an unknown ``_`` parameter) are DeviceRoutes' plain-text
  answers with the same statuses; the viewer takes both.

The query of a command may be 16 KiB (docs/protocol.md §9), beyond the 3000 bytes of other
requests, so ``DeviceRoutes`` parses ``/command`` queries with ``parse_query`` below.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote

from xp2p.auth import RELAY
from xp2p.device import playback, recordings
from xp2p.device.capacity import slots
from xp2p.device.ptz import PtzSimulator
from xp2p.device.request import QUALITIES, BadRequest, DeviceState, RequestContext
from xp2p.link import IncomingRequest, StreamClosed

logger = logging.getLogger("xp2p.device")

#: The largest query of a command, in bytes as received (docs/protocol.md §9).
MAX_COMMAND_BYTES = 16 * 1024
#: A handler (inner or user) that runs longer is abandoned with 504: a stuck handler must not
#: pile up tasks on the device. Viewers give up sooner (7.5 s by default).
HANDLER_TIMEOUT = 30.0
#: How often a running handler checks whether its viewer still waits for the answer.
CANCEL_POLL = 0.2
ACTIONS = ("inner_define", "user_define")

#: An inner_define command: returns the JSON reply, or raises BadRequest.
InnerCommand = Callable[[RequestContext], Awaitable[Any]]

#: ``handler(channel, command_text)`` → str | dict | list, or an awaitable of one. A handler
#: may raise ``BadRequest(status, reason)`` to answer that error; anything else it raises is
#: a 500. A synchronous handler runs on the event loop: keep it quick, or make it async.
UserCommandHandler = Callable[[int, str], Any]


def set_user_command_handler(device: DeviceState, handler: UserCommandHandler) -> None:
    """Install the device maker's user_define handler (``DeviceAgent.user_command`` does)."""
    if not callable(handler):
        raise TypeError("a user command handler must be callable")
    device.user_command = handler


def user_command_handler(device: DeviceState) -> UserCommandHandler:
    """The maker's handler (installed, else configured), else the PTZ simulator."""
    handler = device.user_command or device.config.user_command_handler
    if handler is None:
        if device.ptz is None:
            device.ptz = PtzSimulator()
        handler = device.ptz
    return handler


# ---- the query ------------------------------------------------------------------------


def parse_query(query: str) -> dict[str, str]:
    """``key=value&...`` of a command, at most ``MAX_COMMAND_BYTES``.

    Lenient where seed apps are sloppy: empty fields (``...&cmd=x&``) are skipped and a key
    without ``=`` has the value "". ``%XX`` escapes are decoded; ``+`` stays a plus (seed apps
    send JSON commands unencoded, and ``+`` in them is meant literally). Raises BadRequest 400
    for an oversize query and ValueError for a malformed one (empty key, a key given twice,
    escapes that are not UTF-8).
    """
    size = len(query.encode())
    if size > MAX_COMMAND_BYTES:
        raise BadRequest(400, f"command too large ({size} bytes, at most {MAX_COMMAND_BYTES})")
    params: dict[str, str] = {}
    for field in query.split("&"):
        if not field:
            continue
        raw_key, _, raw_value = field.partition("=")
        try:
            key = unquote(raw_key, errors="strict")
            value = unquote(raw_value, errors="strict")
        except UnicodeDecodeError:
            raise ValueError("a %-escape in the query is not UTF-8") from None
        if not key:
            raise ValueError(f"empty parameter name in {field[:40]!r}")
        if key in params:
            raise ValueError(f"parameter {key[:40]!r} given twice")
        params[key] = value
    return params


# ---- serving --------------------------------------------------------------------------


async def serve(ctx: RequestContext) -> None:
    request = ctx.request
    action, name = ctx.params.get("action", ""), ctx.params.get("cmd")
    what = action[:20] or "?"
    if action == "inner_define" and name is not None:
        what += f" {name[:40]!r}"  # user_define text may be private: never logged
    try:
        ctx.require("command")
        if action not in ACTIONS:
            raise BadRequest(400, "action must be inner_define or user_define")
        channel = ctx.channel()
        if name is None:
            raise BadRequest(400, f"{action} needs cmd=")
        if action == "inner_define":
            command = INNER_COMMANDS.get(name)
            if command is None:
                raise BadRequest(406, f"unknown command {name[:40]!r}")
            reply = seed_json(await _bounded(request, command(ctx)))
        else:
            handler = user_command_handler(ctx.device)
            reply = await _bounded(request, handler(channel.number, name))
        status, body = 200, _encode_reply(reply)
        content_type = "text/plain" if isinstance(reply, str) else "application/json"
    except BadRequest as exc:
        # A handler's own BadRequest may carry any number: only error statuses go out.
        status = exc.status if 400 <= exc.status <= 599 else 500
        body, content_type = _error_body(status, exc.reason), "application/json"
    except Exception:
        logger.exception("link %d: command %s failed", request.link.id, what)
        status = 500
        body, content_type = _error_body(status, "the command handler failed"), "application/json"
    logger.info("link %d: command %s -> %d", request.link.id, what, status)
    if request.responded or request.closed:
        return  # the viewer gave up (timeout) or went away
    try:
        await request.respond(
            status, [("content-type", f"{content_type}; charset=utf-8")], body=body
        )
    except StreamClosed:
        pass


async def _bounded(request: IncomingRequest, result: Any) -> Any:
    """Await a handler's result, giving up after HANDLER_TIMEOUT (504) or once the viewer
    cancelled the request or left (its timeout): nobody would read the answer."""
    if not inspect.isawaitable(result):
        return result
    work = asyncio.ensure_future(result)
    deadline = asyncio.get_running_loop().time() + HANDLER_TIMEOUT
    try:
        # IncomingRequest has no "closed" event to wait on; a cheap poll is enough here.
        while not work.done():
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise BadRequest(504, f"the handler took longer than {HANDLER_TIMEOUT:g} s")
            if request.closed:
                raise BadRequest(499, "the viewer cancelled the command")
            await asyncio.wait({work}, timeout=min(CANCEL_POLL, remaining))
        return work.result()
    finally:
        if not work.done():
            # Not awaited: a handler that closes its own link is waiting for this very task
            # (Link.close gathers the link's tasks), and awaiting it back would be a cycle.
            work.cancel()
            work.add_done_callback(_retrieve)


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.warning("an abandoned command handler failed: %r", task.exception())


def _encode_reply(reply: Any) -> bytes:
    if isinstance(reply, str):
        return reply.encode()
    if not isinstance(reply, dict | list):
        raise TypeError(f"a command reply must be str, dict or list, not {type(reply).__name__}")
    return json.dumps(reply, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def _error_body(status: int, reason: str) -> bytes:
    return _encode_reply({"status": str(status), "errmsg": reason})


def seed_json(value: Any) -> Any:
    """``value`` with every number turned into a string, as the seed's devices answer."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, dict):
        return {key: seed_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [seed_json(item) for item in value]
    return value


# ---- built-in inner_define commands -----------------------------------------------------

DEVICE_ST_OK, DEVICE_ST_BUSY = "0", "1"
DEVICE_ST_BAD_REQUEST, DEVICE_ST_FULL, DEVICE_ST_UNSUPPORTED = "404", "405", "406"


async def get_device_st(ctx: RequestContext) -> list[dict[str, str]]:
    """Could this viewer start a ``type`` session now? ``[{"status", "appConnectNum"}]``.

    Status 0 yes; 1 busy (a talk session is open, for voice); 404 bad request (no type, or an
    unknown quality); 405 the device is at its viewer capacity (live and playback, unless this
    viewer already holds a slot); 406 a type the device does not serve. ``appConnectNum`` is
    the number of viewers pulling video now.
    """
    device_slots = slots(ctx.device)
    kind, quality = ctx.params.get("type"), ctx.params.get("quality")
    if not kind or (quality is not None and quality not in QUALITIES):
        status = DEVICE_ST_BAD_REQUEST
    elif kind == "voice":
        busy = ctx.device.talk is not None  # set exactly while a talk session is open
        status = DEVICE_ST_BUSY if busy else DEVICE_ST_OK
    elif kind in ("live", "playback"):
        admit = device_slots.would_admit(ctx.request.link.id, ctx.grant.allows(RELAY))
        status = DEVICE_ST_OK if admit else DEVICE_ST_FULL
    else:
        status = DEVICE_ST_UNSUPPORTED
    return [{"status": status, "appConnectNum": str(device_slots.in_use)}]


async def get_nvr_list(ctx: RequestContext) -> list[dict[str, str]]:
    """The channels of this device: ``[{"DeviceName", "Channel", "Online"}]``, Online "1"
    while every source of the channel runs. ``nvr`` may name this device, or be left out."""
    config = ctx.device.config
    nvr = ctx.params.get("nvr")
    if nvr is not None and nvr != config.device_name:
        raise BadRequest(404, f"this device is not NVR {nvr[:64]!r}")
    listing = []
    for number, channel in sorted(ctx.device.channels.items()):
        channel_config = config.channels.get(number)
        name = channel_config.name if channel_config is not None else ""
        online = all(live.running for live in channel.live.values())
        listing.append(
            {
                "DeviceName": name or f"{config.device_name}-ch{number}",
                "Channel": str(number),
                "Online": "1" if online else "0",
            }
        )
    return listing


async def request_keyframe(ctx: RequestContext) -> dict[str, str]:
    """Every live source of the channel sends an IDR soon: a viewer whose decoder lost its
    reference frames recovers without waiting for the next GOP."""
    for live in set(ctx.channel().live.values()):
        live.request_keyframe()
    return {"status": "0"}


# ---- the table ------------------------------------------------------------------------------

#: Every ``action=inner_define`` command by ``cmd`` name (docs/protocol.md §10), and who serves it.
INNER_COMMANDS: dict[str, InnerCommand] = {
    # the device itself (above)
    "get_device_st": get_device_st,
    "get_nvr_list": get_nvr_list,
    "request_keyframe": request_keyframe,
    # what the channel has recorded (``recordings``)
    "get_month_record": recordings.get_month_record,
    "get_record_index": recordings.get_record_index,
    "get_file_list": recordings.get_file_list,
    # steering the playback this link has open (``playback``)
    "playback_pause": playback.playback_pause,
    "playback_resume": playback.playback_resume,
    "playback_seek": playback.playback_seek,
    "playback_progress": playback.playback_progress,
}
