//! R4: Keycloak fails in the middle of the fetch (after the first page of users: 503 from
//! then on, or a malformed JSON page): the run FAILS with a reason, and no product takes a
//! single write.
//!
//! The shared Keycloak cannot be stopped, so the fetcher reaches it through
//! [`KeycloakProxy`], a small HTTP/1.1 reverse proxy of this test that forwards every
//! request and breaks the user listing after its first page. The connector's endpoint is
//! the proxy (`KEYSYNC_KEYCLOAK__E2E__ENDPOINT`), its pages hold 5 users.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use anyhow::Context;
use e2e::PRODUCTS;
use proto::v1::{RunMode, RunState};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
};

use crate::{
    directory,
    tally::{self, Outcome, Shape, Tally},
};

/// What Keycloak answers for the pages of users after the first.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// 503 Service Unavailable, forever.
    Unavailable,
    /// 200 with a JSON body cut in the middle.
    Malformed,
}

/// The proxy; it stops when dropped.
pub struct KeycloakProxy {
    url: String,
    faults: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl KeycloakProxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `upstream` (`http://host:port`).
    pub async fn start(upstream: &str, fault: Fault) -> anyhow::Result<KeycloakProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let faults = Arc::new(AtomicU64::new(0));
        let pages = Arc::new(AtomicU64::new(0));
        let http = reqwest::Client::builder().no_proxy().build()?;
        let upstream = upstream.trim_end_matches('/').to_owned();
        let task = {
            let faults = faults.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        continue;
                    };
                    let context = Forward {
                        http: http.clone(),
                        upstream: upstream.clone(),
                        fault,
                        pages: pages.clone(),
                        faults: faults.clone(),
                    };
                    tokio::spawn(async move {
                        let _ = context.serve(client).await;
                    });
                }
            })
        };
        Ok(KeycloakProxy { url, faults, task })
    }

    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Pages of users answered with the fault so far.
    pub fn faults(&self) -> u64 {
        self.faults.load(Ordering::SeqCst)
    }
}

impl Drop for KeycloakProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What one connection of the proxy needs.
struct Forward {
    http: reqwest::Client,
    upstream: String,
    fault: Fault,
    pages: Arc<AtomicU64>,
    faults: Arc<AtomicU64>,
}

impl Forward {
    /// Answers the requests of one keep-alive connection in turn.
    async fn serve(self, stream: TcpStream) -> anyhow::Result<()> {
        let (read, mut write) = stream.into_split();
        let mut read = BufReader::new(read);
        loop {
            let mut line = String::new();
            if read.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let mut parts = line.split_whitespace();
            let method = parts.next().context("a request line")?.to_owned();
            let target = parts.next().context("a request target")?.to_owned();
            let mut headers = Vec::new();
            let mut length = 0usize;
            loop {
                let mut header = String::new();
                read.read_line(&mut header).await?;
                let header = header.trim_end();
                if header.is_empty() {
                    break;
                }
                let (name, value) = header.split_once(':').context("a header")?;
                let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_owned());
                if name == "content-length" {
                    length = value.parse()?;
                }
                headers.push((name, value));
            }
            let mut body = vec![0u8; length];
            read.read_exact(&mut body).await?;
            let (status, content_type, answer) =
                self.answer(&method, &target, headers, body).await?;
            let head = format!(
                "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n",
                answer.len()
            );
            write.write_all(head.as_bytes()).await?;
            write.write_all(&answer).await?;
        }
    }

    /// `(status line, content type, body)` for one request: Keycloak's, or the fault.
    async fn answer(
        &self,
        method: &str,
        target: &str,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    ) -> anyhow::Result<(String, String, Vec<u8>)> {
        let path = target.split('?').next().unwrap_or_default();
        let users_page =
            method == "GET" && path.starts_with("/admin/realms/") && path.ends_with("/users");
        if users_page && self.pages.fetch_add(1, Ordering::SeqCst) > 0 {
            self.faults.fetch_add(1, Ordering::SeqCst);
            return Ok(match self.fault {
                Fault::Unavailable => (
                    "503 Service Unavailable".to_owned(),
                    "text/html".to_owned(),
                    b"<html><body>Service Unavailable</body></html>".to_vec(),
                ),
                Fault::Malformed => (
                    "200 OK".to_owned(),
                    "application/json".to_owned(),
                    br#"[{"id":"5f0c","username":"user0"#.to_vec(),
                ),
            });
        }
        let mut request = self
            .http
            .request(method.parse()?, format!("{}{target}", self.upstream));
        for (name, value) in headers {
            if !matches!(
                name.as_str(),
                "host" | "connection" | "content-length" | "accept-encoding" | "transfer-encoding"
            ) {
                request = request.header(name, value);
            }
        }
        let response = request.body(body).send().await?;
        let status = response.status();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("application/octet-stream")
            .to_owned();
        let bytes = response.bytes().await?.to_vec();
        Ok((status.to_string(), content_type, bytes))
    }
}

/// One run whose fetch meets `fault`: FAILED with a reason, no write anywhere.
async fn broken_fetch(fault: Fault) -> anyhow::Result<(Outcome, u64)> {
    let keycloak = test_support::keycloak::Keycloak::shared().await?;
    let proxy = KeycloakProxy::start(keycloak.base_url(), fault).await?;
    let people = directory::people(40);
    let mut shape = Shape::new(people.len(), 0);
    shape.page_size = 5;
    shape.service_env = vec![
        ("KEYSYNC_KEYCLOAK__E2E__ENDPOINT".to_owned(), proxy.url()),
        ("KEYSYNC_KEYCLOAK__E2E__RETRIES".to_owned(), "2".to_owned()),
        (
            "KEYSYNC_KEYCLOAK__E2E__CONCURRENCY".to_owned(),
            "1".to_owned(),
        ),
    ];
    let stack = tally::start_stack(&people, &shape).await?;
    let started = stack.start_sync(RunMode::Apply).await?;
    let run = tally::wait_terminal(&stack, &started.run_id, tally::RUN_DEADLINE).await?;
    let mut outcome = Outcome {
        succeeded: run.state() == RunState::Failed && !run.reason.is_empty(),
        expected_state: true,
        ..Outcome::default()
    };
    outcome
        .notes
        .push(format!("run ended {:?}: {}", run.state(), run.reason));
    for product in PRODUCTS {
        let writes = stack.writes(product).await?;
        if writes != 0 {
            outcome.expected_state = false;
            outcome
                .notes
                .push(format!("{product:?} took {writes} writes"));
        }
    }
    Ok((outcome, proxy.faults()))
}

/// Runs R4 with `fault` as often as the suite says.
async fn scenario(scenario: &str, fault: Fault) {
    let mut tally = Tally::new(scenario);
    for run in 0..tally::runs() {
        match broken_fetch(fault).await {
            Ok((mut outcome, faults)) => {
                if faults == 0 {
                    outcome.succeeded = false;
                    outcome.notes.push("the proxy broke no page".to_owned());
                }
                tally.add(run, Ok(outcome));
            }
            Err(error) => tally.add(run, Err(error)),
        }
    }
    tally.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r4_keycloak_unavailable_mid_pagination() {
    scenario("R4-keycloak-503", Fault::Unavailable).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r4_keycloak_malformed_mid_pagination() {
    scenario("R4-keycloak-malformed", Fault::Malformed).await;
}
