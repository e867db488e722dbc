//! The wire-format mocks of the test suite as a standalone server, for the
//! official client packages in tests/python (and for trying tollgate's
//! translations by hand). See tests/common/wire/mod.rs for the scenarios.
//!
//!     cargo run --example mock_providers -- 127.0.0.1:0
//!
//! Prints `listening on <addr>` once ready.

#[path = "../tests/common/wire/mod.rs"]
mod wire;

use std::sync::{Arc, Mutex};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:0".into());
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .unwrap_or_else(|e| panic!("cannot listen on {addr}: {e}"));
    println!("listening on {}", listener.local_addr().expect("a bound address"));
    wire::serve(listener, Arc::new(Mutex::new(Vec::new()))).await;
}
