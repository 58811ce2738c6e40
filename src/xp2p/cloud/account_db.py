"""The registry in a database: apps and devices for ``xp2p cloud --db URL``.

SQLAlchemy 2 (asyncio) over aiosqlite (``sqlite:///PATH``, one node) or asyncpg
(``postgresql://...``, nodes on several machines), with alembic migrations
(``xp2p.cloud.migrations``) run at start, under a lock where the database has one, so nodes
starting together migrate once.

Every change (the admin API's, a TOML seed's) bumps ``registry_revision`` in its own
transaction; each node's ``watch`` polls that one row and reloads the registry into its
``Accounts`` when it moved, so a change applies on every node within ``WATCH_INTERVAL`` plus a
load, without any other channel between the nodes.

What is secret is sealed (``xp2p.cloud.secret_box``): app secrets and the shared secrets of
TOML-seeded devices. Provisioned devices have a public key only.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import alembic.command
import alembic.config
import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from xp2p.cloud.accounts import Accounts, DeviceAccount
from xp2p.cloud.config import AppConfig, CloudConfig
from xp2p.cloud.secret_box import SecretBox

logger = logging.getLogger("xp2p.cloud.registry")

MIGRATIONS = Path(__file__).with_name("migrations")
#: How often each node looks at the revision counter (s).
WATCH_INTERVAL = 0.25
#: Bytes of a new app secret (43 characters of base64url).
APP_SECRET_BYTES = 32
_MIGRATION_LOCK = 0x78703270  # "xp2p": one advisory lock id for every node


class RegistryError(Exception):
    """``code``: ``unknown_app``, ``unknown_device``, ``duplicate`` or ``database``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Base(DeclarativeBase):
    pass


class AppRow(Base):
    __tablename__ = "apps"
    key: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    secret: Mapped[str] = mapped_column(sa.Text)
    products: Mapped[list[str]] = mapped_column(sa.JSON)
    permissions: Mapped[list[str]] = mapped_column(sa.JSON)
    cors_origins: Mapped[list[str]] = mapped_column(sa.JSON)
    disabled: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    created_at: Mapped[int] = mapped_column(sa.BigInteger)


class DeviceRow(Base):
    __tablename__ = "devices"
    product_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    device_name: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    secret: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    public_key: Mapped[bytes | None] = mapped_column(sa.LargeBinary(32), nullable=True)
    disabled: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    created_at: Mapped[int] = mapped_column(sa.BigInteger)


class RevisionRow(Base):
    __tablename__ = "registry_revision"
    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    value: Mapped[int] = mapped_column(sa.BigInteger)


@dataclass(frozen=True)
class AppInfo:
    """An app as the admin API lists it: never its secret."""

    key: str
    products: tuple[str, ...]
    permissions: tuple[str, ...]
    cors_origins: tuple[str, ...]
    disabled: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "products": list(self.products),
            "permissions": list(self.permissions),
            "cors_origins": list(self.cors_origins),
            "disabled": self.disabled,
        }


@dataclass(frozen=True)
class DeviceInfo:
    product_id: str
    device_name: str
    credential: str  #: ``key`` (a key pair) or ``secret`` (seeded from TOML)
    disabled: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "product_id": self.product_id,
            "device_name": self.device_name,
            "credential": self.credential,
            "disabled": self.disabled,
        }


def engine_url(url: str) -> str:
    """``sqlite:///PATH`` and ``postgresql://...`` as SQLAlchemy's async drivers name them."""
    for plain, driver in (
        ("sqlite://", "sqlite+aiosqlite://"),
        ("postgresql://", "postgresql+asyncpg://"),
        ("postgres://", "postgresql+asyncpg://"),
    ):
        if url.startswith(plain):
            return driver + url[len(plain) :]
    if url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
        return url
    raise ValueError("--db must be sqlite:///PATH or postgresql://USER@HOST/DB")


def _app_row_name(key: str) -> str:
    return f"app {key}"


def _device_row_name(product_id: str, device_name: str) -> str:
    return f"device {product_id}/{device_name}"


