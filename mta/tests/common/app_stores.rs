//! The API's application store on both backends, for contract tests: the embedded
//! SQLite file and a database of the test's own on the machine's MariaDB, migrated by
//! `postroad migrate`'s code.

use postroad_api::AppStore;
use postroad_history::{Backend, HistoryConfig, HistoryStore};

use super::mariadb::MachineDatabase;

/// A fresh store on each backend (the MySQL one dropped with the guard).
pub async fn stores(test: &str) -> Vec<(AppStore, Box<dyn std::any::Any>)> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = AppStore::open_in(dir.path()).await.unwrap();
    let db = MachineDatabase::create(&format!("postroad_app_{test}_{}", std::process::id()));
    let config = HistoryConfig {
        backend: Backend::Mysql,
        url: db.url(),
        ..HistoryConfig::default()
    };
    HistoryStore::migrate(&config, dir.path()).await.unwrap();
    let mysql = AppStore::open_mysql(&db.url(), &db.name).await.unwrap();
    vec![(sqlite, Box::new(dir)), (mysql, Box::new(db))]
}
