"""``touchflow init DIR``: a project a team keeps in git.

    touchflow.toml   settings (no secrets: those come from the environment or Prefect Secret blocks)
    campaigns/       the team's campaign and reminder specs (a copy of the shipped ones to start from)
    templates/       the team's message templates; a folder named like a shipped one replaces it
    segments/        the team's segment files (added to the shipped library)
    prefect.yaml     a deployment per spec, on its own schedule (`touchflow deployments write`)
"""

from __future__ import annotations

import shutil
from pathlib import Path

from flows import deployments
from touchflow.errors import UsageError
from touchflow.settings import CONFIG_FILE, shipped

CONFIG = """\
# touchflow settings for this project. The environment wins over this file (TOUCHFLOW_<SECTION>_<KEY>);
# paths are relative to this folder. Secrets never go here: set TOUCHFLOW_SMTP_PASSWORD,
# TOUCHFLOW_TWILIO_AUTH_TOKEN, TOUCHFLOW_TELEGRAM_BOT_TOKEN, TOUCHFLOW_TELEGRAM_WEBHOOK_SECRET and
# TOUCHFLOW_SECRET_KEY in the environment, or name Prefect Secret blocks in TOUCHFLOW_<NAME>_BLOCK.
# `touchflow config show` prints what is in effect and where each value came from.

database_url = "sqlite:///touchflow.db"   # or postgresql://user@host/db (the password in the environment)
locale = "ru_RU"
default_timezone = "Europe/Moscow"
default_region = "RU"
currency = "RUB"
company_name = "{company}"
public_url = "http://127.0.0.1:8000"     # where `touchflow serve` is reached: unsubscribe links, webhooks
outbox_dir = "outbox"

[email]
transport = "file"          # smtp once [smtp] is filled in

[sms]
transport = "file"          # twilio

[voice]
transport = "file"          # twilio

[telegram]
transport = "file"          # telegram
bot_username = "touchflow_bot"

[smtp]
host = "127.0.0.1"
port = 25
starttls = false
pool_size = 4

[rate]                      # provider limits, per second
sms = 1
voice = 1
telegram = 30
"""

GITIGNORE = "*.db\n*.db-wal\n*.db-shm\noutbox/\n*.rejects.csv\n.prefect/\n"
TEMPLATES_README = """\
# Message templates

One folder per message, one file per channel part (`email_subject.txt`, `email.txt`, `email.html`,
`sms.txt`, `telegram.html`, `voice.txt`, `call_script.txt`) and an optional `meta.yaml`. A folder
here named like a shipped template (`touchflow template list`) replaces it; `touchflow template
check NAME` renders every part against sample customers.
"""
SEGMENTS_EXAMPLE = """\
# Segments of this project, added to the shipped library (`touchflow segment list`).
segments:
  moscow_email:
    description: Customers in Moscow with an email address
    rule:
      all:
        - region: [Москва]
        - has_contact: email
"""


def init_project(directory: Path, *, company: str = "touchflow") -> list[Path]:
    """Create a project in ``directory`` (which must not hold one already); return the files written."""
    directory = directory.resolve()
    if (directory / CONFIG_FILE).exists():
        raise UsageError(f"{directory / CONFIG_FILE} exists: {directory} is a touchflow project already")
    directory.mkdir(parents=True, exist_ok=True)
    written = [_write(directory / CONFIG_FILE, CONFIG.format(company=company)),
               _write(directory / ".gitignore", GITIGNORE),
               _write(directory / "templates" / "README.md", TEMPLATES_README),
               _write(directory / "segments" / "segments.yaml", SEGMENTS_EXAMPLE)]
    campaigns = directory / "campaigns"
    campaigns.mkdir(exist_ok=True)
    for spec in sorted(shipped("campaigns").glob("*.yaml")):
        shutil.copyfile(spec, campaigns / spec.name)
        written.append(campaigns / spec.name)
    written.append(deployments.write(directory))
    return written


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
