//! The fetcher's tests, in one binary: the service with a real nats-server and a real
//! Keycloak, driven one step at a time.

mod events;
mod follow;
mod health;
mod helpers;
mod rebind;
mod service;
