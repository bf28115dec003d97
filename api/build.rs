// `sqlx::migrate!` reads ../migrations/app-sqlite at compile time; rebuild when it changes.
fn main() {
    println!("cargo:rerun-if-changed=../migrations/app-sqlite");
}
