//! Amazon SES v2 `SendEmail` with `Content.Raw`: the queued message as it is (DKIM
//! signature included), its recipients as the destination, signed with SigV4 (signing
//! name `ses`). At most [`MAX_RECIPIENTS`] per request, SES's limit.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use base64::Engine;
use serde_json::{Value, json};

use super::{Accepted, ProviderConfig, Refusal, Submission, short};

/// SES takes at most 50 recipients per message.
pub const MAX_RECIPIENTS: usize = 50;

/// The tag that names Postroad's message id in SES events (`mail.tags`).
pub const MESSAGE_ID_TAG: &str = "postroad-message-id";
/// The tags that carry the message's metadata ([`postroad_queue::Metadata::to_token`]
/// cut into tag-sized pieces): `postroad-meta-0`, `postroad-meta-1`, ...
pub const META_TAG_PREFIX: &str = "postroad-meta-";
/// Longest SES tag value.
const TAG_VALUE_MAX: usize = 256;

pub struct Ses {
    http: reqwest::Client,
    url: reqwest::Url,
    host: String,
    region: String,
    identity: Identity,
    configuration_set: Option<String>,
    timeout: Duration,
}

impl Ses {
    pub fn new(config: &ProviderConfig, http: reqwest::Client) -> Result<Self, String> {
        let region = config.region.clone().unwrap_or_default();
        let endpoint = config
            .endpoint
            .clone()
            .unwrap_or_else(|| format!("https://email.{region}.amazonaws.com"));
        let (url, host) = super::api_url(&endpoint, "/v2/email/outbound-emails")?;
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let (key, secret, token) = match (&config.access_key_id, &config.secret_access_key) {
            (Some(key), Some(secret)) => {
                (key.clone(), secret.clone(), config.session_token.clone())
            }
            _ => match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
                (Some(key), Some(secret)) => (key, secret, env("AWS_SESSION_TOKEN")),
                _ => {
                    return Err(
                        "no credentials: set access_key_id and secret_access_key, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
                            .into(),
                    );
                }
            },
        };
        Ok(Self {
            http,
            url,
            host,
            region,
            identity: Credentials::new(key, secret, token, None, "postroad-config").into(),
            configuration_set: config.configuration_set.clone(),
            timeout: config.timeout,
        })
    }

    /// The API's host, for events and logs.
    pub fn host(&self) -> &str {
        &self.host
    }

    pub async fn send(&self, submission: &Submission<'_>) -> Result<Accepted, Refusal> {
        let body = request_body(submission, self.configuration_set.as_deref());
        let mut request = self
            .http
            .post(self.url.clone())
            .timeout(self.timeout)
            .header("content-type", "application/json");
        for (name, value) in self.signature(&body)? {
            request = request.header(name, value);
        }
        let answer =
            request.body(body).send().await.map_err(|e| {
                Refusal::failure(format!("ses request failed: {}", super::cause(&e)))
            })?;
        let status = answer.status().as_u16();
        let error_type = answer
            .headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let retry_after = super::retry_after(answer.headers());
        let body = super::read_limited(answer).await?;
        self::answer(status, error_type.as_deref(), retry_after, &body)
    }

    /// The SigV4 headers for a POST of `body` to the endpoint.
    fn signature(&self, body: &[u8]) -> Result<Vec<(String, String)>, Refusal> {
        let fail = |e: &dyn std::fmt::Display| {
            Refusal::failure(format!("ses request signing failed: {e}"))
        };
        let params = v4::SigningParams::builder()
            .identity(&self.identity)
            .region(&self.region)
            .name("ses")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| fail(&e))?
            .into();
        let headers = [
            ("host", self.host.as_str()),
            ("content-type", "application/json"),
        ];
        let signable = SignableRequest::new(
            "POST",
            self.url.as_str(),
            headers.into_iter(),
            SignableBody::Bytes(body),
        )
        .map_err(|e| fail(&e))?;
        let (instructions, _) = sign(signable, &params).map_err(|e| fail(&e))?.into_parts();
        Ok(instructions
            .headers()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect())
    }
}

/// The `SendEmail` request: the raw message to these recipients, tagged with
/// Postroad's message id and metadata (and the email type by itself, when SES allows
/// its characters in a tag), in the configuration set if one is set.
pub fn request_body(submission: &Submission<'_>, configuration_set: Option<&str>) -> Vec<u8> {
    let mut tags = vec![json!({"Name": MESSAGE_ID_TAG, "Value": submission.id.to_string()})];
    if !submission.meta.is_empty() {
        let token = submission.meta.to_token();
        for (i, piece) in token.as_bytes().chunks(TAG_VALUE_MAX).enumerate() {
            let piece = String::from_utf8_lossy(piece);
            tags.push(json!({"Name": format!("{META_TAG_PREFIX}{i}"), "Value": piece}));
        }
    }
    if let Some(kind) = submission.meta.email_type.as_deref().filter(|k| {
        k.len() <= TAG_VALUE_MAX
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    }) {
        tags.push(json!({"Name": "postroad-email-type", "Value": kind}));
    }
    let mut request = json!({
        "Destination": {"ToAddresses": submission.recipients},
        "Content": {"Raw": {"Data": base64::engine::general_purpose::STANDARD.encode(submission.body)}},
        "EmailTags": tags,
    });
    if let Some(set) = configuration_set {
        request["ConfigurationSetName"] = json!(set);
    }
    serde_json::to_vec(&request).unwrap_or_default()
}

