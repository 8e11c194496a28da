"""``touchflow bounces``: delivery status notifications fed in by hand or by the mail server (a pipe).

    touchflow bounces ingest report.eml          # a report saved to a file
    touchflow bounces ingest - < report.eml      # from stdin: a postfix alias "|touchflow bounces ingest -"
    touchflow bounces address 42                 # touch 42's return address (VERP), to check the routing
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from touchflow.cli.common import JsonOption, open_database
from touchflow.console import console, print_json
from touchflow.errors import UsageError
from touchflow.settings import get_settings

app = typer.Typer(help="Bounces: delivery status notifications (RFC 3464) about the emails sent.",
                  no_args_is_help=True)

MAX_BYTES = 20 * 1024 * 1024  # a report returning a message with attachments stays far below this


def _read(source: str) -> bytes:
    """The raw message from a file, or stdin for ``-``; a clear error for anything unreadable."""
    if source == "-":
        data = sys.stdin.buffer.read(MAX_BYTES + 1)
        where = "stdin"
    else:
        path = Path(source)
        if not path.is_file():
            raise UsageError(f"{source}: no such file; give the path of a saved report (.eml), or - to read stdin")
        try:
            with path.open("rb") as fh:
                data = fh.read(MAX_BYTES + 1)
        except OSError as exc:
            raise UsageError(f"{source}: cannot read it: {exc.strerror}") from None
        where = source
    if not data.strip():
        raise UsageError(f"{where} is empty; give the raw report (headers and body) as the mail server received it")
    if len(data) > MAX_BYTES:
        raise UsageError(f"{where} is over {MAX_BYTES // (1024 * 1024)} MB: not a delivery report")
    return data


@app.command("ingest")
def ingest(
    source: str = typer.Argument(..., metavar="FILE|-", help="The raw report: a file, or - for stdin."),
    envelope_to: Optional[str] = typer.Option(None, "--envelope-to", envvar="ORIGINAL_RECIPIENT",
                                              help="The address the report was delivered to (RCPT TO); postfix's "
                                                   "local delivery sets ORIGINAL_RECIPIENT for a pipe."),
    as_json: bool = JsonOption,
) -> None:
    """Record a bounce: a hard one fails the touch and marks the address bounced, a soft one is counted.

    Exit status 0 for every report read, recorded or not (a mail server piping reports here must not
    bounce them again): the outcome says what happened — recorded, duplicate, forged (the return
    address's tag does not verify: nothing changes), unmatched, not_bounced, not_a_bounce.
    """
    from channels.inbound.bounces import handle_bounce

    result = handle_bounce(open_database(), _read(source), envelope_to)
    data = result.to_dict() if result is not None else {"outcome": "not_a_bounce",
                                                         "detail": "not a delivery status notification"}
    if as_json:
        print_json(data)
        return
    line = f"{data['outcome']}"
    if data.get("touch_id") is not None:
        line += f": touch {data['touch_id']} (by {data['matched_by']})"
    if data.get("severity"):
        line += f", {data['severity']} {data.get('action')} {data.get('status')}"
        if data.get("recipient"):
            line += f" for {data['recipient']}"
    if data.get("touch_failed"):
        line += "; the touch failed"
    if data.get("address_bounced"):
        line += "; the address is marked bounced"
    elif data.get("soft_in_a_row"):
        line += f"; {data['soft_in_a_row']} soft bounce(s) in a row, the address stays active"
    if data.get("detail"):
        line += f" ({data['detail']})"
    console.print(line, markup=False, highlight=False)


@app.command("address")
def address(touch_id: int = typer.Argument(..., help="A touch id."), as_json: bool = JsonOption) -> None:
    """The return address (VERP) a touch's email goes out with: its mail must reach `bounces ingest`."""
    from channels.inbound.bounces import verp_for
    from crm.keys import configured_secret, signing_key

    settings = get_settings()
    key = signing_key(open_database(), configured_secret(settings))
    value = verp_for(key, settings.bounce_local, settings.bounce_domain, settings.mail_from).address(touch_id)
    if as_json:
        print_json({"touch_id": touch_id, "address": value, "verp": settings.verp})
    else:
        console.print(value + ("" if settings.verp else "  (verp is off: emails go out from mail_from)"),
                      markup=False, highlight=False)
