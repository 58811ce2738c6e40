"""``xp2p admin``: provisioning apps and devices on a running cloud (``--db``), through its
admin API (``xp2p.cloud.admin``), with the operator's token from ``$XP2P_ADMIN_TOKEN``.

A new camera's key pair is made here, on the provisioning machine: the cloud gets the
public half, the provisioning file (mode 0600) the private half, the cloud URL and the
grant key the camera pins, which is all ``xp2p device --provisioning FILE`` needs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path
from typing import Any

from xp2p.cli.common import (
    DEFAULT_CLOUD,
    Subparsers,
    add_cloud_trust_args,
    cloud_trust,
    split_device,
    status,
)

#: The cloud's admin token, set where it runs and where the operator runs this.
ADMIN_TOKEN_ENV = "XP2P_ADMIN_TOKEN"
PROVISIONING_VERSION = 1

EPILOG = """\
examples:
  xp2p admin keygen > registry.key            # the key app secrets are sealed under
  xp2p admin app add my-app --product DEMO    # prints the app's secret, once
  xp2p admin app list
  xp2p admin app rotate my-app                # the old secret stops working at once
  xp2p admin app disable my-app
  xp2p admin device add DEMO/cam7 --out cam7.json
  xp2p device --provisioning cam7.json        # on the camera
  xp2p admin device rotate DEMO/cam7 --out cam7.json
  xp2p admin device remove DEMO/cam7

