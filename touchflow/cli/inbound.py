"""``touchflow inbound``: replies read from a mailbox (``poll-imap``), stored as inbound touches on the person."""

from __future__ import annotations

import json
import sys
import time
from typing import Optional

import typer

from touchflow.cli.common import JsonOption, open_database
from touchflow.console import console, err_console, print_json
from touchflow.settings import get_settings

app = typer.Typer(help="Replies: read a mailbox over IMAP and store each reply on the person it came from.",
                  no_args_is_help=True)


@app.command("poll-imap")
def poll_imap(
    once: bool = typer.Option(False, "--once", help="Poll once and exit (for cron); default: poll every --interval."),
    interval: float = typer.Option(60.0, "--interval", min=0.1, help="Seconds between polls when looping."),
    rounds: Optional[int] = typer.Option(None, "--rounds", min=1, help="Stop after this many polls (default: "
                                                                           "until interrupted)."),
    limit: int = typer.Option(500, "--limit", min=1, help="Messages stored per poll at most (the rest wait)."),
    as_json: bool = JsonOption,
) -> None:
    """Store every unseen message of the mailbox (settings imap_*) once as an inbound email, then mark it seen.

    Safe to stop at any moment: a message is marked seen only after it is stored, and storing it again stores nothing.

    With --once an unreachable server is an error (exit 6); in the loop it is reported and the next poll
    tries again. --json prints one JSON document (--once) or one JSON line per poll.
    """
    from channels.inbound.imap import ImapConfig, ImapUnavailable, poll_once

    config = ImapConfig.from_settings(get_settings())
    engine = open_database()
    if once:
        _show(poll_once(engine, config, limit=limit).as_dict(), as_json, lines=False)
        return
    done = 0
    try:
        while rounds is None or done < rounds:
            if done:
                time.sleep(interval)
            try:
                summary = poll_once(engine, config, limit=limit).as_dict()
            except ImapUnavailable as exc:  # the server restarts, the network blinks: the next poll tries again
                summary = {"mailbox": config.mailbox, "error": str(exc)}
            _show(summary, as_json, lines=True)
            done += 1
    except KeyboardInterrupt:  # safe at any point: what was committed stays, the rest is read next time
        err_console.print(f"stopped after {done} poll(s)", highlight=False)


def _show(summary: dict, as_json: bool, lines: bool) -> None:
    """A poll's summary: one JSON document (``--once``), one JSON line per poll (the loop), or a sentence."""
    if as_json and lines:
        sys.stdout.write(json.dumps(summary, ensure_ascii=False) + "\n")
        sys.stdout.flush()
        return
    if as_json:
        print_json(summary)
        return
    if "error" in summary:
        err_console.print(f"poll failed: {summary['error']}", highlight=False, soft_wrap=True)
        return
    console.print(f"{summary['mailbox']}: {summary['unseen']} unseen, {summary['stored']} stored "
                  f"({summary['linked']} linked to the touch they answer, {summary['auto_replies']} automatic), "
                  f"{summary['duplicates']} already stored, {summary['bounces']} bounce reports, "
                  f"{summary['failed']} unreadable", highlight=False)
    for line in summary["errors"]:
        err_console.print(f"  {line}", highlight=False, soft_wrap=True)