/// What an SES answer means. The error's name comes from `X-Amzn-ErrorType` or the
/// body's `__type`/`code`, its text from the body's `message`.
pub fn answer(
    status: u16,
    error_type: Option<&str>,
    retry_after: Option<Duration>,
    body: &[u8],
) -> Result<Accepted, Refusal> {
    let json: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if (200..300).contains(&status) {
        return Ok(Accepted {
            message_id: json["MessageId"].as_str().map(str::to_string),
        });
    }
    let name = error_type
        .map(|t| t.split(':').next().unwrap_or(t).to_string())
        .or_else(|| {
            json["__type"]
                .as_str()
                .map(|t| t.rsplit('#').next().unwrap_or(t).to_string())
        })
        .or_else(|| {
            json["code"]
                .as_str()
                .or(json["Code"].as_str())
                .map(str::to_string)
        })
        .unwrap_or_default();
    let message = json["message"]
        .as_str()
        .or(json["Message"].as_str())
        .map(short)
        .unwrap_or_else(|| short(&String::from_utf8_lossy(body)));
    let text = format!("ses answered {status} {name}: {message}");
    let kind = name.trim_end_matches("Exception");
    Err(match (status, kind) {
        (_, "TooManyRequests" | "Throttling" | "LimitExceeded") | (429, _) => {
            Refusal::throttle(text, retry_after)
        }
        (_, "AccountSuspended" | "SendingPaused") => Refusal::paused(text),
        (401 | 403, _)
        | (
            _,
            "UnrecognizedClient"
            | "InvalidSignature"
            | "AccessDenied"
            | "SignatureDoesNotMatch"
            | "ExpiredToken"
            | "InvalidClientTokenId",
        ) => Refusal::paused(text),
        (_, "MessageRejected") => Refusal::permanent((5, 7, 1), text),
        (413, _) => Refusal::permanent((5, 3, 4), text),
        (500..=599, _) => Refusal::failure(text),
        (_, "MailFromDomainNotVerified" | "NotFound" | "BadRequest") | (400..=499, _) => {
            Refusal::permanent((5, 6, 0), text)
        }
        _ => Refusal::failure(text),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(status: u16, error_type: Option<&str>, body: &str) -> &'static str {
        match answer(status, error_type, None, body.as_bytes()) {
            Ok(_) => "accepted",
            Err(Refusal::Temporary { throttle: true, .. }) => "throttle",
            Err(Refusal::Temporary { .. }) => "failure",
            Err(Refusal::Permanent(_)) => "permanent",
            Err(Refusal::Paused(_)) => "paused",
        }
    }

    #[test]
    fn answers_map_as_the_ses_documentation_says() {
        assert_eq!(
            answer(200, None, None, br#"{"MessageId":"0100-abc"}"#),
            Ok(Accepted {
                message_id: Some("0100-abc".into())
            })
        );
        for (status, header, body, expected) in [
            (429, Some("TooManyRequestsException:"), "{}", "throttle"),
            (
                400,
                None,
                r#"{"__type":"com.amazon#LimitExceededException","message":"Maximum sending rate exceeded."}"#,
                "throttle",
            ),
            (
                400,
                Some("MessageRejected:http://internal"),
                r#"{"message":"Email address is not verified."}"#,
                "permanent",
            ),
            (
                400,
                None,
                r#"{"code":"AccountSuspendedException"}"#,
                "paused",
            ),
            (400, Some("SendingPausedException"), "{}", "paused"),
            (403, Some("InvalidSignatureException"), "{}", "paused"),
            (413, None, "too big", "permanent"),
            (400, Some("BadRequestException"), "{}", "permanent"),
            (500, Some("InternalFailure"), "{}", "failure"),
            (503, None, "<html>unavailable</html>", "failure"),
        ] {
            assert_eq!(
                kind(status, header, body),
                expected,
                "{status} {header:?} {body}"
            );
        }
        let Err(Refusal::Permanent(r)) = answer(
            400,
            Some("MessageRejected:x"),
            None,
            br#"{"message":"Email address is not verified."}"#,
        ) else {
            panic!()
        };
        assert_eq!(
            r.to_string(),
            "5.7.1 ses answered 400 MessageRejected: Email address is not verified."
        );
    }

    #[test]
    fn the_request_carries_the_raw_message_and_the_message_id() {
        let meta = postroad_queue::Metadata {
            email_type: Some("welcome".into()),
            ..Default::default()
        };
        let id = postroad_queue::MessageId::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001);
        let s = Submission {
            id,
            recipients: vec!["a@example.net", "b@example.org"],
            body: b"From: s@example.com\r\n\r\nhi\r\n",
            meta: &meta,
        };
        let v: Value = serde_json::from_slice(&request_body(&s, Some("events"))).unwrap();
        assert_eq!(
            v["Destination"]["ToAddresses"],
            json!(["a@example.net", "b@example.org"])
        );
        let raw = base64::engine::general_purpose::STANDARD
            .decode(v["Content"]["Raw"]["Data"].as_str().unwrap())
            .unwrap();
        assert_eq!(raw, s.body);
        assert_eq!(v["ConfigurationSetName"], "events");
        assert_eq!(v["EmailTags"][0]["Name"], MESSAGE_ID_TAG);
        assert_eq!(v["EmailTags"][0]["Value"], id.to_string());
        assert_eq!(v["EmailTags"][1]["Name"], "postroad-meta-0");
        let token = v["EmailTags"][1]["Value"].as_str().unwrap();
        assert_eq!(
            postroad_queue::Metadata::from_token(token).as_ref(),
            Some(&meta)
        );
        assert_eq!(v["EmailTags"][2]["Value"], "welcome");
    }
}
