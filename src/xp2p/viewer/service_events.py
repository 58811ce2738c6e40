"""How a viewer service (1v1 or 1vN) reports to the app: the one base both services share."""

from __future__ import annotations

import logging
from typing import Any

from xp2p.events import LogLevel, NotifySubtype, XP2PEvent
from xp2p.viewer.types import MsgCallback

logger = logging.getLogger("xp2p.viewer")


class ServiceEvents:
    """How a service (1v1 or 1vN) reports to the app: notifies, also logged, and log lines,
    through the app's ``msg_callback``, whose exceptions never reach the service."""

    #: Notifies too frequent to log (periodic statistics).
    unlogged: frozenset[NotifySubtype] = frozenset()

    def __init__(self, service_id: str, msg_callback: MsgCallback | None, log_context: str) -> None:
        self.id = service_id
        self.msg_callback = msg_callback
        self._log_context = log_context

    def notify(self, subtype: NotifySubtype, detail: Any = None) -> None:
        if subtype not in self.unlogged:
            logger.info(
                "%s service %s: %s %s",
                self._log_context,
                self.id,
                subtype.value,
                "" if detail is None else detail,
            )
        self._emit(XP2PEvent.NOTIFY, subtype.value, detail)

    def log(self, level: LogLevel, text: str) -> None:
        self._emit(XP2PEvent.LOG, level.value, text)

    def _emit(self, event: str, subtype: str, detail: Any) -> None:
        if self.msg_callback is None:
            return
        try:
            self.msg_callback(event, subtype, detail)
        except Exception:  # an app's callback bug must not kill the service
            logger.exception("msg_callback raised for service %s", self.id)
