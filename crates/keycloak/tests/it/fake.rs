//! A scripted HTTP server on a free local port, for the failures a real Keycloak does not
//! produce on demand: truncated JSON, 503s, a token that stops working. Each request is
//! answered by a function of the request and how many times its path was asked for.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

/// One request as the script sees it.
pub struct Request {
    /// The path without the query.
    pub path: String,
    /// The query string, without the `?`.
    pub query: String,
    pub authorization: String,
    /// 1 for the first request with this method and path.
    pub nth: usize,
}

impl Request {
    /// The query parameter `name` (not percent-decoded).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            (key == name).then_some(value)
        })
    }

    /// The query parameter `name` as a number, 0 when absent.
    pub fn number(&self, name: &str) -> u64 {
        self.param(name)
            .and_then(|value| value.parse().ok())
            .unwrap_or(0)
    }
}

pub struct Response {
    pub status: u16,
    pub body: String,
}

pub fn json(body: &str) -> Response {
    Response {
        status: 200,
        body: body.to_owned(),
    }
}

pub fn status(status: u16, body: &str) -> Response {
    Response {
        status,
        body: body.to_owned(),
    }
}

pub struct FakeKeycloak {
    url: String,
    counts: Arc<Mutex<HashMap<String, usize>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeKeycloak {
    pub async fn start<F>(script: F) -> anyhow::Result<FakeKeycloak>
    where
        F: Fn(&Request) -> Response + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let counts: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let script = Arc::new(script);
        let task_counts = counts.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let counts = task_counts.clone();
                let script = script.clone();
                tokio::spawn(async move {
                    let Some(head) = read_head(&mut stream).await else {
                        return;
                    };
                    let mut lines = head.lines();
                    let request_line = lines.next().unwrap_or_default();
                    let mut parts = request_line.split(' ');
                    let method = parts.next().unwrap_or_default().to_owned();
                    let target = parts.next().unwrap_or_default();
                    let (path, query) = target.split_once('?').unwrap_or((target, ""));
                    let mut authorization = String::new();
                    let mut content_length = 0;
                    for line in lines {
                        if let Some((name, value)) = line.split_once(':') {
                            match name.to_ascii_lowercase().as_str() {
                                "authorization" => authorization = value.trim().to_owned(),
                                "content-length" => {
                                    content_length = value.trim().parse().unwrap_or(0)
                                }
                                _ => {}
                            }
                        }
                    }
                    let mut body = vec![0; content_length];
                    let _ = stream.read_exact(&mut body).await;
                    let nth = {
                        let mut counts = counts.lock().expect("counts");
                        let count = counts.entry(format!("{method} {path}")).or_default();
                        *count += 1;
                        *count
                    };
                    let response = script(&Request {
                        path: path.to_owned(),
                        query: query.to_owned(),
                        authorization,
                        nth,
                    });
                    let reply = format!(
                        "HTTP/1.1 {} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                        response.status,
                        response.body.len(),
                        response.body
                    );
                    let _ = stream.write_all(reply.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        Ok(FakeKeycloak { url, counts, task })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// How many times `method path` was requested.
    pub fn count(&self, method_and_path: &str) -> usize {
        self.counts
            .lock()
            .expect("counts")
            .get(method_and_path)
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for FakeKeycloak {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn read_head(stream: &mut tokio::net::TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    String::from_utf8(head).ok()
}
