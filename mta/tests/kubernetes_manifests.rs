//! `deploy/kubernetes/`: every manifest validates against the Kubernetes 1.37 schemas
//! (kubernetes-validate from PyPI, strict: unknown fields are errors), and the config
//! the ConfigMap ships passes `postroad check-config` with the environment the Secret
//! gives the pods, and says what the workloads rely on.

mod common;

use std::path::{Path, PathBuf};

use common::run;

fn manifests() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes")
}

/// The files of resources Kubernetes itself defines (KEDA's and kustomize's are not in
/// its schemas).
const CORE: [&str; 8] = [
    "configmap.yaml",
    "secret.example.yaml",
    "ingress.yaml",
    "relay.yaml",
    "history.yaml",
    "services.yaml",
    "pdb.yaml",
    "hpa.yaml",
];

#[test]
fn every_manifest_validates_against_the_kubernetes_schemas() {
    let dir = manifests();
    let files: Vec<String> = CORE
        .iter()
        .map(|f| dir.join(f).to_str().unwrap().to_string())
        .collect();
    let mut args = vec!["--strict", "-k", "1.37.0"];
    args.extend(files.iter().map(String::as_str));
    let (ok, out) = run("kubernetes-validate", &args, None);
    assert!(ok, "kubernetes-validate:\n{out}");
    assert!(!out.contains("ERROR") && !out.contains("WARN"), "{out}");
    // Every resource of every file was checked (14 of them).
    assert_eq!(out.matches(" passed for resource ").count(), 14, "{out}");
    // The kustomization names every core manifest but the example Secret.
    let kustomization = std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap();
    for file in CORE.iter().filter(|f| **f != "secret.example.yaml") {
        assert!(
            kustomization.contains(&format!("- {file}")),
            "{file} not in the kustomization"
        );
    }
}

#[test]
fn the_configmaps_config_passes_check_config_with_the_secrets_environment() {
    let dir = manifests();
    // The ConfigMap's postroad.toml and the Secret's variables, read as YAML.
    let script = r#"
import sys, yaml
config = yaml.safe_load(open(sys.argv[1]))
secret = yaml.safe_load(open(sys.argv[2]))
open(sys.argv[3], "w").write(config["data"]["postroad.toml"])
for key, value in secret["stringData"].items():
    print(f"{key}={value}")
"#;
    let work = tempfile::tempdir().unwrap();
    let toml = work.path().join("postroad.toml");
    let (ok, env) = run(
        "python3",
        &[
            "-c",
            script,
            dir.join("configmap.yaml").to_str().unwrap(),
            dir.join("secret.example.yaml").to_str().unwrap(),
            toml.to_str().unwrap(),
        ],
        None,
    );
    assert!(ok, "{env}");
    let mut command = std::process::Command::new(common::binary());
    command.args(["check-config", "--config", toml.to_str().unwrap()]);
    command.env("POSTROAD__KAFKA__INSTANCE_ID", "postroad-relay-0");
    for line in env.lines() {
        let (key, value) = line.split_once('=').unwrap();
        assert!(key.starts_with("POSTROAD__"), "{key}");
        command.env(key, value);
    }
    let out = command.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "check-config: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let effective: toml::Value = toml::from_str(&text).unwrap();
    assert_eq!(effective["queue"]["backend"].as_str(), Some("kafka"));
    assert_eq!(effective["history"]["backend"].as_str(), Some("mysql"));
    assert_eq!(
        effective["kafka"]["instance_id"].as_str(),
        Some("postroad-relay-0")
    );
    // The probes reach the admin endpoint from outside the pod; the grace the pods get
    // (60 s) covers two parts' shutdown_grace_secs and the rest.
    assert_eq!(effective["admin"]["listen"].as_str(), Some("0.0.0.0:8025"));
    let grace = effective["server"]["shutdown_grace_secs"]
        .as_integer()
        .unwrap();
    for workload in ["ingress.yaml", "relay.yaml", "history.yaml"] {
        let text = std::fs::read_to_string(dir.join(workload)).unwrap();
        assert!(
            text.contains("terminationGracePeriodSeconds: 60"),
            "{workload}"
        );
        assert!(2 * grace + 10 <= 60, "{workload}: {grace}");
        assert!(
            text.contains("path: /readyz") && text.contains("path: /healthz"),
            "{workload}"
        );
    }
}
