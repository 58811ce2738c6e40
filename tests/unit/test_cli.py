"""The xp2p command line: every subcommand explains itself; bad input is a clear error."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from xp2p.cli import build_parser, main
from xp2p.cli.common import cloud_trust, link_config
from xp2p.device.http_origin import self_signed_certificate
from xp2p.trust import grant_public_key_pem


def subcommands() -> list[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(action.choices)


def test_the_main_commands_exist() -> None:
    assert {"demo", "cloud", "device", "watch"} <= set(subcommands())


@pytest.mark.parametrize("command", subcommands())
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: xp2p {command}")
    # A description, not just the usage line.
    assert len(text.splitlines()) > 4


def test_bad_device_name_is_a_clear_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XP2P_APP_SECRET", "x" * 16)
    with pytest.raises(SystemExit) as exit_:
        main(["watch", "no-slash", "--app-key", "k"])
    assert "PRODUCT/DEVICE" in str(exit_.value.code)


def test_missing_secret_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XP2P_DEVICE_SECRET", raising=False)
    with pytest.raises(SystemExit) as exit_:
        main(["device", "DEMO/cam1"])
    assert "XP2P_DEVICE_SECRET" in str(exit_.value.code)


def test_bad_size_is_refused_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["demo", "--size", "big"])
    assert exit_.value.code == 2
    assert "640x360" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('port = "8080"\n', "port: must be of type int"),
        ("port = 70000\n", "port: must be an integer in [0, 65535]"),
        ('[[apps]]\nkey = "a"\nsecret = "short"\n', "apps[0].secret: must be a string of at least"),
        ("port = [\n", "not valid TOML"),
    ],
)
def test_a_bad_cloud_config_is_one_clear_line(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "cloud.toml"
    path.write_text(toml)
    with pytest.raises(SystemExit) as exit_:
        main(["cloud", "--config", str(path)])
    assert str(exit_.value.code).startswith("xp2p cloud: ")
    assert message in str(exit_.value.code)


def test_a_missing_cloud_config_names_the_file() -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["cloud", "--config", "/nonexistent/cloud.toml"])
    assert str(exit_.value.code) == (
        "xp2p cloud: /nonexistent/cloud.toml: cannot read: No such file or directory"
    )


def test_turn_ca_is_read_and_checked_when_the_command_starts(tmp_path: Path) -> None:
    cert, _key = self_signed_certificate(tmp_path)
    args = build_parser().parse_args(
        ["watch", "DEMO/cam1", "--app-key", "k", "--turn-ca", str(cert)]
    )
    assert link_config(args).turn_tls_ca == cert.read_text()
    assert link_config(build_parser().parse_args(["device", "DEMO/cam1"])).turn_tls_ca is None

    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello")
    for path, problem in [(not_pem, "not a PEM CA certificate"), (tmp_path / "no.pem", "No such")]:
        args = build_parser().parse_args(["device", "DEMO/cam1", "--turn-ca", str(path)])
        with pytest.raises(SystemExit) as exit_:
            link_config(args)
        assert str(exit_.value.code).startswith(f"xp2p: --turn-ca {path}: {problem}")


def test_max_links_below_one_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XP2P_DEVICE_SECRET", "x" * 16)
    key = tmp_path / "grant.pub"
    key.write_text(grant_public_key_pem(Ed25519PrivateKey.generate().public_key()))
    with pytest.raises(SystemExit) as exit_:
        main(["device", "DEMO/cam1", "--max-links", "0", "--grant-key", str(key)])
    assert "--max-links" in str(exit_.value.code)


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--app-link-share", "0"), ("--app-link-share", "1.5"), ("--link-idle-timeout", "0")],
)
def test_device_link_limits_are_checked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, flag: str, value: str
) -> None:
    monkeypatch.setenv("XP2P_DEVICE_SECRET", "x" * 16)
    key = tmp_path / "grant.pub"
    key.write_text(grant_public_key_pem(Ed25519PrivateKey.generate().public_key()))
    with pytest.raises(SystemExit) as exit_:
        main(["device", "DEMO/cam1", flag, value, "--grant-key", str(key)])
    assert flag in str(exit_.value.code)


def test_a_device_without_a_pinned_grant_key_does_not_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XP2P_DEVICE_SECRET", "x" * 16)
    with pytest.raises(SystemExit) as exit_:
        main(["device", "DEMO/cam1"])
    assert "no --grant-key" in str(exit_.value.code)
    bad = tmp_path / "bad.pub"
    bad.write_text("not a key")
    with pytest.raises(SystemExit) as exit_:
        main(["device", "DEMO/cam1", "--grant-key", str(bad)])
    assert str(exit_.value.code).startswith(f"xp2p device: --grant-key {bad}: not an Ed25519")


def test_a_cloud_beyond_loopback_needs_tls() -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["cloud", "--host", "0.0.0.0", "--port", "0", "--stun-port", "0"])
    assert str(exit_.value.code).startswith("xp2p cloud: host: listening on '0.0.0.0' needs TLS")


def test_cloud_trust_flags_are_checked_when_the_command_starts(tmp_path: Path) -> None:
    args = build_parser().parse_args(
        ["watch", "DEMO/cam1", "--app-key", "k", "--cloud-fingerprint", "12"]
    )
    with pytest.raises(SystemExit) as exit_:
        cloud_trust(args)
    assert "64 hex digits" in str(exit_.value.code)
    args = build_parser().parse_args(
        ["records", "DEMO/cam1", "--app-key", "k", "--cloud-ca", str(tmp_path / "no.pem")]
    )
    with pytest.raises(SystemExit) as exit_:
        cloud_trust(args)
    assert "cloud CA file" in str(exit_.value.code)


SPANS = [{"start_time": 1_700_000_000, "end_time": 1_700_000_063}]
FILES = [
    {
        "file_name": "door [1].jpg",  # brackets: rich markup must not eat them
        "file_type": "1",
        "file_size": "64",
        "start_time": 1_700_000_000,
        "end_time": 1_700_000_001,
    }
]


def test_records_prints_plain_lines_off_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    from xp2p.cli.records import show_files, show_spans

    show_spans("DEMO/cam1 channel 0", 1_700_000_000, 1_700_003_600, SPANS)
    show_files(FILES)
    show_spans("DEMO/cam1 channel 0", 0, 60, [])
    assert capsys.readouterr().out.splitlines() == [
        "DEMO/cam1 channel 0: recorded between 2023-11-14 22:13:20Z and 2023-11-14 23:13:20Z:",
        "  2023-11-14 22:13:20Z -> 2023-11-14 22:14:23Z  (1m03s)",
        "files (1):",
        "  door [1].jpg  picture  64 B  2023-11-14 22:13:20Z -> 2023-11-14 22:13:21Z",
        "DEMO/cam1 channel 0: recorded between 1970-01-01 00:00:00Z and 1970-01-01 00:01:00Z:",
        "  nothing",
    ]


def test_records_draws_tables_on_a_terminal(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    from xp2p.cli.records import show_files, show_spans

    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.setenv("COLUMNS", "120")
    show_spans("DEMO/cam1 channel 0", 1_700_000_000, 1_700_003_600, SPANS)
    show_files(FILES)
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("│")]
    assert len(rows) == 2
    assert "2023-11-14 22:14:23Z" in rows[0] and "1m03s" in rows[0]
    assert "door [1].jpg" in rows[1] and "picture" in rows[1] and "64 B" in rows[1]


def test_status_lines_are_plain_text_in_a_pipe(capsys: pytest.CaptureFixture[str]) -> None:
    from xp2p.cli.common import status

    status("saved x [y] :smile: " + "z" * 200, ok=True)
    status("xp2p cmd: failure", ok=False, stderr=True)
    captured = capsys.readouterr()
    assert captured.out == "saved x [y] :smile: " + "z" * 200 + "\n"  # no colour, no wrap
    assert captured.err == "xp2p cmd: failure\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["watch"], "give PRODUCT/DEVICE or --url URL (one of them)"),
        (["watch", "DEMO/cam1", "--url", "https://o/live/x.flv"], "one of them"),
        (["watch", "--url", "ftp://o/live/x.flv"], "--url"),
        (["watch", "--url", "xp2p-device://DEMO/cam1?quality=high"], "must be an http(s)"),
        (
            ["watch", "--url", "https://o/x.flv", "--live-stream-domain", "e"],
            "--live-stream-domain is for a device",
        ),
        (["watch", "DEMO/cam1", "--live-stream-domain", "ftp://edge"], "--live-stream-domain:"),
    ],
)
def test_watch_says_what_it_cannot_watch(
    argv: list[str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XP2P_APP_SECRET", "x" * 16)
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--app-key", "k"])
    assert message in str(exit_.value.code), exit_.value.code


def test_a_1vn_stream_gets_a_player_path_from_its_file_name() -> None:
    from xp2p.cli.serve import stream_name

    assert stream_name("https://host/live/x.flv") == "x"
    assert stream_name("https://host/live/a b%2F.flv?token=1") == "a_b_2F"
    assert stream_name("https://host/") == "live"
