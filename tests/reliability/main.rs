//! The reliability suite (`make reliability`): fault scenarios against the real services,
//! each a process, real NATS and Keycloak and the emulators. `make test` runs a fast subset.
