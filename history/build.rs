// `sqlx::migrate!` reads ../migrations/{sqlite,mysql} at compile time; rebuild when they
// change.
fn main() {
    println!("cargo:rerun-if-changed=../migrations/sqlite");
    println!("cargo:rerun-if-changed=../migrations/mysql");
}
