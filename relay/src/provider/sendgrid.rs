//! SendGrid v3 `POST /v3/mail/send` with a bearer API key: the message mapped by
//! [`super::sendgrid_json`], one request per job of at most 1,000 recipients.

use std::time::{Duration, SystemTime};

use serde_json::Value;

use super::sendgrid_json::{self, MappingError};
use super::{Accepted, ProviderConfig, Refusal, Submission, short};

pub struct SendGrid {
    http: reqwest::Client,
    url: reqwest::Url,
    host: String,
    api_key: String,
    timeout: Duration,
}

impl SendGrid {
    pub fn new(config: &ProviderConfig, http: reqwest::Client) -> Result<Self, String> {
        let endpoint = config
            .endpoint
            .clone()
            .unwrap_or_else(|| "https://api.sendgrid.com".into());
        let (url, host) = super::api_url(&endpoint, "/v3/mail/send")?;
        Ok(Self {
            http,
            url,
            host,
            api_key: config.api_key.clone().unwrap_or_default(),
            timeout: config.timeout,
        })
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub async fn send(&self, submission: &Submission<'_>) -> Result<Accepted, Refusal> {
        let body = sendgrid_json::request(submission).map_err(|e| match e {
            MappingError::Unparsable | MappingError::NoFrom => {
                Refusal::permanent((5, 6, 0), format!("sendgrid cannot carry it: {e}"))
            }
            MappingError::NoRecipients | MappingError::TooManyRecipients => {
                Refusal::failure(format!("sendgrid request not built: {e}"))
            }
        })?;
        let answer = self
            .http
            .post(self.url.clone())
            .timeout(self.timeout)
            .bearer_auth(&self.api_key)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body).unwrap_or_default())
            .send()
            .await
            .map_err(|e| {
                Refusal::failure(format!("sendgrid request failed: {}", super::cause(&e)))
            })?;
        let status = answer.status().as_u16();
        let header = |name: &str| {
            answer
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let message_id = header("x-message-id");
        let reset = header("x-ratelimit-reset")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|at| {
                let now = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs();
                Duration::from_secs(at.saturating_sub(now).max(1))
            })
            .or_else(|| super::retry_after(answer.headers()));
        let body = super::read_limited(answer).await?;
        self::answer(status, message_id, reset, &body)
    }
}

/// What a SendGrid answer means: 2xx accepted (under `X-Message-Id`); 429 a throttle
/// held until `X-RateLimit-Reset`; 401/403 the key or account refused (pause); 400
/// and 413 the message refused (bounce); 5xx a failure.
pub fn answer(
    status: u16,
    message_id: Option<String>,
    hold: Option<Duration>,
    body: &[u8],
) -> Result<Accepted, Refusal> {
    if (200..300).contains(&status) {
        return Ok(Accepted { message_id });
    }
    let json: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let message = json["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .filter_map(|e| {
                    let text = e["message"].as_str()?;
                    Some(match e["field"].as_str() {
                        Some(field) => format!("{field}: {text}"),
                        None => text.to_string(),
                    })
                })
                .collect::<Vec<_>>()
                .join("; ")
        })
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    let text = format!("sendgrid answered {status}: {}", short(&message));
    Err(match status {
        429 => Refusal::throttle(text, hold),
        401 | 403 => Refusal::paused(text),
        413 => Refusal::permanent((5, 3, 4), text),
        400..=499 => Refusal::permanent((5, 6, 0), text),
        _ => Refusal::failure(text),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_map_as_the_sendgrid_documentation_says() {
        assert_eq!(
            answer(202, Some("sg-1".into()), None, b""),
            Ok(Accepted {
                message_id: Some("sg-1".into())
            })
        );
        let hold = Some(Duration::from_secs(7));
        assert!(matches!(
            answer(429, None, hold, br#"{"errors":[{"message":"too many requests"}]}"#),
            Err(Refusal::Temporary { throttle: true, hold: Some(h), .. }) if h == Duration::from_secs(7)
        ));
        assert!(matches!(
            answer(401, None, None, b"{}"),
            Err(Refusal::Paused(_))
        ));
        assert!(matches!(
            answer(403, None, None, b"{}"),
            Err(Refusal::Paused(_))
        ));
        assert!(matches!(
            answer(413, None, None, b""),
            Err(Refusal::Permanent(_))
        ));
        assert!(matches!(
            answer(500, None, None, b"oops"),
            Err(Refusal::Temporary {
                throttle: false,
                ..
            })
        ));
        let Err(Refusal::Permanent(r)) = answer(
            400,
            None,
            None,
            br#"{"errors":[{"message":"The from email does not contain a valid address.","field":"from.email","help":null}]}"#,
        ) else {
            panic!()
        };
        assert_eq!(
            r.to_string(),
            "5.6.0 sendgrid answered 400: from.email: The from email does not contain a valid address."
        );
    }
}
