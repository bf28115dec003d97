#!/usr/bin/env python3
"""A SendGrid v3 `POST /v3/mail/send` stand-in for the provider tests: it checks each
request's bearer key and body against the documented schema (and the documented rules
a schema cannot say: reserved headers, text/plain before text/html, at most 1,000
recipients in all), records it, and answers as told.

usage: sendgrid_recorder.py API_KEY
Prints 'port N' once listening on 127.0.0.1. Control routes:
  POST /control/answer  {"status": 500, "headers": {...}}  how to answer from now on
  GET  /control/requests                                   every request so far
A valid request under the default answer gets 202 and an X-Message-Id.
"""
import json
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jsonschema

API_KEY = sys.argv[1]

EMAIL = {
    "type": "object",
    "required": ["email"],
    "properties": {
        "email": {"type": "string", "format": "email", "minLength": 3},
        "name": {"type": "string"},
    },
    "additionalProperties": False,
}
STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}
# https://www.twilio.com/docs/sendgrid/api-reference/mail-send/mail-send (request body)
SCHEMA = {
    "type": "object",
    "required": ["personalizations", "from"],
    "properties": {
        "personalizations": {
            "type": "array",
            "minItems": 1,
            "maxItems": 1000,
            "items": {
                "type": "object",
                "required": ["to"],
                "properties": {
                    "to": {"type": "array", "minItems": 1, "maxItems": 1000, "items": EMAIL},
                    "cc": {"type": "array", "items": EMAIL},
                    "bcc": {"type": "array", "items": EMAIL},
                    "from": EMAIL,
                    "subject": {"type": "string", "minLength": 1},
                    "headers": STRINGS,
                    "substitutions": STRINGS,
                    "dynamic_template_data": {"type": "object"},
                    "custom_args": STRINGS,
                    "send_at": {"type": "integer"},
                },
                "additionalProperties": False,
            },
        },
        "from": EMAIL,
        "reply_to": EMAIL,
        "reply_to_list": {"type": "array", "items": EMAIL},
        "subject": {"type": "string", "minLength": 1},
        "content": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["type", "value"],
                "properties": {
                    "type": {"type": "string", "minLength": 1},
                    "value": {"type": "string", "minLength": 1},
                },
                "additionalProperties": False,
            },
        },
        "attachments": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["content", "filename"],
                "properties": {
                    "content": {"type": "string", "minLength": 1},
                    "type": {"type": "string"},
                    "filename": {"type": "string", "minLength": 1},
                    "disposition": {"enum": ["inline", "attachment"]},
                    "content_id": {"type": "string"},
                },
                "additionalProperties": False,
            },
        },
        "template_id": {"type": "string"},
        "headers": STRINGS,
        "categories": {
            "type": "array",
            "maxItems": 10,
            "uniqueItems": True,
            "items": {"type": "string", "maxLength": 255},
        },
        "custom_args": STRINGS,
        "send_at": {"type": "integer"},
        "batch_id": {"type": "string"},
        "asm": {"type": "object"},
        "ip_pool_name": {"type": "string"},
        "mail_settings": {"type": "object"},
        "tracking_settings": {"type": "object"},
    },
    "additionalProperties": False,
}
RESERVED = {
    "x-sg-id", "x-sg-eid", "received", "dkim-signature", "content-type",
    "content-transfer-encoding", "to", "from", "subject", "reply-to", "cc", "bcc",
}

lock = threading.Lock()
answer = {"status": 202, "headers": {}}
requests = []


def problems(body):
    """Why SendGrid would refuse this body (400), as its error objects."""
    errors = [
        {"message": e.message, "field": ".".join(str(p) for p in e.absolute_path) or None}
        for e in jsonschema.Draft7Validator(SCHEMA).iter_errors(body)
    ]
    if errors:
        return errors
    for name in body.get("headers", {}):
        if name.lower() in RESERVED:
            errors.append({"message": f"header {name} is reserved", "field": "headers"})
    types = [c["type"] for c in body.get("content", [])]
    if "text/plain" in types and types[0] != "text/plain":
        errors.append({"message": "text/plain must come first", "field": "content"})
    if body.get("template_id") is None and "subject" not in body and not all(
        "subject" in p for p in body["personalizations"]
    ):
        errors.append({"message": "a subject is required", "field": "subject"})
    total = sum(len(p.get("to", [])) + len(p.get("cc", [])) + len(p.get("bcc", []))
                for p in body["personalizations"])
    if total > 1000:
        errors.append({"message": "at most 1000 recipients", "field": "personalizations"})
    return errors


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, payload=None, headers=None):
        data = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if data:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/control/requests":
            with lock:
                self.reply(200, requests)
        else:
            self.reply(404, {"errors": [{"message": "not found"}]})

    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path == "/control/answer":
            with lock:
                answer.clear()
                answer.update({"status": 202, "headers": {}}, **json.loads(raw))
            return self.reply(200, {})
        if self.path != "/v3/mail/send":
            return self.reply(404, {"errors": [{"message": "not found"}]})
        record = {"authorized": self.headers.get("Authorization") == f"Bearer {API_KEY}"}
        try:
            body = json.loads(raw)
            record["body"] = body
        except ValueError:
            body = None
        if not record["authorized"]:
            status, payload, headers = 401, {"errors": [{"message": "authorization required"}]}, {}
        elif body is None:
            status, payload, headers = 400, {"errors": [{"message": "body is not JSON"}]}, {}
        elif errors := problems(body):
            status, payload, headers = 400, {"errors": errors}, {}
        else:
            with lock:
                status, headers = answer["status"], dict(answer["headers"])
            payload = None if status < 300 else {"errors": [{"message": f"told to answer {status}"}]}
            if status < 300:
                headers["X-Message-Id"] = uuid.uuid4().hex[:22]
        record.update(status=status, message_id=headers.get("X-Message-Id"))
        with lock:
            requests.append(record)
        self.reply(status, payload, headers)


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(f"port {server.server_address[1]}", flush=True)
server.serve_forever()
