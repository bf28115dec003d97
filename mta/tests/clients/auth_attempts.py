#!/usr/bin/env python3
"""AUTH attempts with Python's smtplib over implicit TLS, one connection each, from a
chosen source address, as a password-guessing client would make them.

usage: auth_attempts.py PORT SOURCE_IP USER PASSWORD COUNT
Prints one line per attempt: '<code> <milliseconds>', where code is the AUTH reply
(235 accepted, 535 refused, 454/421 throttled), the greeting's code when the
connection itself was turned away, or 0 when the connection broke without a reply.
"""
import smtplib
import ssl
import sys
import time

PORT, SOURCE, USER, PASSWORD, COUNT = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
context = ssl.create_default_context()
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE

for _ in range(COUNT):
    started = time.monotonic()
    code = None
    try:
        with smtplib.SMTP_SSL("127.0.0.1", int(PORT), source_address=(SOURCE, 0), context=context, timeout=60) as s:
            s.ehlo_or_helo_if_needed()
            s.user, s.password = USER, PASSWORD
            try:
                # One AUTH PLAIN (login() would try LOGIN too after a refusal).
                code, _ = s.auth("PLAIN", s.auth_plain)
            except smtplib.SMTPAuthenticationError as e:
                code = e.smtp_code
            except smtplib.SMTPServerDisconnected:
                code = 0
    except smtplib.SMTPConnectError as e:
        code = e.smtp_code
    except (smtplib.SMTPServerDisconnected, ssl.SSLError, ConnectionError):
        code = 0
    print(code, int((time.monotonic() - started) * 1000), flush=True)
