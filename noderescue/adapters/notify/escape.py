"""Escaping node-written text for each notification format, in one place.

Condition reasons and messages, node names and label values are written by the machines
themselves (a kubelet updates its own Node): a compromised node can put ``<!channel>``, a link
that shows one address and opens another (``<https://evil|https://grafana>``), or a line break
followed by a forged ":white_check_mark: noderescue succeeded" into them. Everything a notification
formats as text goes through :func:`escape` for its format; structured JSON fields stay raw
(JSON encoding is their escaping), so receivers that parse fields see the real values.

Formats: ``plain`` (PagerDuty summaries, log-like text), ``mrkdwn`` (Slack, Mattermost,
Rocket.Chat incoming webhooks), ``markdown`` (Teams and other CommonMark renderers).
"""

from __future__ import annotations

import re
from typing import Literal

TextFormat = Literal["plain", "mrkdwn", "markdown"]

# One field of a notification never needs more; a 1 MB condition message must not become a
# 1 MB chat message.
MAX_FIELD_CHARS = 500
# C0/C1 controls (newlines included: a line break would let node text forge a second line) and
# the Unicode bidirectional overrides and isolates (which reorder what a reader sees).
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]+")
# Broadcast mentions that Slack (with link_names) and Discord expand even without angle brackets.
_BROADCAST = re.compile(r"@(channel|here|everyone|group)\b", re.IGNORECASE)
_ZERO_WIDTH_SPACE = "\u200b"
# CommonMark punctuation that can start emphasis, links, code, headings, lists or raw HTML.
_MARKDOWN_SPECIALS = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~])")


def plain(text: str, *, limit: int = MAX_FIELD_CHARS) -> str:
    """One line of text: control and bidi characters become a space, bounded in length."""
    text = _CONTROLS.sub(" ", text).strip()
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text


def _defuse_mentions(text: str) -> str:
    return _BROADCAST.sub(lambda m: f"@{_ZERO_WIDTH_SPACE}{m.group(1)}", text)


def mrkdwn(text: str, *, limit: int = MAX_FIELD_CHARS) -> str:
    """Slack mrkdwn: ``&``, ``<``, ``>`` as entities (Slack's own rule), so no ``<!channel>``,
    ``<@user>`` or ``<url|label>`` control sequence survives; broadcast words are broken."""
    text = plain(text, limit=limit)
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _defuse_mentions(text)


def markdown(text: str, *, limit: int = MAX_FIELD_CHARS) -> str:
    """CommonMark: every punctuation character that could start markup is backslash-escaped."""
    text = _MARKDOWN_SPECIALS.sub(r"\\\1", plain(text, limit=limit))
    return _defuse_mentions(text)


_ESCAPERS = {"plain": plain, "mrkdwn": mrkdwn, "markdown": markdown}


def escape(text: str, fmt: TextFormat, *, limit: int = MAX_FIELD_CHARS) -> str:
    """``text`` made safe to embed in a message of format ``fmt``."""
    return _ESCAPERS[fmt](text, limit=limit)
