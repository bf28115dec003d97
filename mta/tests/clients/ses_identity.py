#!/usr/bin/env python3
"""Verifies sender identities in moto's SES (boto3's sesv2 CreateEmailIdentity, which
moto treats as verified at once), as an SES account's owner does before sending.

usage: ses_identity.py PORT IDENTITY...
"""
import sys

import boto3

PORT, IDENTITIES = sys.argv[1], sys.argv[2:]
ses = boto3.client(
    "sesv2",
    endpoint_url=f"http://127.0.0.1:{PORT}",
    region_name="us-east-1",
    aws_access_key_id="testing",
    aws_secret_access_key="testing",
)
for identity in IDENTITIES:
    ses.create_email_identity(EmailIdentity=identity)
    print(f"verified {identity}")
