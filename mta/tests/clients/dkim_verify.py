#!/usr/bin/env python3
"""dkimpy (an independent DKIM implementation) verifies every DKIM-Signature of the
message on standard input, driven by the Rust tests. The DNS answers come from the
arguments, so nothing is looked up.

usage: dkim_verify.py NAME=RECORD...   (NAME like s1._domainkey.example.com)
Prints one line per signature, in order: 'pass d=<domain> s=<selector> a=<algorithm>'
or 'fail d=... s=... a=... (why)'.
"""
import sys

import dkim

RECORDS = {}
for arg in sys.argv[1:]:
    name, record = arg.split("=", 1)
    RECORDS[name.rstrip(".").lower()] = record.encode()


def dns(name, timeout=5):
    return RECORDS.get(name.decode().rstrip(".").lower(), b"")


message = sys.stdin.buffer.read()
checker = dkim.DKIM(message)
signatures = [value for name, value in checker.headers if name.lower() == b"dkim-signature"]
for index, value in enumerate(signatures):
    tags = dict(
        part.strip().split(b"=", 1) for part in value.split(b";") if b"=" in part
    )
    try:
        ok, why = checker.verify(idx=index, dnsfunc=dns), ""
    except dkim.DKIMException as e:
        ok, why = False, f" ({e})"
    print(
        "pass" if ok else "fail",
        f"d={tags[b'd'].decode()} s={tags[b's'].decode()} a={tags[b'a'].decode()}{why}",
    )
