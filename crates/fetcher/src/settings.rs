//! The fetcher's sections of the shared configuration file: `[bus]`, `[fetcher]`,
//! `[keycloak.<connector>]` and `[health]`. The types and their checks live in the light
//! `settings` crate, so `keysync config check` checks them without linking the fetcher.

pub use ::settings::fetcher::{FetcherSettings, Settings};
pub use bus::{BusSettings, health::HealthSettings};
