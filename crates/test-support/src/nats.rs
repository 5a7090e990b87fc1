//! A real `nats-server` with JetStream for one test, on a free port, with a temporary
//! store. Dropping it kills the server and removes the store.
//!
//! [`NatsServer::start_with_config`] starts it with a configuration file as well (users
//! and permissions, TLS), the command line still choosing the ports and the store.

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use async_nats::jetstream::{self, consumer::pull};
use futures::StreamExt;
use tempfile::TempDir;

use crate::{
    deps,
    process::{self, Tethered},
};

pub struct NatsServer {
    process: Tethered,
    port: u16,
    monitor_port: u16,
    store: TempDir,
}

impl NatsServer {
    /// Starts nats-server with JetStream and waits until JetStream answers.
    pub fn start() -> anyhow::Result<NatsServer> {
        NatsServer::start_with_config("", &[])
    }

    /// Starts nats-server with JetStream and the configuration `config` (nats-server's
    /// syntax; empty for none), with the environment variables `envs` (which the
    /// configuration can read as `$NAME`), and waits until JetStream answers. A path in
    /// `config` must be absolute.
    pub fn start_with_config(config: &str, envs: &[(&str, String)]) -> anyhow::Result<NatsServer> {
        let binary = deps::existing_path("KEYSYNC_NATS_SERVER")?;
        let mut last_error = None;
        // A free port can be taken between our check and the server's bind: retry.
        for _ in 0..5 {
            match start_once(&binary, config, envs) {
                Ok(server) => return Ok(server),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("nats-server did not start")))
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The HTTP monitoring endpoint (`/jsz`, `/healthz`, ...).
    pub fn monitor_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.monitor_port)
    }

    pub fn store_dir(&self) -> &Path {
        self.store.path()
    }

    pub fn log_path(&self) -> &Path {
        self.process.log()
    }

    /// Connects a client.
    pub async fn connect(&self) -> anyhow::Result<async_nats::Client> {
        async_nats::connect(self.url())
            .await
            .with_context(|| format!("connecting to {}", self.url()))
    }

    /// Kills the server abruptly (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        self.process.kill();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        process::print_log_if_panicking("nats-server", self.process.log());
    }
}

fn start_once(binary: &Path, config: &str, envs: &[(&str, String)]) -> anyhow::Result<NatsServer> {
    let port = process::free_port()?;
    let monitor_port = process::free_port()?;
    let store = tempfile::Builder::new()
        .prefix("keysync-nats-")
        .tempdir()
        .context("creating a JetStream store directory")?;
    let log = process::log_dir().join(format!("nats-{port}.log"));
    let mut args = Vec::new();
    if !config.is_empty() {
        let file = store.path().join("nats-server.conf");
        std::fs::write(&file, config).context("writing the nats-server configuration")?;
        args.extend(["-c".to_owned(), file.display().to_string()]);
    }
    args.extend([
        "-js".to_owned(),
        "-a".to_owned(),
        "127.0.0.1".to_owned(),
        "-p".to_owned(),
        port.to_string(),
        "-m".to_owned(),
        monitor_port.to_string(),
        "-sd".to_owned(),
        store.path().display().to_string(),
    ]);
    let process = Tethered::spawn(binary, &args, envs, &log)?;
    let mut server = NatsServer {
        process,
        port,
        monitor_port,
        store,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = server.process.exited() {
            bail!(
                "nats-server exited with {status}:\n{}",
                process::log_tail(&log, 20)
            );
        }
        if jetstream_healthy(monitor_port) {
            return Ok(server);
        }
        if Instant::now() > deadline {
            server.kill();
            bail!(
                "nats-server did not report JetStream healthy within 20 s:\n{}",
                process::log_tail(&log, 20)
            );
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// `GET /healthz?js-enabled-only=true` answers 200 once JetStream is ready.
fn jetstream_healthy(monitor_port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", monitor_port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = "GET /healthz?js-enabled-only=true HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.starts_with("HTTP/1.1 200") || response.starts_with("HTTP/1.0 200")
}

/// Every message of `stream` on subjects matching `filter`, oldest first, read through an
/// ephemeral consumer: `(subject, payload)`.
pub async fn stream_messages(
    jetstream: &jetstream::Context,
    stream: &str,
    filter: &str,
) -> anyhow::Result<Vec<(String, bytes::Bytes)>> {
    let stream = jetstream.get_stream(stream).await?;
    let mut consumer: jetstream::consumer::PullConsumer = stream
        .create_consumer(pull::Config {
            filter_subject: filter.to_owned(),
            ack_policy: jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await?;
    let pending = usize::try_from(consumer.info().await?.num_pending)?;
    let mut found = Vec::new();
    if pending == 0 {
        return Ok(found);
    }
    let mut batch = consumer
        .fetch()
        .max_messages(pending)
        .expires(Duration::from_secs(10))
        .messages()
        .await
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    while let Some(message) = batch.next().await {
        let message = message.map_err(|error| anyhow::anyhow!("{error}"))?;
        found.push((message.subject.to_string(), message.payload.clone()));
        if found.len() == pending {
            break;
        }
    }
    Ok(found)
}
