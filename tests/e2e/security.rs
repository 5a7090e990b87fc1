//! The security issue's "must show", end to end on a whole deployment:
//!
//! 1. TLS on the control API and on NATS: a full APPLY sync runs over it, while a gRPC
//!    client that does not trust the stack's CA, a plaintext gRPC client and a NATS client
//!    without TLS are refused.
//! 2. The service token (the appliers'): `GetRun` is allowed, every operator call
//!    (`StartSync`, `ApproveRun`, ...) is `PERMISSION_DENIED`.
//! 3. No secret leaks: after an APPLY run that creates Bitbucket users and meets
//!    transport errors (connections reset by a proxy) and 503s, no secret of the stack,
//!    nor any initial password the applier generated for a Bitbucket user, is in a
//!    service log, a stored result, the CLI's `keysync run <id> --changes`, an exported
//!    span or a message on NATS.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Mutex,
    time::Duration,
};

use e2e::{PRODUCTS, Stack, StackOptions, proxy::TransportFaults};
use futures::StreamExt;
use proto::v1::{
    self, ChangeOp, ChangeOutcome, ChangeRecord, Product, RunMode, RunState, account_ref,
};
use serde_json::Value;
use test_support::otlp::OtlpReceiver;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

use crate::directory;

/// Calls ListRuns at `endpoint` over a channel with `tls` (none: plaintext), with the
/// stack's operator token; the error as text when the call fails.
async fn list_runs_over(
    stack: &Stack,
    endpoint: &str,
    tls: Option<ClientTlsConfig>,
) -> Result<(), String> {
    let mut channel =
        Channel::from_shared(endpoint.to_owned()).map_err(|error| error.to_string())?;
    if let Some(tls) = tls {
        channel = channel
            .tls_config(tls)
            .map_err(|error| format!("{error:?}"))?;
    }
    let channel = channel
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(20))
        .connect()
        .await
        .map_err(|error| format!("connect: {error:?}"))?;
    let token: tonic::metadata::MetadataValue<tonic::metadata::Ascii> =
        format!("Bearer {}", stack.secrets.operator_token)
            .parse()
            .expect("a header value");
    let mut client = v1::control_service_client::ControlServiceClient::with_interceptor(
        channel,
        move |mut request: tonic::Request<()>| {
            request
                .metadata_mut()
                .insert("authorization", token.clone());
            Ok(request)
        },
    );
    client
        .list_runs(v1::ListRunsRequest::default())
        .await
        .map(|_| ())
        .map_err(|status| format!("{status:?}"))
}

