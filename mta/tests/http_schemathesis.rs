//! schemathesis (PyPI) against a running `postroad serve`: requests generated from
//! `/v1/openapi.json` (examples, boundary values, fuzzing, and stateful sequences that
//! follow the links between operations), each answer checked: no 5xx, every status,
//! content type, header and body as the document says.

mod common;

use common::Server;
use common::http::api_key;

#[test]
fn schemathesis_finds_no_server_error_and_no_answer_off_the_schema() {
    let server = Server::start("");
    let key = api_key(&server, &["create", "--name", "schemathesis"]);
    let auth = format!("Authorization: Bearer {}", key.trim());
    let schema = format!("http://127.0.0.1:{}/v1/openapi.json", server.http);
    // Not "all": positive_data_acceptance would need every schema-valid value to be
    // accepted, and the schema cannot say what RFC 5321 or a stored template allows.
    let checks = [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    ]
    .join(",");
    // In the server's directory: schemathesis keeps a cache where it runs.
    let output = std::process::Command::new("schemathesis")
        .current_dir(server.dir.path())
        .args(["run", &schema, "-H", &auth, "--checks", &checks])
        .args([
            "--max-examples",
            "40",
            "--request-timeout",
            "20",
            "--no-color",
        ])
        .output()
        .expect("schemathesis runs (scripts/install-test-deps installs it)");
    let ok = output.status.success();
    let out = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(
        ok,
        "schemathesis found problems:\n{out}\nserver log:\n{}",
        server.log()
    );
    assert!(out.contains("passed"), "{out}");
}
