//! The control plane's integration tests, one binary: each test starts the real service
//! against a real nats-server through `helpers::spawn_app`.

mod access;
mod claims;
mod connections;
mod deadlines;
mod diagnostics;
mod event_runs;
mod helpers;
mod holds;
mod listing;
mod rebind;
mod restart;
mod runs;
mod schedule;
mod tls;
