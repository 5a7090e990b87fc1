//! A three-node `nats-server` cluster with JetStream on loopback, for the tests where NATS
//! itself loses a node: each node its own client, monitoring and cluster ports (free ones),
//! its own `server_name` and temporary store, and routes to the two others.
//! [`NatsCluster::urls`] is the comma-separated list of every node (a client can as well be
//! given one node: the nodes tell their clients of the others, `connect_urls` in `INFO`);
//! [`NatsCluster::kill`] kills one node (SIGKILL), as a crash would. Dropping the cluster
//! kills every node and removes the stores.
//!
//! [`NatsCluster::start`] answers once every node is healthy (`/healthz`: JetStream up and
//! current with the meta leader) and every node sees the same meta leader with both peers,
//! so a stream created with three replicas right after has its three.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;
use tempfile::TempDir;

use crate::{
    deps,
    process::{self, Tethered},
};

/// Nodes of the cluster.
pub const NODES: usize = 3;

/// How long the cluster may take to form.
const FORM_DEADLINE: Duration = Duration::from_secs(60);

/// One node of the cluster.
pub struct Node {
    /// `n1`, `n2`, `n3`.
    pub name: String,
    pub port: u16,
    pub monitor_port: u16,
    pub cluster_port: u16,
    process: Tethered,
    store: TempDir,
}

impl Node {
    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The HTTP monitoring endpoint (`/healthz`, `/jsz`, ...).
    pub fn monitor_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.monitor_port)
    }

    pub fn store_dir(&self) -> &std::path::Path {
        self.store.path()
    }

    pub fn log_path(&self) -> &std::path::Path {
        self.process.log()
    }

    /// Whether the node's process has exited.
    pub fn exited(&mut self) -> bool {
        self.process.exited().is_some()
    }
}

/// Three clustered nats-servers with JetStream.
pub struct NatsCluster {
    pub nodes: Vec<Node>,
    killed: Vec<bool>,
    http: reqwest::Client,
}

impl NatsCluster {
    /// Starts three nodes and waits until they form one JetStream cluster. A free port
    /// can be taken between our check and a node's bind: the whole start is retried.
    pub async fn start() -> anyhow::Result<NatsCluster> {
        let mut last_error = None;
        for _ in 0..3 {
            match NatsCluster::start_once().await {
                Ok(cluster) => return Ok(cluster),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("the NATS cluster did not start")))
    }

