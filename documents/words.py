"""Amounts in Russian words, as proposals and contracts write them: «одна тысяча пятьсот рублей 00 копеек»."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

_UNITS_M = ("", "один", "два", "три", "четыре", "пять", "шесть", "семь", "восемь", "девять")
_UNITS_F = ("", "одна", "две", "три", "четыре", "пять", "шесть", "семь", "восемь", "девять")
_TEENS = ("десять", "одиннадцать", "двенадцать", "тринадцать", "четырнадцать", "пятнадцать", "шестнадцать",
          "семнадцать", "восемнадцать", "девятнадцать")
_TENS = ("", "", "двадцать", "тридцать", "сорок", "пятьдесят", "шестьдесят", "семьдесят", "восемьдесят",
         "девяносто")
_HUNDREDS = ("", "сто", "двести", "триста", "четыреста", "пятьсот", "шестьсот", "семьсот", "восемьсот",
             "девятьсот")
# (one, few, many, feminine) per power of a thousand
_SCALES = ((("", "", ""), False), (("тысяча", "тысячи", "тысяч"), True), (("миллион", "миллиона", "миллионов"), False),
           (("миллиард", "миллиарда", "миллиардов"), False))


def plural_form(n: int, one: str, few: str, many: str) -> str:
    """The Russian form for a count: 1 рубль, 2 рубля, 5 рублей, 11 рублей, 21 рубль."""
    if n % 100 in range(11, 20):
        return many
    return {1: one, 2: few, 3: few, 4: few}.get(n % 10, many)


def _triad(n: int, feminine: bool) -> list[str]:
    words = [_HUNDREDS[n // 100]]
    rest = n % 100
    if 10 <= rest < 20:
        words.append(_TEENS[rest - 10])
    else:
        words.append(_TENS[rest // 10])
        words.append((_UNITS_F if feminine else _UNITS_M)[rest % 10])
    return [w for w in words if w]


def number_in_words(n: int, feminine: bool = False) -> str:
    """A whole number in words (nominative): 1500 → «одна тысяча пятьсот»."""
    if n == 0:
        return "ноль"
    if n < 0:
        return "минус " + number_in_words(-n, feminine)
    words: list[str] = []
    for power in range(len(_SCALES) - 1, -1, -1):
        triad = n // 1000 ** power % 1000
        if not triad:
            continue
        (one, few, many), scale_feminine = _SCALES[power]
        words += _triad(triad, scale_feminine if power else feminine)
        if power:
            words.append(plural_form(triad, one, few, many))
    return " ".join(words)


def rubles_in_words(amount: Decimal | float | int) -> str:
    """«одна тысяча пятьсот рублей 50 копеек» for 1500.50."""
    value = Decimal(str(amount)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    rubles, kopecks = int(value), int((value - int(value)) * 100)
    text = f"{number_in_words(rubles)} {plural_form(rubles, 'рубль', 'рубля', 'рублей')} " \
           f"{kopecks:02d} {plural_form(kopecks, 'копейка', 'копейки', 'копеек')}"
    return text[0].upper() + text[1:]
