//! The `keysync` binary against a control plane started in-process on a free port, with a
//! real nats-server; the tests play the fetcher's and planner's part on the bus.

mod commands;
mod event_runs;
mod example_config;
mod explain;
mod helpers;
mod tls;
