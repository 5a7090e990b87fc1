//! Integration tests of the three clients against their emulators, in one test binary.
//!
//! Each test starts its own emulator in-process on a free port through `helpers`, drives
//! the client, and checks both the client's answers and the emulator's state and counters.
//! What every product does alike is written once in `scenarios` and run for each product;
//! the product modules hold what only that product does, and `http` the shared HTTP layer.

mod bitbucket;
mod confluence;
mod contract;
mod helpers;
mod hostile;
mod http;
mod jira;
mod leads;
mod scenarios;
mod seats;
