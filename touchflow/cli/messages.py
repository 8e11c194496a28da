"""``touchflow template``, ``channels`` and ``telegram``: messages, the ways they go out, and binding chats."""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from crm.db import SchemaError, make_engine, require_schema
from touchflow.cli.common import AsOfOption, JsonOption, as_of, open_database, segment_rule
from touchflow.console import console, print_json
from touchflow.errors import ConfigError, InputError
from touchflow.settings import get_settings

templates_app = typer.Typer(help="Message templates: list, check every part, preview for a customer.", no_args_is_help=True)
channels_app = typer.Typer(help="Channels and their transports: list, send a test message.", no_args_is_help=True)
telegram_app = typer.Typer(help="Bind Telegram chats to customers (deep links) and run the bot.", no_args_is_help=True)


@templates_app.command("list")
def template_list(as_json: bool = JsonOption) -> None:
    """List message templates, their channels and descriptions."""
    from channels.render import channels_of, meta, template_names, templates_dir

    items = [{"name": n, "channels": channels_of(n), "description": meta(n).get("description", "")}
             for n in template_names()]
    if as_json:
        print_json({"templates": items, "directory": str(templates_dir())})
        return
    table = Table(title=f"templates in {templates_dir()}")
    for column in ("name", "channels", "description"):
        table.add_column(column)
    for item in items:
        table.add_row(item["name"], ", ".join(item["channels"]), item["description"])
    console.print(table)


@templates_app.command("check")
def template_check(names: Optional[list[str]] = typer.Argument(None, help="Template folder names (default: every "
                                                                          "template)."),
                   customers: int = typer.Option(5, "--customers", min=0,
                                                 help="Also check this many customers from the base."),
                   segment: Optional[str] = typer.Option(None, "--segment",
                                                         help="Take those customers from this segment (default: the "
                                                              "template's meta.yaml segment, else anyone)."),
                   day: Optional[str] = AsOfOption,
                   as_json: bool = JsonOption) -> None:
    """Render every part against edge cases (a woman, a man, unknown gender, no rep, a passed need,
    counts 1/2/5/11/21/1,5, a long name, missing data, an expired offer) and customers from the base,
    and report wrong Russian: gender, past dates in the future, expired offers, agreement, decimal
    points, step gaps, leftovers. Exits 1 when there are errors."""
    from dataclasses import asdict

    from channels.render import template_names
    from channels.render.lint import check_template

    today = as_of(day)
    settings = get_settings()
    reports = [check_template(name, today=today, sms_max_segments=settings.sms_max_segments,
                              offer=_run_offer(name, today), extra=_base_contexts(name, customers, segment, today))
               for name in (names or template_names())]
    errors, warnings = sum(r.errors for r in reports), sum(r.warnings for r in reports)
    renderings = sum(r.renderings for r in reports)
    if as_json:
        payload = {"templates": [{"template": r.template, "renderings": r.renderings, "errors": r.errors,
                                  "warnings": r.warnings, "findings": [asdict(f) for f in r.findings]}
                                 for r in reports],
                   "checked": renderings, "errors": errors, "warnings": warnings}
        if names and len(names) == 1:
            payload["template"] = names[0]
        print_json(payload)
    else:
        for report in reports:
            _print_report(report)
        console.print(f"{len(reports)} template(s), {renderings} renderings: {errors} errors, {warnings} warnings",
                      highlight=False)
    if errors:
        raise typer.Exit(1)


def _run_offer(name: str, today) -> dict:
    """The template's offer as a run on ``today`` shows it: ``flows.spec.resolve_offer`` (valid_until a date,
    rules such as end_of_month evaluated on ``today``); a fixed date already past stays as written (the
    linter warns about meta.yaml and checks the expired case)."""
    from channels.render import meta
    from flows.spec import SpecError, resolve_offer

    offer = meta(name).get("offer", {})
    try:
        return resolve_offer(offer, {}, today, template=name, campaign="template check")
    except SpecError:
        return dict(offer)