/// 1. With `tls`, the control API serves TLS and nats-server requires it, and every
///    service is configured for it (`[control_plane] tls_cert_file`, `tls_key_file`,
///    `endpoint = "https://…"` with `ca_file`; `[bus] tls_ca_file` with `require_tls`).
///    Shows: an APPLY sync runs end to end with no failed change (the appliers report
///    their results to the https endpoint, the services talk over TLS NATS, and
///    nats-server's `/connz` shows TLS on every connection); a gRPC client that trusts
///    only the system's roots, and a plaintext one, are refused by the control API; a NATS
///    client that does not trust the CA, and one speaking plaintext, are refused by
///    nats-server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_a_sync_runs_and_clients_without_tls_or_the_ca_are_refused() {
    let people = directory::people(12);
    let stack = Stack::start(StackOptions {
        realm: directory::realm(&people),
        tls: true,
        ..StackOptions::default()
    })
    .await
    .expect("the stack starts with TLS");
    assert!(stack.endpoint.starts_with("https://"), "{}", stack.endpoint);
    let tls = stack.tls.as_ref().expect("TLS material");

    // A full APPLY sync of the realm, with nothing failed, and the products hold it.
    let run = stack
        .sync(RunMode::Apply)
        .await
        .expect("an APPLY sync over TLS succeeds");
    assert_eq!(run.progress.len(), PRODUCTS.len(), "{run:?}");
    for progress in &run.progress {
        assert_eq!(progress.failed, 0, "failed changes: {run:?}");
        assert!(progress.applied > 0, "nothing applied: {run:?}");
    }
    for product in PRODUCTS {
        for record in stack.changes(&run.run_id, product).await.unwrap() {
            assert!(
                matches!(
                    record.outcome(),
                    ChangeOutcome::Applied | ChangeOutcome::AlreadyDone
                ),
                "{product:?}: {record:?}"
            );
        }
        let state = stack.emulator_state(product).await.unwrap();
        let holdings = directory::holdings(
            &state,
            &directory::logins(&people),
            &directory::group_names(),
        )
        .unwrap();
        assert_eq!(holdings, directory::expected(&people), "{product:?}");
    }

    // Every connection nats-server holds (the six services') is TLS.
    let connz: Value = reqwest::get(format!("{}/connz", stack.nats.monitor_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let connections = connz["connections"].as_array().cloned().unwrap_or_default();
    assert!(
        connections.len() >= 6,
        "fewer connections than services: {connz:#}"
    );
    for connection in &connections {
        assert!(
            connection["tls_version"]
                .as_str()
                .is_some_and(|version| !version.is_empty()),
            "a connection without TLS: {connection:#}"
        );
    }

    // gRPC: trusting the stack's CA is answered (the control of the refusals below).
    let trusting = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&tls.ca));
    list_runs_over(&stack, &stack.endpoint, Some(trusting))
        .await
        .expect("a client that trusts the CA is answered");
    // Trusting only the system's roots: the certificate is not trusted.
    let refused = list_runs_over(
        &stack,
        &stack.endpoint,
        Some(ClientTlsConfig::new().with_enabled_roots()),
    )
    .await
    .expect_err("a client with the system's roots only was answered");
    assert!(
        refused.contains("UnknownIssuer") || refused.contains("certificate"),
        "not refused for the certificate: {refused}"
    );
    // Plaintext HTTP/2 to the TLS port.
    let plaintext = stack.endpoint.replacen("https://", "http://", 1);
    let refused = list_runs_over(&stack, &plaintext, None)
        .await
        .expect_err("a plaintext client was answered");
    eprintln!("plaintext gRPC refused: {refused}");

    // NATS: the harness's TLS connection works (the control).
    let bus = stack
        .bus()
        .await
        .expect("a TLS client with the CA connects");
    async_nats::jetstream::new(bus)
        .query_account()
        .await
        .expect("JetStream answers over TLS");
    // A client that does not trust the CA (async-nats upgrades to TLS as the server
    // requires it, with the system's roots).
    let untrusted = tokio::time::timeout(
        Duration::from_secs(30),
        async_nats::ConnectOptions::new().connect(stack.nats.url()),
    )
    .await
    .expect("the connection attempt ends");
    assert!(untrusted.is_err(), "a NATS client without the CA connected");
    // A client that speaks plaintext: the server announces `tls_required` and never
    // answers its PING.
    let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", stack.nats.port()))
        .await
        .unwrap();
    let mut info = vec![0u8; 4096];
    let read = socket.read(&mut info).await.unwrap();
    let info = String::from_utf8_lossy(&info[..read]).into_owned();
    assert!(info.contains("\"tls_required\":true"), "{info}");
    socket
        .write_all(b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\nPING\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        !answer.contains("PONG"),
        "nats-server answered a plaintext client: {answer}"
    );
}

