"""The admin API's reading of what an operator's client sends (``xp2p.cloud.admin``).

* ``b`` + bytes: a request body (``parse_body``), then read as a new app
  (``parse_new_app``) and as a new device (``parse_new_device``). What passes is checked:
  names match the registry's pattern, permissions are known ones, a key is 32 bytes.
* ``k`` + text: a ``public_key`` alone (``parse_public_key``).

The only refusal is ``AdminInputError`` (a 400 ``bad_request``).
"""

from __future__ import annotations

import atheris
import harness

with atheris.instrument_imports(include=["xp2p.cloud.admin"]):
    from xp2p.auth import PERMISSIONS
    from xp2p.cloud.admin import (
        AdminInputError,
        parse_body,
        parse_new_app,
        parse_new_device,
        parse_public_key,
    )
    from xp2p.cloud.config import NAME_RE


def _body(raw: bytes) -> None:
    try:
        doc = parse_body(raw)
    except AdminInputError:
        return
    try:
        app = parse_new_app(doc)
    except AdminInputError:
        pass
    else:
        assert NAME_RE.fullmatch(app.key) and app.products and app.permissions
        assert set(app.permissions) <= PERMISSIONS
    try:
        device = parse_new_device(doc)
    except AdminInputError:
        return
    assert NAME_RE.fullmatch(device.product_id) and NAME_RE.fullmatch(device.device_name)
    assert len(device.public_key) == 32


def TestOneInput(data: bytes) -> None:
    kind, body = data[:1], data[1:]
    if kind == b"b":
        _body(body)
    elif kind == b"k":
        try:
            assert len(parse_public_key(harness.text(body))) == 32
        except AdminInputError:
            pass


if __name__ == "__main__":
    harness.main(TestOneInput, dictionary="json.dict")
