"""Where the JavaScript side lives: the checkout's ``web/`` folder (pure).

Two servers hand out files from it: the local player (``xp2p.player.server``: its page's
player and mpegts.js) and the cloud (``xp2p.cloud.webapp``: the web app and the whole SDK).
Both find it here, so a checkout moved or laid out differently changes one line.

``web/`` sits beside ``src/`` in a source checkout, with ``npm ci`` run in it for
``node_modules/``; an installed wheel has neither, and the servers then say so (404 with a
message) rather than fail.
"""

from __future__ import annotations

from pathlib import Path

#: The checkout's web/ folder (src/xp2p/web_assets.py -> the repository root -> web).
WEB_DIR = Path(__file__).resolve().parents[2] / "web"
#: The SDK's ES modules, inside ``WEB_DIR``.
SDK_SRC = Path("src")
#: The web app's page, script and style, inside ``WEB_DIR``.
APP_SRC = Path("app")
#: mpegts.js as npm installs it (``npm ci`` in web/): the classic script that sets
#: ``globalThis.mpegts``, inside ``WEB_DIR``.
MPEGTS_JS = Path("node_modules/mpegts.js/dist/mpegts.js")
