//! The event bus of one process: delivery events from the SMTP sessions (`queued`) and
//! the relay (everything else) go to their consumers: the history writer, and with the
//! Kafka backend the events topic (for consumers in other processes).

use postroad_history::HistorySender;
use std::sync::Arc;

use postroad_queue::DeliveryEvent;
use postroad_queue::kafka::KafkaQueue;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Events waiting for consumers before producers wait too.
const BUS_CAPACITY: usize = 16 * 1024;

pub struct EventBus {
    tx: mpsc::Sender<DeliveryEvent>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl EventBus {
    pub fn start(history: HistorySender, kafka: Option<Arc<KafkaQueue>>) -> Self {
        let (tx, mut rx) = mpsc::channel(BUS_CAPACITY);
        let (stop, mut stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    event = rx.recv() => match event {
                        Some(event) => forward(&history, kafka.as_deref(), event).await,
                        None => break,
                    },
                    _ = &mut stopped => {
                        // Producers are done (or given up on): pass on what is buffered.
                        while let Ok(event) = rx.try_recv() {
                            forward(&history, kafka.as_deref(), event).await;
                        }
                        break;
                    }
                }
            }
            match history.shutdown().await {
                Ok(stats) => tracing::info!(
                    written = stats.written,
                    duplicates = stats.duplicates,
                    "history flushed"
                ),
                Err(e) => tracing::error!("history could not be flushed: {e}"),
            }
        });
        Self { tx, stop, task }
    }

    pub fn sender(&self) -> mpsc::Sender<DeliveryEvent> {
        self.tx.clone()
    }

    /// Forwards what is buffered, flushes the consumers and waits for them.
    pub async fn close(self) {
        drop(self.tx);
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

async fn forward(history: &HistorySender, kafka: Option<&KafkaQueue>, event: DeliveryEvent) {
    if let Some(kafka) = kafka {
        kafka.publish_event(&event);
    }
    if history.send(event).await.is_err() {
        tracing::error!("the history writer has stopped; an event was not recorded");
    }
}
