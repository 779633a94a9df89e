"""SMTP sink for dev/services: plain SMTP (no TLS) that accepts any AUTH and keeps every message.

Messages land in a Maildir (one file each in new/), with the headers aiosmtpd's Mailbox adds
(X-Peer, X-MailFrom, X-RcptTo) and X-Auth-Login: the user name a client authenticated with, so a
test can check the credentials a plugin sent.

Run with Debian's /usr/bin/python3 (python3-aiosmtpd). Usage: python3 smtp_sink.py PORT MAILDIR
"""

import asyncio
import signal
import sys

from aiosmtpd.handlers import Mailbox
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


class KeepingMailbox(Mailbox):
    def prepare_message(self, session, envelope):
        message = super().prepare_message(session, envelope)
        if session.authenticated and session.auth_data is not None:
            message["X-Auth-Login"] = str(session.auth_data)
        return message


def accept_any(server, session, envelope, mechanism, auth_data):
    login = auth_data.login if isinstance(auth_data, LoginPassword) else auth_data
    if isinstance(login, bytes):
        login = login.decode("utf-8", errors="replace")
    return AuthResult(success=True, auth_data=login)


def main():
    port, maildir = int(sys.argv[1]), sys.argv[2]
    handler = KeepingMailbox(maildir)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)

    def factory():
        return SMTP(
            handler,
            hostname="runbook-dev-smtp",
            enable_SMTPUTF8=True,
            auth_require_tls=False,
            authenticator=accept_any,
            loop=loop,
        )

    server = loop.run_until_complete(loop.create_server(factory, "127.0.0.1", port))
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    print(f"SMTP sink on 127.0.0.1:{port}, keeping messages in {maildir}", flush=True)
    try:
        loop.run_forever()
    finally:
        server.close()


if __name__ == "__main__":
    main()
