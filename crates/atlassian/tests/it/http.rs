//! The shared HTTP layer: 429 storms, pacing from `X-RateLimit-*`, injected 503s, secrets.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use atlassian::config::{Auth, UserListing};
use atlassian::{Client, Directory, RequestEvent, RequestObserver};
use config::Secret;
use emulator::store::Seed;
use emulator::{Config, Product};
use futures::future::join_all;

use crate::helpers::*;

#[tokio::test]
async fn a_429_storm_ends_with_every_call_applied_and_no_retry_before_its_retry_after() {
    let mut config = Config::for_tests(Product::Jira);
    config.rate_limit = 5;
    config.record_requests = true;
    let emulator = spawn(config).await;
    let mut connection = connection(&emulator);
    connection.max_concurrency = 12;
    let observer = Arc::new(Recorder::default());
    let client = jira_with(connection, UserListing::Cursor).with_observer(observer.clone());

    let accounts: Vec<_> = (0..20)
        .map(|idx| new_account(&format!("storm{idx:02}")))
        .collect();
    let results = join_all(
        accounts
            .iter()
            .map(|account| client.create_account(account)),
    )
    .await;

    for result in &results {
        assert!(result.is_ok(), "{result:?}");
    }
    let dump = emulator.state().dump();
    assert_eq!(dump.accounts.len(), 20);
    assert!(dump.counters.throttled > 0, "the burst was throttled");
    // The observer heard every attempt, each 429 among them, retried.
    let events = observer.events();
    assert_eq!(events.len() as u64, dump.counters.requests);
    let throttled: Vec<_> = events
        .iter()
        .filter(|event| event.status == Some(429))
        .collect();
    assert_eq!(throttled.len() as u64, dump.counters.throttled);
    assert!(throttled.iter().all(|event| event.retried), "{throttled:?}");
    // The same request (method, URI, body) must not come back before its Retry-After.
    let mut last_429: HashMap<(String, String, String), (f64, u64)> = HashMap::new();
    for request in &dump.requests {
        let key = (
            request.method.clone(),
            request.uri.clone(),
            request.body.clone(),
        );
        if let Some((at_ms, retry_after)) = last_429.get(&key) {
            let earliest = at_ms + (*retry_after as f64) * 1000.0;
            assert!(
                request.at_ms >= earliest,
                "{} {} retried at {:.1} ms, before {:.1} ms",
                request.method,
                request.uri,
                request.at_ms,
                earliest
            );
        }
        if let Some(retry_after) = request.retry_after {
            last_429.insert(key, (request.at_ms, retry_after));
        } else {
            last_429.remove(&key);
        }
    }
}

#[tokio::test]
async fn the_client_paces_itself_from_rate_limit_headers_and_provokes_no_429() {
    let mut config = Config::for_tests(Product::Jira);
    config.rate_limit = 40;
    let emulator = spawn(config).await;
    let mut connection = connection(&emulator);
    connection.max_concurrency = 16;
    let client = jira_with(connection, UserListing::Cursor);
    // One call teaches the client the bucket's size and refill rate.
    client.test_connection().await.unwrap();

    let accounts: Vec<_> = (0..80)
        .map(|idx| new_account(&format!("paced{idx:02}")))
        .collect();
    let results = join_all(
        accounts
            .iter()
            .map(|account| client.create_account(account)),
    )
    .await;

    assert!(results.iter().all(Result::is_ok));
    let dump = emulator.state().dump();
    assert_eq!(dump.accounts.len(), 80);
    assert_eq!(dump.counters.throttled, 0);
}

#[tokio::test]
async fn injected_503s_are_retried_until_every_call_succeeds() {
    let mut config = Config::for_tests(Product::Bitbucket);
    config.fail_503_every = 3;
    let emulator = spawn(config).await;
    let client = bitbucket(&emulator);

    for idx in 0..6 {
        client
            .create_account(&new_account(&format!("flaky{idx}")))
            .await
            .unwrap();
    }

    let dump = emulator.state().dump();
    assert_eq!(dump.accounts.len(), 6);
    assert!(dump.counters.unavailable > 0);
}

#[tokio::test]
async fn a_429_the_pacer_could_not_foresee_is_waited_out_and_retried() {
    // Every second request answers 429 with `Retry-After: 1`, whatever the rate.
    let mut config = Config::for_tests(Product::Jira);
    config.fail_429_every = 2;
    let emulator = spawn(config).await;
    let client = jira(&emulator);

    let started = std::time::Instant::now();
    for idx in 0..2 {
        client
            .create_account(&new_account(&format!("paced{idx}")))
            .await
            .unwrap();
    }

    let dump = emulator.state().dump();
    assert_eq!(dump.accounts.len(), 2);
    assert!(dump.counters.throttled >= 1, "{:?}", dump.counters);
    // The client waited the second the answer asked for before it asked again.
    assert!(started.elapsed() >= std::time::Duration::from_secs(1));
}

