"""``make pictures`` for real: Debian's headless Chromium draws an approval card, and the PNG shows it — the size of the
page, text on a white background, and the card's two buttons where the snapshot puts them (last), green Approve and
red Reject. Decoded with the stdlib (``sandbox/png.py``); one screenshot at 1× keeps it quick."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest

from sandbox import blockkit_html, pictures, png


def _is_green(p: tuple[int, int, int]) -> bool:  # Slack's primary button, #007a5a
    return p[0] < 40 and 100 < p[1] < 150 and 70 < p[2] < 120


def _is_red(p: tuple[int, int, int]) -> bool:  # Slack's danger text, #e01e5a
    return p[0] > 180 and p[1] < 110 and 60 < p[2] < 150 and p[0] - p[1] > 100


def test_chromium_draws_the_approval_card(tmp_path: Path) -> None:
    msg = pictures.load("approval_card_open")
    page = blockkit_html.page([msg], pictures.NAMES)
    out = tmp_path / "card.png"
    width, height = pictures.screenshot(page, out, scale=1)

    data = out.read_bytes()
    assert png.size(data) == (width, height) == (pictures.WIDTH, height)
    assert 250 < height < 1500
    image = png.decode(data)
    pixels = image.pixels()
    white = sum(1 for p in pixels if min(p) > 245)
    assert 0.5 < white / len(pixels) < 0.98, "a blank or a black page"

    green = [(i % width, i // width) for i, p in enumerate(pixels) if _is_green(p)]
    red = [(i % width, i // width) for i, p in enumerate(pixels) if _is_red(p)]
    assert len(green) > 40 * 15, "no Approve button (a filled green box)"
    green_rows = {y for _, y in green}
    button_height = max(green_rows) - min(green_rows) + 1
    assert 20 <= button_height <= 40
    assert min(green_rows) > height * 0.6, "the buttons are the card's last block"
    reject = [(x, y) for x, y in red if min(green_rows) <= y <= max(green_rows) and x > max(gx for gx, _ in green)]
    assert reject, "no red Reject label beside Approve"


def test_a_png_that_is_not_one_is_refused() -> None:
    with pytest.raises(png.PNGError):
        png.decode(b"GIF89a")
    one = zlib.compress(b"\x00\xff\x00\x00")
    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, body: bytes, crc: int | None = None) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc or zlib.crc32(kind + body))

    good = png.SIGNATURE + chunk(b"IHDR", ihdr) + chunk(b"IDAT", one) + chunk(b"IEND", b"")
    assert png.decode(good).pixel(0, 0) == (255, 0, 0)
    bad = png.SIGNATURE + chunk(b"IHDR", ihdr) + chunk(b"IDAT", one, crc=1) + chunk(b"IEND", b"")
    with pytest.raises(png.PNGError, match="CRC"):
        png.decode(bad)


def test_without_chromium_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("EDGEBOT_CHROMIUM", raising=False)
    assert pictures.main(["--out", str(tmp_path), "root"]) == 1
    err = capsys.readouterr().err
    assert "Chromium is not installed" in err and "install-system-deps.sh" in err and "Traceback" not in err
    assert not (tmp_path / "root.png").exists()
