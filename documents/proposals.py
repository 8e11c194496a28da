"""Generate proposals and contracts (.docx, optionally PDF) for a customer, recorded in the history.

Rendering uses docxtpl with a sandboxed Jinja environment that autoescapes (customer data with
``<``, ``&``, quotes or Cyrillic stays text) and ``StrictUndefined`` (a missing variable is an error
naming the template and variable); characters XML cannot hold are removed from the data first.
Every document is a touch: channel ``document``, the template and its hash, the file's SHA-256.

What a template sees (``document_context``): ``number``, ``issued_on``, ``valid_until``; ``place``
(«г. Казань» when the customer's city is known, else their region, else None); ``company``
(``name``, ``legal_name``); ``customer`` (``name``, ``city``, ``region``, ``greeting``,
``attributes``); ``manager`` (the customer's active rep with a name: ``name``, ``position``,
``phone``, ``email``; None otherwise); ``signatory`` (that rep, else the company's signatory from
settings, else None; ``name``, ``position``, ``source``); ``items`` (``line_items``); ``totals``.
Prices include VAT at ``TOUCHFLOW_VAT_RATE`` (``none``: «Без НДС»).
"""

from __future__ import annotations

import csv
import hashlib
import re
import shutil
import subprocess
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import yaml
from docxtpl import DocxTemplate
from jinja2 import StrictUndefined, UndefinedError
from jinja2.sandbox import SandboxedEnvironment, SecurityError
from sqlalchemy import select
from sqlalchemy.engine import Engine

from channels.render.filters import in_sentence, money
from channels.render.templates import template_root
from crm.db import write_tx
from crm.importing.normalize import parse_decimal
from crm.ledger.touches import record_touch
from crm.models import Customer, Manager, Purchase, utcnow
from documents.words import rubles_in_words
from touchflow.errors import InputError
from touchflow.settings import Settings, get_settings

_ILLEGAL_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
VAT_RATE = Decimal("20")  # the default of TOUCHFLOW_VAT_RATE
CENT = Decimal("0.01")
PERCENT = "\u00a0%"
MINUS = "\u2212"
DEFAULT_REP_POSITION = "Менеджер"
customers = Customer.__table__
managers = Manager.__table__
purchases = Purchase.__table__


class DocumentError(InputError):
    """The template, the items or the customer are wrong; the message says which."""


@dataclass
class Generated:
    """What was written."""

    path: Path
    sha256: str
    touch_id: int
    pdf: Path | None = None


def document_templates() -> list[str]:
    """The .docx templates available."""
    folder = template_root("documents") / "documents"
    return sorted(p.stem for p in folder.glob("*.docx")) if folder.is_dir() else []


def clean(value: Any) -> Any:
    """Remove characters XML 1.0 cannot hold, throughout nested data."""
    if isinstance(value, str):
        return _ILLEGAL_XML.sub("", value)
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clean(v) for v in value]
    return value


def read_items(path: Path) -> list[dict[str, Any]]:
    """Line items from CSV (product;quantity;unit_price;discount_percent) or YAML (a list of mappings)."""
    if path.suffix.lower() in (".yaml", ".yml"):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        rows = data.get("items", data) if isinstance(data, dict) else data
    else:
        text = path.read_text(encoding="utf-8-sig")
        delimiter = ";" if text.splitlines()[0].count(";") >= text.splitlines()[0].count(",") else ","
        rows = list(csv.DictReader(text.splitlines(), delimiter=delimiter))
    if not isinstance(rows, list) or not rows:
        raise DocumentError(f"{path}: no line items (columns: product, quantity, unit_price, discount_percent)")
    return rows


def _line(number: int, row: dict[str, Any]) -> tuple[str, Decimal, Decimal, Decimal]:
    """One line's product, quantity, unit price and discount percent, checked."""
    try:
        product = str(row["product"]).strip()
        quantity = parse_decimal(row.get("quantity", 1), "quantity")
        price = parse_decimal(row["unit_price"], "unit_price")
        discount = parse_decimal(row.get("discount_percent") or 0, "discount_percent")
    except (KeyError, ValueError) as exc:
        raise DocumentError(f"line item {number}: {exc} (columns: product, quantity, unit_price, "
                            "discount_percent)") from None
    if not product or quantity <= 0 or price < 0 or not 0 <= discount <= 100:
        raise DocumentError(f"line item {number}: product, a positive quantity, a price and a discount of "
                            "0–100% are needed")
    return product, quantity, price, discount


def percent(value: Decimal) -> str:
    """``20 %``, ``12,5 %``: as Russian documents write a rate."""
    return f"{value.normalize():f}".replace(".", ",") + PERCENT


def vat_in(amount: Decimal, rate: Decimal | None) -> Decimal:
    """The VAT included in ``amount`` at ``rate`` percent (none: 0)."""
    return Decimal(0) if not rate else (amount * rate / (100 + rate)).quantize(CENT, ROUND_HALF_UP)


