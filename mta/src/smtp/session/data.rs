//! DATA and BDAT: receiving the message within its deadline and the memory budget, and
//! queueing it.

use std::time::{Duration, Instant};

use bytes::Bytes;
use postroad_queue::{Envelope, MessageId, QueueError, unix_ms};

use super::{Chunks, Flow, Session, Transaction};
use crate::smtp::body::{self, Chunk, DataBody, SkippedChunk};
use crate::smtp::budget::{MIN_SHARE, Reservation, wait_deadline};
use crate::smtp::command::printable;
use crate::smtp::conn::{Conn, Fed, Interrupt};
use crate::smtp::metadata;
use crate::smtp::received::Trace;
use crate::smtp::reply::{self, EnhancedCode, Reply};

impl Session {
    fn data_timeout(&self) -> Duration {
        self.shared.smtp.data_timeout
    }

    /// When the whole message must have arrived, for a transfer starting now.
    fn data_deadline(&self) -> Instant {
        Instant::now() + self.shared.smtp.data_deadline
    }

    /// The message buffer for a new transaction, starting with our `Received:` header.
    fn new_message(&self, tx: &Transaction, id: MessageId) -> Vec<u8> {
        let header = Trace {
            helo: self.helo.as_deref().unwrap_or_default(),
            client_ip: self.peer.ip().to_canonical(),
            hostname: &self.shared.hostname,
            esmtp: self.esmtp,
            tls: self.conn.is_tls(),
            authenticated: self.auth_identity.is_some(),
            smtputf8: tx.smtputf8,
            id,
            single_recipient: match tx.recipients.as_slice() {
                [only] => Some(only.address.as_str()),
                _ => None,
            },
        }
        .header();
        header.into_bytes()
    }

    /// Answers a message refused for its size (a client error, counted against
    /// `max_errors`) or for want of memory (ours: logged, not counted).
    fn refuse_message(&mut self, reply: Reply) -> Flow {
        if reply != reply::NO_MEMORY {
            return self.refuse(reply);
        }
        tracing::warn!(
            peer = %self.peer,
            budget = self.shared.budget.total(),
            "smtp.max_inflight_bytes is used up; message refused with 452 4.3.1"
        );
        self.send(&reply);
        Ok(())
    }

    pub(super) async fn data(&mut self) -> Flow {
        let check = match &self.tx {
            None => Err(reply::NEED_MAIL),
            Some(tx) if tx.chunks.is_some() => Err(reply::DATA_AFTER_BDAT),
            Some(tx) if tx.recipients.is_empty() => Err(reply::NEED_RCPT),
            Some(tx) => Ok(tx),
        };
        let id = MessageId::new();
        let (mut message, declared) = match check {
            Ok(tx) => (self.new_message(tx, id), tx.declared_size),
            Err(reply) => return self.refuse(reply),
        };
        let mut body = DataBody::new(message.len(), self.shared.smtp.max_message_size);
        let cap = body.cap();
        let first = (message.len() + declared.max(MIN_SHARE)).min(cap);
        let wait = wait_deadline(self.data_timeout());
        let Some(mut reservation) = self.shared.budget.reserve(first, wait).await else {
            return self.refuse_message(reply::NO_MEMORY);
        };
        message.reserve_exact(reservation.bytes() - message.len());
        self.send(&reply::START_DATA);

        let (deadline, idle) = (self.data_deadline(), self.data_timeout());
        loop {
            let room = reservation.bytes();
            let read = self
                .conn
                .read_until(deadline, idle, |input| body.feed(input, &mut message, room))
                .await;
            match read {
                Err(interrupt) => return Err(self.interrupted(interrupt)),
                Ok(Fed::Blocked) => {
                    let want = (room * 2).max(room + MIN_SHARE).min(cap);
                    if want > room
                        && reservation
                            .grow_to(want, wait_deadline(self.data_timeout()))
                            .await
                    {
                        message.reserve_exact(reservation.bytes() - message.len());
                    } else {
                        body.refuse(reply::NO_MEMORY, &mut message);
                        reservation.release();
                    }
                }
                Ok(_) => break,
            }
        }
        let Some(tx) = self.tx.take() else {
            return Ok(());
        };
        match body.refusal() {
            Some(reply) => self.refuse_message(reply.clone()),
            None => self.accept(tx, id, message, reservation).await,
        }
    }

