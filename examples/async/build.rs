//! Switches on the async peers of the shared benches/reaping.rs: the root
//! crate builds the same file without them (and without their runtimes).
fn main() {
    println!("cargo::rustc-check-cfg=cfg(evchild_async_peers)");
    println!("cargo::rustc-cfg=evchild_async_peers");
}
