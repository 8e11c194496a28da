"""Proposals and contracts: valid .docx with hostile data, totals and words, errors, history touches."""

from __future__ import annotations

import shutil

import pytest
from docx import Document
from sqlalchemy import select

from crm.importing import import_file
from crm.models import Touch
from documents.build_templates import build
from documents.proposals import DocumentError, generate, line_items
from documents.words import rubles_in_words
from tests.helpers import run_cli, run_json, write_csv

HOSTILE = 'ООО «Рога & Копыта» <script>alert("x")</script> \x07\x0b'


def text_of(path) -> str:
    document = Document(path)
    parts = [p.text for p in document.paragraphs]
    parts += [cell.text for table in document.tables for row in table.rows for cell in row.cells]
    return "\n".join(parts)


@pytest.fixture
def base(engine, tmp_path):
    import_file(engine, "customers", write_csv(tmp_path / "c.csv", ["external_id", "name", "region"],
                                               [["H1", HOSTILE, "Москва"], ["P1", "Петров", "Казань"]]))
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
    with pytest.raises(DocumentError, match="broken.docx.*passport"):
        generate(base, "broken", "P1", out_dir=tmp_path / "out")
    with pytest.raises(DocumentError, match="available: broken, contract, proposal"):
        generate(base, "nope", "P1", out_dir=tmp_path / "out")
    if shutil.which("soffice") is None and shutil.which("libreoffice") is None:
        with pytest.raises(DocumentError, match="needs LibreOffice"):
            generate(base, "proposal", "P1", out_dir=tmp_path / "out", pdf=True)
    assert run_cli("proposal", "generate", "--customer", "NOPE").exit_code == 1
