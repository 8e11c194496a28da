"""``touchflow user``: console and API accounts — add, list, disable, reset a password, API tokens."""

from __future__ import annotations

import sys
from typing import Optional

import typer
from rich.table import Table

from touchflow.cli.common import JsonOption, open_database
from touchflow.console import console, print_json
from touchflow.errors import InputError

app = typer.Typer(help="Console users: add, list, disable, reset; API tokens.", no_args_is_help=True)
tokens_app = typer.Typer(help="API tokens of a user (shown once, stored hashed).", no_args_is_help=True)
app.add_typer(tokens_app, name="token")

PasswordStdin = typer.Option(False, "--password-stdin", help="Read the password from standard input (scripts).")


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    return typer.prompt("Password", hide_input=True, confirmation_prompt=True)


def _accounts():
    from crm import accounts

    return accounts


def _call(function, *args, **kwargs):
    accounts = _accounts()
    try:
        return function(*args, **kwargs)
    except accounts.AccountError as exc:
        raise InputError(str(exc)) from None


@app.command("add")
def user_add(name: str = typer.Argument(..., help="Login name."),
             role: str = typer.Option(..., "--role", help="admin, marketing, sales or compliance."),
             manager: Optional[str] = typer.Option(None, "--manager", help="A sales user's rep code."),
             password_stdin: bool = PasswordStdin, as_json: bool = JsonOption) -> None:
    """Add a user; the password comes from a prompt (or stdin with --password-stdin) and is stored as Argon2."""
    engine = open_database()
    ident = _call(_accounts().add_user, engine, name, role, _password(password_stdin), manager_code=manager)
    if as_json:
        print_json({"id": ident, "name": name, "role": role, "manager": manager})
    else:
        console.print(f"user {name} added ({role})", highlight=False)


@app.command("list")
def user_list(as_json: bool = JsonOption) -> None:
    """List users with role, rep and whether they are active."""
    rows = _accounts().list_users(open_database())
    if as_json:
        print_json({"users": rows, "count": len(rows)})
        return
    table = Table(title=f"{len(rows)} users")
    for column in ("name", "role", "rep", "active"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["name"], row["role"], row["manager"] or "", "yes" if row["active"] else "no")
    console.print(table)


@app.command("disable")
def user_disable(name: str = typer.Argument(..., help="Login name.")) -> None:
    """Disable a user: their sessions end and their API tokens are revoked (the user is kept for the access log)."""
    _call(_accounts().disable, open_database(), name)
    console.print(f"user {name} disabled", highlight=False)


@app.command("reset")
def user_reset(name: str = typer.Argument(..., help="Login name."), password_stdin: bool = PasswordStdin) -> None:
    """Set a new password; the user's sessions end."""
    engine = open_database()
    _call(_accounts().set_password, engine, name, _password(password_stdin))
    console.print(f"password of {name} reset", highlight=False)


@tokens_app.command("create")
def token_create(name: str = typer.Argument(..., help="Login name."),
                 label: str = typer.Option("", "--label", help="What the token is for."),
                 as_json: bool = JsonOption) -> None:
    """Create an API token for a user and print it once (send it as `Authorization: Bearer <token>`)."""
    ident, token = _call(_accounts().create_token, open_database(), name, label)
    if as_json:
        print_json({"id": ident, "token": token})
    else:
        console.print(f"token {ident}: {token}\n(shown once; keep it secret)", highlight=False)


@tokens_app.command("revoke")
def token_revoke(token_id: int = typer.Argument(..., help="The token's id.")) -> None:
    """Revoke an API token."""
    _call(_accounts().revoke_token, open_database(), token_id)
    console.print(f"token {token_id} revoked", highlight=False)
