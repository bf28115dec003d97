//! Where the HTTP API keeps its application data (keys, templates, idempotency
//! records, preferences): beside the history. An embedded SQLite history means
//! `app.sqlite` in the data directory; a MySQL history means the same MySQL database,
//! shared by every node (its tables come with `postroad migrate`).

use anyhow::Context;
use postroad_api::AppStore;
use postroad_history::Backend;

use crate::config::Config;

pub async fn open(config: &Config) -> anyhow::Result<AppStore> {
    match config.history.backend {
        Backend::Sqlite => {
            let dir = &config.server.data_dir;
            AppStore::open_in(dir)
                .await
                .with_context(|| format!("cannot open the API store in {}", dir.display()))
        }
        Backend::Mysql => {
            let location = postroad_history::redact(&config.history.url);
            AppStore::open_mysql(&config.history.url, &location)
                .await
                .context("cannot open the API store in the history's MySQL database")
        }
    }
}
