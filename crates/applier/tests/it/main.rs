//! The applier's integration tests, one binary: a real nats-server, the product emulators,
//! the control plane and the planner per test, the protocol played with real messages.

mod delivery;
mod events;
mod health;
mod helpers;
mod integrity;
mod licence;
mod rebind;
mod refresh;
mod replicas;
mod sync;
