//! `POST /v1/campaigns` with the recipients streamed as NDJSON: generated a chunk at a
//! time as the connection takes them, so a list of millions costs the sender no memory.

use std::convert::Infallible;
use std::net::SocketAddr;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::Request;
use hyper::body::Frame;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use crate::mix::DomainMix;

/// Recipients per chunk of the body.
const CHUNK: u64 = 1000;

/// Line `n` of the list: `r{n}@{domain}` with a user id and a first name.
fn line(n: u64, mix: &DomainMix) -> String {
    format!(
        "{{\"address\":\"r{n}@{}\",\"userId\":{n},\"data\":{{\"first\":\"Reader {n}\"}}}}\n",
        mix.pick(n)
    )
}

/// Creates the campaign of `recipients` over `mix`; the API's answer (the campaign).
pub async fn campaign(
    addr: SocketAddr,
    key: &str,
    recipients: u64,
    mix: &DomainMix,
) -> anyhow::Result<Value> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .context("connecting to the API")?;
    let (mut sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let head = format!(
        "{}\n",
        json!({"name": "loadtest", "emailType": "loadtest-campaign"})
    );
    let mix = mix.clone();
    let chunks = (0..recipients.div_ceil(CHUNK)).map(move |c| {
        let mut text = String::with_capacity(CHUNK as usize * 80);
        for n in c * CHUNK..((c + 1) * CHUNK).min(recipients) {
            text.push_str(&line(n, &mix));
        }
        Ok::<_, Infallible>(Frame::data(Bytes::from(text)))
    });
    let frames = std::iter::once(Ok(Frame::data(Bytes::from(head)))).chain(chunks);
    let body = StreamBody::new(futures_util::stream::iter(frames));
    let request = Request::builder()
        .method("POST")
        .uri("/v1/campaigns")
        .header(hyper::header::HOST, addr.to_string())
        .header(hyper::header::AUTHORIZATION, format!("Bearer {key}"))
        .header(hyper::header::CONTENT_TYPE, "application/x-ndjson")
        .body(body)?;
    let response = sender
        .send_request(request)
        .await
        .context("sending the campaign")?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        bail!(
            "creating the campaign: {status} {}",
            String::from_utf8_lossy(&body)
        );
    }
    Ok(serde_json::from_slice(&body)?)
}