/// 2. With `[control_plane] service_token_file`, the appliers call the API with the
///    service token. Shows: a full APPLY sync succeeds with it (the appliers' `GetRun` and
///    `ReportResults` are allowed: every result reaches the control plane); with the
///    service token `GetRun` answers, while every operator call (`StartSync`,
///    `ApproveRun`, `CancelRun`, `ListRuns`, `ListChanges`, `WatchRun`,
///    `TestConnection`) is `PERMISSION_DENIED` and changes nothing; an unknown token is
///    `UNAUTHENTICATED`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_token_reads_a_run_and_may_not_act_as_the_operator() {
    let people = directory::people(6);
    let stack = Stack::start(StackOptions {
        realm: directory::realm(&people),
        service_token: true,
        ..StackOptions::default()
    })
    .await
    .expect("the stack starts");
    let run = stack
        .sync(RunMode::Apply)
        .await
        .expect("a sync succeeds with the appliers on the service token");
    let applied: u64 = run.progress.iter().map(|progress| progress.applied).sum();
    assert!(applied > 0, "{run:?}");
    for product in PRODUCTS {
        let planned: u64 = run
            .progress
            .iter()
            .filter(|progress| progress.product() == product)
            .map(|progress| progress.planned)
            .sum();
        let results = stack.changes(&run.run_id, product).await.unwrap();
        assert_eq!(
            results
                .iter()
                .filter(|record| record.outcome() != ChangeOutcome::Unspecified)
                .count() as u64,
            planned,
            "{product:?}: not every result was reported"
        );
    }

    let token = stack
        .secrets
        .service_token
        .clone()
        .expect("a service token");
    let mut service = stack.client_with_token(&token).unwrap();
    let read = service
        .get_run(v1::GetRunRequest {
            run_id: run.run_id.clone(),
        })
        .await
        .expect("GetRun is allowed to the service token")
        .into_inner();
    assert_eq!(read.run_id, run.run_id);

    let denied = |call: &str, result: Result<(), tonic::Status>| match result {
        Ok(()) => panic!("{call} was allowed to the service token"),
        Err(status) => assert_eq!(
            status.code(),
            tonic::Code::PermissionDenied,
            "{call}: {status:?}"
        ),
    };
    let run_id = run.run_id.clone();
    denied(
        "StartSync",
        service
            .start_sync(v1::StartSyncRequest {
                mode: RunMode::Apply as i32,
                products: Vec::new(),
                connector: e2e::CONNECTOR.to_owned(),
            })
            .await
            .map(|_| ()),
    );
    denied(
        "ApproveRun",
        service
            .approve_run(v1::ApproveRunRequest {
                run_id: run_id.clone(),
                comment: "the service token approves".to_owned(),
            })
            .await
            .map(|_| ()),
    );
    denied(
        "CancelRun",
        service
            .cancel_run(v1::CancelRunRequest {
                run_id: run_id.clone(),
                reason: "the service token cancels".to_owned(),
            })
            .await
            .map(|_| ()),
    );
    denied(
        "ListRuns",
        service
            .list_runs(v1::ListRunsRequest::default())
            .await
            .map(|_| ()),
    );
    denied(
        "ListChanges",
        service
            .list_changes(v1::ListChangesRequest {
                run_id: run_id.clone(),
                ..v1::ListChangesRequest::default()
            })
            .await
            .map(|_| ()),
    );
    denied(
        "WatchRun",
        service
            .watch_run(v1::WatchRunRequest {
                run_id: run_id.clone(),
            })
            .await
            .map(|_| ()),
    );
    denied(
        "TestConnection",
        service
            .test_connection(v1::TestConnectionRequest::default())
            .await
            .map(|_| ()),
    );
    // Nothing was started or changed by the refused calls.
    let runs = stack.runs().await.unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].state(), RunState::Succeeded);
    assert_eq!(runs[0].approved_by, "");

    let mut stranger = stack.client_with_token(&e2e::random_secret()).unwrap();
    let status = stranger
        .get_run(v1::GetRunRequest { run_id })
        .await
        .expect_err("an unknown token was answered");
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
}

/// The login of a Bitbucket user creation (`POST /rest/api/1.0/admin/users?name=…`), from
/// the request's head or URI.
fn created_login(request: &str) -> Option<String> {
    let target = request
        .split_whitespace()
        .find(|part| part.contains("/admin/users?"))?;
    query_value(target, "name")
}

/// A query parameter of a URI (the values here are letters and digits: no decoding).
fn query_value(uri: &str, key: &str) -> Option<String> {
    let (_, query) = uri.split_once('?')?;
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix(&format!("{key}=")))
        .map(str::to_owned)
}

/// Where the sweep looks, what it read there and which secrets it found.
#[derive(Default)]
struct Sweep {
    secrets: Vec<(String, String)>,
    /// Bytes and items inspected per source, to show that the sweep read something.
    inspected: BTreeMap<String, (usize, usize)>,
    leaks: Vec<String>,
    /// Texts that are no secret but must be found (the run's id, the failed login): the
    /// proof that the search looks at what the source really holds.
    markers: Vec<String>,
    /// `(source, marker)` found.
    found: BTreeSet<(String, String)>,
}