class AccountDatabase:
    def __init__(self, url: str, box: SecretBox) -> None:
        self._engine: AsyncEngine = create_async_engine(engine_url(url))
        self._box = box
        self._revision = -1

    def __repr__(self) -> str:
        return f"AccountDatabase({self._engine.url.render_as_string(hide_password=True)})"

    async def close(self) -> None:
        await self._engine.dispose()

    # ---- schema --------------------------------------------------------------------------

    async def migrate(self) -> None:
        """Bring the schema to the newest revision (nothing when it is there)."""
        async with self._engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                await conn.execute(sa.text(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})"))
            await conn.run_sync(_upgrade)

    # ---- loading -------------------------------------------------------------------------

    async def load(self) -> tuple[list[AppConfig], list[DeviceAccount], int]:
        """The enabled apps and devices, secrets opened, and the revision they are of."""
        async with self._engine.connect() as conn:
            revision = await self._current(conn)
            apps = (await conn.execute(sa.select(AppRow).where(AppRow.disabled.is_(False)))).all()
            devices = (
                await conn.execute(sa.select(DeviceRow).where(DeviceRow.disabled.is_(False)))
            ).all()
        return (
            [
                AppConfig(
                    a.key,
                    self._box.open(a.secret, _app_row_name(a.key)),
                    tuple(a.products),
                    tuple(a.permissions),
                    tuple(a.cors_origins),
                )
                for a in apps
            ],
            [
                DeviceAccount(
                    d.product_id,
                    d.device_name,
                    None
                    if d.secret is None
                    else self._box.open(d.secret, _device_row_name(d.product_id, d.device_name)),
                    d.public_key,
                )
                for d in devices
            ],
            revision,
        )

    async def accounts(self) -> Accounts:
        apps, devices, self._revision = await self.load()
        return Accounts(apps, devices)

    async def watch(self, accounts: Accounts, interval: float = WATCH_INTERVAL) -> None:
        """Reload ``accounts`` whenever the revision moves; runs until cancelled. A database
        that is down for a while keeps the last version and logs once per outage."""
        failing = False
        while True:
            await asyncio.sleep(interval)
            try:
                async with self._engine.connect() as conn:
                    revision = await self._current(conn)
                if revision != self._revision:
                    apps, devices, self._revision = await self.load()
                    accounts.replace(apps, devices)
                    logger.info(
                        "registry revision %d: %d apps, %d devices",
                        self._revision,
                        len(apps),
                        len(devices),
                    )
                if failing:
                    logger.warning("the registry database answers again")
                failing = False
            except (SQLAlchemyError, OSError) as exc:
                if not failing:
                    logger.warning("cannot read the registry database: %s", short_error(exc))
                failing = True

    async def _current(self, conn: Any) -> int:
        value = (
            await conn.execute(sa.select(RevisionRow.value).where(RevisionRow.id == 1))
        ).scalar()
        return int(value or 0)

    # ---- changes -------------------------------------------------------------------------

    async def seed(self, config: CloudConfig) -> int:
        """Add the config's apps and devices that the registry does not have yet (the TOML
        seeds the registry; the registry's own rows win). Returns how many were added."""
        added = 0
        now = int(time.time())
        async with self._engine.begin() as conn:
            for app in config.apps:
                if await conn.scalar(sa.select(AppRow.key).where(AppRow.key == app.key)) is None:
                    await conn.execute(sa.insert(AppRow).values(**self._app_values(app, now)))
                    added += 1
            for dev in config.devices:
                found = await conn.scalar(
                    sa.select(DeviceRow.product_id).where(
                        DeviceRow.product_id == dev.product_id,
                        DeviceRow.device_name == dev.device_name,
                    )
                )
                if found is None:
                    sealed = self._box.seal(
                        dev.secret, _device_row_name(dev.product_id, dev.device_name)
                    )
                    await conn.execute(
                        sa.insert(DeviceRow).values(
                            product_id=dev.product_id,
                            device_name=dev.device_name,
                            secret=sealed,
                            public_key=None,
                            disabled=False,
                            created_at=now,
                        )
                    )
                    added += 1
            if added:
                await _bump(conn)
        return added

    def _app_values(self, app: AppConfig, now: int) -> dict[str, Any]:
        return {
            "key": app.key,
            "secret": self._box.seal(app.secret, _app_row_name(app.key)),
            "products": list(app.products),
            "permissions": list(app.permissions),
            "cors_origins": list(app.cors_origins),
            "disabled": False,
            "created_at": now,
        }

    async def add_app(
        self,
        key: str,
        products: Sequence[str],
        permissions: Sequence[str],
        cors_origins: Sequence[str] = (),
    ) -> str:
        """A new app; returns its secret (shown once, stored sealed)."""
        secret = secrets.token_urlsafe(APP_SECRET_BYTES)
        app = AppConfig(key, secret, tuple(products), tuple(permissions), tuple(cors_origins))
        try:
            async with self._engine.begin() as conn:
                await conn.execute(
                    sa.insert(AppRow).values(**self._app_values(app, int(time.time())))
                )
                await _bump(conn)
        except IntegrityError:
            raise RegistryError("duplicate", f"app {key} exists already") from None
        return secret

    async def rotate_app_secret(self, key: str) -> str:
        secret = secrets.token_urlsafe(APP_SECRET_BYTES)
        sealed = self._box.seal(secret, _app_row_name(key))
        await self._update_app(key, secret=sealed)
        return secret

    async def set_app_disabled(self, key: str, disabled: bool) -> None:
        await self._update_app(key, disabled=disabled)

    async def remove_app(self, key: str) -> None:
        async with self._engine.begin() as conn:
            done = await conn.execute(sa.delete(AppRow).where(AppRow.key == key))
            if done.rowcount == 0:
                raise RegistryError("unknown_app", f"no app {key}")
            await _bump(conn)

    async def _update_app(self, key: str, **values: Any) -> None:
        async with self._engine.begin() as conn:
            done = await conn.execute(sa.update(AppRow).where(AppRow.key == key).values(**values))
            if done.rowcount == 0:
                raise RegistryError("unknown_app", f"no app {key}")
            await _bump(conn)

    async def list_apps(self) -> list[AppInfo]:
        async with self._engine.connect() as conn:
            rows = (await conn.execute(sa.select(AppRow).order_by(AppRow.key))).all()
        return [
            AppInfo(
                r.key, tuple(r.products), tuple(r.permissions), tuple(r.cors_origins), r.disabled
            )
            for r in rows
        ]

    async def add_device(self, product_id: str, device_name: str, public_key: bytes) -> None:
        try:
            async with self._engine.begin() as conn:
                await conn.execute(
                    sa.insert(DeviceRow).values(
                        product_id=product_id,
                        device_name=device_name,
                        secret=None,
                        public_key=public_key,
                        disabled=False,
                        created_at=int(time.time()),
                    )
                )
                await _bump(conn)
        except IntegrityError:
            raise RegistryError(
                "duplicate", f"device {product_id}/{device_name} exists already"
            ) from None

    async def rotate_device_key(self, product_id: str, device_name: str, public_key: bytes) -> None:
        """The device signs in with the new key only: a seeded secret goes too."""
        await self._update_device(product_id, device_name, public_key=public_key, secret=None)

    async def set_device_disabled(self, product_id: str, device_name: str, disabled: bool) -> None:
        await self._update_device(product_id, device_name, disabled=disabled)

    async def remove_device(self, product_id: str, device_name: str) -> None:
        async with self._engine.begin() as conn:
            done = await conn.execute(
                sa.delete(DeviceRow).where(
                    DeviceRow.product_id == product_id, DeviceRow.device_name == device_name
                )
            )
            if done.rowcount == 0:
                raise RegistryError("unknown_device", f"no device {product_id}/{device_name}")
            await _bump(conn)

    async def _update_device(self, product_id: str, device_name: str, **values: Any) -> None:
        async with self._engine.begin() as conn:
            done = await conn.execute(
                sa.update(DeviceRow)
                .where(DeviceRow.product_id == product_id, DeviceRow.device_name == device_name)
                .values(**values)
            )
            if done.rowcount == 0:
                raise RegistryError("unknown_device", f"no device {product_id}/{device_name}")
            await _bump(conn)

    async def list_devices(self) -> list[DeviceInfo]:
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(
                    sa.select(DeviceRow).order_by(DeviceRow.product_id, DeviceRow.device_name)
                )
            ).all()
        return [
            DeviceInfo(
                r.product_id,
                r.device_name,
                "key" if r.public_key is not None else "secret",
                r.disabled,
            )
            for r in rows
        ]


async def _bump(conn: Any) -> None:
    await conn.execute(
        sa.update(RevisionRow).where(RevisionRow.id == 1).values(value=RevisionRow.value + 1)
    )


def _upgrade(connection: Connection) -> None:
    config = alembic.config.Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    alembic.command.upgrade(config, "head")


def short_error(exc: BaseException) -> str:
    """A database error in one line, without the SQL and parameters SQLAlchemy appends."""
    text = str(getattr(exc, "orig", None) or exc)
    return text.splitlines()[0][:200]