    async fn start_once() -> anyhow::Result<NatsCluster> {
        let binary = deps::existing_path("KEYSYNC_NATS_SERVER")?;
        let mut ports = Vec::new();
        for _ in 0..NODES {
            ports.push((
                process::free_port()?,
                process::free_port()?,
                process::free_port()?,
            ));
        }
        let routes = ports
            .iter()
            .map(|(_, _, cluster)| format!("nats-route://127.0.0.1:{cluster}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut nodes = Vec::new();
        for (index, (port, monitor_port, cluster_port)) in ports.into_iter().enumerate() {
            let name = format!("n{}", index + 1);
            let store = tempfile::Builder::new()
                .prefix(&format!("keysync-nats-{name}-"))
                .tempdir()
                .context("creating a JetStream store directory")?;
            let config = format!(
                "server_name: {name}\n\
                 listen: \"127.0.0.1:{port}\"\n\
                 http: \"127.0.0.1:{monitor_port}\"\n\
                 jetstream {{\n  store_dir: {store:?}\n}}\n\
                 cluster {{\n  name: keysync-test\n  listen: \"127.0.0.1:{cluster_port}\"\n  \
                 routes: [{routes}]\n}}\n",
                store = store.path().display().to_string(),
            );
            let file = store.path().join("nats-server.conf");
            std::fs::write(&file, config).context("writing the nats-server configuration")?;
            let log = process::log_dir().join(format!("nats-cluster-{port}-{name}.log"));
            let process = Tethered::spawn(
                &binary,
                &["-c".to_owned(), file.display().to_string()],
                &[],
                &log,
            )?;
            nodes.push(Node {
                name,
                port,
                monitor_port,
                cluster_port,
                process,
                store,
            });
        }
        let mut cluster = NatsCluster {
            nodes,
            killed: vec![false; NODES],
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()?,
        };
        cluster.wait_formed().await?;
        Ok(cluster)
    }

    /// Every node's client URL, comma-separated: `[bus] nats_url` of the services.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(Node::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The client URL of the first node still running.
    pub fn live_url(&self) -> anyhow::Result<String> {
        self.live()
            .next()
            .map(Node::url)
            .context("every node of the cluster is down")
    }

    /// Kills node `index` (SIGKILL); it stays down.
    pub fn kill(&mut self, index: usize) {
        self.nodes[index].process.kill();
        self.killed[index] = true;
    }

    /// The name of the current JetStream meta leader, as the first live node sees it.
    pub async fn meta_leader(&self) -> anyhow::Result<String> {
        let node = self
            .live()
            .next()
            .context("every node of the cluster is down")?;
        let jsz = self.jsz(node).await?;
        jsz["meta_cluster"]["leader"]
            .as_str()
            .filter(|leader| !leader.is_empty())
            .map(str::to_owned)
            .context("no meta leader")
    }

    /// The index of the node named `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|node| node.name == name)
    }

    /// Waits until every live node is healthy and sees a meta leader; with all three up,
    /// until the leader has both peers current.
    pub async fn wait_formed(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + FORM_DEADLINE;
        loop {
            for (index, node) in self.nodes.iter_mut().enumerate() {
                if !self.killed[index] && node.exited() {
                    bail!(
                        "nats-server {} exited:\n{}",
                        node.name,
                        process::log_tail(node.log_path(), 20)
                    );
                }
            }
            match self.formed().await {
                Ok(()) => return Ok(()),
                Err(error) if Instant::now() > deadline => {
                    let tails: Vec<String> = self
                        .nodes
                        .iter()
                        .map(|node| {
                            format!("{}:\n{}", node.name, process::log_tail(node.log_path(), 10))
                        })
                        .collect();
                    bail!(
                        "the NATS cluster did not form in {FORM_DEADLINE:?}: {error:#}\n{}",
                        tails.join("\n")
                    );
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// `Ok` when the live nodes agree on a formed cluster.
    async fn formed(&self) -> anyhow::Result<()> {
        let mut leaders = Vec::new();
        for node in self.live() {
            let healthz = self
                .http
                .get(format!("{}/healthz", node.monitor_url()))
                .send()
                .await?;
            if !healthz.status().is_success() {
                bail!("{} is not healthy: {}", node.name, healthz.text().await?);
            }
            let jsz = self.jsz(node).await?;
            let meta = &jsz["meta_cluster"];
            let leader = meta["leader"].as_str().unwrap_or_default().to_owned();
            if leader.is_empty() {
                bail!("{} sees no meta leader", node.name);
            }
            if leader == node.name {
                let current = meta["replicas"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|peer| peer["current"].as_bool() == Some(true))
                    .count();
                let wanted = self.live().count() - 1;
                if current < wanted {
                    bail!("the meta leader has {current} of {wanted} peers current");
                }
            }
            leaders.push(leader);
        }
        leaders.dedup();
        if leaders.len() != 1 {
            bail!("the nodes see different meta leaders: {leaders:?}");
        }
        Ok(())
    }

    async fn jsz(&self, node: &Node) -> anyhow::Result<Value> {
        Ok(self
            .http
            .get(format!("{}/jsz", node.monitor_url()))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    fn live(&self) -> impl Iterator<Item = &Node> {
        self.nodes
            .iter()
            .zip(&self.killed)
            .filter(|(_, killed)| !**killed)
            .map(|(node, _)| node)
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for node in &self.nodes {
            process::print_log_if_panicking(&format!("nats-server {}", node.name), node.log_path());
        }
    }
}
