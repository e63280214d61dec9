//! stub
#[cfg(test)]
#[path = "int4/probe.rs"]
mod probe;
