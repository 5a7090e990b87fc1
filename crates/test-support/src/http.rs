//! Plain HTTP probes of a service under test: its `/healthz` and `/readyz` endpoints.

use std::{net::SocketAddr, time::Duration};

use anyhow::Context;

/// `GET http://{address}{path}`: the status code and the body.
pub async fn get(address: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let url = format!("http://{address}{path}");
    let response = reqwest::Client::new()
        .get(&url)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = response.status().as_u16();
    let body = response
        .text()
        .await
        .with_context(|| format!("reading the body of GET {url}"))?;
    Ok((status, body))
}

/// GETs `path` until it answers `status`, for at most `timeout`; answers the body then, or
/// an error with the last answer. For a state a service reaches by itself, such as ready
/// after it bound its consumers, or not ready once it is stopping.
pub async fn wait_for_status(
    address: SocketAddr,
    path: &str,
    status: u16,
    timeout: Duration,
) -> anyhow::Result<String> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let answer = get(address, path).await;
        match &answer {
            Ok((got, body)) if *got == status => return Ok(body.clone()),
            _ if tokio::time::Instant::now() >= deadline => {
                anyhow::bail!("GET {path} did not answer {status} within {timeout:?}: {answer:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}
