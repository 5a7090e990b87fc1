//! The Keycloak client's tests, in one binary: against a real Keycloak from test-support
//! (one shared server, a fresh realm per test; a private server for `/auth`), and against
//! a scripted server for failures a real one does not produce on demand.

mod check;
mod delta;
mod events;
mod fake;
mod fetch;
mod helpers;
mod hostile;
mod retries;
