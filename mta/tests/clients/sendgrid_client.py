#!/usr/bin/env python3
"""The `sendgrid` Python library pointed at Postroad, driven by the Rust tests.

usage: sendgrid_client.py PORT API_KEY SCENARIO
Prints 'ids <X-Message-Id> <X-Postroad-Message-Ids>' for an accepted request and
'error <status> <field>' for each refused one. Exits non-zero on any surprise.
"""
import json
import sys

from python_http_client.exceptions import HTTPError
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import (Bcc, Content, Email, Mail, Personalization,
                                   Substitution, To)

PORT, KEY, SCENARIO = sys.argv[1], sys.argv[2], sys.argv[3]


def client(key=KEY):
    return SendGridAPIClient(api_key=key, host=f"http://127.0.0.1:{PORT}")


def personalization(to, name, bcc=None):
    p = Personalization()
    p.add_to(To(to, name))
    if bcc:
        p.add_bcc(Bcc(bcc))
    p.add_substitution(Substitution("-name-", name))
    return p


def send():
    mail = Mail(from_email=Email("shop@src.test", "Shop"), subject="Hello -name-")
    mail.add_content(Content("text/plain", "Dear -name-, welcome."))
    mail.add_content(Content("text/html", "<p>Dear -name-</p>"))
    mail.add_personalization(personalization("sg-one@fast.test", "Ann", bcc="sg-bcc@fast.test"))
    mail.add_personalization(personalization("sg-two@fast.test", "Bob"))
    response = client().send(mail)
    assert response.status_code == 202, (response.status_code, response.body)
    print("ids", response.headers["X-Message-Id"],
          response.headers["X-Postroad-Message-Ids"], flush=True)


def template():
    mail = Mail(from_email="shop@src.test", to_emails="sg-tpl@fast.test")
    mail.template_id = "welcome"
    mail.dynamic_template_data = {"name": "Cy"}
    response = client().send(mail)
    assert response.status_code == 202, (response.status_code, response.body)
    print("ids", response.headers["X-Message-Id"],
          response.headers["X-Postroad-Message-Ids"], flush=True)


def refused(call, status):
    try:
        call()
    except HTTPError as e:
        assert e.status_code == status, (e.status_code, e.body)
        errors = json.loads(e.body)["errors"]
        for error in errors:
            print("error", e.status_code, error["field"], error["message"], flush=True)
        return
    raise AssertionError(f"expected {status}")


def errors():
    def mail(to):
        m = Mail(from_email="shop@src.test", to_emails=to, subject="s",
                 plain_text_content="t")
        return m
    refused(lambda: client(key="pr_not-a-key").send(mail("x@fast.test")), 401)
    # The helpers check addresses themselves; the request builder sends what it is given.
    body = {"personalizations": [{"to": [{"email": "not an address"}]}],
            "from": {"email": "shop@src.test"}, "subject": "s",
            "content": [{"type": "text/plain", "value": "t"}]}
    refused(lambda: client().client.mail.send.post(request_body=body), 400)


{"send": send, "template": template, "errors": errors}[SCENARIO]()
