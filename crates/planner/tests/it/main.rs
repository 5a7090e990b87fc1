//! The planner's integration tests, one binary: a real nats-server per test, the protocol
//! played with real bus messages.

mod failures;
mod health;
mod helpers;
mod planning;
mod rebind;
