//! The planner's sections of the shared configuration file: `[bus]`, `[products.*]`
//! (each enabled product's policy), `[planner]` and `[health]`. The types and their checks
//! live in the light `settings` crate, so `keysync config check` checks them without
//! linking the planner.

pub use ::settings::planner::{PlannerSettings, Settings};
pub use bus::{BusSettings, health::HealthSettings};