def line_items(rows: list[dict[str, Any]], currency: str = "RUB", vat_rate: Decimal | None = VAT_RATE
               ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Priced lines (VAT at ``vat_rate`` included in prices, None: no VAT) and totals, money formatted.

    Every line shows quantity, unit price, the sum before discount (``subtotal``), the discount
    (percent and amount: ``discount``, ``discount_amount``; ``discounted``) and the sum; a line at
    100 % off is ``free`` and says so rather than showing a bare zero.
    """
    items, gross, before = [], Decimal(0), Decimal(0)
    for number, row in enumerate(rows, start=1):
        product, quantity, price, discount = _line(number, row)
        subtotal = (quantity * price).quantize(CENT, ROUND_HALF_UP)
        total = (subtotal * (1 - discount / 100)).quantize(CENT, ROUND_HALF_UP)
        gross, before = gross + total, before + subtotal
        off = money(subtotal - total, currency)
        items.append({
            "product": product, "quantity": f"{quantity.normalize():f}", "unit_price": money(price, currency),
            "subtotal": money(subtotal, currency), "discounted": discount > 0, "free": discount == 100,
            "discount_percent": percent(discount), "discount_amount": off,
            "discount": f"{percent(discount)} ({MINUS}{off})" if discount else "—",
            "total": money(total, currency),
            "total_text": f"{money(total, currency)} — бесплатно" if discount == 100 else money(total, currency),
            "vat": money(vat_in(total, vat_rate), currency) if vat_rate is not None else "без НДС"})
    return items, _totals(gross, before, currency, vat_rate)


def _totals(gross: Decimal, before: Decimal, currency: str, vat_rate: Decimal | None) -> dict[str, Any]:
    """The document's totals: what is paid, the discount, the VAT in it (or «Без НДС»), in words."""
    vat = vat_in(gross, vat_rate)
    rate = percent(vat_rate) if vat_rate is not None else None
    return {"gross": money(gross, currency), "net": money(gross - vat, currency), "vat": money(vat, currency),
            "vat_rate": rate, "vat_line": f"в т.ч. НДС {rate}: {money(vat, currency)}" if rate else "Без НДС",
            "subtotal": money(before, currency), "discount": money(before - gross, currency),
            "discounted": before != gross, "in_words": rubles_in_words(gross), "amount": gross}


def _customer(conn, condition, label: Any = None):
    row = conn.execute(select(customers, managers.c.name.label("m_name"), managers.c.phone.label("m_phone"),
                              managers.c.email.label("m_email"), managers.c.position.label("m_position"),
                              managers.c.active.label("m_active"), managers.c.needs_name.label("m_needs_name"))
                       .outerjoin(managers, managers.c.id == customers.c.manager_id).where(condition)).first()
    if row is None:
        raise DocumentError(f"no customer with external id {label!r}")
    return row


def _default_items(conn, customer_id: int) -> list[dict[str, Any]]:
    last = conn.execute(select(purchases).where(purchases.c.customer_id == customer_id)
                        .order_by(purchases.c.purchased_on.desc(), purchases.c.id.desc()).limit(1)).first()
    if last is None:
        raise DocumentError("the customer has no purchases to repeat; give the lines with --items FILE")
    quantity = Decimal(str(last.quantity))
    return [{"product": last.product, "quantity": quantity, "unit_price": Decimal(str(last.amount)) / quantity,
             "discount_percent": 0}]


def place(city: str | None, region: str | None) -> str | None:
    """Where a contract is made: «г. Казань» when the city is known, else the region as it is, else None."""
    if city:
        return city if city.lower().startswith(("г.", "г ")) else f"г. {city}"
    return region or None


def _people(customer: Any, settings: Settings) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The customer's rep (active, with a real name) and who signs: that rep, else the company's signatory."""
    manager = None
    if customer.m_name and customer.m_active and not customer.m_needs_name:
        manager = {"name": customer.m_name, "position": customer.m_position or DEFAULT_REP_POSITION,
                   "phone": customer.m_phone, "email": customer.m_email}
    if manager is not None:
        return manager, {"name": manager["name"], "position": manager["position"], "source": "manager"}
    if settings.company_signatory:
        return None, {"name": settings.company_signatory, "position": settings.company_signatory_position,
                      "source": "company"}
    return None, None


def document_context(customer: Any, items: list[dict[str, Any]], totals: dict[str, Any], *, number: str,
                     today: date, valid_until: date, company: str, settings: Settings) -> dict[str, Any]:
    """What a document template sees (the module docstring lists it), cleaned for XML."""
    manager, signatory = _people(customer, settings)
    return clean({
        "number": number, "issued_on": today.strftime("%d.%m.%Y"), "valid_until": valid_until.strftime("%d.%m.%Y"),
        "place": place(customer.city, customer.region),
        "company": {"name": company, "legal_name": settings.company_legal_name or company},
        "customer": {"name": customer.name or customer.external_id, "city": customer.city,
                     "region": customer.region,
                     "greeting": customer.first_name or customer.name or "Уважаемый клиент",
                     "attributes": dict(customer.attributes or {})},
        "manager": manager, "signatory": signatory,
        "items": items, "totals": {k: v for k, v in totals.items() if k != "amount"},
    })


def render_document(engine: Engine, template: str, customer_id: int, *, rows: list[dict[str, Any]] | None = None,
                    out_dir: Path, company: str | None = None, today: date | None = None,
                    valid_days: int = 14, valid_until: date | None = None, settings: Settings | None = None
                    ) -> tuple[Path, str, str]:
    """Render ``templates/documents/<template>.docx`` for a customer; return (path, file SHA-256, summary).

    The document is valid until ``valid_until`` (a run's offer date) or ``valid_days`` after ``today``;
    VAT, the company's legal name and signatory come from ``settings`` (default: the configured ones).
    """
    source = template_root("documents") / "documents" / f"{template}.docx"
    if not source.exists():
        raise DocumentError(f"no document template {template!r}; available: {', '.join(document_templates())}")
    settings = settings or get_settings()
    today = today or date.today()
    with engine.connect() as conn:
        customer = _customer(conn, customers.c.id == customer_id)
        rows = rows or _default_items(conn, customer.id)
    items, totals = line_items(rows, settings.currency, settings.vat_rate)
    number = f"{today:%Y%m%d}-{customer.id}"
    context = document_context(customer, items, totals, number=number, today=today,
                               valid_until=valid_until or today + timedelta(days=valid_days),
                               company=company or settings.company_name, settings=settings)
    document = DocxTemplate(source)
    env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=True)
    env.filters["in_sentence"] = in_sentence
    try:
        document.render(context, jinja_env=env, autoescape=True)
    except UndefinedError as exc:
        raise DocumentError(f"{source.name}: {exc.message} (the template uses a variable the context lacks)") from None
    except SecurityError as exc:
        raise DocumentError(f"{source.name}: unsafe template: {exc}") from None
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{template}-{number}.docx"
    document.save(path)
    return path, hashlib.sha256(path.read_bytes()).hexdigest(), f"{template} {number}: {totals['gross']}"


def record_document(conn, template: str, customer_id: int, path: Path, digest: str, summary: str, *,
                    campaign: str | None = None, run_id: str | None = None, offer: str | None = None,
                    offer_valid_until: date | None = None) -> int:
    """The document's touch in the history (template, its hash, the file's checksum, the date it is valid until)."""
    row = conn.execute(select(customers.c.person_id, customers.c.manager_id)
                       .where(customers.c.id == customer_id)).one()
    source = template_root("documents") / "documents" / f"{template}.docx"
    now = utcnow()
    return record_touch(conn, {
        "person_key": str(row.person_id or customer_id), "customer_id": customer_id, "campaign": campaign,
        "run_id": run_id, "offer": offer or template, "purpose": "marketing", "channel": "document",
        "address": str(path), "status": "sent", "detail": summary, "template": f"documents/{template}",
        "template_hash": hashlib.sha256(source.read_bytes()).hexdigest(), "body_hash": digest,
        "manager_id": row.manager_id, "offer_valid_until": offer_valid_until, "created_at": now, "updated_at": now})


def generate(engine: Engine, template: str, external_id: str, *, items_file: Path | None = None, out_dir: Path,
             pdf: bool = False, company: str | None = None, today: date | None = None,
             valid_days: int = 14, settings: Settings | None = None) -> Generated:
    """Write a document for one customer (the CLI), and record it."""
    with engine.connect() as conn:
        customer = _customer(conn, customers.c.external_id == external_id, external_id)
    rows = read_items(items_file) if items_file else None
    today = today or date.today()
    path, digest, summary = render_document(engine, template, customer.id, rows=rows, out_dir=out_dir,
                                            company=company, today=today, valid_days=valid_days, settings=settings)
    pdf_path = _pdf(path) if pdf else None
    with write_tx(engine) as conn:
        touch_id = record_document(conn, template, customer.id, path, digest, summary,
                                   offer_valid_until=today + timedelta(days=valid_days))
    return Generated(path, digest, touch_id, pdf_path)


def _pdf(path: Path) -> Path:
    office = shutil.which("soffice") or shutil.which("libreoffice")
    if office is None:
        raise DocumentError("--pdf needs LibreOffice (soffice) on PATH; install it (apt-get install "
                            "libreoffice-writer) or leave --pdf out; the .docx was written")
    subprocess.run([office, "--headless", "--convert-to", "pdf", "--outdir", str(path.parent), str(path)],
                   check=True, capture_output=True, timeout=120)
    return path.with_suffix(".pdf")
