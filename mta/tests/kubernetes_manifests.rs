//! `deploy/kubernetes/`: every manifest of the base validates against the Kubernetes
//! 1.37 schemas (kubernetes-validate from PyPI, strict: unknown fields are errors), and
//! the config the ConfigMap ships passes `postroad check-config` with the environment
//! the Secret gives the pods, and says what the workloads rely on. The small and large
//! overlays render (`kubectl kustomize`), validate, and scale relay workers within the
//! email-send partitions their config creates.

mod common;

use std::path::{Path, PathBuf};

use common::run;

fn manifests() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes/base")
}

/// `postroad check-config` of `toml` with the Secret's variables, the pod name and
/// `env`: the effective config.
fn check_config(toml: &Path, env: &[(String, String)]) -> toml::Value {
    let mut command = std::process::Command::new(common::binary());
    command.args(["check-config", "--config", toml.to_str().unwrap()]);
    command.env("POSTROAD__KAFKA__INSTANCE_ID", "postroad-relay-0");
    for (key, value) in env {
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
    toml::from_str(&text).unwrap()
}

/// `KEY=VALUE` lines as pairs.
fn pairs(lines: &str) -> Vec<(String, String)> {
    lines
        .lines()
        .map(|l| l.split_once('=').unwrap())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
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
    let effective = check_config(&toml, &pairs(&env));
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

/// What the test reads off a rendered overlay.
const OVERLAY_FACTS: &str = r#"
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
by = {(d["kind"], d["metadata"]["name"]): d for d in docs}
open(sys.argv[3], "w").write(by[("ConfigMap", "postroad-config")]["data"]["postroad.toml"])
relay = by[("StatefulSet", "postroad-relay")]["spec"]["template"]["spec"]["containers"][0]
with open(sys.argv[2], "w") as env:
    for var in relay.get("env", []):
        if "value" in var:
            env.write(f"{var['name']}={var['value']}\n")
for kind, name in [("Deployment", "postroad-ingress"), ("StatefulSet", "postroad-relay"),
                   ("Deployment", "postroad-history")]:
    print(f"{name}.replicas={by[(kind, name)]['spec']['replicas']}")
for name in ["postroad-ingress", "postroad-relay"]:
    hpa = by[("HorizontalPodAutoscaler", name)]["spec"]
    print(f"{name}.min={hpa['minReplicas']}")
    print(f"{name}.max={hpa['maxReplicas']}")
"#;

#[test]
fn the_small_and_large_overlays_render_validate_and_fit_their_partitions() {
    let overlays = manifests().join("../overlays");
    let mut relay_max = Vec::new();
    for name in ["small", "large"] {
        let dir = overlays.join(name);
        let out = std::process::Command::new("kubectl")
            .args(["kustomize", dir.to_str().unwrap()])
            .output()
            .expect("kubectl (scripts/install-test-deps installs it)");
        assert!(
            out.status.success(),
            "kubectl kustomize {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let work = tempfile::tempdir().unwrap();
        let rendered = work.path().join("rendered.yaml");
        std::fs::write(&rendered, &out.stdout).unwrap();
        let (ok, report) = run(
            "kubernetes-validate",
            &["--strict", "-k", "1.37.0", rendered.to_str().unwrap()],
            None,
        );
        assert!(ok, "{name}: kubernetes-validate:\n{report}");
        assert!(
            !report.contains("ERROR") && !report.contains("WARN"),
            "{report}"
        );
        // The base's resources but the example Secret: ConfigMap, 3 workloads, 4
        // Services, 3 PDBs, 2 HPAs.
        assert_eq!(
            report.matches(" passed for resource ").count(),
            13,
            "{report}"
        );

        let (env, toml) = (work.path().join("env"), work.path().join("postroad.toml"));
        let (ok, facts) = run(
            "python3",
            &[
                "-c",
                OVERLAY_FACTS,
                rendered.to_str().unwrap(),
                env.to_str().unwrap(),
                toml.to_str().unwrap(),
            ],
            None,
        );
        assert!(ok, "{facts}");
        let facts: std::collections::HashMap<String, i64> = pairs(&facts)
            .into_iter()
            .map(|(k, v)| (k, v.parse().unwrap()))
            .collect();
        let secret = run(
            "python3",
            &[
                "-c",
                "import sys, yaml\nfor k, v in yaml.safe_load(open(sys.argv[1]))['stringData'].items(): print(f'{k}={v}')",
                manifests().join("secret.example.yaml").to_str().unwrap(),
            ],
            None,
        );
        assert!(secret.0, "{}", secret.1);
        let mut vars = pairs(&secret.1);
        vars.extend(pairs(&std::fs::read_to_string(&env).unwrap()));
        let effective = check_config(&toml, &vars);
        let partitions = effective["kafka"]["topics"]["send"]["partitions"]
            .as_integer()
            .unwrap();
        // Bulk mail is spread over as many workers as the rest.
        assert_eq!(
            effective["kafka"]["topics"]["bulk"]["partitions"].as_integer(),
            Some(partitions),
            "{name}: bulk partitions"
        );
        // A relay worker past the partitions would sit idle; each workload starts at
        // its autoscaler's floor.
        assert!(
            facts["postroad-relay.max"] <= partitions,
            "{name}: relay HPA max {} over {partitions} partitions",
            facts["postroad-relay.max"]
        );
        for workload in ["postroad-ingress", "postroad-relay"] {
            assert_eq!(
                facts[&format!("{workload}.replicas")],
                facts[&format!("{workload}.min")],
                "{name}: {workload}"
            );
            assert!(facts[&format!("{workload}.min")] >= 2, "{name}: {workload}");
        }
        assert_eq!(
            effective["kafka"]["topics"]["replication_factor"].as_integer(),
            Some(3)
        );
        relay_max.push(facts["postroad-relay.max"]);
    }
    assert!(relay_max[0] < relay_max[1], "small {relay_max:?} large");
}
