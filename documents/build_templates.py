"""Write the shipped .docx templates with python-docx, so they can be reviewed and changed as code.

    python -m documents.build_templates      # rewrites templates/documents/*.docx

The templates use docxtpl's Jinja tags; ``{%tr %}`` repeats a table row per line item.
"""

from __future__ import annotations

from pathlib import Path

from docx import Document
from docx.enum.text import WD_ALIGN_PARAGRAPH
from docx.shared import Pt

OUT = Path(__file__).resolve().parents[1] / "templates" / "documents"


def _doc() -> Document:
    document = Document()
    style = document.styles["Normal"]
    style.font.name = "Arial"
    style.font.size = Pt(10)
    return document


def proposal() -> Document:
    """Коммерческое предложение: customer and manager, line items with discount and VAT, total in words."""
    d = _doc()
    d.add_paragraph("{{ company.name }}").alignment = WD_ALIGN_PARAGRAPH.RIGHT
    d.add_heading("Коммерческое предложение № {{ number }} от {{ issued_on }}", level=1)
    d.add_paragraph("Кому: {{ customer.name }}{% if customer.region %}, {{ customer.region }}{% endif %}")
    d.add_paragraph("{{ customer.greeting }}, благодарим вас за интерес к нашим услугам. "
                    "Предлагаем следующие условия:")
    table = d.add_table(rows=3, cols=7)
    table.style = "Table Grid"
    for cell, title in zip(table.rows[0].cells, ("№", "Товар / услуга", "Кол-во", "Цена", "Скидка", "Сумма",
                                                 "НДС")):
        cell.text = title
    table.rows[1].cells[0].text = "{%tr for item in items %}"
    row = table.rows[2].cells
    for cell, value in zip(row, ("{{ loop.index }}", "{{ item.product }}", "{{ item.quantity }}",
                                 "{{ item.unit_price }}", "{{ item.discount }}", "{{ item.total }}",
                                 "{{ item.vat }}")):
        cell.text = value
    end = table.add_row().cells
    end[0].text = "{%tr endfor %}"
    d.add_paragraph("Итого без НДС: {{ totals.net }}")
    d.add_paragraph("НДС {{ totals.vat_rate }}%: {{ totals.vat }}")
    d.add_paragraph("Всего к оплате: {{ totals.gross }} ({{ totals.in_words }})").runs[0].bold = True
    d.add_paragraph("Предложение действительно до {{ valid_until }}.")
    d.add_paragraph("Ваш менеджер: {{ manager.name }}{% if manager.phone %}, {{ manager.phone }}{% endif %}"
                    "{% if manager.email %}, {{ manager.email }}{% endif %}")
    return d


def contract() -> Document:
    """Договор оказания услуг: parties, subject as line items, price in figures and words."""
    d = _doc()
    d.add_heading("Договор оказания услуг № {{ number }}", level=1)
    d.add_paragraph("г. {{ city }}, {{ issued_on }}")
    d.add_paragraph("{{ company.name }} (далее — Исполнитель), с одной стороны, и {{ customer.name }} "
                    "(далее — Заказчик), с другой стороны, заключили настоящий договор о нижеследующем.")
    d.add_heading("1. Предмет договора", level=2)
    d.add_paragraph("Исполнитель оказывает Заказчику услуги:")
    d.add_paragraph("{%p for item in items %}")
    d.add_paragraph("— {{ item.product }}: {{ item.quantity }} × {{ item.unit_price }} = {{ item.total }}")
    d.add_paragraph("{%p endfor %}")
    d.add_heading("2. Цена и порядок расчётов", level=2)
    d.add_paragraph("Цена договора: {{ totals.gross }} ({{ totals.in_words }}), в том числе НДС "
                    "{{ totals.vat_rate }}% — {{ totals.vat }}.")
    d.add_heading("3. Подписи сторон", level=2)
    d.add_paragraph("Исполнитель: {{ company.name }}, {{ manager.name }} ____________")
    d.add_paragraph("Заказчик: {{ customer.name }} ____________")
    return d


def build(out: Path = OUT) -> list[Path]:
    """Write every template; return the paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, maker in (("proposal", proposal), ("contract", contract)):
        path = out / f"{name}.docx"
        maker().save(path)
        paths.append(path)
    return paths


if __name__ == "__main__":
    for written in build():
        print(written)
