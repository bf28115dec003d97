//! The connection's byte level: the stream, the reply buffer, and one write buffer
//! sent with one write per command group.

use std::time::Duration;

use smtp_wire::{ReadError, Reply, ReplyBuffer, Stage, Stream, is_disconnect};
use tokio::io::AsyncWriteExt;

use super::ClientError;

pub(super) struct Wire {
    pub stream: Stream,
    replies: ReplyBuffer,
    /// Commands (or a block of data) waiting for [`Wire::flush`].
    pub wbuf: Vec<u8>,
}

impl Wire {
    pub fn new(stream: Stream) -> Self {
        Self {
            stream,
            replies: ReplyBuffer::default(),
            wbuf: Vec::with_capacity(1024),
        }
    }

    /// Whether the server sent bytes that no reply has consumed yet.
    pub fn has_unread_input(&self) -> bool {
        self.replies.has_unread()
    }

    /// Writes the whole write buffer (one write call when the socket takes it) and
    /// empties it, within `limit`.
    pub async fn flush(&mut self, stage: Stage, limit: Duration) -> Result<(), ClientError> {
        let Wire { stream, wbuf, .. } = self;
        let written = tokio::time::timeout(limit, async {
            stream.write_all(wbuf).await?;
            stream.flush().await
        })
        .await;
        wbuf.clear();
        match written {
            Err(_) => Err(ClientError::Timeout(stage)),
            Ok(Err(e)) if is_disconnect(&e) => Err(ClientError::Closed(stage)),
            Ok(Err(e)) => Err(ClientError::Io(e)),
            Ok(Ok(())) => Ok(()),
        }
    }

    /// Reads one complete reply; the whole reply must arrive within `limit`.
    pub async fn read_reply(
        &mut self,
        stage: Stage,
        limit: Duration,
    ) -> Result<Reply, ClientError> {
        let read = self.replies.read_from(&mut self.stream);
        match tokio::time::timeout(limit, read).await {
            Err(_) => Err(ClientError::Timeout(stage)),
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(ReadError::Closed)) => Err(ClientError::Closed(stage)),
            Ok(Err(ReadError::Io(e))) => Err(ClientError::Io(e)),
            Ok(Err(ReadError::Reply(e))) => {
                Err(ClientError::Protocol(format!("{e} (reply to {stage})")))
            }
        }
    }
}
