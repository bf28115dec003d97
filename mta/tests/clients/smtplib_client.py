#!/usr/bin/env python3
"""Python smtplib as a real SMTP client of Postroad, driven by the Rust tests.

usage: smtplib_client.py PORT SCENARIO
Prints one line per accepted message: 'queued <id>'. Exits non-zero on any failure.
"""
import email.message
import smtplib
import socket
import ssl
import sys

PORT = int(sys.argv[1])
SCENARIO = sys.argv[2]
USER, PASSWORD = "app", "s3cret-pw"


def queued_id(reply: bytes) -> str:
    text = reply.decode()
    assert "queued as " in text, text
    return text.rsplit("queued as ", 1)[1].strip()


def plain_message(frm, to, subject, body):
    msg = email.message.EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = frm, ", ".join(to), subject
    msg.set_content(body)
    return msg


def send(smtp, frm, to, data, mail_options=(), rcpt_options=()):
    smtp.mail(frm, list(mail_options))
    for rcpt in to:
        code, text = smtp.rcpt(rcpt, list(rcpt_options))
        assert code == 250, (code, text)
    code, text = smtp.data(data)
    assert code == 250, (code, text)
    print("queued", queued_id(text), flush=True)


def scenario_multi_recipient():
    with smtplib.SMTP("127.0.0.1", PORT) as s:
        s.ehlo("smtplib.test")
        to = ["one@multi.test", "two@multi.test", "three@other.test"]
        send(s, "sender@py.test", to, plain_message("sender@py.test", to, "multi", "one body, three recipients\n").as_bytes())


def scenario_8bit():
    with smtplib.SMTP("127.0.0.1", PORT) as s:
        s.ehlo("smtplib.test")
        assert s.has_extn("8bitmime")
        body = "Grüße aus Köln — ünïcödé body\r\n".encode("utf-8")
        data = b"From: a@py.test\r\nTo: b@py.test\r\nSubject: 8bit\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + body
        send(s, "a@py.test", ["b@py.test"], data, mail_options=["BODY=8BITMIME"])


def scenario_utf8_addresses():
    with smtplib.SMTP("127.0.0.1", PORT) as s:
        s.ehlo("smtplib.test")
        assert s.has_extn("smtputf8")
        data = "From: jörg@absender.test\r\nTo: δοκιμή@παράδειγμα.test\r\nSubject: utf8\r\n\r\nhello\r\n".encode("utf-8")
        send(s, "jörg@absender.test", ["δοκιμή@παράδειγμα.test"], data, mail_options=["SMTPUTF8", "BODY=8BITMIME"])


def scenario_dsn():
    with smtplib.SMTP("127.0.0.1", PORT) as s:
        s.ehlo("smtplib.test")
        assert s.has_extn("dsn")
        data = b"Subject: dsn\r\n\r\nwith DSN parameters\r\n"
        send(s, "dsn@py.test", ["r@dsn.test"], data,
             mail_options=["RET=HDRS", "ENVID=env-42"],
             rcpt_options=["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;orig@dsn.test"])


def scenario_starttls_auth():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP("127.0.0.1", PORT) as s:
        s.ehlo("smtplib.test")
        assert not s.has_extn("auth"), "AUTH must not be offered before TLS"
        s.starttls(context=ctx)
        s.ehlo("smtplib.test")
        assert "PLAIN" in s.esmtp_features.get("auth", ""), s.esmtp_features
        s.login(USER, PASSWORD)
        to = ["someone@submitted.test"]
        send(s, "app@py.test", to, plain_message("app@py.test", to, "submitted", "over STARTTLS with AUTH\n").as_bytes())


def scenario_bdat():
    """smtplib has no BDAT, so speak it on a raw socket: two chunks, the last with LAST."""
    sock = socket.create_connection(("127.0.0.1", PORT), timeout=30)
    f = sock.makefile("rb")

    def reply():
        lines = []
        while True:
            line = f.readline().decode()
            lines.append(line)
            if line[3:4] != "-":
                return int(line[:3]), "".join(lines)

    assert reply()[0] == 220
    sock.sendall(b"EHLO bdat.test\r\n")
    code, text = reply()
    assert code == 250 and "CHUNKING" in text, text
    chunk1 = b"Subject: bdat\r\n\r\nfirst chunk\r\n.leading dot stays as is\r\n"
    chunk2 = b"second chunk\r\n"
    # Pipelined: MAIL, RCPT and the first chunk in one write.
    sock.sendall(b"MAIL FROM:<bdat@py.test>\r\nRCPT TO:<r@bdat.test>\r\n" + b"BDAT %d\r\n" % len(chunk1) + chunk1)
    for expected in (250, 250, 250):
        code, text = reply()
        assert code == expected, text
    sock.sendall(b"BDAT %d LAST\r\n" % len(chunk2) + chunk2)
    code, text = reply()
    assert code == 250, text
    print("queued", queued_id(text.encode()), flush=True)
    sock.sendall(b"QUIT\r\n")
    assert reply()[0] == 221


globals()["scenario_" + SCENARIO]()
