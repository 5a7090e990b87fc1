//! The planner's integration tests, one binary: a real nats-server per test, the protocol
//! played with real bus messages, and the control plane (in process) where a test needs
//! what it records.

mod control;
mod delta;
mod failures;
mod health;
mod helpers;
mod integrity;
mod planning;
mod rebind;
