"""Generate proposals and contracts (.docx, optionally PDF) for a customer, recorded in the history.

Rendering uses docxtpl with a sandboxed Jinja environment that autoescapes (customer data with
``<``, ``&``, quotes or Cyrillic stays text) and ``StrictUndefined`` (a missing variable is an error
naming the template and variable); characters XML cannot hold are removed from the data first.
Every document is a touch: channel ``document``, the template and its hash, the file's SHA-256.
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
from sqlalchemy import insert, select
from sqlalchemy.engine import Engine

from channels.render import money, templates_dir
from crm.db import write_tx
from crm.models import Customer, Manager, Purchase, Touch, TouchEvent, utcnow
from crm.normalize import parse_decimal
from documents.words import rubles_in_words

_ILLEGAL_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
VAT_RATE = Decimal("20")
customers = Customer.__table__
managers = Manager.__table__
purchases = Purchase.__table__
touches = Touch.__table__


class DocumentError(ValueError):
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
    folder = templates_dir() / "documents"
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


def line_items(rows: list[dict[str, Any]], currency: str = "RUB") -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Priced lines (VAT included in prices) and totals, money formatted, total in Russian words."""
    items, gross = [], Decimal(0)
    for number, row in enumerate(rows, start=1):
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
        total = (quantity * price * (1 - discount / 100)).quantize(Decimal("0.01"), ROUND_HALF_UP)
        vat = (total * VAT_RATE / (100 + VAT_RATE)).quantize(Decimal("0.01"), ROUND_HALF_UP)
        gross += total
        items.append({"product": product, "quantity": f"{quantity.normalize():f}",
                      "unit_price": money(price, currency), "discount": f"{discount.normalize():f}%",
                      "total": money(total, currency), "vat": money(vat, currency)})
    vat_total = (gross * VAT_RATE / (100 + VAT_RATE)).quantize(Decimal("0.01"), ROUND_HALF_UP)
    totals = {"gross": money(gross, currency), "net": money(gross - vat_total, currency),
              "vat": money(vat_total, currency), "vat_rate": f"{VAT_RATE.normalize():f}",
              "in_words": rubles_in_words(gross), "amount": gross}
    return items, totals


def _customer(conn, condition, label: Any = None):
    row = conn.execute(select(customers, managers.c.name.label("m_name"), managers.c.phone.label("m_phone"),
                              managers.c.email.label("m_email"))
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


def render_document(engine: Engine, template: str, customer_id: int, *, rows: list[dict[str, Any]] | None = None,
                    out_dir: Path, company: str = "touchflow", today: date | None = None,
                    valid_days: int = 14) -> tuple[Path, str, str]:
    """Render ``templates/documents/<template>.docx`` for a customer; return (path, file SHA-256, summary)."""
    source = templates_dir() / "documents" / f"{template}.docx"
    if not source.exists():
        raise DocumentError(f"no document template {template!r}; available: {', '.join(document_templates())}")
    today = today or date.today()
    with engine.connect() as conn:
        customer = _customer(conn, customers.c.id == customer_id)
        rows = rows or _default_items(conn, customer.id)
    items, totals = line_items(rows)
    number = f"{today:%Y%m%d}-{customer.id}"
    context = clean({
        "number": number, "issued_on": today.strftime("%d.%m.%Y"), "city": customer.region or "Москва",
        "valid_until": (today + timedelta(days=valid_days)).strftime("%d.%m.%Y"),
        "company": {"name": company},
        "customer": {"name": customer.name or customer.external_id, "region": customer.region,
                     "greeting": customer.first_name or customer.name or "Уважаемый клиент",
                     "attributes": dict(customer.attributes or {})},
        "manager": {"name": customer.m_name or company, "phone": customer.m_phone, "email": customer.m_email},
        "items": items, "totals": {k: v for k, v in totals.items() if k != "amount"},
    })
    document = DocxTemplate(source)
    env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=True)
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
                    campaign: str | None = None, run_id: str | None = None, offer: str | None = None) -> int:
    """The document's touch in the history (template, its hash, the file's checksum)."""
    row = conn.execute(select(customers.c.person_id, customers.c.manager_id)
                       .where(customers.c.id == customer_id)).one()
    source = templates_dir() / "documents" / f"{template}.docx"
    now = utcnow()
    touch_id = conn.execute(insert(touches).values(
        person_key=str(row.person_id or customer_id), customer_id=customer_id, campaign=campaign, run_id=run_id,
        offer=offer or template, purpose="marketing", channel="document", address=str(path), status="sent",
        detail=summary, template=f"documents/{template}", template_hash=hashlib.sha256(source.read_bytes()).hexdigest(),
        body_hash=digest, manager_id=row.manager_id, created_at=now, updated_at=now, sent_at=now)
        .returning(touches.c.id)).scalar_one()
    conn.execute(insert(TouchEvent.__table__).values(touch_id=touch_id, status="sent", at=now,
                                                     detail=f"document written: {path.name}"))
    return touch_id


def generate(engine: Engine, template: str, external_id: str, *, items_file: Path | None = None, out_dir: Path,
             pdf: bool = False, company: str = "touchflow", today: date | None = None,
             valid_days: int = 14) -> Generated:
    """Write a document for one customer (the CLI), and record it."""
    with engine.connect() as conn:
        customer = _customer(conn, customers.c.external_id == external_id, external_id)
    rows = read_items(items_file) if items_file else None
    path, digest, summary = render_document(engine, template, customer.id, rows=rows, out_dir=out_dir,
                                            company=company, today=today, valid_days=valid_days)
    pdf_path = _pdf(path) if pdf else None
    with write_tx(engine) as conn:
        touch_id = record_document(conn, template, customer.id, path, digest, summary)
    return Generated(path, digest, touch_id, pdf_path)


def _pdf(path: Path) -> Path:
    office = shutil.which("soffice") or shutil.which("libreoffice")
    if office is None:
        raise DocumentError("--pdf needs LibreOffice (soffice) on PATH; install it (apt-get install "
                            "libreoffice-writer) or leave --pdf out; the .docx was written")
    subprocess.run([office, "--headless", "--convert-to", "pdf", "--outdir", str(path.parent), str(path)],
                   check=True, capture_output=True, timeout=120)
    return path.with_suffix(".pdf")
