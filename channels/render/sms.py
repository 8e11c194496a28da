"""Count SMS segments: GSM-7 (160 characters, 153 per part) or UCS-2 (70, 67 per part; Cyrillic).

GSM-7 extension characters (``^ { } \\ [ ~ ] | €``) take two septets. UCS-2 counts UTF-16 code
units, so an emoji takes two.
"""

from __future__ import annotations

from dataclasses import dataclass

GSM7_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENDED = set("^{}\\[~]|€\f")


@dataclass(frozen=True)
class SmsInfo:
    """How a text travels as SMS."""

    encoding: str  # GSM-7 or UCS-2
    length: int    # septets (GSM-7) or UTF-16 code units (UCS-2)
    segments: int


def sms_info(text: str) -> SmsInfo:
    """Encoding, length and number of segments of ``text``."""
    if all(ch in GSM7_BASIC or ch in GSM7_EXTENDED for ch in text):
        length = sum(2 if ch in GSM7_EXTENDED else 1 for ch in text)
        single, part = 160, 153
        encoding = "GSM-7"
    else:
        length = len(text.encode("utf-16-le")) // 2
        single, part = 70, 67
        encoding = "UCS-2"
    segments = 0 if length == 0 else 1 if length <= single else -(-length // part)
    return SmsInfo(encoding, length, segments)
