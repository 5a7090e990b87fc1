//! A TCP proxy in front of an emulator that resets the connection of chosen requests:
//! the request reaches the emulator (which acts on it), its answer never reaches the
//! client, whose connection is reset (`SO_LINGER` 0, an RST). The emulator can answer
//! 503 and 429 but cannot break a connection; this makes real transport errors, the ones
//! whose reqwest errors carry the request's URL.

use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicU64, Ordering},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinSet,
};

type Rule = dyn Fn(&str) -> bool + Send + Sync;

/// Which requests a [`FaultyProxy`] answers with a reset connection.
#[derive(Clone)]
pub struct TransportFaults {
    rule: Arc<Rule>,
}

impl TransportFaults {
    /// Resets the connection of every request whose head (the request line and the
    /// headers, as text: `POST /rest/api/1.0/admin/users?name=… HTTP/1.1\r\n…`)
    /// `rule` picks.
    pub fn reset_when(rule: impl Fn(&str) -> bool + Send + Sync + 'static) -> Self {
        TransportFaults {
            rule: Arc::new(rule),
        }
    }
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    resets: AtomicU64,
}

/// The proxy; it stops, with every connection through it, when dropped.
pub struct FaultyProxy {
    url: String,
    counters: Arc<Counters>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultyProxy {
    /// Listens on a free port of 127.0.0.1 and relays to `upstream` (`host:port`).
    pub async fn start(upstream: &str, faults: TransportFaults) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let counters = Arc::new(Counters::default());
        let upstream = upstream.to_owned();
        let task = {
            let counters = counters.clone();
            tokio::spawn(async move {
                let mut connections = JoinSet::new();
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        continue;
                    };
                    connections.spawn(relay(
                        client,
                        upstream.clone(),
                        faults.clone(),
                        counters.clone(),
                    ));
                    while connections.try_join_next().is_some() {}
                }
            })
        };
        Ok(FaultyProxy {
            url,
            counters,
            task,
        })
    }

    /// `http://127.0.0.1:PORT`, the product endpoint to configure.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Requests relayed so far (reset ones included).
    pub fn requests(&self) -> u64 {
        self.counters.requests.load(Ordering::SeqCst)
    }

    /// Connections reset so far.
    pub fn resets(&self) -> u64 {
        self.counters.resets.load(Ordering::SeqCst)
    }
}

impl Drop for FaultyProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Whether `chunk` starts an HTTP/1 request (clients write a request's head at once).
fn request_head(chunk: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(chunk);
    let method = text.split(' ').next()?;
    let known = matches!(
        method,
        "GET" | "POST" | "PUT" | "DELETE" | "PATCH" | "HEAD" | "OPTIONS"
    );
    let line = text.split("\r\n").next()?;
    (known && line.contains(" HTTP/1."))
        .then(|| text.split("\r\n\r\n").next().unwrap_or_default().to_owned())
}

async fn relay(
    mut client: TcpStream,
    upstream: String,
    faults: TransportFaults,
    counters: Arc<Counters>,
) {
    let Ok(mut server) = TcpStream::connect(&upstream).await else {
        return;
    };
    // Set once a request the rule picks has gone to the server: its answer is not
    // relayed, the client's connection is reset instead. HTTP/1 clients wait for an
    // answer before the next request on a connection, so the next bytes from the
    // server are that answer.
    let doomed = AtomicBool::new(false);
    let reset = {
        let (mut client_read, mut client_write) = client.split();
        let (mut server_read, mut server_write) = server.split();
        let to_server = async {
            let mut buffer = vec![0u8; 64 * 1024];
            loop {
                match client_read.read(&mut buffer).await {
                    Ok(0) | Err(_) => {
                        let _ = server_write.shutdown().await;
                        return;
                    }
                    Ok(read) => {
                        let chunk = &buffer[..read];
                        if let Some(head) = request_head(chunk) {
                            counters.requests.fetch_add(1, Ordering::SeqCst);
                            if (faults.rule)(&head) {
                                doomed.store(true, Ordering::SeqCst);
                            }
                        }
                        if server_write.write_all(chunk).await.is_err() {
                            return;
                        }
                    }
                }
            }
        };
        let to_client = async {
            let mut buffer = vec![0u8; 64 * 1024];
            loop {
                match server_read.read(&mut buffer).await {
                    Ok(0) | Err(_) => return false,
                    Ok(_) if doomed.load(Ordering::SeqCst) => return true,
                    Ok(read) => {
                        if client_write.write_all(&buffer[..read]).await.is_err() {
                            return false;
                        }
                    }
                }
            }
        };
        tokio::pin!(to_server, to_client);
        let mut sending = true;
        loop {
            tokio::select! {
                () = &mut to_server, if sending => sending = false,
                reset = &mut to_client => break reset,
            }
        }
    };
    if reset {
        counters.resets.fetch_add(1, Ordering::SeqCst);
        let _ = client.set_zero_linger();
    }
    drop(client);
    drop(server);
}