#[tokio::test]
async fn a_product_that_stays_unavailable_fails_after_the_configured_retries() {
    let mut config = Config::for_tests(Product::Confluence);
    config.fail_503_every = 1;
    let emulator = spawn(config).await;
    let mut connection = connection(&emulator);
    connection.max_retries = 2;
    let client = confluence_with(connection);

    let error = client.list_groups().await.unwrap_err();

    assert!(
        matches!(
            error,
            atlassian::Error::Unavailable {
                attempts: 3,
                status: 503,
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(emulator.state().dump().counters.requests, 3);
}

/// Keeps every event it hears, with the endpoint and method owned.
#[derive(Default)]
struct Recorder(Mutex<Vec<Heard>>);

#[derive(Clone, Debug, PartialEq)]
struct Heard {
    method: String,
    endpoint: &'static str,
    status: Option<u16>,
    attempt: u32,
    retried: bool,
}

impl RequestObserver for Recorder {
    fn observe(&self, event: &RequestEvent<'_>) {
        if let Ok(mut heard) = self.0.lock() {
            heard.push(Heard {
                method: event.method.to_owned(),
                endpoint: event.endpoint,
                status: event.status,
                attempt: event.attempt,
                retried: event.retried,
            });
        }
    }
}

impl Recorder {
    fn events(&self) -> Vec<Heard> {
        self.0.lock().map(|heard| heard.clone()).unwrap_or_default()
    }
}

#[tokio::test]
async fn an_observer_hears_every_attempt_with_its_endpoint_status_and_whether_it_is_retried() {
    let mut config = Config::for_tests(Product::Confluence);
    config.fail_503_every = 1;
    let emulator = spawn(config).await;
    let mut connection = connection(&emulator);
    connection.max_retries = 2;
    let observer = Arc::new(Recorder::default());
    let client = Client::Confluence(confluence_with(connection)).with_observer(observer.clone());

    client.list_groups().await.unwrap_err();

    let heard = |attempt, retried| Heard {
        method: "GET".to_owned(),
        endpoint: "rest/api/group",
        status: Some(503),
        attempt,
        retried,
    };
    assert_eq!(
        observer.events(),
        [heard(1, true), heard(2, true), heard(3, false)]
    );
}

#[tokio::test]
async fn the_client_enum_serves_every_product_through_one_type() {
    let mut clients = Vec::new();
    let mut emulators = Vec::new();
    for product in [Product::Jira, Product::Confluence, Product::Bitbucket] {
        let emulator = spawn(seeded(
            product,
            Seed {
                accounts: vec![seed_account("shared")],
                ..Seed::default()
            },
        ))
        .await;
        let connection = connection(&emulator);
        let settings = atlassian::config::Settings {
            connection,
            product: match product {
                Product::Jira => {
                    atlassian::config::ProductSettings::Jira(atlassian::config::JiraSettings {
                        user_listing: UserListing::Auto,
                    })
                }
                Product::Confluence => atlassian::config::ProductSettings::Confluence(
                    atlassian::config::ConfluenceSettings::recommended(),
                ),
                Product::Bitbucket => atlassian::config::ProductSettings::Bitbucket(
                    atlassian::config::BitbucketSettings {
                        add_to_default_group: false,
                    },
                ),
            },
        };
        clients.push(Client::new(settings).unwrap());
        emulators.push(emulator);
    }

    for client in &clients {
        client.test_connection().await.unwrap();
        let accounts = client.list_accounts().await.unwrap();
        assert_eq!(accounts.len(), 1, "{:?}", client.product());
        assert_eq!(accounts[0].login, "shared");
    }
    let can_deactivate: Vec<bool> = clients
        .iter()
        .map(|client| client.capabilities().can_deactivate)
        .collect();
    assert_eq!(can_deactivate, [true, true, false]);
}

#[tokio::test]
async fn secrets_never_appear_in_debug_output() {
    let emulator = spawn_product(Product::Jira).await;
    let connection = connection_with(
        &emulator,
        Auth::Basic {
            user: "admin".into(),
            password: Secret::new("hunter2-password"),
        },
    );
    let client = jira_with(connection.clone(), UserListing::Auto);

    let printed = format!("{connection:?} {client:?}");

    assert!(!printed.contains("hunter2"), "{printed}");
    assert!(printed.contains("[redacted]"), "{printed}");
}

#[tokio::test]
async fn settings_that_cannot_work_are_refused_before_any_request() {
    let emulator = spawn_product(Product::Jira).await;
    let mut connection = connection(&emulator);
    connection.max_concurrency = 0;

    let error = atlassian::jira::JiraClient::new(
        connection,
        atlassian::config::JiraSettings {
            user_listing: UserListing::Auto,
        },
    )
    .unwrap_err();

    assert!(
        matches!(error, atlassian::Error::Config { .. }),
        "{error:?}"
    );
    assert_eq!(emulator.state().dump().counters.requests, 0);
}
