//! Storing an uploaded list as it arrives: the body is read on a blocking thread (a
//! CSV or NDJSON reader over the byte stream), rows come back in chunks through a small
//! channel, and each chunk is one multi-row insert. Memory stays at a few chunks
//! whatever the list's length; the database removes duplicates.

use std::pin::Pin;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;
use tokio_util::io::{StreamReader, SyncIoBridge};

use super::rows::{self, Broken, Format, Row};
use crate::store::lists::{KEPT_ERRORS, ListCounts, RowError};
use crate::store::{AppStore, StoreError};

/// Rows per insert (and per message of the reading thread).
const CHUNK: usize = 1000;
/// Chunks between two updates of the list's counts while it is read.
const REPORT_EVERY: u64 = 100;

/// The byte stream of a request body, failing when no data comes for `idle`.
pub type BodyReader =
    StreamReader<Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>, Bytes>;

pub fn body_reader(body: Body, idle: Duration) -> BodyReader {
    let stream = futures_util::stream::unfold(body.into_data_stream(), move |mut s| async move {
        match tokio::time::timeout(idle, s.next()).await {
            Err(_) => Some((
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no data for {} s", idle.as_secs()),
                )),
                s,
            )),
            Ok(None) => None,
            Ok(Some(chunk)) => Some((chunk.map_err(std::io::Error::other), s)),
        }
    });
    StreamReader::new(Box::pin(stream) as Pin<Box<dyn Stream<Item = _> + Send>>)
}

/// Reads the first line of `reader` (at most `max` bytes): the campaign object that
/// heads an NDJSON upload. `None`: the line is longer, or the body ended first.
pub async fn first_line(reader: &mut BodyReader, max: usize) -> std::io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    (&mut *reader)
        .take(max as u64 + 1)
        .read_until(b'\n', &mut line)
        .await?;
    if line.is_empty() || (line.len() > max && line.last() != Some(&b'\n')) {
        return Ok(None);
    }
    Ok(Some(line))
}

/// What an upload stored.
#[derive(Debug, Clone, Default)]
pub struct Received {
    pub counts: ListCounts,
    pub errors: Vec<RowError>,
    /// Why it stopped before the end of the body.
    pub broken: Option<Broken>,
}

/// Stores the rows of `input` (first line numbered `first_line`) on list `list_id`,
/// at most `max_rows` of them, and marks the list `ready` (or `failed`, when the
/// upload broke off: what was read stays).
pub async fn receive(
    store: &AppStore,
    list_id: &str,
    format: Format,
    input: impl AsyncRead + Unpin + Send + 'static,
    first_line: u64,
    max_rows: u64,
) -> Result<Received, StoreError> {
    let (tx, mut rx) = mpsc::channel::<Vec<Row>>(2);
    let reader = tokio::task::spawn_blocking(move || {
        let mut chunk = Vec::with_capacity(CHUNK);
        let mut open = true;
        let result = rows::read(format, SyncIoBridge::new(input), first_line, |row| {
            chunk.push(row);
            if chunk.len() == CHUNK {
                open = tx
                    .blocking_send(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK)))
                    .is_ok();
            }
            open
        });
        if open && !chunk.is_empty() {
            let _ = tx.blocking_send(chunk);
        }
        result
    });
    let mut received = Received::default();
    let mut seq = 0u64;
    let mut chunks = 0u64;
    let mut over = None;
    while let Some(chunk) = rx.recv().await {
        let mut good = Vec::with_capacity(chunk.len());
        for row in chunk {
            received.counts.rows += 1;
            if received.counts.rows > max_rows {
                over = Some(Broken {
                    line: 0,
                    reason: format!("more than {max_rows} rows (http.max_list_rows)"),
                });
                break;
            }
            match row {
                Row::Good(mut row) => {
                    seq += 1;
                    row.seq = seq;
                    good.push(row);
                }
                Row::Bad(error) => {
                    received.counts.rejected += 1;
                    if received.errors.len() < KEPT_ERRORS {
                        received.errors.push(error);
                    }
                }
            }
        }
        let added = store.add_list_rows(list_id, &good).await?;
        received.counts.recipients += added;
        received.counts.duplicates += good.len() as u64 - added;
        if over.is_some() {
            received.counts.rows -= 1;
            break;
        }
        chunks += 1;
        if chunks.is_multiple_of(REPORT_EVERY) {
            store
                .update_list(list_id, "receiving", &received.counts, &received.errors)
                .await?;
        }
    }
    drop(rx);
    let read = reader
        .await
        .map_err(|e| StoreError::Corrupt(format!("the list reader failed: {e}")))?;
    received.broken = over.or(read.err());
    let state = if received.broken.is_some() {
        "failed"
    } else {
        "ready"
    };
    if let Some(broken) = &received.broken {
        received.errors.push(RowError {
            line: broken.line,
            error: broken.reason.clone(),
        });
    }
    store
        .update_list(list_id, state, &received.counts, &received.errors)
        .await?;
    Ok(received)
}
