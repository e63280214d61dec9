//! Unit tests of the catalog (filled in below).
