"""The demo's sign-in: what stands in for an app's backend in ``xp2p demo`` (pure).

A browser never holds an app secret (docs/protocol.md §4a): an app's own backend mints its
page a viewer token. The demo has no backend, so the cloud plays that part for one app, for
whoever holds a random code: ``xp2p demo`` prints ``http://127.0.0.1:PORT/app/#login=CODE``,
the page trades the code for viewer tokens at ``POST /api/v1/demo/viewer-token`` (route and
checks in ``xp2p.cloud.app``: same origin only, wrong codes throttled per source by
``xp2p.cloud.signin_throttle``). The code sits in the address's fragment, which a browser never
sends to a server, so it reaches no access log nor a Referer; the page moves it into
sessionStorage and out of the address bar.

The code is as strong as a secret (32 random bytes) and lives as long as the process: it is a
sign-in for the person at this machine's terminal, not an account system. A real deployment
configures no demo login; its page gets tokens from the app's backend.
"""

from __future__ import annotations

import hmac
import json
import secrets
from dataclasses import dataclass, field

#: Random bytes in a code (``secrets.token_urlsafe``: 43 characters).
CODE_BYTES = 32
#: Shorter codes are refused when a ``DemoLogin`` is built (a guessable code is no sign-in).
MIN_CODE_LENGTH = 32
#: Longer codes in a request are refused as malformed before any comparison.
MAX_CODE_LENGTH = 256
DEFAULT_TOKEN_TTL = 600


class LoginBodyError(ValueError):
    """The request body is not ``{"code": "<string>"}``; the message says what is wrong."""


@dataclass(frozen=True)
class DemoLogin:
    """One app's demo sign-in: whoever shows ``code`` gets viewer tokens for every device of
    ``app_key``, lasting ``token_ttl`` seconds."""

    app_key: str
    code: str = field(default_factory=lambda: secrets.token_urlsafe(CODE_BYTES), repr=False)
    token_ttl: int = DEFAULT_TOKEN_TTL

    def __post_init__(self) -> None:
        if not isinstance(self.code, str) or len(self.code) < MIN_CODE_LENGTH:
            raise ValueError(f"a demo login code has at least {MIN_CODE_LENGTH} characters")
        if len(self.code) > MAX_CODE_LENGTH or not self.code.isascii():
            raise ValueError(f"a demo login code is ASCII, at most {MAX_CODE_LENGTH} characters")
        if type(self.token_ttl) is not int or self.token_ttl < 1:
            raise ValueError("token_ttl must be a positive integer")

    def matches(self, code: str) -> bool:
        """Constant time in the code's content (its length may show; it is fixed anyway)."""
        # surrogatepass: JSON can carry a lone surrogate, which is just a wrong code.
        return hmac.compare_digest(code.encode("utf-8", "surrogatepass"), self.code.encode())


def parse_login_body(body: bytes) -> str:
    """The code of a ``{"code": "..."}`` body; LoginBodyError for anything else (not JSON,
    not an object, another field, a code that is not a string or is empty or too long)."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise LoginBodyError("body is not valid JSON") from None
    if not isinstance(doc, dict):
        raise LoginBodyError('body must be a JSON object {"code": "..."}')
    unknown = sorted(set(doc) - {"code"})
    if unknown:
        raise LoginBodyError(f"unknown field {unknown[0]!r}")
    code = doc.get("code")
    if not isinstance(code, str) or not code:
        raise LoginBodyError("code must be a non-empty string")
    if len(code) > MAX_CODE_LENGTH:
        raise LoginBodyError(f"code is longer than {MAX_CODE_LENGTH} characters")
    return code