def _base_contexts(name: str, customers: int, segment: Optional[str], today) -> dict:
    """Contexts of up to ``customers`` customers from the base (the segment's, else the first ones), by label;
    none when there is no base."""
    from sqlalchemy import select

    from channels.render import meta
    from channels.render.context import contexts_for
    from crm.models import Customer

    if not customers:
        return {}
    settings = get_settings()
    engine = make_engine(settings.database_url)
    try:
        require_schema(engine)
    except SchemaError:
        return {}  # no base: the made-up customers alone
    offer = _run_offer(name, today)  # as a run would show it: valid_until a date
    segment = segment or meta(name).get("segment")
    if segment:
        from segments import customer_ids

        rule, library = segment_rule(segment)
        ids = next(customer_ids(engine, rule, library=library, page_size=customers), [])
    else:
        with engine.connect() as conn:
            ids = list(conn.execute(select(Customer.__table__.c.id).order_by(Customer.__table__.c.id)
                                    .limit(customers)).scalars())
    found = contexts_for(engine, ids, offer=offer, company=settings.company_name, as_of=today)
    return {f"customer {c['customer']['external_id']}": c for c in found.values()}


def _print_report(report) -> None:
    from rich.markup import escape

    mark = "[red]" if report.errors else "[yellow]" if report.warnings else "[green]"
    console.print(f"{mark}{report.template}[/]: {report.renderings} renderings, {report.errors} errors, "
                  f"{report.warnings} warnings", highlight=False)
    for finding in report.findings:
        colour = "red" if finding.severity == "error" else "yellow"
        more = f" (+{len(finding.cases) - 3})" if len(finding.cases) > 3 else ""
        where = escape(f"{finding.file} [{finding.kind}] (cases: {', '.join(finding.cases[:3])}{more})")
        console.print(f"  [{colour}]{finding.severity}[/] {where}", highlight=False)
        console.print(f"      {finding.message}", highlight=False, markup=False)
        if finding.text:
            console.print(f"      > {finding.text}", highlight=False, markup=False)


@templates_app.command("preview")
def template_preview(name: str = typer.Argument(..., help="Template folder name."),
                     customer: str = typer.Option(..., "--customer", help="The customer's external id."),
                     channel: Optional[str] = typer.Option(None, "--channel", help="Only this channel."),
                     day: Optional[str] = AsOfOption,
                     as_json: bool = JsonOption) -> None:
    """Print what one customer would receive from a template, per channel, on a day (default today): the
    offer as a run shows it (valid_until a date; rules such as end_of_month evaluated on that day)."""
    from dataclasses import asdict

    from flows.preview import customer_id_of, preview

    today = as_of(day)
    engine = open_database()
    offer, rendered = preview(engine, name, customer_id_of(engine, customer), day=today, settings=get_settings(),
                              channels=[channel] if channel else None)
    if as_json:
        print_json({"template": name, "customer": customer, "as_of": today.isoformat(),
                    "offer_valid_until": offer["valid_until"].isoformat() if offer.get("valid_until") else None,
                    "parts": [asdict(r) for r in rendered]})
        return
    for r in rendered:
        console.rule(f"{r.channel}" + (f" — {r.subject}" if r.subject else ""))
        console.print(r.text, highlight=False, markup=False)
        if r.sms:
            console.print(f"[dim]{r.sms.encoding}, {r.sms.length} characters, {r.sms.segments} segment(s)[/]")


@channels_app.command("list")
def channels_list(as_json: bool = JsonOption) -> None:
    """Show each channel's transport, rate limit and target (secrets masked)."""
    from channels.registry import describe

    rows = describe()
    if as_json:
        print_json({"channels": rows})
        return
    table = Table(title="channels")
    for column in ("channel", "transport", "rate_per_second", "target"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["channel"], row["transport"], str(row["rate_per_second"] or "—"), row["target"])
    console.print(table)


@channels_app.command("test")
def channels_test(channel: str = typer.Argument(..., help="email, sms, voice, telegram or call."),
                  to: str = typer.Option(..., "--to", help="Address: email, +7… phone or Telegram chat id."),
                  text: str = typer.Option("touchflow: тестовое сообщение", "--text", help="What to send."),
                  as_json: bool = JsonOption) -> None:
    """Send one test message through a channel's configured transport and show the provider's answer."""
    import asyncio

    from channels.base import Message
    from channels.errors import ChannelError
    from channels.registry import build_channel

    target = build_channel(channel)

    async def go():
        await target.open()
        try:
            return await target.send(Message(channel=channel, to=to, text=text, subject="touchflow test",
                                             html=f"<p>{text}</p>" if channel in ("email", "telegram") else None))
        finally:
            await target.close()

    try:
        delivery = asyncio.run(go())
    except ChannelError as exc:
        result = {"ok": False, "error": type(exc).__name__, "message": str(exc), "code": exc.code}
        if as_json:
            print_json(result)
        raise InputError(f"{type(exc).__name__}: {exc} (code {exc.code})") from None
    result = {"ok": True, "provider_id": delivery.provider_id, "status": delivery.status, "detail": delivery.detail}
    if as_json:
        print_json(result)
    else:
        console.print(f"sent: {delivery.provider_id} ({delivery.status}) {delivery.detail or ''}", highlight=False)