    pub(super) async fn bdat(&mut self, size: usize, last: bool) -> Flow {
        let max = self.shared.smtp.max_message_size;
        let refusal = match &self.tx {
            None => Some(reply::NEED_MAIL),
            Some(tx) if tx.recipients.is_empty() => Some(reply::NEED_RCPT),
            Some(_) => None,
        };
        if let Some(reply) = refusal {
            self.skip_chunk(size).await?;
            return self.refuse(reply);
        }
        if self.tx.as_ref().is_some_and(|tx| tx.chunks.is_none()) {
            let id = MessageId::new();
            let message = self
                .tx
                .as_ref()
                .map(|tx| self.new_message(tx, id))
                .unwrap_or_default();
            let chunks = Chunks {
                id,
                header_len: message.len(),
                message,
                reservation: self.shared.budget.empty(),
                deadline: self.data_deadline(),
                refused: None,
            };
            if let Some(tx) = self.tx.as_mut() {
                tx.chunks = Some(chunks);
            }
        }
        let (idle, wait) = (self.data_timeout(), wait_deadline(self.data_timeout()));
        let Some(chunks) = self.tx.as_mut().and_then(|tx| tx.chunks.as_mut()) else {
            return Ok(());
        };
        let stored = chunks.message.len() - chunks.header_len;
        if chunks.refused.is_none() && !body::chunk_fits(stored, size, max) {
            chunks.refused = Some(reply::TOO_BIG);
        }
        let total = chunks.message.len().saturating_add(size);
        if chunks.refused.is_none() && !chunks.reservation.grow_to(total, wait).await {
            chunks.refused = Some(reply::NO_MEMORY);
        }
        if chunks.refused.is_some() {
            chunks.message = Vec::new();
            chunks.reservation.release();
        }
        let deadline = chunks.deadline;
        let read = if chunks.refused.is_some() {
            Self::skip(&mut self.conn, size, deadline, idle).await
        } else if size == 0 {
            Ok(())
        } else {
            chunks.message.reserve_exact(size);
            let mut chunk = Chunk::new(size, last);
            let message = &mut chunks.message;
            self.conn
                .read_until(deadline, idle, |input| chunk.feed(input, message))
                .await
                .map(|_| ())
        };
        if let Err(interrupt) = read {
            return Err(self.interrupted(interrupt));
        }
        if let Some(reply) = self
            .tx
            .as_ref()
            .and_then(|tx| tx.chunks.as_ref())
            .and_then(|c| c.refused.clone())
        {
            self.tx = None;
            return self.refuse_message(reply);
        }
        if !last {
            self.send(&Reply::owned(
                250,
                Some(EnhancedCode::new(2, 0, 0)),
                format!("Ok: {size} octets received"),
            ));
            return Ok(());
        }
        let Some(mut tx) = self.tx.take() else {
            return Ok(());
        };
        let Some(chunks) = tx.chunks.take() else {
            return Ok(());
        };
        self.accept(tx, chunks.id, chunks.message, chunks.reservation)
            .await
    }

    async fn skip_chunk(&mut self, size: usize) -> Flow {
        let (deadline, idle) = (self.data_deadline(), self.data_timeout());
        match Self::skip(&mut self.conn, size, deadline, idle).await {
            Ok(()) => Ok(()),
            Err(interrupt) => Err(self.interrupted(interrupt)),
        }
    }

    async fn skip(
        conn: &mut Conn,
        size: usize,
        deadline: Instant,
        idle: Duration,
    ) -> Result<(), Interrupt> {
        if size == 0 {
            return Ok(());
        }
        let mut skip = SkippedChunk::new(size);
        conn.read_until(deadline, idle, |input| skip.feed(input))
            .await
            .map(|_| ())
    }

    /// Stores the message; replies 250 only once the queue says it is durable. The
    /// message's memory stays reserved until then.
    async fn accept(
        &mut self,
        tx: Transaction,
        id: MessageId,
        mut message: Vec<u8>,
        _reservation: Reservation,
    ) -> Flow {
        if tx.report {
            return self.take_report(tx, id, message).await;
        }
        let meta = match metadata::take(&mut message, self.relay_allowed()) {
            Ok(meta) => meta,
            Err(reply) => return self.refuse_message(reply),
        };
        let size = message.len();
        let recipients = tx.recipients.len();
        let envelope = Envelope {
            id,
            sender: tx.sender,
            recipients: tx.recipients,
            auth_identity: self.auth_identity.clone(),
            client_ip: self.peer.ip().to_canonical(),
            helo: self.helo.clone().unwrap_or_default(),
            received_at_ms: unix_ms(std::time::SystemTime::now()),
            requeued_at_ms: None,
            size: size as u64,
            body_8bit: tx.body_8bit,
            smtputf8: tx.smtputf8,
            dsn_ret: tx.dsn_ret,
            dsn_envid: tx.dsn_envid,
            meta,
        };
        let sender = printable(&envelope.sender);
        let started = Instant::now();
        match self
            .shared
            .queue
            .enqueue(envelope, Bytes::from(message))
            .await
        {
            Ok(()) => {
                let durable_in = started.elapsed();
                metrics::histogram!("postroad_smtp_ack_seconds").record(durable_in.as_secs_f64());
                tracing::info!(%id, from = %sender, recipients, size, client = %self.peer.ip(), ?durable_in, "queued");
                self.send(&Reply::owned(
                    250,
                    Some(EnhancedCode::new(2, 0, 0)),
                    format!("Ok: queued as {id}"),
                ));
                if let Some(waker) = &self.shared.relay_waker {
                    waker.notify_one();
                }
            }
            Err(e @ QueueError::TooLarge { .. }) => {
                tracing::info!(%id, client = %self.peer.ip(), "refused: {e}");
                self.send(&reply::TOO_BIG);
            }
            Err(e) => {
                tracing::error!(%id, client = %self.peer.ip(), "cannot queue message: {e}");
                self.send(&reply::QUEUE_ERROR);
            }
        }
        Ok(())
    }
}
