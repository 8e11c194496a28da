"""Proposals and contracts: valid .docx with hostile data, totals and words, errors, history touches;
city or region, discounts on every line, the VAT rate from settings, who signs."""

from __future__ import annotations

import shutil
from decimal import Decimal

import pytest
from docx import Document
from sqlalchemy import select

from crm.importing import import_file
from crm.models import Touch
from documents.build_templates import build
from documents.proposals import DocumentError, generate, line_items
from documents.words import rubles_in_words
from tests.helpers import run_cli, run_json, write_csv
from touchflow.settings import Settings, reset_settings

HOSTILE = 'ООО «Рога & Копыта» <script>alert("x")</script> \x07\x0b'


def text_of(path) -> str:
    document = Document(path)
    parts = [p.text for p in document.paragraphs]
    parts += [cell.text for table in document.tables for row in table.rows for cell in row.cells]
    return "\n".join(parts)


@pytest.fixture
def base(engine, tmp_path):
    import_file(engine, "customers", write_csv(tmp_path / "c.csv", ["external_id", "name", "region", "Город"],
                                               [["H1", HOSTILE, "Москва", ""], ["P1", "Петров", "Татарстан", "Казань"],
                                                ["R1", "Рыбаков", "Приморский край", ""]]))
    import_file(engine, "purchases", write_csv(tmp_path / "p.csv", ["customer", "date", "product", "quantity",
                                                                     "amount"],
                                               [["P1", "2026-10-01", "Визитки 1000 шт", "1000", "1600"]]))
    return engine


def test_amounts_in_words_and_totals():
    assert rubles_in_words(1500.50) == "Одна тысяча пятьсот рублей 50 копеек"
    assert rubles_in_words(2001) == "Две тысячи один рубль 00 копеек"
    assert rubles_in_words(21000.01) == "Двадцать одна тысяча рублей 01 копейка"
    items, totals = line_items([{"product": "A", "quantity": "2", "unit_price": "1 000,00", "discount_percent": "10"},
                                {"product": "B", "quantity": 1, "unit_price": 600}])
    assert items[0]["total"] == "1\u00a0800\u00a0₽" and totals["gross"] == "2\u00a0400\u00a0₽"
    assert totals["vat"] == "400\u00a0₽" and totals["in_words"] == "Две тысячи четыреста рублей 00 копеек"
    with pytest.raises(DocumentError, match="line item 1"):
        line_items([{"product": "A", "quantity": "-1", "unit_price": "5"}])


def test_hostile_customer_data_gives_a_valid_document(base, tmp_path):
    items = tmp_path / "items.csv"
    items.write_text('product;quantity;unit_price;discount_percent\n"Печать <A4> & ""глянец""";3;150,50;0\n',
                     encoding="utf-8")
    done = generate(base, "proposal", "H1", items_file=items, out_dir=tmp_path / "out")
    text = text_of(done.path)                       # python-docx opens it again: the XML is valid
    assert 'ООО «Рога & Копыта» <script>alert("x")</script>' in text
    assert 'Печать <A4> & "глянец"' in text and "Четыреста пятьдесят один рубль 50 копеек" in text
    with base.connect() as conn:
        touch = conn.execute(select(Touch.__table__).where(Touch.__table__.c.id == done.touch_id)).one()
    assert touch.channel == "document" and touch.body_hash == done.sha256 and touch.template == "documents/proposal"


def test_contract_and_default_items_from_the_last_purchase(base, tmp_path, cli_env):
    result = run_json("proposal", "generate", "--template", "contract", "--customer", "P1", "--out", tmp_path)
    text = text_of(result["path"])
    assert "Договор оказания услуг" in text and "Визитки 1000 шт: 1000 × 1,60\u00a0₽ = 1\u00a0600\u00a0₽" in text
    assert "Одна тысяча шестьсот рублей 00 копеек" in text and "г. Казань" in text


def test_missing_variables_unknown_templates_and_pdf_without_libreoffice(base, tmp_path, monkeypatch):
    folder = tmp_path / "templates" / "documents"
    build(folder)
    from docx import Document as New

    broken = New()
    broken.add_paragraph("{{ customer.passport }}")
    broken.save(folder / "broken.docx")
    monkeypatch.setenv("TOUCHFLOW_TEMPLATES_DIR", str(tmp_path / "templates"))
    reset_settings()  # settings are read once per process
    with pytest.raises(DocumentError, match="broken.docx.*passport"):
        generate(base, "broken", "P1", out_dir=tmp_path / "out")
    with pytest.raises(DocumentError, match="available: broken, contract, proposal"):
        generate(base, "nope", "P1", out_dir=tmp_path / "out")
    if shutil.which("soffice") is None and shutil.which("libreoffice") is None:
        with pytest.raises(DocumentError, match="needs LibreOffice"):
            generate(base, "proposal", "P1", out_dir=tmp_path / "out", pdf=True)
    assert run_cli("proposal", "generate", "--customer", "NOPE").exit_code == 1


DAY = "2026-11-23"


