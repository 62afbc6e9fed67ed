//! Herald's conformance suites, written once against the engine traits and run against every
//! implementation: memory and SQLite in `herald`'s tests, Redis (on a private `redis-server`)
//! in `herald-server`'s cluster tests. A dev-dependency only: the library does not ship them.

pub mod broker;
pub mod conformance;
