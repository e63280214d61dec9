#[test] fn probe_ok() {}
