//! The parts `postroad serve` runs (event fan-out, history consumer, relay, admin
//! endpoint, HTTP API, SMTP ingress; next: webhooks), each started the same way and
//! stopped in reverse order: the SMTP listeners drain first, then the HTTP API, then the
//! endpoint, then the relay finishes what is in flight, the history consumer stops
//! (what it has not committed is read again), and the fan-out passes on the last events.

use std::future::Future;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The running parts.
#[derive(Default)]
pub struct Parts {
    running: Vec<Part>,
}

struct Part {
    name: &'static str,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Parts {
    /// Starts a part: `run` gets the token that asks it to stop, and returns when it has.
    pub fn start<F, Fut>(&mut self, name: &'static str, run: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(stop.clone()));
        tracing::debug!(part = name, "started");
        self.running.push(Part { name, stop, task });
    }

    /// Takes in a part already running (started where starting can fail, like binding
    /// a port): `stop` asks it to stop, `task` ends when it has.
    pub fn adopt(&mut self, name: &'static str, stop: CancellationToken, task: JoinHandle<()>) {
        self.running.push(Part { name, stop, task });
    }

    /// Stops every part, the last started first, each after the one before has stopped.
    pub async fn stop(self) {
        for part in self.running.into_iter().rev() {
            part.stop.cancel();
            if let Err(e) = part.task.await {
                tracing::error!(part = part.name, "stopped abnormally: {e}");
            } else {
                tracing::info!(part = part.name, "stopped");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[tokio::test]
    async fn parts_stop_in_reverse_order_one_after_another() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut parts = Parts::default();
        for name in ["events", "relay", "admin", "smtp"] {
            let log = log.clone();
            parts.start(name, move |stop| async move {
                stop.cancelled().await;
                log.lock().unwrap().push(format!("{name} stopping"));
                tokio::task::yield_now().await;
                log.lock().unwrap().push(format!("{name} stopped"));
            });
        }
        parts.stop().await;
        let log = log.lock().unwrap().clone();
        assert_eq!(
            log,
            [
                "smtp stopping",
                "smtp stopped",
                "admin stopping",
                "admin stopped",
                "relay stopping",
                "relay stopped",
                "events stopping",
                "events stopped"
            ]
        );
    }
}