impl Sweep {
    /// Looks for every secret in `text`, one item of `source`.
    fn inspect(&mut self, source: &str, what: &str, text: &str) {
        let entry = self.inspected.entry(source.to_owned()).or_default();
        entry.0 += text.len();
        entry.1 += 1;
        for marker in &self.markers {
            if text.contains(marker.as_str()) {
                self.found.insert((source.to_owned(), marker.clone()));
            }
        }
        for (name, secret) in &self.secrets {
            if text.contains(secret.as_str()) {
                let at = text.find(secret.as_str()).unwrap_or(0);
                let start = text[..at]
                    .char_indices()
                    .rev()
                    .nth(120)
                    .map_or(0, |(index, _)| index);
                self.leaks.push(format!(
                    "{name} in {source} ({what}): …{}…",
                    &text[start..at]
                ));
            }
        }
    }

    /// Fails unless `source` was read, `items` of it at least, and `marker` (one of
    /// [`Sweep::markers`]) was found in it.
    fn assert_inspected(&self, source: &str, items: usize, marker: &str) {
        let (bytes, count) = self.inspected.get(source).copied().unwrap_or_default();
        assert!(
            bytes > 0 && count >= items,
            "the sweep read {count} items ({bytes} bytes) of {source}, expected {items} at least"
        );
        assert!(
            self.found.contains(&(source.to_owned(), marker.to_owned())),
            "{marker:?} is not in {source}: the sweep does not see what it holds"
        );
    }
}

