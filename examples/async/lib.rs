//! evchild in async runtimes: a dev-only member of evchild's workspace.
//!
//! The library is empty; the package exists for its targets, which need
//! async runtimes that evchild itself does not depend on:
//!
//! * the examples `tokio` (a multi-threaded tokio runtime, the reactor in an
//!   `AsyncFd`) and `async_io` (smol: `async_io::Async` on a `dup` of the
//!   reactor's descriptor);
//! * the test `examples_async`, which runs both with every backend and
//!   checks what they print;
//! * the bench `reaping`: the root crate's `benches/reaping.rs`, with
//!   `tokio::process` and `async-process` measured beside evchild.
//!
//! ```text
//! cargo run -p evchild-async --example tokio
//! cargo run -p evchild-async --example async_io -- --backend peek
//! cargo test -p evchild-async
//! cargo bench -p evchild-async --bench reaping
//! ```