The admin token comes from $XP2P_ADMIN_TOKEN (the cloud's own, set where it runs). Exit
status: 0 done, 1 refused (the cloud's error code and message go to stderr), 2 bad usage."""


class AdminError(Exception):
    pass


async def _call(args: argparse.Namespace, method: str, path: str, body: Any = None) -> Any:
    import aiohttp

    token = os.environ.get(ADMIN_TOKEN_ENV, "")
    if not token:
        raise SystemExit(f"xp2p admin: set ${ADMIN_TOKEN_ENV} (the cloud's admin token)")
    url = args.cloud.rstrip("/") + "/api/v1/admin" + path
    ssl = cloud_trust(args).client_ssl()
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http,
            http.request(
                method, url, json=body, headers={"Authorization": f"Bearer {token}"}, ssl=ssl
            ) as resp,
        ):
            try:
                doc = await resp.json(content_type=None)
            except ValueError:
                doc = None
            if resp.status >= 300:
                error = doc.get("error", {}) if isinstance(doc, dict) else {}
                code = error.get("code", f"http_{resp.status}")
                raise AdminError(f"{code}: {error.get('message', resp.reason)}")
            return doc
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        why = str(exc) or type(exc).__name__
        raise AdminError(f"cannot reach the cloud at {args.cloud}: {why}") from None


def _new_device_key() -> tuple[str, str]:
    """(private, public) of a fresh Ed25519 pair, raw, base64url."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from xp2p.auth import b64url_encode

    key = Ed25519PrivateKey.generate()
    return b64url_encode(key.private_bytes_raw()), b64url_encode(
        key.public_key().public_bytes_raw()
    )


def write_provisioning(path: Path, doc: dict[str, Any]) -> None:
    """Written to ``path.part`` with mode 0600 first: the private key is never readable by
    others, not even for a moment, and a half-written file never replaces a good one."""
    part = path.with_name(path.name + ".part")
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    os.replace(part, path)


def read_provisioning(path: Path) -> dict[str, str]:
    """The file ``xp2p admin device add`` wrote; ValueError naming what is wrong."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None
    fields = ("cloud_url", "product_id", "device_name", "device_key", "grant_public_key")
    if not isinstance(doc, dict) or doc.get("version") != PROVISIONING_VERSION:
        raise ValueError(
            f"{path} is not an xp2p provisioning file (version {PROVISIONING_VERSION})"
        )
    missing = [f for f in fields if not isinstance(doc.get(f), str) or not doc[f]]
    if missing:
        raise ValueError(f"{path} lacks {', '.join(missing)}")
    return {f: doc[f] for f in fields}


async def _cmd_admin(args: argparse.Namespace, stop: asyncio.Event) -> None:
    try:
        await _run(args)
    except AdminError as exc:
        status(f"xp2p admin: {exc}", ok=False, stderr=True)
        raise SystemExit(1) from None


async def _run(args: argparse.Namespace) -> None:
    what, verb = args.what, args.verb
    if what == "keygen":
        from xp2p.cloud.secret_box import new_key

        print(new_key())
        return
    if what == "app":
        if verb == "list":
            for app in (await _call(args, "GET", "/apps"))["apps"]:
                state = "disabled" if app["disabled"] else "enabled"
                print(
                    f"{app['key']}  {state}  products={','.join(app['products'])}  "
                    f"permissions={','.join(app['permissions'])}"
                )
            return
        key = args.name
        if not key:
            raise SystemExit(f"xp2p admin: app {verb} needs the app's KEY")
        if verb == "add":
            body = {"key": key, "products": args.product or ["*"]}
            if args.permission:
                body["permissions"] = args.permission
            if args.origin:
                body["cors_origins"] = args.origin
            doc = await _call(args, "POST", "/apps", body)
        elif verb == "remove":
            doc = await _call(args, "DELETE", f"/apps/{key}")
        else:
            doc = await _call(args, "POST", f"/apps/{key}/{verb}")
        if "secret" in doc:
            # Shown once: the registry keeps it sealed and never shows it again.
            print(f"app {key}: XP2P_APP_SECRET={doc['secret']}")
        else:
            status(f"app {key}: {verb} done", ok=True)
        return
    if verb == "list":
        for dev in (await _call(args, "GET", "/devices"))["devices"]:
            state = "disabled" if dev["disabled"] else "enabled"
            print(f"{dev['product_id']}/{dev['device_name']}  {state}  {dev['credential']}")
        return
    if not args.name:
        raise SystemExit(f"xp2p admin: device {verb} needs PRODUCT/DEVICE")
    product, device = split_device(args.name)
    path = f"/devices/{product}/{device}"
    if verb in ("add", "rotate"):
        if args.out is None:
            raise SystemExit(f"xp2p admin: device {verb} needs --out FILE (its provisioning file)")
        private, public = _new_device_key()
        if verb == "add":
            body = {"product_id": product, "device_name": device, "public_key": public}
            doc = await _call(args, "POST", "/devices", body)
        else:
            doc = await _call(args, "POST", f"{path}/rotate", {"public_key": public})
        write_provisioning(
            args.out,
            {
                "version": PROVISIONING_VERSION,
                "cloud_url": args.cloud,
                "product_id": product,
                "device_name": device,
                "device_key": private,
                "grant_public_key": doc["grant_public_key"],
            },
        )
        status(f"device {product}/{device}: {verb} done; provisioning file {args.out}", ok=True)
        return
    if verb == "remove":
        await _call(args, "DELETE", path)
    else:
        await _call(args, "POST", f"{path}/{verb}")
    status(f"device {product}/{device}: {verb} done", ok=True)


def register(commands: Subparsers) -> None:
    parser = commands.add_parser(
        "admin",
        help="provision apps and devices on a running cloud (its --db registry)",
        description="Add, list, disable, enable, remove and rotate apps and devices through "
        "the cloud's admin API; write a new camera's provisioning file.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    kinds = parser.add_subparsers(dest="what", required=True, metavar="WHAT")
    kinds.add_parser("keygen", help="print a new registry key (for $XP2P_REGISTRY_KEY)")
    app = kinds.add_parser("app", help="apps: add, list, rotate, disable, enable, remove")
    app.add_argument("verb", choices=("add", "list", "rotate", "disable", "enable", "remove"))
    app.add_argument("name", nargs="?", metavar="KEY", help="the app's key")
    app.add_argument("--product", action="append", help="a product it may reach (all: *)")
    app.add_argument("--permission", action="append", help="live, playback, download...")
    app.add_argument("--origin", action="append", help="a web origin for its viewer tokens")
    device = kinds.add_parser("device", help="devices: add, list, rotate, disable, enable, remove")
    device.add_argument("verb", choices=("add", "list", "rotate", "disable", "enable", "remove"))
    device.add_argument("name", nargs="?", metavar="PRODUCT/DEVICE")
    device.add_argument("--out", type=Path, help="add/rotate: where to write its provisioning file")
    for sub in (app, device):
        sub.add_argument("--cloud", default=DEFAULT_CLOUD, help=f"cloud URL ({DEFAULT_CLOUD})")
        add_cloud_trust_args(sub)
    parser.set_defaults(run=_cmd_admin, verb=None)
