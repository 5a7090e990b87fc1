//! Real servers for keysync's tests, on free ports: `nats-server` with JetStream and
//! Keycloak, both installed by `make deps` (`deploy/local/deps.sh`).
//!
//! - [`nats::NatsServer`]: one per test, with a temporary JetStream store, killed on drop.
//! - [`keycloak::Keycloak::shared`]: one Keycloak per test run, reused by every test. Under
//!   `make test` the `keysync-test-env` wrapper starts it once for all test binaries
//!   while they compile; a plain `cargo test` starts one per test binary.
//! - [`keycloak::RealmSpec`]: a fresh realm per test with a confidential client whose
//!   service account holds `realm-management` roles, plus users, nested groups,
//!   memberships and attributes.
//!
//! - [`otlp::OtlpReceiver`]: an in-process OTLP/gRPC receiver that keeps every span and
//!   metric it is sent, to check what the services export.
//! - [`http`]: GETs of a service's `/healthz` and `/readyz`, and waiting for an answer.
//! - [`rebind`]: a service's consumer deleted under it, and waiting until it is bound again.
//! - [`dashboard`]: the metric names the Grafana dashboard (`deploy/grafana`) queries.
//! - [`prism::PrismProxy`]: Prism (npm `@stoplight/prism-cli`) as a proxy that validates every
//!   request against an OpenAPI document of `shared/reference/specs`, for contract tests.
//!
//! Every server's output goes to a log file that is printed when a test fails.

pub mod bench_realm;
pub mod dashboard;
pub mod deps;
pub mod fuzz;
pub mod http;
pub mod keycloak;
pub mod nats;
pub mod nats_cluster;
pub mod otlp;
pub mod prism;
pub mod process;
pub mod rebind;
