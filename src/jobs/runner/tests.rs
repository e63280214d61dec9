//! Unit tests of the runner (below).