/// 3. The secret sweep. A deployment with TLS and the service token exports spans to an
///    OTLP receiver and logs at debug level; Jira answers every 5th request 503, and a
///    proxy in front of Bitbucket resets the connection of the first creation request of
///    every user (the user is created, its answer is lost: the applier retries and meets
///    409) and of every creation of `user003`, which therefore fails after its retries
///    with a transport error. The Bitbucket emulator records every request, so the
///    initial passwords the applier generated (`password=` in the creation's query) are
///    known to the test.
///
///    Shows: none of the stack's secrets (operator and service tokens, product token,
///    Bitbucket admin password and its Basic header, Keycloak client secret, the TLS
///    server key) nor any generated password appears in any service log, any stored
///    result or run (ListChanges, GetRun), the CLI's `keysync run <id> --changes` (table
///    and JSON), any exported span's attributes, events and status, or any message kept
///    on NATS. Each source is checked to have been read (non-empty, with the failed
///    change's message among the results and the transport error in the applier's log),
///    so that an empty sweep cannot pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_a_log_a_result_the_cli_a_span_or_the_bus() {
    const DOOMED: &str = "user003";
    let receiver = OtlpReceiver::start().await.unwrap();
    let people = directory::people(12);
    assert!(
        people
            .iter()
            .any(|person| person.username == DOOMED && person.enabled && person.email.is_some()),
        "{DOOMED} is not synced"
    );
    // Reset the first creation of every user, and every creation of DOOMED.
    let created = Mutex::new(BTreeSet::new());
    let faults = TransportFaults::reset_when(move |head| {
        if !head.starts_with("POST ") {
            return false;
        }
        let Some(login) = created_login(head) else {
            return false;
        };
        login == DOOMED || created.lock().unwrap().insert(login)
    });
    let crates = [
        "applier",
        "atlassian",
        "bus",
        "control_plane",
        "fetcher",
        "keycloak",
        "planner",
        "telemetry",
    ];
    let log_filter = std::iter::once("info".to_owned())
        .chain(crates.iter().map(|name| format!("{name}=debug")))
        .collect::<Vec<_>>()
        .join(",");
    let mut stack = Stack::start(StackOptions {
        realm: directory::realm(&people),
        tls: true,
        service_token: true,
        emulator_args: [
            (
                Product::Jira,
                vec!["--fail-503-every".to_owned(), "5".to_owned()],
            ),
            (Product::Bitbucket, vec!["--record-requests".to_owned()]),
        ]
        .into(),
        product_config: [(
            Product::Bitbucket,
            "max_retries = 2\ninitial_backoff_ms = 20\n".to_owned(),
        )]
        .into(),
        transport_faults: [(Product::Bitbucket, faults)].into(),
        service_env: vec![
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
                receiver.endpoint(),
            ),
            ("OTEL_BSP_SCHEDULE_DELAY".to_owned(), "200".to_owned()),
            ("RUST_LOG".to_owned(), log_filter),
        ],
        ..StackOptions::default()
    })
    .await
    .expect("the stack starts");

    let run = stack.start_sync(RunMode::Apply).await.unwrap();
    let run = stack.wait_for(&run.run_id, e2e::TERMINAL).await.unwrap();
    let run_id = run.run_id.clone();

    // The faults happened: connections were reset, Jira answered 503s.
    let proxy = &stack.proxies[&Product::Bitbucket];
    assert!(
        proxy.resets() >= 3,
        "the proxy reset {} connections",
        proxy.resets()
    );
    let jira = stack.emulator_state(Product::Jira).await.unwrap();
    assert!(
        jira["counters"]["unavailable"].as_u64().unwrap_or(0) > 0,
        "Jira answered no 503: {}",
        jira["counters"]
    );

    // The Bitbucket results: DOOMED's creation failed on the transport, the others were
    // created despite their reset first attempt.
    let mut results: BTreeMap<Product, Vec<ChangeRecord>> = BTreeMap::new();
    for product in PRODUCTS {
        results.insert(product, stack.changes(&run_id, product).await.unwrap());
    }
    let creations: Vec<(String, &ChangeRecord)> = results[&Product::Bitbucket]
        .iter()
        .filter_map(|record| {
            let change = record.change.as_ref()?;
            (change.op() == ChangeOp::CreateUser).then_some(())?;
            match change.account.as_ref()?.r#ref.as_ref()? {
                account_ref::Ref::NewLogin(login) => Some((login.clone(), record)),
                account_ref::Ref::AccountId(_) => None,
            }
        })
        .collect();
    assert!(creations.len() >= 5, "{creations:?}");
    for (login, record) in &creations {
        if login == DOOMED {
            assert_eq!(record.outcome(), ChangeOutcome::Failed, "{record:?}");
            assert!(!record.message.is_empty(), "{record:?}");
            eprintln!("the failed creation's stored message: {}", record.message);
        } else {
            assert!(
                matches!(
                    record.outcome(),
                    ChangeOutcome::Applied | ChangeOutcome::AlreadyDone
                ),
                "{record:?}"
            );
        }
    }
    assert!(creations.iter().any(|(login, _)| login == DOOMED));

    // The initial passwords the applier generated, from the emulator's request log.
    let bitbucket = stack.emulator_state(Product::Bitbucket).await.unwrap();
    let mut passwords: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for request in bitbucket["requests"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let uri = request["uri"].as_str().unwrap_or_default();
        if request["method"] == "POST"
            && let (Some(login), Some(password)) =
                (created_login(uri), query_value(uri, "password"))
        {
            passwords.entry(login).or_default().insert(password);
        }
    }
    for (login, _) in &creations {
        assert!(
            passwords.get(login).is_some_and(|set| !set.is_empty()),
            "no initial password seen for {login}: {passwords:?}"
        );
    }

    let mut sweep = Sweep {
        secrets: stack.secrets.all(),
        markers: vec![run_id.clone(), DOOMED.to_owned()],
        ..Sweep::default()
    };
    for (login, set) in &passwords {
        for password in set {
            assert!(password.len() >= 16, "a short password for {login}");
            sweep
                .secrets
                .push((format!("initial password of {login}"), password.clone()));
        }
    }
    if let Some(tls) = &stack.tls {
        // A line of the base64 body of the server's private key.
        let line = tls
            .server_key
            .lines()
            .find(|line| !line.starts_with("-----") && line.len() >= 40)
            .expect("a PEM body")
            .to_owned();
        sweep.secrets.push(("TLS server key".to_owned(), line));
    }

    // Stored results and the run.
    for (product, records) in &results {
        for record in records {
            sweep.inspect("results", &format!("{product:?}"), &format!("{record:?}"));
        }
    }
    let stored = stack.get_run(&run_id).await.unwrap();
    sweep.inspect("results", "GetRun", &format!("{stored:?}"));
    sweep.assert_inspected("results", 10, DOOMED);

    // The CLI, as an operator reads the run.
    for json in [false, true] {
        let mut args = vec!["run", run_id.as_str(), "--changes"];
        if json {
            args.insert(0, "--json");
        }
        let output = stack.cli(&args).await.unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            stdout.contains(DOOMED),
            "`keysync {}` does not list the failed creation ({}):\n{stdout}\n{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        sweep.inspect("cli", &args.join(" "), &stdout);
        sweep.inspect(
            "cli",
            &format!("{} (stderr)", args.join(" ")),
            &String::from_utf8_lossy(&output.stderr),
        );
    }
    sweep.assert_inspected("cli", 2, DOOMED);

    // Every service stops (SIGTERM), so that what it buffers (spans, log lines) is out.
    for name in [
        "applier-jira",
        "applier-confluence",
        "applier-bitbucket",
        "planner",
        "fetcher",
        "control-plane",
    ] {
        stack.terminate_service(name).unwrap();
    }

    // The logs of the six services.
    let logs = stack.service_logs();
    assert_eq!(logs.len(), 6, "{logs:?}");
    for (name, path) in &logs {
        let text = std::fs::read_to_string(path).unwrap();
        assert!(!text.is_empty(), "the {name} log is empty");
        sweep.inspect("logs", name, &text);
    }
    sweep.assert_inspected("logs", 6, &run_id);
    let bitbucket_log = std::fs::read_to_string(&logs["applier-bitbucket"]).unwrap();
    assert!(
        bitbucket_log.contains("transport error"),
        "the Bitbucket applier logged no transport error"
    );

    // The spans every service exported.
    let services = [
        "keysync-control-plane",
        "keysync-fetcher",
        "keysync-planner",
        "keysync-applier-jira",
        "keysync-applier-confluence",
        "keysync-applier-bitbucket",
    ];
    let all_exported = |receiver: &OtlpReceiver| {
        let seen: BTreeSet<String> = receiver
            .spans()
            .into_iter()
            .map(|span| span.service)
            .collect();
        services.iter().all(|service| seen.contains(*service))
    };
    assert!(
        receiver
            .wait_until(Duration::from_secs(30), all_exported)
            .await,
        "not every service exported spans"
    );
    let spans = receiver.spans();
    let mut attributes = 0;
    for span in &spans {
        attributes += span.attributes.len();
        let text = span
            .attributes
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect::<Vec<_>>()
            .join("\n");
        sweep.inspect(
            "spans",
            &format!("{} {}", span.service, span.name),
            &format!("{}\n{text}", span.name),
        );
    }
    assert!(attributes > spans.len(), "the spans carry no attributes");
    sweep.assert_inspected("spans", 20, &run_id);

    // Every message kept on NATS (streams, key-value buckets, object stores).
    let jetstream = async_nats::jetstream::new(stack.bus().await.unwrap());
    let names: Vec<String> = jetstream
        .stream_names()
        .filter_map(|name| async move { name.ok() })
        .collect()
        .await;
    assert!(!names.is_empty(), "no stream");
    for name in &names {
        // Read by sequence (STREAM.MSG.GET): a work-queue stream takes no consumer that
        // does not acknowledge.
        let stream = jetstream.get_stream(name).await.unwrap();
        let state = stream.get_info().await.unwrap().state;
        if state.messages == 0 {
            continue;
        }
        for sequence in state.first_sequence..=state.last_sequence {
            let Ok(message) = stream.get_raw_message(sequence).await else {
                continue; // deleted
            };
            sweep.inspect(
                "nats",
                &format!("{name} {}", message.subject),
                &format!(
                    "{:?}\n{}",
                    message.headers,
                    String::from_utf8_lossy(&message.payload)
                ),
            );
        }
    }
    sweep.assert_inspected("nats", 1, &run_id);

    eprintln!(
        "swept {} secrets through (bytes, items) {:?}; markers found {:?}",
        sweep.secrets.len(),
        sweep.inspected,
        sweep.found
    );
    assert!(
        sweep.leaks.is_empty(),
        "secrets leaked:\n{}",
        sweep.leaks.join("\n")
    );
    drop(stack);
}
