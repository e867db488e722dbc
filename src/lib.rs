//! tollgate: an OpenAI-compatible LLM gateway.
//!
//! The request path: `server` (tower stack, handlers) parses the canonical
//! request (`api`), `routing` picks the backend, a `providers` adapter talks
//! to the upstream, `stream` frames streamed answers, and `metering` records
//! what happened. `config` loads and validates the YAML file.

pub mod api;
pub mod config;
pub mod keys;
pub mod metering;
pub mod providers;
pub mod routing;
pub mod server;
pub mod stream;
