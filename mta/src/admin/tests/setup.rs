//! The admin endpoint's set-up: the token file, the config rules, binding and
//! stopping, and what the CLI client refuses before it sends anything.

use super::*;
use crate::admin::health::Health;

#[test]
fn token_file_is_generated_private_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = AdminConfig::default();
    let token = load_or_create_token(&config, &data).unwrap();
    assert_eq!(token.len(), 64);
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
    let path = data.join(TOKEN_FILE);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    assert_eq!(load_or_create_token(&config, &data).unwrap(), token);
    assert_eq!(
        std::fs::read_dir(&data).unwrap().count(),
        1,
        "no temporary file left"
    );

    // an explicit token wins and writes nothing
    let other = tempfile::tempdir().unwrap();
    let explicit = AdminConfig {
        token: "a-long-enough-secret-token".into(),
        ..AdminConfig::default()
    };
    assert_eq!(
        load_or_create_token(&explicit, other.path()).unwrap(),
        "a-long-enough-secret-token"
    );
    assert!(!other.path().join(TOKEN_FILE).exists());

    // a damaged file is an error, not a silent new token
    std::fs::write(&path, "short\n").unwrap();
    let e = load_or_create_token(&config, &data)
        .unwrap_err()
        .to_string();
    assert!(e.contains("delete the file"), "{e}");
}

#[test]
fn config_rules() {
    let text = "listen = \"127.0.0.1:9025\"\n";
    let parsed: AdminConfig = toml::from_str(text).unwrap();
    assert_eq!(parsed.listen.port(), 9025);
    assert_eq!(parsed.token, "");
    assert_eq!(
        AdminConfig::default().listen,
        "127.0.0.1:8025".parse().unwrap()
    );
    assert!(toml::from_str::<AdminConfig>("lisen = \"x\"").is_err());
    assert!(AdminConfig::default().validate().is_ok());

    let mut public = AdminConfig {
        listen: "0.0.0.0:8025".parse().unwrap(),
        token: String::new(),
    };
    let e = public.validate().unwrap_err();
    assert!(e.contains("not a loopback address"), "{e}");
    public.token = "0123456789abcdef0123".into();
    assert!(public.validate().is_ok());
    public.token = "short".into();
    assert!(public.validate().unwrap_err().contains("at least 16"));
    public.token = "has a space in it, long enough".into();
    assert!(public.validate().unwrap_err().contains("visible ASCII"));
    let v6 = AdminConfig {
        listen: "[::1]:8025".parse().unwrap(),
        token: String::new(),
    };
    assert!(v6.validate().is_ok());
}

#[test]
fn start_binds_logs_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let spool = Spool::open(SpoolConfig::new(dir.path().join("spool"))).unwrap();
    let queue: Arc<dyn Queue> = Arc::new(spool);

    // an address in use: the error names it
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let config = AdminConfig {
        listen: taken.local_addr().unwrap(),
        token: String::new(),
    };
    let stopped = CancellationToken::new();
    let e = rt
        .block_on(start(
            &config,
            dir.path(),
            queue.clone(),
            None,
            Health::new(),
            stopped.clone(),
        ))
        .unwrap_err();
    assert!(
        format!("{e:#}").contains(&config.listen.to_string()),
        "{e:#}"
    );
    drop(taken);

    // public without a token: refused before binding
    let public = AdminConfig {
        listen: "0.0.0.0:0".parse().unwrap(),
        token: String::new(),
    };
    let e = rt
        .block_on(start(
            &public,
            dir.path(),
            queue.clone(),
            None,
            Health::new(),
            stopped,
        ))
        .unwrap_err();
    assert!(e.to_string().contains("admin.token"), "{e}");

    // a free port: serves with the generated token, stops on the signal
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = AdminConfig {
        listen: format!("127.0.0.1:{port}").parse().unwrap(),
        token: String::new(),
    };
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    let task = rt
        .block_on(start(
            &config,
            dir.path(),
            queue,
            None,
            Health::new(),
            stopped,
        ))
        .unwrap();
    let token = std::fs::read_to_string(dir.path().join(TOKEN_FILE)).unwrap();
    let client = AdminClient::new(&format!("http://127.0.0.1:{port}/"), token.trim()).unwrap();
    assert_eq!(client.stats().unwrap(), client::Stats::default());
    // neither an idle keep-alive connection nor a request never finished holds the
    // shutdown up
    let mut slow = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    std::io::Write::write_all(&mut slow, b"GET /v1/queue/stats HTTP/1.1\r\nHost: x\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let stopping = std::time::Instant::now();
    stop.cancel();
    rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), task).await })
        .expect("admin endpoint did not stop")
        .unwrap();
    assert!(stopping.elapsed() < server::SHUTDOWN_GRACE + Duration::from_secs(3));
    assert!(client.stats().is_err());
    drop(slow);
}

#[test]
fn client_refuses_bad_urls_and_tokens() {
    for url in [
        "https://127.0.0.1:8025",
        "127.0.0.1:8025",
        "http://",
        "http://h/x",
    ] {
        assert!(AdminClient::new(url, "token").is_err(), "{url}");
    }
    assert!(AdminClient::new("http://127.0.0.1:8025", "").is_err());
    assert!(AdminClient::new("http://127.0.0.1:8025", "two words").is_err());
    let c = AdminClient::new(" http://[::1]:8025/ ", "t").unwrap();
    assert_eq!(c.url(), "http://[::1]:8025");
}

#[test]
fn cli_arguments() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Top,
    }
    #[derive(clap::Subcommand)]
    enum Top {
        Queue(cli::QueueArgs),
        Dlq(cli::DlqArgs),
    }

    let parse = |args: &[&str]| {
        Cli::try_parse_from(std::iter::once("postroad").chain(args.iter().copied()))
    };
    let Top::Queue(q) = parse(&[
        "queue",
        "list",
        "--limit",
        "5",
        "--json",
        "--admin",
        "http://127.0.0.1:1",
    ])
    .unwrap()
    .command
    else {
        panic!("not queue")
    };
    assert!(matches!(q.command, cli::QueueCommand::List { limit: 5 }));
    assert!(q.endpoint.json);
    assert_eq!(q.endpoint.admin_url, "http://127.0.0.1:1");

    let Top::Queue(q) = parse(&["queue", "--token", "t0k", "inspect", "abc", "--raw"])
        .unwrap()
        .command
    else {
        panic!("not queue")
    };
    assert!(matches!(
        q.command,
        cli::QueueCommand::Inspect { raw: true, .. }
    ));
    assert_eq!(q.endpoint.token.as_deref(), Some("t0k"));

    let Top::Dlq(d) = parse(&["dlq", "requeue", "abc", "--data-dir", "/srv/pr"])
        .unwrap()
        .command
    else {
        panic!("not dlq")
    };
    assert!(matches!(d.command, cli::DlqCommand::Requeue { .. }));
    assert_eq!(d.endpoint.data_dir, std::path::Path::new("/srv/pr"));

    assert!(parse(&["queue", "list", "--limit", "0"]).is_err());
    assert!(parse(&["queue", "list", "--limit", "10001"]).is_err());
    assert!(parse(&["dlq", "inspect"]).is_err());

    // no token anywhere: a clear message naming the file
    let endpoint = cli::Endpoint {
        admin_url: client::DEFAULT_ADMIN_URL.into(),
        token: None,
        data_dir: "/nonexistent/postroad-data".into(),
        json: false,
    };
    let e = endpoint.client().err().unwrap().to_string();
    assert!(e.contains("/nonexistent/postroad-data/admin.token"), "{e}");
    assert!(e.contains("--token"), "{e}");
}
