//! mts-connector: the engine that keeps an OpenG2P registry supplied with MOSIP tokens.
//!
//! # Layout
//! - [`config`]: command line, environment and TOML configuration.
//! - [`secret`]: the redacted type every password, token and API key lives in.
//! - [`scrub`]: the one scrubber of secrets from upstream texts before they are stored or logged.
//! - [`store`]: the redb store: records, indexes, group commits, retention, migration.
//! - [`model`]: field definitions, validation, domains and state machines (pure, no I/O).
//! - [`jq`]: jq programs (jaq), compiled once, evaluated with MTS semantics.
//! - [`mts`]: the MTS request builder.
//! - [`clients`]: HTTP clients of MTS, ODK Central and Odoo (wire only).
//! - [`engine`]: windows, scheduling and runs.
//! - [`api`]: the Odoo JSON-RPC dialect over HTTP (jsonrpsee), sessions, dispatch.
//! - [`fakes`]: fake MTS, ODK Central and Odoo for tests and the demo.
//! - [`server`]: wires store, API and shutdown together.
//! - [`demo`]: the whole flow in one command, against the fakes.
//! - [`relay`]: the durable callback relay (MTS -> service -> target).
//! - [`metrics`]: Prometheus metrics.
//! - [`cli`]: the operator commands (`connectors`, `import`, `runs`).

pub mod api;
pub mod cli;
pub mod clients;
pub mod config;
pub mod demo;
pub mod engine;
pub mod fakes;
pub mod jq;
pub mod metrics;
pub mod model;
pub mod mts;
pub mod relay;
pub mod scrub;
pub mod secret;
pub mod server;
pub mod store;
