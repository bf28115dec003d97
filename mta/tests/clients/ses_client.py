#!/usr/bin/env python3
"""boto3's SES v2 client (the AWS SDK for Python) pointed at Postroad, driven by the
Rust tests: the request is built and SigV4-signed by botocore, not by us.

usage: ses_client.py PORT ACCESS_KEY_ID SECRET SCENARIO
Prints one line per accepted message: 'id <MessageId>', and 'error <Code>' for each
refused request of the errors scenario. Exits non-zero on any surprise.
"""
import email.message
import sys

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

PORT, KEY_ID, SECRET, SCENARIO = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]


def client(key_id=KEY_ID, secret=SECRET, region="us-east-1"):
    return boto3.client(
        "sesv2",
        endpoint_url=f"http://127.0.0.1:{PORT}",
        region_name=region,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 1, "mode": "standard"}),
    )


def sent(response):
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200, response
    print("id", response["MessageId"], flush=True)


def simple():
    sent(client().send_email(
        FromEmailAddress="Shop <shop@src.test>",
        Destination={
            "ToAddresses": ["Ann Example <ses-to@fast.test>"],
            "CcAddresses": ["ses-cc@fast.test"],
            "BccAddresses": ["ses-bcc@fast.test"],
        },
        ReplyToAddresses=["help@src.test"],
        Content={"Simple": {
            "Subject": {"Data": "Grüße from SES", "Charset": "UTF-8"},
            "Body": {
                "Text": {"Data": "plain body"},
                "Html": {"Data": "<p>html body</p>"},
            },
            "Headers": [{"Name": "X-Campaign", "Value": "spring"}],
        }},
        EmailTags=[{"Name": "flow", "Value": "signup"}],
    ))


def raw():
    msg = email.message.EmailMessage()
    msg["From"] = "shop@src.test"
    msg["To"] = "ses-raw@fast.test"
    msg["Bcc"] = "ses-raw-bcc@fast.test"
    msg["Subject"] = "raw over SES"
    msg.set_content("raw body")
    sent(client().send_email(Content={"Raw": {"Data": msg.as_bytes()}}))


def template():
    sent(client().send_email(
        FromEmailAddress="shop@src.test",
        Destination={"ToAddresses": ["ses-tpl@fast.test"]},
        Content={"Template": {"TemplateName": "welcome",
                              "TemplateData": '{"name": "Bo"}'}},
    ))


def refused(call, code):
    try:
        call()
    except ClientError as e:
        got = e.response["Error"]["Code"]
        assert got == code, (got, code, e.response)
        print("error", got, e.response["Error"]["Message"], flush=True)
        return
    raise AssertionError(f"expected {code}")


def errors():
    content = {"Simple": {"Subject": {"Data": "s"}, "Body": {"Text": {"Data": "t"}}}}
    ok = dict(FromEmailAddress="shop@src.test",
              Destination={"ToAddresses": ["x@fast.test"]}, Content=content)
    refused(lambda: client(secret="wrong").send_email(**ok), "SignatureDoesNotMatch")
    refused(lambda: client(key_id="AKIANOBODY").send_email(**ok),
            "UnrecognizedClientException")
    refused(lambda: client(region="eu-west-1").send_email(**ok), "SignatureDoesNotMatch")
    bad = dict(ok, Destination={"ToAddresses": ["not an address"]})
    refused(lambda: client().send_email(**bad), "BadRequestException")
    missing = dict(ok, Content={"Template": {"TemplateName": "nope"}})
    refused(lambda: client().send_email(**missing), "NotFoundException")


{"simple": simple, "raw": raw, "template": template, "errors": errors}[SCENARIO]()