@telegram_app.command("link")
def telegram_link(customer: str = typer.Argument(..., help="The customer's external id."),
                  as_json: bool = JsonOption) -> None:
    """Make a one-time deep link that binds the customer's Telegram chat when they press Start."""
    from channels.telegram_links import create_link

    link, expires = create_link(open_database(), customer, get_settings().telegram_bot_username)
    if as_json:
        print_json({"customer": customer, "link": link, "expires_at": expires})
    else:
        console.print(f"{link}\n(one use, valid until {expires:%Y-%m-%d})", highlight=False)


@telegram_app.command("listen")
def telegram_listen(once: bool = typer.Option(False, "--once", help="Handle one update and stop."),
                    timeout: int = typer.Option(30, "--timeout", help="Long-poll timeout in seconds."),
                    as_json: bool = JsonOption) -> None:
    """Run the bot in polling mode (getUpdates): bind chats, store messages, answer from the bot file.

    The same handling as the webhook (POST /telegram/webhook): use one or the other, as Telegram
    delivers updates to a webhook or to getUpdates, never both.
    """
    import asyncio
    from collections import Counter

    from channels.bot_spec import load_spec
    from channels.transports.telegram import TelegramConfig, make_bot
    from channels.telegram_links import poll
    from touchflow.secrets import secret

    settings = get_settings()
    token = secret(settings.telegram_bot_token, "TOUCHFLOW_TELEGRAM_BOT_TOKEN")
    if not token:
        raise ConfigError("set TOUCHFLOW_TELEGRAM_BOT_TOKEN (or TOUCHFLOW_TELEGRAM_BOT_TOKEN_BLOCK) to run the bot")
    spec = load_spec(settings=settings)
    engine = open_database()
    bot = make_bot(TelegramConfig(token=token, bot_username=settings.telegram_bot_username,
                                  base_url=settings.telegram_api_base_url, timeout=settings.telegram_timeout))
    actions: Counter = Counter()

    def report(update, outcome) -> None:
        actions[outcome.action] += 1
        if not as_json:
            chat = update.effective_chat.id if update.effective_chat else "-"
            console.print(f"chat {chat}: {outcome.action}" + (f" ({outcome.intent})" if outcome.intent else "")
                          + (f" — {outcome.reason}" if outcome.reason else ""), highlight=False)

    if not as_json:
        console.print(f"listening as @{settings.telegram_bot_username}; Ctrl+C to stop", highlight=False)
    try:
        bound = asyncio.run(poll(engine, bot, stop_after=1 if once else None, timeout=0 if once else timeout,
                                 spec=spec, on_outcome=report))
    except KeyboardInterrupt:
        bound = actions["bound"]
    if as_json:
        print_json({"updates": sum(actions.values()), "bound": bound, "actions": dict(actions)})
    else:
        console.print(f"{sum(actions.values())} update(s), {bound} chat(s) bound")


@telegram_app.command("check")
def telegram_check(path: Optional[str] = typer.Argument(None, help="The bot file (default: the setting "
                                                                   "telegram_bot_file, else the shipped one)."),
                   ask: Optional[list[str]] = typer.Option(None, "--ask", help="A message to match (repeatable): "
                                                                               "which answer would it get?"),
                   as_json: bool = JsonOption) -> None:
    """Check the bot file (FAQ, order intent, replies) and show what messages would be answered with."""
    from channels.bot_spec import load_spec

    spec = load_spec(path, settings=get_settings())
    matches = [{"text": text, "intent": (i := spec.match(text)).kind, "id": i.id} for text in ask or []]
    summary = {"file": spec.path, "faq": [e.id for e in spec.faq], "order_keywords": len(spec.order.keywords),
               "without_rep": spec.without_rep, "due_in_days": spec.due_in_days, "matches": matches}
    if as_json:
        print_json(summary)
        return
    console.print(f"{spec.path}: {len(spec.faq)} FAQ entries ({', '.join(summary['faq'])}), order intent with "
                  f"{summary['order_keywords']} keywords; OK", highlight=False)
    for item in matches:
        console.print(f"  {item['text']!r} → {item['intent']} {item['id']}", highlight=False)