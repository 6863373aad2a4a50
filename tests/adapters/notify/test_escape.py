"""Node-written text in notifications: escaped where it is formatted text, raw in JSON fields."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from noderescue.adapters.notify.escape import MAX_FIELD_CHARS, escape, markdown, mrkdwn, plain
from noderescue.adapters.notify.webhook import Notification, build_payload

HOSTILE_MESSAGE = (
    "KubeletDown: <!channel> see <https://evil.example/x|https://grafana.example/d> & <@U0123> @here"
    "\n:white_check_mark: noderescue succeeded: prod/workers-0: all good"
)
HOSTILE_NODE = "workers-0<!everyone>"


def hostile() -> Notification:
    return Notification(
        kind="needsHuman",
        cluster="prod",
        node=HOSTILE_NODE,
        cls="workers",
        action="replace",
        message=HOSTILE_MESSAGE,
        ts=datetime(2026, 1, 1, tzinfo=UTC),
    )


def test_slack_text_carries_no_control_sequence_from_a_node() -> None:
    text = build_payload(hostile())["text"]
    for sequence in ("<!channel>", "<!everyone>", "<https://", "<@U0123>"):
        assert sequence not in text
    assert "<" not in text and ">" not in text
    assert "&lt;!channel&gt;" in text and "&amp;" in text
    assert "@here" not in text  # broken with a zero-width space
    # A forged second message cannot start on a line of its own.
    assert "\n" not in text and text.count("noderescue succeeded") == 1
    assert text.startswith(":rotating_light: noderescue needsHuman: prod/workers-0&lt;!everyone&gt; ")


def test_json_fields_stay_raw_and_json_encoded() -> None:
    payload = build_payload(hostile())
    assert payload["message"] == HOSTILE_MESSAGE
    assert payload["node"] == HOSTILE_NODE
    decoded = orjson.loads(orjson.dumps(payload))
    assert decoded["message"] == HOSTILE_MESSAGE


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("a & b < c > d", "a &amp; b &lt; c &gt; d", id="entities"),
        pytest.param("<!subteam^S1|@sre>", "&lt;!subteam^S1|@sre&gt;", id="subteam"),
        pytest.param("ping @channel now", "ping @\u200bchannel now", id="broadcast"),
        pytest.param("email@channel.example", "email@\u200bchannel.example", id="broadcast-word-boundary"),
        pytest.param("a\r\nb\tc\x00d\u202eevil", "a b c d evil", id="controls-and-bidi"),
    ],
)
def test_mrkdwn(text: str, expected: str) -> None:
    assert mrkdwn(text) == expected


def test_markdown_escapes_links_emphasis_and_html() -> None:
    assert markdown("[click](https://evil) *x* <b>") == r"\[click\]\(https://evil\) \*x\* \<b\>"


def test_every_format_bounds_a_field() -> None:
    huge = "x" * 1_000_000
    for fmt in ("plain", "mrkdwn", "markdown"):
        assert len(escape(huge, fmt)) == MAX_FIELD_CHARS
    assert plain("  spaced  ") == "spaced"
