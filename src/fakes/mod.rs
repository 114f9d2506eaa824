//! Fake MTS, ODK Central and Odoo servers for tests and the demo.
//!
//! Every fake binds 127.0.0.1 on a free port, runs on the caller's tokio runtime, records
//! what it receives and stops when dropped (or on `shutdown()`).

mod http;
mod mts;
mod mts_callback;
mod mts_records;
mod mts_request;
mod odk;
mod odk_cli;
mod odoo;
mod registry;

pub use http::Recorded;
pub use mts::{DEFAULT_PARTNER_ID, FakeMts, MtsSubmission, mock_token};
pub use odk::{FakeOdk, generated_fields};
pub use odk_cli::serve_fake_odk;
pub use odoo::{CALLBACK_PATH, FakeOdoo, ReceivedCallback};
pub use registry::{FakeRegistry, RpcCall, TOKEN_TYPE, UPDATE_ID_PATH, VID_TYPE};
