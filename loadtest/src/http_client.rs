//! A minimal HTTP client for `loadtest http`: one kept-alive connection (HTTP/1.1, or
//! HTTP/2 with prior knowledge), requests one after another, on hyper.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};

/// What went wrong below the HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("connect: {0}")]
    Connect(String),
    #[error("timeout")]
    Timeout,
    #[error("connection: {0}")]
    Connection(String),
}

impl HttpError {
    pub fn kind(&self) -> &'static str {
        match self {
            HttpError::Connect(_) => "connect",
            HttpError::Timeout => "timeout",
            HttpError::Connection(_) => "connection",
        }
    }
}

enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

pub struct HttpClient {
    sender: Sender,
    authority: String,
    authorization: String,
    timeout: Duration,
}

/// An answer: status and body.
pub struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
}

impl HttpClient {
    pub async fn connect(
        addr: SocketAddr,
        http2: bool,
        key: &str,
        connect_timeout: Duration,
        timeout: Duration,
    ) -> Result<Self, HttpError> {
        let stream = tokio::time::timeout(connect_timeout, tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| HttpError::Timeout)?
            .map_err(|e| HttpError::Connect(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(stream);
        let sender = if http2 {
            let (sender, conn) = http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| HttpError::Connect(e.to_string()))?;
            tokio::spawn(conn);
            Sender::H2(sender)
        } else {
            let (sender, conn) = http1::handshake(io)
                .await
                .map_err(|e| HttpError::Connect(e.to_string()))?;
            tokio::spawn(conn);
            Sender::H1(sender)
        };
        Ok(Self {
            sender,
            authority: addr.to_string(),
            authorization: format!("Bearer {key}"),
            timeout,
        })
    }

    /// One request; the connection can be used again unless this fails.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Bytes,
    ) -> Result<Answer, HttpError> {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, &self.authority)
            .header(hyper::header::AUTHORIZATION, &self.authorization)
            .header(hyper::header::CONTENT_TYPE, content_type)
            .body(Full::new(body))
            .map_err(|e| HttpError::Connection(e.to_string()))?;
        let exchange = async {
            let response = match &mut self.sender {
                Sender::H1(s) => {
                    s.ready()
                        .await
                        .map_err(|e| HttpError::Connection(e.to_string()))?;
                    s.send_request(request).await
                }
                Sender::H2(s) => {
                    s.ready()
                        .await
                        .map_err(|e| HttpError::Connection(e.to_string()))?;
                    s.send_request(request).await
                }
            }
            .map_err(|e| HttpError::Connection(e.to_string()))?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| HttpError::Connection(e.to_string()))?
                .to_bytes();
            Ok(Answer { status, body })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| HttpError::Timeout)?
    }
}