def _items(tmp_path, *lines):
    path = tmp_path / "items.csv"
    path.write_text("product;quantity;unit_price;discount_percent\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return path


def _contract(engine, tmp_path, customer, *lines, settings=None):
    from datetime import date

    done = generate(engine, "contract", customer, items_file=_items(tmp_path, *(lines or ("Визитки;1;1500;0",))),
                    out_dir=tmp_path / "out", today=date.fromisoformat(DAY), settings=settings)
    return text_of(done.path)


def test_contract_says_the_city_when_known_and_else_the_region_without_g(base, tmp_path):
    with_city = _contract(base, tmp_path, "P1").splitlines()
    assert with_city[1] == "г. Казань, 23.11.2026"                  # the city, not the region
    only_region = _contract(base, tmp_path, "R1")
    assert only_region.splitlines()[1] == "Приморский край, 23.11.2026"
    assert "г. Приморский" not in only_region


def test_every_line_shows_quantity_price_discount_and_sum_and_a_free_line_says_so(base, tmp_path):
    items, totals = line_items([{"product": "Визитки", "quantity": 1, "unit_price": 1500, "discount_percent": 100},
                                {"product": "Буклеты", "quantity": 2, "unit_price": 1000, "discount_percent": 10},
                                {"product": "Печать", "quantity": 3, "unit_price": 100}])
    free, off, plain = items
    assert free["free"] and free["total"] == "0\u00a0₽" and free["discount_amount"] == "1\u00a0500\u00a0₽"
    assert free["discount"] == "100\u00a0% (\u22121\u00a0500\u00a0₽)" and free["vat"] == "0\u00a0₽"
    assert off["subtotal"] == "2\u00a0000\u00a0₽" and off["discount"] == "10\u00a0% (\u2212200\u00a0₽)"
    assert off["total"] == "1\u00a0800\u00a0₽" and not off["free"]
    assert plain["discount"] == "—" and not plain["discounted"]
    assert totals["subtotal"] == "3\u00a0800\u00a0₽" and totals["discount"] == "1\u00a0700\u00a0₽"
    assert totals["gross"] == "2\u00a0100\u00a0₽"
    text = _contract(base, tmp_path, "P1", "Визитки;1;1500;100", "Буклеты;2;1000;10", "Печать;3;100;0")
    assert ("— Визитки: 1 × 1\u00a0500\u00a0₽ = 1\u00a0500\u00a0₽, скидка 100\u00a0% (\u22121\u00a0500\u00a0₽), "
            "итого 0\u00a0₽ — бесплатно") in text
    assert ("— Буклеты: 2 × 1\u00a0000\u00a0₽ = 2\u00a0000\u00a0₽, скидка 10\u00a0% (\u2212200\u00a0₽), "
            "итого 1\u00a0800\u00a0₽") in text
    assert "— Печать: 3 × 100\u00a0₽ = 300\u00a0₽" in text and "= 0\u00a0₽" not in text


@pytest.mark.parametrize("rate, line, line_vat", [
    ("20", "в т.ч. НДС 20\u00a0%: 400\u00a0₽", "400\u00a0₽"),
    ("10", "в т.ч. НДС 10\u00a0%: 218,18\u00a0₽", "218,18\u00a0₽"),
    ("none", "Без НДС", "без НДС"),
])
def test_vat_rate_comes_from_settings(base, tmp_path, monkeypatch, rate, line, line_vat):
    monkeypatch.setenv("TOUCHFLOW_VAT_RATE", rate)
    reset_settings()
    items, totals = line_items([{"product": "A", "quantity": 2, "unit_price": 1200}],
                               vat_rate=None if rate == "none" else Decimal(rate))
    assert totals["vat_line"] == line and items[0]["vat"] == line_vat
    done = generate(base, "proposal", "P1", items_file=_items(tmp_path, "A;2;1200;0"), out_dir=tmp_path / "out")
    text = text_of(done.path)
    assert line in text.splitlines()                              # the totals line, from TOUCHFLOW_VAT_RATE
    assert ("НДС 20" in text) == (rate == "20")
    contract = _contract(base, tmp_path, "P1", "A;2;1200;0")
    price = [line for line in contract.splitlines() if line.startswith("Цена договора")]
    vat = "без НДС" if rate == "none" else line
    assert price == [f"Цена договора: 2\u00a0400\u00a0₽ (Две тысячи четыреста рублей 00 копеек), {vat}."]


def test_a_bad_vat_rate_is_refused_saying_what_to_write(monkeypatch):
    with pytest.raises(ValueError, match="write 20, 10, 0, or none"):
        Settings(vat_rate="двадцать")


def test_the_rep_signs_by_name_and_position_else_the_company_signatory_never_the_company_twice(base, tmp_path):
    import_file(base, "managers", write_csv(tmp_path / "m.csv", ["code", "ФИО", "Должность"],
                                            [["petrov", "Пётр Петров", "Менеджер по продажам"]]))
    import_file(base, "customers", write_csv(tmp_path / "c2.csv", ["external_id", "manager"],
                                             [["P1", "petrov"], ["H1", "ghost"]]))   # ghost: a code, no name
    legal = Settings(company_legal_name="ООО «Визитка»", company_signatory="Иванов Иван Иванович")

    def signature(customer, settings):
        return next(line for line in _contract(base, tmp_path, customer, settings=settings).splitlines()
                    if line.startswith("Исполнитель:"))

    assert signature("P1", legal) == "Исполнитель: ООО «Визитка», менеджер по продажам Пётр Петров ____________"
    assert signature("R1", legal) == "Исполнитель: ООО «Визитка», генеральный директор Иванов Иван Иванович " \
                                     "____________"
    assert signature("H1", legal) == signature("R1", legal)        # a rep known only by a code does not sign
    assert signature("R1", Settings()) == "Исполнитель: touchflow ____________"
    proposal = text_of(generate(base, "proposal", "H1", items_file=_items(tmp_path, "A;1;100;0"),
                                out_dir=tmp_path / "out").path)
    assert "ghost" not in proposal and "Ваш менеджер" not in proposal
