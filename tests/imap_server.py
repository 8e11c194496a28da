"""A real IMAP server for tests: Debian's dovecot (``dovecot-imapd``), run in a temporary folder with its own config.

Plain IMAP on 127.0.0.1 and a free port, no TLS, users from static passwd-files (one a user, added
while it runs), maildirs in the folder. Run by an ordinary user, every dovecot
process runs as that user. Run by root, dovecot refuses to run its login and internal processes as
root and refuses mail uid 0: those run as the ``dovenull`` and ``dovecot`` users the package creates,
and the maildirs belong to ``dovecot``.
"""

from __future__ import annotations

import imaplib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.servers import free_port

DOVECOT = "/usr/sbin/dovecot"


class DovecotUnavailable(RuntimeError):
    """dovecot is not installed or did not start; the message says why."""


@dataclass
class Dovecot:
    """A running dovecot: add mailboxes, deliver messages (IMAP APPEND), ask what is unseen."""

    folder: Path
    port: int
    process: subprocess.Popen
    mail_uid: int
    mail_gid: int
    users: set[str] = field(default_factory=set)
    host: str = "127.0.0.1"

    def add_user(self, name: str, password: str) -> None:
        home = self.folder / "mail" / name
        (self.folder / "users" / f"{name}.passwd").write_text(  # one file a user: nothing cached to go stale
            f"{name}:{{PLAIN}}{password}:{self.mail_uid}:{self.mail_gid}::{home}\n", encoding="utf-8")
        self.users.add(name)

    def session(self, user: str, password: str) -> imaplib.IMAP4:
        client = imaplib.IMAP4(self.host, self.port, timeout=10)
        client.login(user, password)
        client.select("INBOX")
        return client

    def deliver(self, user: str, password: str, *messages: bytes, folder: str = "INBOX") -> None:
        """APPEND ``messages`` to ``folder`` (a wire name: modified UTF-7, quoted), creating it if need be."""
        client = self.session(user, password)
        try:
            if folder != "INBOX":
                client.create(folder)
            for data in messages:
                status, answer = client.append(folder, None, None, data)
                assert status == "OK", answer
        finally:
            client.logout()

    def unseen(self, user: str, password: str) -> list[bytes]:
        client = self.session(user, password)
        try:
            return client.uid("SEARCH", None, "UNSEEN")[1][0].split()
        finally:
            client.logout()

    def log(self) -> str:
        path = self.folder / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        shutil.rmtree(self.folder, ignore_errors=True)


def _accounts() -> tuple[str, str, str, int, int]:
    """(internal user, its group, login user, mail uid, mail gid) for whoever runs the tests."""
    if os.geteuid() != 0:
        me = pwd.getpwuid(os.geteuid())
        group = _group_name(me.pw_gid)
        return me.pw_name, group, me.pw_name, me.pw_uid, me.pw_gid
    try:
        internal, login = pwd.getpwnam("dovecot"), pwd.getpwnam("dovenull")
    except KeyError:
        raise DovecotUnavailable("running as root, dovecot needs the users dovecot and dovenull "
                                 "(created by the dovecot-core package)") from None
    return internal.pw_name, _group_name(internal.pw_gid), login.pw_name, internal.pw_uid, internal.pw_gid


def _group_name(gid: int) -> str:
    import grp

    return grp.getgrgid(gid).gr_name


CONFIG = """\
base_dir = {folder}/run
state_dir = {folder}/state
instance_name = touchflow-test-{port}
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = {internal}
default_internal_group = {group}
default_login_user = {login}
first_valid_uid = 1
first_valid_gid = 1
log_path = {folder}/dovecot.log
mail_location = maildir:{folder}/mail/%u
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {folder}/users/%u.passwd
}}
userdb {{
  driver = passwd-file
  args = {folder}/users/%u.passwd
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
service pop3-login {{
  inet_listener pop3 {{
    port = 0
  }}
}}
"""


def start_dovecot() -> Dovecot:
    """Start dovecot in a fresh temporary folder and wait until it greets; ``DovecotUnavailable`` when it cannot."""
    if not os.access(DOVECOT, os.X_OK):
        raise DovecotUnavailable(f"{DOVECOT} is not installed (apt-get install dovecot-imapd)")
    internal, group, login, uid, gid = _accounts()
    folder = Path(tempfile.mkdtemp(prefix="tf-dovecot-"))
    folder.chmod(0o755)  # dovecot's own users reach the sockets and maildirs inside
    for name in ("run", "state", "mail", "users"):
        (folder / name).mkdir()
    os.chown(folder / "mail", uid, gid)
    port = free_port()
    (folder / "dovecot.conf").write_text(CONFIG.format(folder=folder, port=port, internal=internal, group=group,
                                                       login=login), encoding="utf-8")
    with (folder / "stderr.log").open("wb") as stderr:  # a file: a pipe nobody reads could fill and block it
        process = subprocess.Popen([DOVECOT, "-F", "-c", str(folder / "dovecot.conf")], stdout=subprocess.DEVNULL,
                                   stderr=stderr)
    server = Dovecot(folder=folder, port=port, process=process, mail_uid=uid, mail_gid=gid)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            reason = (folder / "stderr.log").read_text(errors="replace") + server.log()
            shutil.rmtree(folder, ignore_errors=True)
            raise DovecotUnavailable(f"dovecot exited with {process.returncode}: {reason.strip()[-800:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                if sock.recv(100).startswith(b"* OK"):
                    return server
        except OSError:
            time.sleep(0.1)
    server.stop()
    raise DovecotUnavailable(f"dovecot did not greet on port {port} within 15 s: {server.log()[-800:]}")
