"""Write the shipped .docx templates with python-docx, so they can be reviewed and changed as code.

    python -m documents.build_templates      # rewrites templates/documents/*.docx

The templates use docxtpl's Jinja tags; ``{%tr %}`` repeats a table row per line item, ``{%p %}``
a paragraph. The variables are those of ``documents.proposals.document_context``.
"""

from __future__ import annotations

from pathlib import Path

from docx import Document
from docx.enum.text import WD_ALIGN_PARAGRAPH
from docx.shared import Pt

from touchflow.settings import shipped

OUT = shipped("templates") / "documents"  # the checkout's templates/documents (the package links to it)


def _doc() -> Document:
    document = Document()
    style = document.styles["Normal"]
    style.font.name = "Arial"
    style.font.size = Pt(10)
    return document


def proposal() -> Document:
    """Коммерческое предложение: customer and rep, lines with discount and VAT, totals, total in words."""
    d = _doc()
    d.add_paragraph("{{ company.legal_name }}").alignment = WD_ALIGN_PARAGRAPH.RIGHT
    d.add_heading("Коммерческое предложение № {{ number }} от {{ issued_on }}", level=1)
    d.add_paragraph("Кому: {{ customer.name }}{% if place %}, {{ place }}{% endif %}")
    d.add_paragraph("{{ customer.greeting }}, благодарим вас за интерес к нашим услугам. "
                    "Предлагаем следующие условия:")
    table = d.add_table(rows=3, cols=8)
    table.style = "Table Grid"
    for cell, title in zip(table.rows[0].cells, ("№", "Товар / услуга", "Кол-во", "Цена", "Сумма", "Скидка",
                                                 "Итого", "НДС")):
        cell.text = title
    table.rows[1].cells[0].text = "{%tr for item in items %}"
    row = table.rows[2].cells
    for cell, value in zip(row, ("{{ loop.index }}", "{{ item.product }}", "{{ item.quantity }}",
                                 "{{ item.unit_price }}", "{{ item.subtotal }}",
                                 "{% if item.free %}{{ item.discount }}, бесплатно{% else %}{{ item.discount }}"
                                 "{% endif %}", "{{ item.total }}", "{{ item.vat }}")):
        cell.text = value
    end = table.add_row().cells
    end[0].text = "{%tr endfor %}"
    d.add_paragraph("{%p if totals.discounted %}")
    d.add_paragraph("Сумма без скидки: {{ totals.subtotal }}, скидка: {{ totals.discount }}")
    d.add_paragraph("{%p endif %}")
    d.add_paragraph("Всего к оплате: {{ totals.gross }} ({{ totals.in_words }})").runs[0].bold = True
    d.add_paragraph("{{ totals.vat_line }}")
    d.add_paragraph("Предложение действительно до {{ valid_until }}.")
    d.add_paragraph("{%p if manager %}")
    d.add_paragraph("Ваш менеджер: {{ manager.name }}{% if manager.phone %}, {{ manager.phone }}{% endif %}"
                    "{% if manager.email %}, {{ manager.email }}{% endif %}")
    d.add_paragraph("{%p endif %}")
    return d


def contract() -> Document:
    """Договор оказания услуг: parties, subject as priced lines, price in figures and words, signatures."""
    d = _doc()
    d.add_heading("Договор оказания услуг № {{ number }}", level=1)
    d.add_paragraph("{% if place %}{{ place }}, {% endif %}{{ issued_on }}")
    d.add_paragraph("{{ company.legal_name }} (далее — Исполнитель), с одной стороны, и {{ customer.name }} "
                    "(далее — Заказчик), с другой стороны, заключили настоящий договор о нижеследующем.")
    d.add_heading("1. Предмет договора", level=2)
    d.add_paragraph("Исполнитель оказывает Заказчику услуги:")
    d.add_paragraph("{%p for item in items %}")
    d.add_paragraph("— {{ item.product }}: {{ item.quantity }} × {{ item.unit_price }} = {{ item.subtotal }}"
                    "{% if item.discounted %}, скидка {{ item.discount }}, итого {{ item.total_text }}{% endif %}")
    d.add_paragraph("{%p endfor %}")
    d.add_heading("2. Цена и порядок расчётов", level=2)
    d.add_paragraph("Цена договора: {{ totals.gross }} ({{ totals.in_words }})"
                    "{% if totals.vat_rate %}, {{ totals.vat_line }}{% else %}, без НДС{% endif %}.")
    d.add_heading("3. Подписи сторон", level=2)
    d.add_paragraph("Исполнитель: {{ company.legal_name }}{% if signatory %}, {{ signatory.position | in_sentence }} "
                    "{{ signatory.name }}{% endif %} ____________")
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
